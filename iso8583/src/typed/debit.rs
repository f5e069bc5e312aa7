//! 0200 → 0210: the debit request and its answer.

use super::network::response_code_of;
use super::{
    ResponseCode, check_transmission_time, echo, set_number, set_padded, stan_text, typed_message,
};
use crate::error::Error;
use crate::mask::Shown;
use crate::message::Message;
use std::fmt;

/// The processing code of a debit for goods and services (field 3).
pub const PROCESSING_DEBIT: &str = "000000";

/// What the gateway asks a bank to do, in its own terms; `DebitRequest::new` turns it into a
/// checked 0200. Fixed text fields (41, 42, 43) may be shorter than their length: they are
/// right-padded with spaces; longer is an error.
#[derive(Clone, Copy)]
pub struct Debit<'a> {
    /// Field 4, in minor units (at most 12 digits).
    pub amount_minor: u64,
    /// Field 49, ISO 4217 numeric (156 CNY, 840 USD, 978 EUR).
    pub currency: u16,
    /// Field 11 (at most 6 digits).
    pub stan: u32,
    /// Field 7, MMDDhhmmss in UTC.
    pub transmitted_at: &'a str,
    /// Field 12, hhmmss.
    pub local_time: &'a str,
    /// Field 13, MMDD.
    pub local_date: &'a str,
    /// Field 32, the gateway's institution id (up to 11 digits).
    pub acquirer_id: &'a str,
    /// Field 37, unique per payment: the idempotency key of the debit.
    pub rrn: &'a str,
    /// Field 41.
    pub terminal_id: &'a str,
    /// Field 42.
    pub merchant_id: &'a str,
    /// Field 43.
    pub merchant_name_location: &'a str,
    /// Field 100, the payer's bank (up to 11 digits).
    pub payer_bank: &'a str,
    /// Field 102.
    pub payer_account: &'a str,
    /// Field 103, the merchant's settlement account.
    pub payee_account: &'a str,
}

/// Accounts are masked, as everywhere.
impl fmt::Debug for Debit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Debit")
            .field("amount_minor", &self.amount_minor)
            .field("currency", &self.currency)
            .field("stan", &self.stan)
            .field("rrn", &self.rrn)
            .field("payer_bank", &self.payer_bank)
            .field(
                "payer_account",
                &Shown::Masked(self.payer_account).to_string(),
            )
            .field(
                "payee_account",
                &Shown::Masked(self.payee_account).to_string(),
            )
            .finish_non_exhaustive()
    }
}

typed_message!(
    /// 0200: fields 3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 43, 49, 100, 102, 103.
    DebitRequest,
    mtis: ["0200"],
    mandatory: [3, 4, 7, 11, 12, 13, 32, 37, 41, 42, 43, 49, 100, 102, 103]
);

impl DebitRequest {
    pub fn new(debit: &Debit<'_>) -> Result<DebitRequest, Error> {
        let mut m = Message::new("0200")?;
        m.set(3, PROCESSING_DEBIT)?;
        set_number(
            &mut m,
            4,
            debit.amount_minor,
            "amount has at most 12 digits",
        )?;
        m.set(7, debit.transmitted_at)?
            .set(11, &stan_text(debit.stan)?)?
            .set(12, debit.local_time)?
            .set(13, debit.local_date)?
            .set(32, debit.acquirer_id)?
            .set(37, debit.rrn)?;
        set_padded(&mut m, 41, debit.terminal_id)?;
        set_padded(&mut m, 42, debit.merchant_id)?;
        set_padded(&mut m, 43, debit.merchant_name_location)?;
        set_number(
            &mut m,
            49,
            u64::from(debit.currency),
            "currency has 3 digits",
        )?;
        m.set(100, debit.payer_bank)?
            .set(102, debit.payer_account)?
            .set(103, debit.payee_account)?;
        m.try_into()
    }

    /// Field 4 in minor units.
    pub fn amount_minor(&self) -> u64 {
        amount_of(&self.0).unwrap_or_default()
    }

    /// Field 49.
    pub fn currency(&self) -> &str {
        self.0.get(49).unwrap_or_default()
    }

    /// Field 37.
    pub fn rrn(&self) -> &str {
        self.0.get(37).unwrap_or_default()
    }

    /// Field 100.
    pub fn payer_bank(&self) -> &str {
        self.0.get(100).unwrap_or_default()
    }

    /// Field 102.
    pub fn payer_account(&self) -> &str {
        self.0.get(102).unwrap_or_default()
    }

    /// Field 103.
    pub fn payee_account(&self) -> &str {
        self.0.get(103).unwrap_or_default()
    }

    /// The 0210 answer: fields 4, 7, 11, 32, 37, 41, 42, 49 echoed, field 39 `code`, field 38
    /// `approval_code` (required when approved).
    pub fn answer(
        &self,
        code: ResponseCode,
        approval_code: Option<&str>,
    ) -> Result<DebitResponse, Error> {
        let mut m = Message::new("0210")?;
        echo(&self.0, &mut m, &[4, 7, 11, 32, 37, 41, 42, 49])?;
        if let Some(approval) = approval_code {
            set_padded(&mut m, 38, approval)?;
        }
        m.set(39, code.as_str())?;
        m.try_into()
    }

    fn check(m: &Message) -> Result<(), Error> {
        check_transmission_time(m)
    }
}

typed_message!(
    /// 0210: fields 11, 37, 39 at least (38 when approved); a bank echoes 4, 7, 32, 41, 42, 49.
    DebitResponse,
    mtis: ["0210"],
    mandatory: [11, 37, 39]
);

impl DebitResponse {
    pub fn response_code(&self) -> ResponseCode {
        response_code_of(&self.0)
    }

    /// Field 38, present when approved.
    pub fn approval_code(&self) -> Option<&str> {
        self.0.get(38)
    }

    /// Field 37.
    pub fn rrn(&self) -> &str {
        self.0.get(37).unwrap_or_default()
    }

    /// Field 4, if the bank echoed it.
    pub fn amount_minor(&self) -> Option<u64> {
        amount_of(&self.0)
    }

    fn check(m: &Message) -> Result<(), Error> {
        let code = ResponseCode::parse(m.get(39).unwrap_or_default())?;
        if code.is_approved() && !m.has(38) {
            return Err(Error::MissingField {
                field: 38,
                mti: crate::error::Mti(*b"0210"),
            });
        }
        Ok(())
    }
}

pub(super) fn amount_of(m: &Message) -> Option<u64> {
    m.get(4).and_then(|a| a.parse().ok())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn book_shop() -> Debit<'static> {
        Debit {
            amount_minor: 1234,
            currency: 156,
            stan: 2,
            transmitted_at: "1128101010",
            local_time: "101010",
            local_date: "1128",
            acquirer_id: "99990001",
            rrn: "PH0000000001",
            terminal_id: "TERM0001",
            merchant_id: "MERCHANT0000001",
            merchant_name_location: "Book Shop                Beijing      CN",
            payer_bank: "0001",
            payer_account: "6222000011112222",
            payee_account: "6222000099990000",
        }
    }

    #[test]
    fn builds_the_debit_vector_and_its_answers() {
        let req = DebitRequest::new(&book_shop()).expect("valid");
        assert_eq!(req.amount_minor(), 1234);
        assert_eq!(
            (req.rrn(), req.stan(), req.payer_bank()),
            ("PH0000000001", "000002", "0001")
        );
        let approved = req
            .answer(ResponseCode::Approved, Some("000731"))
            .expect("valid");
        assert_eq!(approved.approval_code(), Some("000731"));
        assert_eq!(approved.amount_minor(), Some(1234));
        let declined = req
            .answer(ResponseCode::InsufficientFunds, None)
            .expect("valid");
        assert_eq!(declined.response_code(), ResponseCode::InsufficientFunds);
        assert!(matches!(
            req.answer(ResponseCode::Approved, None),
            Err(Error::MissingField { field: 38, .. })
        ));
    }

    #[test]
    fn pads_short_text_and_rejects_bad_values() {
        let short = Debit {
            terminal_id: "T1",
            merchant_name_location: "Shop",
            ..book_shop()
        };
        let req = DebitRequest::new(&short).expect("valid");
        assert_eq!(req.get(41), Some("T1      "));
        assert_eq!(req.get(43).map(str::len), Some(40));
        let cases = [
            (
                Debit {
                    amount_minor: 1_000_000_000_000,
                    ..book_shop()
                },
                4,
            ),
            (
                Debit {
                    currency: 1560,
                    ..book_shop()
                },
                49,
            ),
            (
                Debit {
                    payer_account: "62220000111122223333444455556",
                    ..book_shop()
                },
                102,
            ),
            (
                Debit {
                    acquirer_id: "9999X001",
                    ..book_shop()
                },
                32,
            ),
            (
                Debit {
                    rrn: "PH-000000001",
                    ..book_shop()
                },
                37,
            ),
            (
                Debit {
                    local_date: "112",
                    ..book_shop()
                },
                13,
            ),
        ];
        for (debit, field) in cases {
            let err = DebitRequest::new(&debit).expect_err("invalid");
            assert_eq!(err.field(), Some(field), "{err}");
        }
        let text = format!("{:?}", book_shop());
        assert!(!text.contains("6222000011112222"), "{text}");
    }
}
