//! SMSC delivery receipts (SMPP v3.4 appendix B): the `short_message` of a `deliver_sm` whose
//! `esm_class` says "delivery receipt", as text:
//! `id:IIII sub:SSS dlvrd:DDD submit date:YYMMDDhhmm done date:YYMMDDhhmm stat:DDDDDDD err:EEE text:…`.
//! Only the message id and the final state are used; the `text:` part is never read (it may
//! echo the start of the message, which holds the code).

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

/// Reads the id and the state from a receipt text; `None` when either is missing or malformed.
pub fn parse(text: &[u8]) -> Option<Receipt> {
    let text = String::from_utf8_lossy(text);
    let head = match text.find("text:").or_else(|| text.find("Text:")) {
        Some(end) => &text[..end],
        None => &text[..],
    };
    let message_id = field(head, "id:")?;
    if message_id.is_empty()
        || message_id.len() > MESSAGE_ID_LEN_MAX
        || !message_id.bytes().all(|b| b.is_ascii_graphic())
    {
        return None;
    }
    let stat = field(head, "stat:")?.to_ascii_uppercase();
    let stat = STATES.into_iter().find(|s| *s == stat)?;
    Some(Receipt {
        message_id: message_id.to_string(),
        stat,
    })
}

/// The value after `key` (at a word start), up to the next space.
fn field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut search = 0;
    while let Some(found) = text[search..].find(key) {
        let at = search + found;
        let at_word_start = at == 0 || text.as_bytes()[at - 1] == b' ';
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

    #[test]
    fn reads_id_and_state_of_a_standard_receipt() {
        let text = b"id:0123456789 sub:001 dlvrd:001 submit date:2611281100 done date:2611281101 stat:DELIVRD err:000 text:payhub: code 1";
        let r = parse(text).unwrap();
        assert_eq!(r.message_id, "0123456789");
        assert_eq!(r.stat, "DELIVRD");
    }

    #[test]
    fn round_trips_the_simulator_format() {
        let text = format("a1b2", "UNDELIV", "2611281100", "2611281100");
        assert_eq!(
            parse(text.as_bytes()),
            Some(Receipt {
                message_id: "a1b2".into(),
                stat: "UNDELIV"
            })
        );
    }

    #[test]
    fn ignores_words_inside_the_text_part_and_bad_input() {
        assert_eq!(parse(b"hello stat:DELIVRD"), None);
        assert_eq!(parse(b"id:1 stat:BOGUS"), None);
        assert_eq!(parse(b"id: stat:DELIVRD"), None);
        assert_eq!(parse(b"id:1 sub:1 text:stat:DELIVRD"), None);
        assert_eq!(parse(&[0xff, 0xfe]), None);
        let long = format!("id:{} stat:DELIVRD", "9".repeat(65));
        assert_eq!(parse(long.as_bytes()), None);
    }

    #[test]
    fn receipt_esm_class() {
        assert!(is_receipt_esm_class(0x04));
        assert!(!is_receipt_esm_class(0x00));
    }
}
