//! The messages the gateway sends on a bank link (iso8583-profile.md), built from payhub's types,
//! and the few facts it reads back from the answers.

use super::reversals::ReversalRecord;
use crate::messages::DebitRequest;
use chrono::{DateTime, Datelike, Timelike, Utc};
use payhub_iso8583::Message;

/// Network management codes (field 70).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkCode {
    SignOn,
    SignOff,
    Echo,
}

impl NetworkCode {
    /// Field 70 of a network management request; `None` for a code the profile does not name.
    pub fn parse(field_70: &str) -> Option<Self> {
        [Self::SignOn, Self::SignOff, Self::Echo]
            .into_iter()
            .find(|code| code.as_str() == field_70)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SignOn => "001",
            Self::SignOff => "002",
            Self::Echo => "301",
        }
    }
}

/// The class digit that pairs a request with its response: `0200`/`0210` → `b'2'`,
/// `0420`/`0421`/`0430` → `b'4'`, `0800`/`0810` → `b'8'`.
pub fn mti_class(mti: &str) -> u8 {
    mti.as_bytes().get(1).copied().unwrap_or(0)
}

/// Whether the MTI is a response (function digit 1 or 3: 0210, 0430, 0810).
pub fn is_response(mti: &str) -> bool {
    matches!(mti.as_bytes().get(2), Some(b'1' | b'3'))
}

/// Field 7, MMDDhhmmss in UTC.
pub fn transmission_time(now: DateTime<Utc>) -> String {
    format!(
        "{:02}{:02}{:02}{:02}{:02}",
        now.month(),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

fn fixed(value: &str, len: usize) -> String {
    let mut out = String::with_capacity(len);
    let mut taken = 0;
    for c in value.chars().take(len) {
        out.push(c);
        taken += 1;
    }
    out.extend(std::iter::repeat_n(' ', len - taken));
    out
}

/// Why a message could not be built: a value the profile refuses (names the field).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot build {mti}: {source}")]
pub struct BuildError {
    pub mti: &'static str,
    pub source: payhub_iso8583::Error,
}

fn build(mti: &'static str, fields: &[(u8, &str)]) -> Result<Message, BuildError> {
    let wrap = |source| BuildError { mti, source };
    let mut message = Message::new(mti).map_err(wrap)?;
    for (field, value) in fields {
        message.set(*field, value).map_err(wrap)?;
    }
    Ok(message)
}

/// The 0200 debit request.
pub fn debit_request(
    request: &DebitRequest,
    stan: &str,
    now: DateTime<Utc>,
    institution_id: &str,
) -> Result<Message, BuildError> {
    let f7 = transmission_time(now);
    let amount = format!("{:012}", request.amount.minor());
    // Fields 12 and 13 are the acceptor's local time: the gateway host's time zone. Field 7 is
    // in UTC, as ISO 8583 has it.
    let local = now.with_timezone(&chrono::Local);
    let local_time = format!(
        "{:02}{:02}{:02}",
        local.hour(),
        local.minute(),
        local.second()
    );
    let local_date = format!("{:02}{:02}", local.month(), local.day());
    build(
        "0200",
        &[
            (3, "000000"),
            (4, &amount),
            (7, &f7),
            (11, stan),
            (12, &local_time),
            (13, &local_date),
            (32, institution_id),
            (37, &request.rrn),
            (41, &fixed(&request.terminal_id, 8)),
            (42, &fixed(&request.card_acceptor_id, 15)),
            (43, &fixed(&request.merchant_name_location, 40)),
            (49, request.currency.numeric()),
            (100, request.payer_bank.as_str()),
            (102, request.payer_account.expose()),
            (103, request.payee_account.expose()),
        ],
    )
}

/// The 0420 (first send) or 0421 (repeat) reversal advice.
pub fn reversal_advice(
    record: &ReversalRecord,
    repeat: bool,
    stan: &str,
    now: DateTime<Utc>,
    institution_id: &str,
) -> Result<Message, BuildError> {
    let mti = if repeat { "0421" } else { "0420" };
    build(
        mti,
        &[
            (4, &format!("{:012}", record.amount_minor)),
            (7, &transmission_time(now)),
            (11, stan),
            (32, institution_id),
            (37, &record.rrn),
            (49, &record.currency_numeric),
            (90, &record.original_data_elements()),
        ],
    )
}

/// A 0800 network management request.
pub fn network_request(
    code: NetworkCode,
    stan: &str,
    now: DateTime<Utc>,
) -> Result<Message, BuildError> {
    build(
        "0800",
        &[
            (7, &transmission_time(now)),
            (11, stan),
            (70, code.as_str()),
        ],
    )
}

/// The 0810 answer, with field 39 `response_code`, to a network management request the BIPS
/// sends us (e.g. its own echo).
pub fn network_answer(request: &Message, response_code: &str) -> Result<Message, BuildError> {
    let mut fields = vec![(39u8, response_code)];
    for field in [7u8, 11, 70] {
        if let Some(value) = request.get(field) {
            fields.push((field, value));
        }
    }
    fields.sort_by_key(|(f, _)| *f);
    build("0810", &fields)
}

/// The STAN of a message, when field 11 is present and numeric.
pub fn stan_of(message: &Message) -> Option<u32> {
    message.get(11).and_then(|s| s.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AccountNumber, Amount, BankId, Currency};
    use chrono::TimeZone;

    pub fn request() -> DebitRequest {
        DebitRequest {
            payment_id: "pay_1".into(),
            rrn: "000000000042".into(),
            amount: Amount::parse(1234).unwrap(),
            currency: Currency::Cny,
            payer_bank: BankId::parse("0001").unwrap(),
            payer_account: AccountNumber::parse("6222000011112222").unwrap(),
            payee_account: AccountNumber::parse("6222000099990000").unwrap(),
            terminal_id: "T1".into(),
            card_acceptor_id: "M1".into(),
            merchant_name_location: "Book Shop".into(),
        }
    }

    #[test]
    fn builds_a_0200_that_round_trips() {
        let now = Utc.with_ymd_and_hms(2026, 11, 28, 9, 5, 7).unwrap();
        let m = debit_request(&request(), "000007", now, "99990001").unwrap();
        let back = Message::unpack(&m.pack().unwrap()).unwrap();
        assert_eq!(back.get(4), Some("000000001234"));
        assert_eq!(back.get(7), Some("1128090507"));
        let local = now.with_timezone(&chrono::Local);
        assert_eq!(
            back.get(12),
            Some(local.format("%H%M%S").to_string().as_str())
        );
        assert_eq!(
            back.get(13),
            Some(local.format("%m%d").to_string().as_str())
        );
        assert_eq!(back.get(3), Some("000000"));
        assert_eq!(back.get(11), Some("000007"));
        assert_eq!(back.get(32), Some("99990001"));
        assert_eq!(back.get(37), Some("000000000042"));
        assert_eq!(back.get(41), Some("T1      "));
        assert_eq!(back.get(42), Some(format!("{:<15}", "M1").as_str()));
        assert_eq!(back.get(43), Some(format!("{:<40}", "Book Shop").as_str()));
        assert_eq!(back.get(49), Some("156"));
        assert_eq!(back.get(100), Some("0001"));
        assert_eq!(back.get(102), Some("6222000011112222"));
        assert_eq!(back.get(103), Some("6222000099990000"));
        // Nothing the profile does not list for a 0200 (no field 39, no MAC on this link).
        for absent in [2u8, 14, 22, 38, 39, 64, 90, 128] {
            assert_eq!(back.get(absent), None, "field {absent}");
        }
        assert_eq!(mti_class(back.mti()), b'2');
        assert!(!is_response(back.mti()));
        assert!(is_response("0430"));
    }
}
