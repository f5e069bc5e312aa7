//! Field 39 and what each code means for the payment (iso8583-profile.md, "Response codes").

use crate::error::Error;
use std::fmt;

/// A response code of the profile; any other two characters are kept as `Other`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseCode {
    /// 00
    Approved,
    /// 05
    DoNotHonour,
    /// 12
    InvalidTransaction,
    /// 13
    InvalidAmount,
    /// 14
    InvalidAccount,
    /// 30
    FormatError,
    /// 51
    InsufficientFunds,
    /// 57
    NotPermittedToCardholder,
    /// 61
    ExceedsWithdrawalLimit,
    /// 91
    IssuerInoperative,
    /// 94
    DuplicateTransmission,
    /// 96
    SystemMalfunction,
    /// A code outside the profile (two letters, digits or spaces).
    Other([u8; 2]),
}

/// What a response code means for the payment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The debit was made.
    Succeeded,
    /// The debit was refused; nothing to undo.
    Failed,
    /// Failed, but the bank side may be in doubt: send a reversal to be safe (91, 96).
    FailedReverse,
    /// A duplicate transmission (94): the outcome is the original request's.
    AsOriginal,
}

const KNOWN: [(ResponseCode, &str, &str, Outcome); 12] = [
    (ResponseCode::Approved, "00", "approved", Outcome::Succeeded),
    (
        ResponseCode::DoNotHonour,
        "05",
        "do not honour",
        Outcome::Failed,
    ),
    (
        ResponseCode::InvalidTransaction,
        "12",
        "invalid transaction",
        Outcome::Failed,
    ),
    (
        ResponseCode::InvalidAmount,
        "13",
        "invalid amount",
        Outcome::Failed,
    ),
    (
        ResponseCode::InvalidAccount,
        "14",
        "invalid account number",
        Outcome::Failed,
    ),
    (
        ResponseCode::FormatError,
        "30",
        "format error",
        Outcome::Failed,
    ),
    (
        ResponseCode::InsufficientFunds,
        "51",
        "insufficient funds",
        Outcome::Failed,
    ),
    (
        ResponseCode::NotPermittedToCardholder,
        "57",
        "transaction not permitted to account holder",
        Outcome::Failed,
    ),
    (
        ResponseCode::ExceedsWithdrawalLimit,
        "61",
        "exceeds withdrawal amount limit",
        Outcome::Failed,
    ),
    (
        ResponseCode::IssuerInoperative,
        "91",
        "issuer or switch inoperative",
        Outcome::FailedReverse,
    ),
    (
        ResponseCode::DuplicateTransmission,
        "94",
        "duplicate transmission",
        Outcome::AsOriginal,
    ),
    (
        ResponseCode::SystemMalfunction,
        "96",
        "system malfunction",
        Outcome::FailedReverse,
    ),
];

impl ResponseCode {
    /// Reads field 39: exactly two letters, digits or spaces.
    pub fn parse(code: &str) -> Result<ResponseCode, Error> {
        if let Some((known, ..)) = KNOWN.iter().find(|(_, text, ..)| *text == code) {
            return Ok(*known);
        }
        let bytes: [u8; 2] = code.as_bytes().try_into().map_err(|_| Error::BadLength {
            field: 39,
            len: code.len(),
            rule: crate::spec::Length::Fixed(2),
        })?;
        if let Some(offset) = bytes
            .iter()
            .position(|&b| !crate::spec::Charset::An.allows(0, b))
        {
            return Err(Error::BadCharacter {
                field: 39,
                offset,
                charset: crate::spec::Charset::An,
            });
        }
        Ok(ResponseCode::Other(bytes))
    }

    /// The two characters of field 39.
    pub fn as_str(&self) -> &str {
        match self {
            ResponseCode::Other(bytes) => std::str::from_utf8(bytes).unwrap_or("??"),
            known => KNOWN
                .iter()
                .find(|(code, ..)| code == known)
                .map_or("??", |(_, text, ..)| text),
        }
    }

    /// The profile's words for the code ("insufficient funds").
    pub fn meaning(&self) -> &'static str {
        KNOWN
            .iter()
            .find(|(code, ..)| code == self)
            .map_or("unknown response code", |(_, _, meaning, _)| meaning)
    }

    /// What the code means for the payment. A code outside the profile is a refusal, like every
    /// code but 00 in ISO 8583.
    pub fn outcome(&self) -> Outcome {
        KNOWN
            .iter()
            .find(|(code, ..)| code == self)
            .map_or(Outcome::Failed, |(.., outcome)| *outcome)
    }

    pub fn is_approved(&self) -> bool {
        *self == ResponseCode::Approved
    }
}

impl fmt::Display for ResponseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.as_str(), self.meaning())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_profile_code_round_trips_with_its_outcome() {
        for (code, text, _, outcome) in KNOWN {
            assert_eq!(ResponseCode::parse(text), Ok(code));
            assert_eq!(code.as_str(), text);
            assert_eq!(code.outcome(), outcome);
        }
        assert_eq!(
            ResponseCode::parse("91").map(|c| c.outcome()),
            Ok(Outcome::FailedReverse)
        );
        assert_eq!(
            ResponseCode::parse("00").map(|c| c.outcome()),
            Ok(Outcome::Succeeded)
        );
        assert_eq!(
            ResponseCode::parse("94").map(|c| c.outcome()),
            Ok(Outcome::AsOriginal)
        );
        assert_eq!(
            ResponseCode::InsufficientFunds.to_string(),
            "51 (insufficient funds)"
        );
    }

    #[test]
    fn other_codes_are_refusals_and_garbage_is_an_error() {
        let other = ResponseCode::parse("Q1").expect("an 2");
        assert_eq!((other.as_str(), other.outcome()), ("Q1", Outcome::Failed));
        assert!(ResponseCode::parse("0").is_err());
        assert!(ResponseCode::parse("0!").is_err());
    }
}
