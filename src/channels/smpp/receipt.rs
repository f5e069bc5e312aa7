//! SMSC delivery receipts (SMPP v3.4 appendix B): the `short_message` of a `deliver_sm` whose
//! `esm_class` says "delivery receipt", as text:
//! `id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:EEE text:…`.
//! Only the message id and the final state are used; the `text:` part is never read (it may
//! echo the start of the message, which holds the code). That text format is only an example in
//! the standard, so the `receipted_message_id` and `message_state` TLVs come first when an SMSC
//! sends them, and the text may come in `message_payload` instead of `short_message`.

use rusmpp::pdus::{DataSm, DeliverSm};
use rusmpp::tlvs::{Tlv, TlvValue};
use rusmpp::values::MessageState;

/// The message id as payhub stores it: at most 64 visible ASCII characters.
const MESSAGE_ID_LEN_MAX: usize = 64;

/// Final states an SMSC reports.
pub const STATES: [&str; 8] = [
    "DELIVRD", "EXPIRED", "DELETED", "UNDELIV", "ACCEPTD", "UNKNOWN", "REJECTD", "ENROUTE",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub message_id: String,
    /// One of [`STATES`].
    pub stat: &'static str,
}

/// `esm_class` bits 2..5 = 0b0001: "short message contains MC delivery receipt".
pub fn is_receipt_esm_class(esm_class: u8) -> bool {
    esm_class & 0b0011_1100 == 0b0000_0100
}

/// The receipt a `deliver_sm` carries: each of the id and the state from its TLV when present,
/// otherwise from the text. `None` when either is missing or malformed.
pub fn of_deliver_sm(deliver: &DeliverSm) -> Option<Receipt> {
    of_parts(deliver.tlvs(), deliver.short_message().as_ref())
}

/// The receipt a `data_sm` carries, as for a `deliver_sm`: a `data_sm` has no `short_message`,
/// so its text is in `message_payload`.
pub fn of_data_sm(data: &DataSm) -> Option<Receipt> {
    of_parts(data.tlvs(), &[])
}

fn of_parts(tlvs: &[Tlv], short_message: &[u8]) -> Option<Receipt> {
    let (mut tlv_id, mut tlv_state, mut payload) = (None, None, None);
    for tlv in tlvs {
        match tlv.value() {
            Some(TlvValue::ReceiptedMessageId(id)) => tlv_id = Some(id.as_str()),
            Some(TlvValue::MessageState(state)) => tlv_state = stat_of_state(*state),
            Some(TlvValue::MessagePayload(p)) => payload = Some(p.value.as_ref()),
            _ => {}
        }
    }
    let text = match payload {
        Some(payload) if short_message.is_empty() => payload,
        _ => short_message,
    };
    let from_text = parse_fields(text);
    let message_id = match tlv_id {
        Some(id) => valid_id(id)?,
        None => from_text.0?,
    };
    let stat = tlv_state.or(from_text.1)?;
    Some(Receipt { message_id, stat })
}

/// The id and the state of a receipt text, each when present and well formed. The keys are
/// matched in any letter case (`id:`, `Id:`, `STAT:`).
fn parse_fields(text: &[u8]) -> (Option<String>, Option<&'static str>) {
    let text = String::from_utf8_lossy(text);
    // ASCII lower-casing keeps every byte where it was, so positions found in `lower` hold in
    // `text`.
    let lower = text.to_ascii_lowercase();
    let end = lower.find("text:").unwrap_or(lower.len());
    let (head, lower_head) = (&text[..end], &lower[..end]);
    let message_id = field(head, lower_head, "id:").and_then(valid_id);
    let stat = field(head, lower_head, "stat:").and_then(|stat| {
        let stat = stat.to_ascii_uppercase();
        STATES.into_iter().find(|s| *s == stat)
    });
    (message_id, stat)
}

fn valid_id(id: &str) -> Option<String> {
    let ok = !id.is_empty()
        && id.len() <= MESSAGE_ID_LEN_MAX
        && id.bytes().all(|b| b.is_ascii_graphic());
    ok.then(|| id.to_string())
}

/// The `message_state` TLV (SMPP v3.4 §5.2.28) as the text's `stat:` word; `None` for a state
/// that is no final receipt state.
fn stat_of_state(state: MessageState) -> Option<&'static str> {
    Some(match state {
        MessageState::Enroute => "ENROUTE",
        MessageState::Delivered => "DELIVRD",
        MessageState::Expired => "EXPIRED",
        MessageState::Deleted => "DELETED",
        MessageState::Undeliverable => "UNDELIV",
        MessageState::Accepted => "ACCEPTD",
        MessageState::Unknown => "UNKNOWN",
        MessageState::Rejected => "REJECTD",
        _ => return None,
    })
}

/// The value after `key` (at a word start, in any letter case), up to the next space.
/// `lower` is `text` lower-cased.
fn field<'a>(text: &'a str, lower: &str, key: &str) -> Option<&'a str> {
    let mut search = 0;
    while let Some(found) = lower[search..].find(key) {
        let at = search + found;
        let at_word_start = at == 0 || lower.as_bytes()[at - 1] == b' ';
        if at_word_start {
            let rest = &text[at + key.len()..];
            return Some(rest.split(' ').next().unwrap_or(""));
        }
        search = at + key.len();
    }
    None
}

/// A receipt text as an SMSC writes it, for the simulator. The `text:` part stays empty so the
/// code is never echoed.
pub fn format(message_id: &str, stat: &str, submitted: &str, done: &str) -> String {
    let delivered = if stat == "DELIVRD" { "001" } else { "000" };
    format!(
        "id:{message_id} sub:001 dlvrd:{delivered} submit date:{submitted} done date:{done} stat:{stat} err:000 text:"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusmpp::tlvs::MessageDeliveryRequestTlvValue as Tlv;
    use rusmpp::types::{AnyOctetString, COctetString, OctetString};
    use rusmpp::values::MessagePayload;

    fn deliver(text: &[u8], tlvs: Vec<Tlv>) -> DeliverSm {
        DeliverSm::builder()
            .short_message(OctetString::from_slice(text).unwrap())
            .tlvs(tlvs)
            .build()
    }

    fn parse(text: &[u8]) -> Option<Receipt> {
        of_deliver_sm(&deliver(text, vec![]))
    }

    fn receipt(id: &str, stat: &'static str) -> Option<Receipt> {
        Some(Receipt {
            message_id: id.into(),
            stat,
        })
    }

    #[test]
    fn reads_id_and_state_of_a_standard_receipt() {
        let text = b"id:0123456789 sub:001 dlvrd:001 submit date:2611281100 done date:2611281101 stat:DELIVRD err:000 text:payhub: code 1";
        assert_eq!(parse(text), receipt("0123456789", "DELIVRD"));
        let capitalised = b"Id:AbC1 Sub:001 Dlvrd:001 Stat:delivrd Err:000 Text:";
        assert_eq!(parse(capitalised), receipt("AbC1", "DELIVRD"));
    }

    #[test]
    fn round_trips_the_simulator_format() {
        let text = format("a1b2", "UNDELIV", "2611281100", "2611281100");
        assert_eq!(parse(text.as_bytes()), receipt("a1b2", "UNDELIV"));
    }

    #[test]
    fn ignores_words_inside_the_text_part_and_bad_input() {
        assert_eq!(parse(b"hello stat:DELIVRD"), None);
        assert_eq!(parse(b"id:1 stat:BOGUS"), None);
        assert_eq!(parse(b"id: stat:DELIVRD"), None);
        assert_eq!(parse(b"id:1 sub:1 text:stat:DELIVRD"), None);
        assert_eq!(parse(&[0xff, 0xfe]), None);
        let long = std::format!("id:{} stat:DELIVRD", "9".repeat(65));
        assert_eq!(parse(long.as_bytes()), None);
    }

    #[test]
    fn the_receipt_tlvs_come_before_the_text() {
        let id = |s: &str| Tlv::ReceiptedMessageId(COctetString::from_slice(s.as_bytes()).unwrap());
        // TLVs only, no text at all.
        let tlvs = vec![id("m-77\0"), Tlv::MessageState(MessageState::Undeliverable)];
        assert_eq!(
            of_deliver_sm(&deliver(b"", tlvs)),
            receipt("m-77", "UNDELIV")
        );
        // Where both are sent, the TLVs win; a missing one is taken from the text.
        let text = b"id:other stat:DELIVRD text:";
        let tlvs = vec![Tlv::MessageState(MessageState::Expired)];
        assert_eq!(
            of_deliver_sm(&deliver(text, tlvs)),
            receipt("other", "EXPIRED")
        );
        // A state that is no receipt state falls back to the text.
        let tlvs = vec![id("m-1\0"), Tlv::MessageState(MessageState::Scheduled)];
        assert_eq!(
            of_deliver_sm(&deliver(text, tlvs)),
            receipt("m-1", "DELIVRD")
        );
        // The text in message_payload when short_message is empty.
        let payload = MessagePayload::new(AnyOctetString::from_slice(b"id:p9 stat:REJECTD"));
        let tlvs = vec![Tlv::MessagePayload(payload)];
        assert_eq!(of_deliver_sm(&deliver(b"", tlvs)), receipt("p9", "REJECTD"));
    }

    #[test]
    fn receipt_esm_class() {
        assert!(is_receipt_esm_class(0x04));
        assert!(!is_receipt_esm_class(0x00));
    }
}
