//! Whatever a peer sends: unpack returns `Ok` or `Err`, never panics; what it accepts packs back
//! to a message that reads the same; framing, typed checks and display never panic either.
#![no_main]

use libfuzzer_sys::fuzz_target;
use payhub_iso8583::Message;
use payhub_iso8583::frame::split_frame;
use payhub_iso8583::typed::BankMessage;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some((message, consumed))) = split_frame(data) {
        assert!(consumed <= data.len() && message.len() + 2 == consumed);
    }
    let Ok(m) = Message::unpack(data) else {
        return;
    };
    let packed = m.pack().expect("an unpacked message packs");
    assert_eq!(packed.len(), m.packed_len());
    assert_eq!(Message::unpack(&packed).expect("repacked reads"), m);
    let _ = format!("{m:?} {m}");
    let _ = BankMessage::classify(m);
});
