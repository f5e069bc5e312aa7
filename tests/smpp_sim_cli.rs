//! `payhub smsc-sim` as operators run it: port 0 prints the bound addresses, each message is
//! printed, switches come from flags, and bad flags are one line on standard error.

use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{InterfaceVersion, Npi, RegisteredDelivery, Ton};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

const LINE_WAIT: Duration = Duration::from_secs(20);

/// The simulator child, killed (by its own id) when the test ends.
struct Sim {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sim {
    fn start(extra: &[&str]) -> Sim {
        let mut child = Command::new(env!("CARGO_BIN_EXE_payhub"))
            .args([
                "smsc-sim",
                "--listen",
                "127.0.0.1:0",
                "--system-id",
                "payhub",
                "--password",
                "secret",
                "--http",
                "127.0.0.1:0",
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("payhub runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Sim { child, lines }
    }

    fn line_containing(&self, needle: &str) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(LINE_WAIT)
                .unwrap_or_else(|_| panic!("no line containing {needle:?}"));
            if line.contains(needle) {
                return line;
            }
        }
    }
}

/// The address after `on ` in a "listening on" line.
fn address_in(line: &str) -> String {
    let after = line.split(" on ").nth(1).expect("an address");
    let first = after.split_whitespace().next().expect("an address");
    first.trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn port_zero_prints_addresses_and_each_message_is_printed_and_listed() {
    let sim = Sim::start(&["--throttle-next", "1"]);
    let smpp = address_in(&sim.line_containing("SMPP listening on"));
    let http = address_in(&sim.line_containing("HTTP listening on"));

    let (client, _events) = rusmppc::ConnectionBuilder::new()
        .disable_interface_version_check()
        .connect(format!("smpp://{smpp}"))
        .await
        .unwrap();
    client
        .bind_transceiver(
            BindTransceiver::builder()
                .system_id(COctetString::from_str("payhub").unwrap())
                .password(COctetString::from_str("secret").unwrap())
                .interface_version(InterfaceVersion::Smpp3_4)
                .build(),
        )
        .await
        .unwrap();
    let submit = SubmitSm::builder()
        .source_addr_ton(Ton::Alphanumeric)
        .source_addr(COctetString::from_str("PAYHUB").unwrap())
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(COctetString::from_str("8613800138000").unwrap())
        .registered_delivery(RegisteredDelivery::from(1u8))
        .short_message(OctetString::from_str("payhub: code 123456").unwrap())
        .build();
    let throttled = client.submit_sm(submit.clone()).await.unwrap_err();
    assert!(
        format!("{throttled:?}").contains("EsmeRthrottled"),
        "{throttled:?}"
    );
    let accepted = client.submit_sm(submit).await.unwrap();

    let printed = sim.line_containing("smsc-sim: message");
    assert!(
        printed.contains(accepted.message_id().as_str()),
        "{printed}"
    );
    assert!(printed.contains("8613800138000") && printed.contains("code 123456"));

    let listed: serde_json::Value = reqwest::get(format!("http://{http}/messages"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["message_id"], accepted.message_id().as_str());
    let _ = client.unbind().await;
}

#[test]
fn bad_switch_flags_are_refused_naming_the_value() {
    let base = [
        "smsc-sim",
        "--listen",
        "127.0.0.1:0",
        "--system-id",
        "a",
        "--password",
        "b",
    ];
    for (flag, value) in [("--error-status", "0xZZ"), ("--receipt-stat", "GONE")] {
        let out = Command::new(env!("CARGO_BIN_EXE_payhub"))
            .args(base)
            .args([flag, value])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.contains(flag) && first.contains(value), "{stderr}");
    }
}

#[test]
fn an_address_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_payhub"))
        .args([
            "smsc-sim",
            "--listen",
            &addr,
            "--system-id",
            "a",
            "--password",
            "b",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains(&addr), "{stderr}");
}
