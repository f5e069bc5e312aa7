//! The conformance vectors of `shared/vectors/iso8583.json` (made with an independent encoder,
//! pyiso8583): each packs to exactly its bytes and unpacks to exactly its fields.

use payhub_iso8583::Message;
use payhub_iso8583::frame::{pack_framed, split_frame};
use std::collections::BTreeMap;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/iso8583.json"
);

struct Vector {
    name: String,
    mti: String,
    fields: BTreeMap<u8, String>,
    bytes: Vec<u8>,
    framed: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    let text =
        std::fs::read_to_string(VECTORS).expect("shared/vectors/iso8583.json beside the repo");
    let json: serde_json::Value = serde_json::from_str(&text).expect("vectors are JSON");
    let list = json["vectors"].as_array().expect("a vectors array");
    assert!(list.len() >= 9, "all vectors read");
    list.iter()
        .map(|v| Vector {
            name: v["name"].as_str().expect("name").to_owned(),
            mti: v["mti"].as_str().expect("mti").to_owned(),
            fields: v["fields"]
                .as_object()
                .expect("fields")
                .iter()
                .filter(|(k, _)| k.as_str() != "t") // pyiso8583 keeps the MTI as field "t"
                .map(|(k, v)| {
                    (
                        k.parse().expect("field number"),
                        v.as_str().expect("value").to_owned(),
                    )
                })
                .collect(),
            bytes: hex::decode(v["hex"].as_str().expect("hex")).expect("hex"),
            framed: hex::decode(v["framed_hex"].as_str().expect("framed_hex")).expect("hex"),
        })
        .collect()
}

fn build(v: &Vector) -> Message {
    let mut m = Message::new(&v.mti).expect("mti");
    for (field, value) in &v.fields {
        m.set(*field, value)
            .unwrap_or_else(|e| panic!("{}: {e}", v.name));
    }
    m
}

#[test]
fn every_vector_packs_to_its_exact_bytes() {
    for v in vectors() {
        let m = build(&v);
        assert_eq!(m.pack().expect("pack"), v.bytes, "{}", v.name);
        assert_eq!(m.packed_len(), v.bytes.len(), "{}", v.name);
        let mut framed = Vec::new();
        pack_framed(&m, &mut framed).expect("frame");
        assert_eq!(framed, v.framed, "{} framed", v.name);
    }
}

#[test]
fn every_vector_unpacks_to_its_exact_fields() {
    for v in vectors() {
        let (message, consumed) = split_frame(&v.framed).expect("frame").expect("whole frame");
        assert_eq!(consumed, v.framed.len());
        assert_eq!(message, &v.bytes[..]);
        let m = Message::unpack(message).unwrap_or_else(|e| panic!("{}: {e}", v.name));
        assert_eq!(m.mti(), v.mti, "{}", v.name);
        let got: BTreeMap<u8, String> = m.fields().map(|(f, s)| (f, s.to_owned())).collect();
        assert_eq!(got, v.fields, "{}", v.name);
        assert_eq!(m, build(&v), "{}", v.name);
        assert_eq!(m.pack().expect("repack"), v.bytes, "{} repacked", v.name);
    }
}

/// The typed constructors produce exactly the vectors, and every vector classifies as its type.
#[test]
fn typed_constructors_build_the_vectors() {
    use payhub_iso8583::typed::*;
    let by_name: BTreeMap<String, Vec<u8>> =
        vectors().into_iter().map(|v| (v.name, v.bytes)).collect();
    let debit = DebitRequest::new(&Debit {
        amount_minor: 1234,
        currency: 156,
        stan: 2,
        transmitted_at: "1128101010",
        local_time: "101010",
        local_date: "1128",
        acquirer_id: "99990001",
        rrn: "PH0000000001",
        terminal_id: "TERM0001",
        merchant_id: "MERCHANT0000001",
        merchant_name_location: "Book Shop                Beijing      CN",
        payer_bank: "0001",
        payer_account: "6222000011112222",
        payee_account: "6222000099990000",
    })
    .expect("valid debit");
    let advice = ReversalAdvice::for_debit(&debit, 3, "1128101040").expect("valid 0420");
    let sign_on = NetworkRequest::new(NetworkCode::SignOn, 1, "1128101010").expect("valid 0800");
    let built: Vec<(&str, Message)> = vec![
        ("sign_on_0800", sign_on.clone().into()),
        (
            "sign_on_0810",
            sign_on.answer(ResponseCode::Approved).expect("0810").into(),
        ),
        (
            "echo_0800",
            NetworkRequest::new(NetworkCode::Echo, 999_999, "1128235959")
                .expect("echo")
                .into(),
        ),
        ("debit_0200", debit.clone().into()),
        (
            "debit_0210_approved",
            debit
                .answer(ResponseCode::Approved, Some("000731"))
                .expect("0210")
                .into(),
        ),
        (
            "debit_0210_declined_51",
            debit
                .answer(ResponseCode::InsufficientFunds, None)
                .expect("0210")
                .into(),
        ),
        ("reversal_0420", advice.clone().into()),
        (
            "reversal_repeat_0421",
            advice.repeat(4, "1128101110").expect("0421").into(),
        ),
        (
            "reversal_0430",
            advice.answer(ResponseCode::Approved).expect("0430").into(),
        ),
    ];
    assert_eq!(built.len(), by_name.len(), "one typed message per vector");
    for (name, message) in built {
        assert_eq!(message.pack().expect("pack"), by_name[name], "{name}");
        let classified = BankMessage::classify(Message::unpack(&by_name[name]).expect("unpack"))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(classified.message(), &message, "{name}");
    }
}
