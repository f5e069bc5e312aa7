//! Properties: every valid message round-trips, and nothing a peer sends makes the codec panic.

#[path = "support/strategies.rs"]
mod strategies;

use payhub_iso8583::{Error, Message};
use proptest::prelude::*;

fn any_valid_message() -> impl Strategy<Value = Message> {
    let mtis = vec![
        "0100", "0200", "0210", "0420", "0421", "0430", "0800", "0810", "9999",
    ];
    strategies::message(strategies::all_fields(), mtis)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn valid_messages_round_trip(m in any_valid_message()) {
        let bytes = m.pack().expect("a valid message packs");
        prop_assert_eq!(bytes.len(), m.packed_len());
        let back = Message::unpack(&bytes).expect("what we pack we read");
        prop_assert_eq!(&back, &m);
        prop_assert_eq!(back.pack().expect("repack"), bytes);
    }

    #[test]
    fn unpack_of_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..700)) {
        let _ = Message::unpack(&bytes);
    }

    /// Arbitrary bytes after a plausible MTI and bitmaps get past the header into the fields.
    #[test]
    fn unpack_of_arbitrary_fields_never_panics(
        mti in "[0-9]{4}",
        bitmap in "[0-9A-F]{32}",
        rest in proptest::collection::vec(any::<u8>(), 0..700),
    ) {
        let mut bytes = format!("{mti}{bitmap}").into_bytes();
        bytes.extend(rest);
        if let Ok(m) = Message::unpack(&bytes) {
            prop_assert_eq!(Message::unpack(&m.pack().expect("repack")).expect("again"), m);
        }
    }

    /// A valid message with bytes changed either still unpacks or is an error naming a cause.
    #[test]
    fn corrupted_messages_never_panic(
        m in any_valid_message(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = m.pack().expect("pack");
        for (at, byte) in flips {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        let _ = Message::unpack(&bytes);
        let _ = Message::unpack(&bytes[..cut.index(bytes.len() + 1)]);
    }

    /// `set` takes any string without panicking; what it accepts reads back unchanged.
    #[test]
    fn set_accepts_only_what_it_can_pack(field in 0u8..=255, value in ".{0,60}") {
        let mut m = Message::new("0200").expect("mti");
        match m.set(field, &value) {
            Ok(_) => {
                prop_assert_eq!(m.get(field), Some(value.as_str()));
                let back = Message::unpack(&m.pack().expect("pack")).expect("unpack");
                prop_assert_eq!(back.get(field), Some(value.as_str()));
            }
            Err(e) => {
                let named = e.field() == Some(field) || matches!(e, Error::MessageTooLong { .. });
                prop_assert!(named, "error names field {}: {}", field, e);
            }
        }
    }

    /// Accounts never appear whole in Debug or Display.
    #[test]
    fn accounts_are_masked(account in "[0-9]{11,28}") {
        let m = Message::new("0200").and_then(|m| m.with(102, &account)).and_then(|m| m.with(103, &account)).expect("valid");
        let debug = format!("{m:?}");
        prop_assert!(!debug.contains(&account));
        prop_assert!(!m.to_string().contains(&account));
    }
}

/// Inputs that once broke a property, kept as they were found (tests/fuzz_regressions/).
#[test]
fn fuzz_regressions_hold() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz_regressions");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).expect("regressions folder") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("read");
        if let Ok(m) = Message::unpack(&bytes) {
            let packed = m.pack().expect("pack");
            assert_eq!(packed.len(), m.packed_len());
            assert_eq!(Message::unpack(&packed).expect("repacked"), m);
        }
        seen += 1;
    }
    assert!(seen >= 1);
}
