//! Differential interop with iso8583_rs 0.1.10, an independent ISO 8583 implementation: messages
//! packed by one are read by the other, field for field, over the profile's fields (spec file
//! tests/iso8583_rs_profile.yaml). The only difference iso8583_rs cannot express is the bitmap's
//! encoding (it is always binary), converted in `support/rs_peer.rs`.
//!
//! `harness = false`: iso8583_rs needs `SPEC_FILE` set before it starts, so `main` re-runs itself
//! with it rather than setting it in a running process.

#[path = "support/rs_peer.rs"]
mod rs_peer;
#[path = "support/strategies.rs"]
mod strategies;

use payhub_iso8583::Message;
use payhub_iso8583::mac::{MacKey, retail_mac};
use proptest::test_runner::{Config, TestRunner};
use std::collections::BTreeMap;

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/iso8583.json"
);

fn ours_fields(m: &Message) -> (String, Vec<(u8, String)>) {
    (
        m.mti().to_owned(),
        m.fields().map(|(f, v)| (f, v.to_owned())).collect(),
    )
}

/// Ours packs, iso8583_rs reads the same fields; iso8583_rs assembles, ours reads the same fields
/// and packs the same bytes back.
fn both_directions(m: &Message) {
    let ours = m.pack().expect("pack");
    let theirs = rs_peer::parse(&rs_peer::hex_bitmaps_to_binary(&ours));
    assert_eq!(
        rs_peer::fields(&theirs),
        ours_fields(m),
        "iso8583_rs reads what we packed"
    );

    let (mti, fields) = ours_fields(m);
    let assembled = rs_peer::build(&mti, fields.iter().map(|(f, v)| (*f, v.as_str())))
        .assemble()
        .expect("iso8583_rs assembles");
    let converted = rs_peer::binary_bitmaps_to_hex(&assembled);
    let back = Message::unpack(&converted).unwrap_or_else(|e| panic!("we read iso8583_rs: {e}"));
    assert_eq!(&back, m, "we read what iso8583_rs assembled");
    assert_eq!(
        back.pack().expect("pack"),
        converted,
        "same bytes both ways"
    );
}

fn vectors() {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(VECTORS).expect("vectors file"))
            .expect("JSON");
    let vectors = json["vectors"].as_array().expect("vectors");
    for v in vectors {
        let bytes = hex::decode(v["hex"].as_str().expect("hex")).expect("hex");
        let m = Message::unpack(&bytes).expect("vector unpacks");
        both_directions(&m);
        let fields: BTreeMap<u8, String> = ours_fields(&m).1.into_iter().collect();
        assert!(!fields.is_empty());
    }
    println!("interop vectors ({} messages) ... ok", vectors.len());
}

fn random_profile_messages() {
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = strategies::message(
        strategies::PROFILE_FIELDS.to_vec(),
        strategies::PROFILE_MTIS.to_vec(),
    );
    runner
        .run(&strategy, |m| {
            both_directions(&m);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    println!("interop random profile messages (300) ... ok");
}

/// iso8583_rs's Retail MAC (ISO 9797-1 algorithm 3, padding 1) agrees with ours over packed
/// messages (longer than one block: iso8583_rs cannot MAC shorter data).
fn retail_mac_agrees() {
    use iso8583_rs::crypto::mac::{MacAlgo, PaddingType, generate_mac};
    let key_bytes = hex::decode("0123456789ABCDEFFEDCBA9876543210").expect("hex");
    let key = MacKey::from_hex("0123456789ABCDEFFEDCBA9876543210").expect("key");
    let mut runner = TestRunner::new(Config {
        cases: 100,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = strategies::message(
        strategies::PROFILE_FIELDS.to_vec(),
        strategies::PROFILE_MTIS.to_vec(),
    );
    runner
        .run(&strategy, |m| {
            let data = m.pack().expect("pack");
            let theirs = generate_mac(&MacAlgo::RetailMac, &PaddingType::Type1, &data, &key_bytes)
                .unwrap_or_else(|e| panic!("{}", e.msg));
            assert_eq!(retail_mac(&key, &data).to_vec(), theirs);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    println!("interop retail MAC (100 messages) ... ok");
}

fn main() {
    rs_peer::run_with_spec_file();
    vectors();
    random_profile_messages();
    retail_mac_agrees();
}
