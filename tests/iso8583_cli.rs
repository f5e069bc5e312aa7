//! `payhub iso8583 decode|encode` as an operator runs them: the real binary, real pipes.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const DEBIT_0200: &str = "3032303042323338303030313038453038303030303030303030303031363030303030303030303030303030303030303030313233343131323831303130313030303030303231303130313031313238303839393939303030315048303030303030303030315445524d303030314d45524348414e5430303030303031426f6f6b2053686f70202020202020202020202020202020204265696a696e67202020202020434e313536303430303031313636323232303030303131313132323232313636323232303030303939393930303030";

const DEBIT_0200_JSON: &str = r#"{"mti":"0200","fields":{"3":"000000","4":"000000001234","7":"1128101010","11":"000002","12":"101010","13":"1128","32":"99990001","37":"PH0000000001","41":"TERM0001","42":"MERCHANT0000001","43":"Book Shop                Beijing      CN","49":"156","100":"0001","102":"6222000011112222","103":"6222000099990000"}}"#;

fn payhub(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_payhub"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("payhub runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("payhub exits")
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone())
        .expect("utf-8")
        .trim_end()
        .to_owned()
}

#[test]
fn decode_masks_accounts_unless_revealed() {
    let masked = DEBIT_0200_JSON
        .replace("6222000011112222", "622200******2222")
        .replace("6222000099990000", "622200******0000");
    assert_eq!(
        stdout(&payhub(&["iso8583", "decode", DEBIT_0200], "")),
        masked
    );
    let revealed = stdout(&payhub(
        &["iso8583", "decode", "--reveal"],
        &format!("{DEBIT_0200}\n"),
    ));
    assert_eq!(revealed, DEBIT_0200_JSON);
    let json: serde_json::Value = serde_json::from_str(&revealed).expect("JSON");
    assert_eq!(json["fields"]["4"], "000000001234");
}

#[test]
fn encode_reads_the_json_of_decode() {
    assert_eq!(
        stdout(&payhub(&["iso8583", "encode"], DEBIT_0200_JSON)),
        DEBIT_0200
    );
}

#[test]
fn a_malformed_message_is_one_line_naming_the_field_and_exit_1() {
    // Field 4 (amount) with a letter at its end.
    let bad = DEBIT_0200.replacen("303030303030303031323334", "303030303030303031323378", 1);
    assert_ne!(bad, DEBIT_0200);
    let truncated = &DEBIT_0200[..DEBIT_0200.len() - 2];
    let cases = [
        (
            vec!["iso8583", "decode", bad.as_str()],
            "",
            "field 4 (amount, transaction): bad character at offset 11",
        ),
        (
            vec!["iso8583", "decode", truncated],
            "",
            "field 103 (account identification 2): truncated",
        ),
        (vec!["iso8583", "decode", "zz"], "", "not hex"),
        (
            vec!["iso8583", "encode"],
            r#"{"mti":"0200","fields":{"49":"15"}}"#,
            "field 49 (currency code, transaction): length 2, must be exactly 3",
        ),
        (
            vec!["iso8583", "encode"],
            r#"{"mti":"0200","fields":{"65":"1"}}"#,
            "field 65",
        ),
        (vec!["iso8583", "encode"], "not json", "not JSON"),
    ];
    for (args, stdin, reason) in cases {
        let out = payhub(&args, stdin);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        let stderr = String::from_utf8(out.stderr).expect("utf-8");
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(stderr.contains(reason), "{args:?}: {stderr}");
    }
}

#[test]
fn a_reader_that_has_gone_is_one_line_not_a_panic() {
    // `payhub iso8583 decode … | head -c 0`: the pipe's reading end is closed before the write.
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_payhub"))
        .args(["iso8583", "decode", DEBIT_0200])
        .stdout(writer)
        .stderr(Stdio::piped())
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("payhub runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("payhub: writing to standard output:"),
        "{stderr}"
    );
}
