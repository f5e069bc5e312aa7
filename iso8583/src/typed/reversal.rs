//! 0420/0421 → 0430: reversal advice (repeated as 0421 until answered) and its answer.

use super::debit::amount_of;
use super::network::response_code_of;
use super::{
    DebitRequest, ResponseCode, check_transmission_time, echo, set_number, stan_text, typed_message,
};
use crate::error::Error;
use crate::message::Message;

/// What identifies the original request in field 90: its MTI, STAN, field 7 and field 32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OriginalData<'a> {
    pub mti: &'a str,
    pub stan: &'a str,
    pub transmitted_at: &'a str,
    pub acquirer_id: &'a str,
}

impl<'a> OriginalData<'a> {
    pub fn of(debit: &'a DebitRequest) -> OriginalData<'a> {
        OriginalData {
            mti: debit.mti(),
            stan: debit.stan(),
            transmitted_at: debit.get(7).unwrap_or_default(),
            acquirer_id: debit.get(32).unwrap_or_default(),
        }
    }

    /// Field 90: MTI(4) STAN(6) field 7(10) field 32 right-justified zero-filled(11) 11 zeros.
    pub fn field_90(&self) -> Result<String, Error> {
        let parts = [(self.mti, 4), (self.stan, 6), (self.transmitted_at, 10)];
        if parts.iter().any(|(part, len)| part.len() != *len) || self.acquirer_id.len() > 11 {
            return Err(Error::BadValue {
                field: 90,
                reason: "original MTI, STAN, time or institution id of the wrong length",
            });
        }
        Ok(format!(
            "{}{}{}{:0>11}00000000000",
            self.mti, self.stan, self.transmitted_at, self.acquirer_id
        ))
    }
}

/// A reversal of a debit, for when only stored data is at hand (after a restart).
#[derive(Clone, Copy, Debug)]
pub struct Reversal<'a> {
    /// `false`: 0420, the first time; `true`: 0421, a repeat.
    pub repeat: bool,
    /// Field 4 of the original, minor units.
    pub amount_minor: u64,
    /// Field 49 of the original.
    pub currency: u16,
    /// Field 11 of this advice (a new STAN each time it is sent).
    pub stan: u32,
    /// Field 7 of this advice, MMDDhhmmss UTC.
    pub transmitted_at: &'a str,
    /// Field 32.
    pub acquirer_id: &'a str,
    /// Field 37 of the original.
    pub rrn: &'a str,
    pub original: OriginalData<'a>,
}

typed_message!(
    /// 0420 or 0421: fields 4, 7, 11, 32, 37, 49, 90.
    ReversalAdvice,
    mtis: ["0420", "0421"],
    mandatory: [4, 7, 11, 32, 37, 49, 90]
);

impl ReversalAdvice {
    pub fn new(reversal: &Reversal<'_>) -> Result<ReversalAdvice, Error> {
        let mut m = Message::new(if reversal.repeat { "0421" } else { "0420" })?;
        set_number(
            &mut m,
            4,
            reversal.amount_minor,
            "amount has at most 12 digits",
        )?;
        m.set(7, reversal.transmitted_at)?
            .set(11, &stan_text(reversal.stan)?)?
            .set(32, reversal.acquirer_id)?
            .set(37, reversal.rrn)?;
        set_number(
            &mut m,
            49,
            u64::from(reversal.currency),
            "currency has 3 digits",
        )?;
        m.set(90, &reversal.original.field_90()?)?;
        m.try_into()
    }

    /// The 0420 that undoes `debit`, sent with its own `stan` and `transmitted_at`.
    pub fn for_debit(
        debit: &DebitRequest,
        stan: u32,
        transmitted_at: &str,
    ) -> Result<ReversalAdvice, Error> {
        let mut m = Message::new("0420")?;
        echo(debit, &mut m, &[4, 32, 37, 49])?;
        m.set(7, transmitted_at)?
            .set(11, &stan_text(stan)?)?
            .set(90, &OriginalData::of(debit).field_90()?)?;
        m.try_into()
    }

    /// The same advice as a repeat (0421) with a new STAN and time.
    pub fn repeat(&self, stan: u32, transmitted_at: &str) -> Result<ReversalAdvice, Error> {
        let mut m = self.0.clone();
        m.set_mti("0421")?
            .set(7, transmitted_at)?
            .set(11, &stan_text(stan)?)?;
        m.try_into()
    }

    /// Whether this is a repeat (0421).
    pub fn is_repeat(&self) -> bool {
        self.0.mti() == "0421"
    }

    /// Field 37 of the debit to undo.
    pub fn rrn(&self) -> &str {
        self.0.get(37).unwrap_or_default()
    }

    /// Field 4 in minor units.
    pub fn amount_minor(&self) -> u64 {
        amount_of(&self.0).unwrap_or_default()
    }

    /// Field 90.
    pub fn original_data(&self) -> &str {
        self.0.get(90).unwrap_or_default()
    }

    /// The 0430 answer: fields 4, 7, 11, 32, 37, 49, 90 echoed, field 39 `code`.
    pub fn answer(&self, code: ResponseCode) -> Result<ReversalResponse, Error> {
        let mut m = Message::new("0430")?;
        echo(&self.0, &mut m, &[4, 7, 11, 32, 37, 49, 90])?;
        m.set(39, code.as_str())?;
        m.try_into()
    }

    fn check(m: &Message) -> Result<(), Error> {
        check_transmission_time(m)
    }
}

typed_message!(
    /// 0430: fields 11, 37, 39 at least; a bank echoes 4, 7, 32, 49, 90.
    ReversalResponse,
    mtis: ["0430"],
    mandatory: [11, 37, 39]
);

impl ReversalResponse {
    pub fn response_code(&self) -> ResponseCode {
        response_code_of(&self.0)
    }

    /// Field 37.
    pub fn rrn(&self) -> &str {
        self.0.get(37).unwrap_or_default()
    }

    fn check(m: &Message) -> Result<(), Error> {
        ResponseCode::parse(m.get(39).unwrap_or_default()).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typed::debit::tests::book_shop;

    #[test]
    fn reversal_of_the_debit_vector() {
        let debit = DebitRequest::new(&book_shop()).expect("valid");
        let advice = ReversalAdvice::for_debit(&debit, 3, "1128101040").expect("valid");
        assert_eq!(
            advice.original_data(),
            "020000000211281010100009999000100000000000"
        );
        let stored = ReversalAdvice::new(&Reversal {
            repeat: false,
            amount_minor: 1234,
            currency: 156,
            stan: 3,
            transmitted_at: "1128101040",
            acquirer_id: "99990001",
            rrn: "PH0000000001",
            original: OriginalData {
                mti: "0200",
                stan: "000002",
                transmitted_at: "1128101010",
                acquirer_id: "99990001",
            },
        })
        .expect("valid");
        assert_eq!(stored, advice);
        let repeat = advice.repeat(4, "1128101110").expect("valid");
        assert!(repeat.is_repeat() && !advice.is_repeat());
        assert_eq!((repeat.stan(), repeat.rrn()), ("000004", "PH0000000001"));
        let answer = repeat.answer(ResponseCode::Approved).expect("valid");
        assert!(answer.response_code().is_approved());
        assert_eq!(answer.get(90), Some(advice.original_data()));
    }

    #[test]
    fn field_90_parts_must_have_their_lengths() {
        let original = OriginalData {
            mti: "0200",
            stan: "2",
            transmitted_at: "1128101010",
            acquirer_id: "99990001",
        };
        assert!(matches!(
            original.field_90(),
            Err(Error::BadValue { field: 90, .. })
        ));
    }
}
