//! iso8583_rs 0.1.10 as an independent peer, for the differential interop test and the benchmark.
//!
//! iso8583_rs reads its spec once per process from the YAML file named by `SPEC_FILE`, and
//! setting an environment variable inside a running (multi-threaded) process is `unsafe`; so a
//! program that needs it re-runs itself with the variable set ([`run_with_spec_file`]).
//! iso8583_rs always writes bitmaps in binary (8 bytes each) where the profile has 16 hex
//! characters: [`hex_bitmaps_to_binary`] and [`binary_bitmaps_to_hex`] convert between the two,
//! everything else is the same bytes.
#![allow(dead_code)]

use iso8583_rs::iso8583::iso_spec::{IsoMsg, new_msg, spec};

/// The profile as an iso8583_rs spec.
pub const SPEC_FILE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/iso8583_rs_profile.yaml");

/// Returns when `SPEC_FILE` names our spec; otherwise runs this program again with it set and
/// exits with the child's status.
pub fn run_with_spec_file() {
    if std::env::var_os("SPEC_FILE").is_some_and(|v| v == SPEC_FILE) {
        return;
    }
    let exe = std::env::current_exe().expect("own executable");
    let status = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .env("SPEC_FILE", SPEC_FILE)
        .status()
        .expect("re-run with SPEC_FILE");
    std::process::exit(status.code().unwrap_or(1));
}

/// Builds a message with iso8583_rs.
pub fn build<'a>(mti: &str, fields: impl IntoIterator<Item = (u8, &'a str)>) -> IsoMsg {
    let spec = spec("PayhubBankLink");
    let segment = spec.get_message_from_header(mti).expect("MTI in the spec");
    let mut msg = new_msg(spec, segment);
    msg.set("message_type", mti).expect("message_type");
    for (field, value) in fields {
        msg.set_on(u32::from(field), value)
            .expect("field in the spec");
    }
    msg
}

/// Parses wire bytes (binary bitmaps) with iso8583_rs.
pub fn parse(bytes: &[u8]) -> IsoMsg {
    spec("PayhubBankLink")
        .parse(&mut bytes.to_vec())
        .unwrap_or_else(|e| panic!("iso8583_rs cannot parse: {e}"))
}

/// MTI and the present fields in number order, as iso8583_rs reads them.
pub fn fields(msg: &IsoMsg) -> (String, Vec<(u8, String)>) {
    let mti = msg
        .get_field_value(&"message_type".to_string())
        .expect("message_type");
    let fields = (2..=128u8)
        .filter(|&f| f != 65 && msg.bmp.is_on(u32::from(f)))
        .map(|f| (f, msg.bmp_child_value(u32::from(f)).expect("value")))
        .collect();
    (mti, fields)
}

/// The profile's hex bitmaps (16 characters each) as iso8583_rs's binary ones (8 bytes each).
pub fn hex_bitmaps_to_binary(ours: &[u8]) -> Vec<u8> {
    let (mti, rest) = ours.split_at(4);
    let secondary = rest[0] >= b'8';
    let hex_len = if secondary { 32 } else { 16 };
    let mut out = mti.to_vec();
    out.extend(hex::decode(&rest[..hex_len]).expect("hex bitmap"));
    out.extend_from_slice(&rest[hex_len..]);
    out
}

/// iso8583_rs's binary bitmaps as the profile's hex ones (upper case).
pub fn binary_bitmaps_to_hex(theirs: &[u8]) -> Vec<u8> {
    let (mti, rest) = theirs.split_at(4);
    let secondary = rest[0] & 0x80 != 0;
    let bin_len = if secondary { 16 } else { 8 };
    let mut out = mti.to_vec();
    out.extend(hex::encode_upper(&rest[..bin_len]).into_bytes());
    out.extend_from_slice(&rest[bin_len..]);
    out
}
