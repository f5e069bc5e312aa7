//! Domain newtypes: each is built only through `parse`, so a value that exists is valid
//! (parse, don't validate). Errors name the field.

use crate::secret::mask_account;
use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub reason: String,
}

impl FieldError {
    pub fn new(field: &'static str, reason: impl Into<String>) -> Self {
        Self {
            field,
            reason: reason.into(),
        }
    }
}

/// An amount in minor units, 1..=999_999_999_999 (12 digits, ISO 8583 field 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Amount(i64);

impl Amount {
    pub const MAX_MINOR: i64 = 999_999_999_999;

    pub fn parse(minor: i64) -> Result<Self, FieldError> {
        if (1..=Self::MAX_MINOR).contains(&minor) {
            Ok(Self(minor))
        } else {
            Err(FieldError::new(
                "amount",
                "must be an integer from 1 to 999999999999 (minor units)",
            ))
        }
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// A supported ISO 4217 currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Currency {
    #[serde(rename = "CNY")]
    Cny,
    #[serde(rename = "USD")]
    Usd,
    #[serde(rename = "EUR")]
    Eur,
}

impl Currency {
    pub const ALL: [Currency; 3] = [Currency::Cny, Currency::Usd, Currency::Eur];

    pub fn parse(code: &str) -> Result<Self, FieldError> {
        Self::ALL
            .into_iter()
            .find(|c| c.alpha() == code)
            .ok_or_else(|| FieldError::new("currency", "must be one of CNY, USD, EUR"))
    }

    pub fn from_numeric(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.numeric() == code)
    }

    pub fn alpha(self) -> &'static str {
        match self {
            Currency::Cny => "CNY",
            Currency::Usd => "USD",
            Currency::Eur => "EUR",
        }
    }

    /// ISO 4217 numeric code, as ISO 8583 field 49 carries it.
    pub fn numeric(self) -> &'static str {
        match self {
            Currency::Cny => "156",
            Currency::Usd => "840",
            Currency::Eur => "978",
        }
    }

    pub fn minor_digits(self) -> u32 {
        2
    }

    /// `12.34 CNY` for messages to people.
    pub fn format_amount(self, amount: Amount) -> String {
        let scale = 10i64.pow(self.minor_digits());
        format!(
            "{}.{:0width$} {}",
            amount.minor() / scale,
            amount.minor() % scale,
            self.alpha(),
            width = self.minor_digits() as usize
        )
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.alpha())
    }
}

fn printable(field: &'static str, value: &str, min: usize, max: usize) -> Result<(), FieldError> {
    let n = value.chars().count();
    if n < min || n > max {
        return Err(FieldError::new(
            field,
            format!("must be {min} to {max} characters"),
        ));
    }
    if value.chars().any(|c| c.is_control()) {
        return Err(FieldError::new(
            field,
            "must not contain control characters",
        ));
    }
    Ok(())
}

/// The merchant's order reference, 1..=64 printable characters, unique per merchant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct OrderId(String);

impl OrderId {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        printable("order_id", value, 1, 64)?;
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The customer's identity for online transactions: the actual identity or a free alias.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct OnlineId(String);

impl OnlineId {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        printable("online_id", value.trim(), 1, 64)?;
        Ok(Self(value.trim().to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A mobile or telephone number in international form: digits only, 6..=15 (E.164), a leading
/// `+` accepted and dropped, as are the spaces, hyphens and dots numbers are written with.
#[derive(Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Msisdn(String);

/// Masked, as account numbers are: a customer's number is personal data.
impl fmt::Debug for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Msisdn({})", self.masked())
    }
}

impl Msisdn {
    /// An international number (E.164): the SMS goes out as one (TON 1, NPI 1), so a national
    /// form with its trunk `0`, or an international dialling prefix `00`, would be refused or
    /// misrouted by the SMS center. Country codes never start with 0.
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let value = value.trim();
        let digits: String = value
            .strip_prefix('+')
            .unwrap_or(value)
            .chars()
            .filter(|c| !matches!(c, ' ' | '-' | '.'))
            .collect();
        if (6..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
        {
            Ok(Self(digits))
        } else {
            Err(FieldError::new("msisdn", Self::EXPECTED))
        }
    }

    /// What a number must be, for error messages.
    pub const EXPECTED: &str = "must be an international number: the country code and number, 6 to 15 digits, optionally after a '+'";

    pub fn digits(&self) -> &str {
        &self.0
    }

    /// The last four digits, after the country code's first two when the number is long enough
    /// to hide four or more: enough for customers to know their phone, not to call it. (An
    /// account's mask keeps ten characters, nearly all of a phone number.)
    pub fn masked(&self) -> String {
        let n = self.0.len();
        let head = if n >= 10 { 2 } else { 0 };
        let hidden = n.saturating_sub(head + 4);
        format!(
            "{}{}{}",
            &self.0[..head],
            "*".repeat(hidden),
            &self.0[head + hidden..]
        )
    }
}

/// A bank's institution id as ISO 8583 fields 32 and 100 carry it: 1..=11 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BankId(String);

impl BankId {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        if (1..=11).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
            Ok(Self(value.to_owned()))
        } else {
            Err(FieldError::new("bank", "must be 1 to 11 digits"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BankId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account number (ISO 8583 fields 102/103: ans up to 28). `Debug` and `Display` mask it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AccountNumber(String);

impl AccountNumber {
    pub fn parse(value: &str) -> Result<Self, FieldError> {
        let ok = (1..=28).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(value.to_owned()))
        } else {
            Err(FieldError::new(
                "account",
                "must be 1 to 28 printable ASCII characters without spaces",
            ))
        }
    }

    /// The full number, for the bank link and the database only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn masked(&self) -> String {
        mask_account(&self.0)
    }
}

impl fmt::Debug for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AccountNumber({})", self.masked())
    }
}

impl fmt::Display for AccountNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Payment status, in order; the last three are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    AwaitingCustomer,
    AwaitingCode,
    Processing,
    Succeeded,
    Failed,
    Expired,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwaitingCustomer => "awaiting_customer",
            Self::AwaitingCode => "awaiting_code",
            Self::Processing => "processing",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::AwaitingCustomer,
            Self::AwaitingCode,
            Self::Processing,
            Self::Succeeded,
            Self::Failed,
            Self::Expired,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Expired)
    }
}

/// Why a payment failed, as the merchant API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureCode {
    AuthenticationFailed,
    CodeAttemptsExceeded,
    CodeExpired,
    BankDeclined,
    BankUnavailable,
}

impl FailureCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthenticationFailed => "authentication_failed",
            Self::CodeAttemptsExceeded => "code_attempts_exceeded",
            Self::CodeExpired => "code_expired",
            Self::BankDeclined => "bank_declined",
            Self::BankUnavailable => "bank_unavailable",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::AuthenticationFailed,
            Self::CodeAttemptsExceeded,
            Self::CodeExpired,
            Self::BankDeclined,
            Self::BankUnavailable,
        ]
        .into_iter()
        .find(|s| s.as_str() == value)
    }
}

/// Kinds of registered customer terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalKind {
    Mobile,
    Telephone,
    Pager,
    Pda,
    Dedicated,
}

impl TerminalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mobile => "mobile",
            Self::Telephone => "telephone",
            Self::Pager => "pager",
            Self::Pda => "pda",
            Self::Dedicated => "dedicated",
        }
    }

    pub fn parse(value: &str) -> Result<Self, FieldError> {
        [
            Self::Mobile,
            Self::Telephone,
            Self::Pager,
            Self::Pda,
            Self::Dedicated,
        ]
        .into_iter()
        .find(|k| k.as_str() == value)
        .ok_or_else(|| {
            FieldError::new(
                "kind",
                "must be one of mobile, telephone, pager, pda, dedicated",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_bounds() {
        assert!(Amount::parse(0).is_err());
        assert!(Amount::parse(1).is_ok());
        assert!(Amount::parse(999_999_999_999).is_ok());
        assert!(Amount::parse(1_000_000_000_000).is_err());
        assert!(Amount::parse(-5).is_err());
    }

    #[test]
    fn currency_codes() {
        assert_eq!(Currency::parse("CNY"), Ok(Currency::Cny));
        assert_eq!(Currency::parse("cny").unwrap_err().field, "currency");
        assert_eq!(Currency::from_numeric("978"), Some(Currency::Eur));
        assert_eq!(
            Currency::Cny.format_amount(Amount::parse(1234).unwrap()),
            "12.34 CNY"
        );
        assert_eq!(
            Currency::Usd.format_amount(Amount::parse(5).unwrap()),
            "0.05 USD"
        );
    }

    #[test]
    fn order_id_limits() {
        assert!(OrderId::parse("").is_err());
        assert!(OrderId::parse(&"x".repeat(64)).is_ok());
        assert!(OrderId::parse(&"x".repeat(65)).is_err());
        assert!(OrderId::parse("a\nb").is_err());
    }

    #[test]
    fn msisdn_and_bank_and_account() {
        assert_eq!(
            Msisdn::parse("+8613800138000").unwrap().digits(),
            "8613800138000"
        );
        assert!(Msisdn::parse("12ab").is_err());
        // National (trunk 0) and dialled-prefix (00) forms are not international numbers.
        assert!(Msisdn::parse("07700900123").is_err());
        assert!(Msisdn::parse("+00447700900123").is_err());
        assert!(Msisdn::parse("447700900123").is_ok());
        for written in [
            "+86 138 0013 8000",
            "86-138-0013-8000",
            " +86.138.0013.8000 ",
        ] {
            assert_eq!(Msisdn::parse(written).unwrap().digits(), "8613800138000");
        }
        assert!(Msisdn::parse("+ 0 86 138").is_err());
        let masked = |n: &str| Msisdn::parse(n).unwrap().masked();
        assert_eq!(masked("8613800138000"), "86*******8000");
        assert_eq!(masked("+12025550123"), "12*****0123");
        assert_eq!(masked("447700"), "**7700");
        assert!(Msisdn::parse("86 138 0013 8000 x").is_err());
        assert!(BankId::parse("0001").is_ok());
        assert!(BankId::parse("000100010001").is_err());
        let acct = AccountNumber::parse("6222000011112222").unwrap();
        assert_eq!(format!("{acct:?}"), "AccountNumber(622200******2222)");
        assert!(!format!("{acct}").contains("00001111"));
    }

    #[test]
    fn statuses_round_trip() {
        for s in [
            "awaiting_customer",
            "awaiting_code",
            "processing",
            "succeeded",
            "failed",
            "expired",
        ] {
            assert_eq!(PaymentStatus::parse(s).unwrap().as_str(), s);
        }
        assert!(PaymentStatus::Expired.is_final());
        assert!(!PaymentStatus::Processing.is_final());
    }
}
