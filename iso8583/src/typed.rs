//! The messages the gateway and a bank information processing system exchange, as types that can
//! only hold a message of the right MTI with the fields the profile requires (parse, don't
//! validate). Build them with their constructors, or check a received [`Message`] with
//! `TryFrom`/[`BankMessage::classify`]. Each derefs to its [`Message`] for reading and packing.

mod debit;
mod network;
mod response_code;
mod reversal;

pub use debit::{Debit, DebitRequest, DebitResponse};
pub use network::{NetworkCode, NetworkRequest, NetworkResponse};
pub use response_code::{Outcome, ResponseCode};
pub use reversal::{OriginalData, Reversal, ReversalAdvice, ReversalResponse};

use crate::error::{Error, Mti};
use crate::message::Message;
use crate::spec::{Charset, Length, spec};

/// Any message of the profile, sorted by type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BankMessage {
    DebitRequest(DebitRequest),
    DebitResponse(DebitResponse),
    ReversalAdvice(ReversalAdvice),
    ReversalResponse(ReversalResponse),
    NetworkRequest(NetworkRequest),
    NetworkResponse(NetworkResponse),
}

impl BankMessage {
    /// Checks `message` as the type its MTI names; an MTI outside the profile is an error.
    pub fn classify(message: Message) -> Result<BankMessage, Error> {
        Ok(match message.mti() {
            "0200" => BankMessage::DebitRequest(message.try_into()?),
            "0210" => BankMessage::DebitResponse(message.try_into()?),
            "0420" | "0421" => BankMessage::ReversalAdvice(message.try_into()?),
            "0430" => BankMessage::ReversalResponse(message.try_into()?),
            "0800" => BankMessage::NetworkRequest(message.try_into()?),
            "0810" => BankMessage::NetworkResponse(message.try_into()?),
            _ => {
                return Err(Error::UnexpectedMti {
                    found: mti_of(&message),
                    expected: "one of 0200 0210 0420 0421 0430 0800 0810",
                });
            }
        })
    }

    /// The message underneath.
    pub fn message(&self) -> &Message {
        match self {
            BankMessage::DebitRequest(m) => m,
            BankMessage::DebitResponse(m) => m,
            BankMessage::ReversalAdvice(m) => m,
            BankMessage::ReversalResponse(m) => m,
            BankMessage::NetworkRequest(m) => m,
            BankMessage::NetworkResponse(m) => m,
        }
    }
}

/// The MTI that answers a request MTI (0200 → 0210, 0420/0421 → 0430, 0800 → 0810): with field
/// 11 it is the key that matches a response to its outstanding request.
pub fn response_mti(request_mti: &str) -> Option<&'static str> {
    match request_mti {
        "0200" => Some("0210"),
        "0420" | "0421" => Some("0430"),
        "0800" => Some("0810"),
        _ => None,
    }
}

/// Defines a typed wrapper: the MTIs it accepts, the fields it must carry, and `TryFrom<Message>`,
/// `Deref<Target = Message>`, `into_message`, `stan` for it. Extra checks go in `check`.
macro_rules! typed_message {
    ($(#[$doc:meta])* $name:ident, mtis: [$($mti:literal),+], mandatory: [$($field:literal),+]) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq)]
        pub struct $name(Message);

        impl $name {
            /// The fields this message must carry.
            pub const MANDATORY: &'static [u8] = &[$($field),+];

            /// The message, to pack or change freely (it is no longer checked).
            pub fn into_message(self) -> Message {
                self.0
            }

            /// Field 11, the system trace audit number (6 digits).
            pub fn stan(&self) -> &str {
                self.0.get(11).unwrap_or_default()
            }
        }

        impl TryFrom<Message> for $name {
            type Error = Error;

            fn try_from(message: Message) -> Result<$name, Error> {
                $crate::typed::expect_mti(&message, &[$($mti),+], concat!($($mti, " "),+))?;
                $crate::typed::expect_fields(&message, $name::MANDATORY)?;
                $name::check(&message)?;
                Ok($name(message))
            }
        }

        impl std::ops::Deref for $name {
            type Target = Message;

            fn deref(&self) -> &Message {
                &self.0
            }
        }

        impl From<$name> for Message {
            fn from(typed: $name) -> Message {
                typed.0
            }
        }
    };
}
pub(crate) use typed_message;

fn mti_of(message: &Message) -> Mti {
    let mut mti = [b'?'; 4];
    for (slot, b) in mti.iter_mut().zip(message.mti().bytes()) {
        *slot = b;
    }
    Mti(mti)
}

pub(crate) fn expect_mti(
    message: &Message,
    mtis: &[&str],
    expected: &'static str,
) -> Result<(), Error> {
    if mtis.contains(&message.mti()) {
        Ok(())
    } else {
        Err(Error::UnexpectedMti {
            found: mti_of(message),
            expected: expected.trim_end(),
        })
    }
}

pub(crate) fn expect_fields(message: &Message, fields: &[u8]) -> Result<(), Error> {
    match fields.iter().find(|&&f| !message.has(f)) {
        None => Ok(()),
        Some(&field) => Err(Error::MissingField {
            field,
            mti: mti_of(message),
        }),
    }
}

/// Sets a fixed field from a shorter value, padded as the profile says: numeric on the left with
/// '0', alphanumeric on the right with spaces. Variable fields are set as they are.
pub(crate) fn set_padded(message: &mut Message, field: u8, value: &str) -> Result<(), Error> {
    let Some(spec) = spec(field) else {
        return Err(Error::UnknownField { field });
    };
    let Length::Fixed(len) = spec.length else {
        message.set(field, value)?;
        return Ok(());
    };
    let len = usize::from(len);
    if value.len() >= len {
        message.set(field, value)?;
        return Ok(());
    }
    let padded = match spec.charset {
        Charset::N => format!("{value:0>len$}"),
        _ => format!("{value:<len$}"),
    };
    message.set(field, &padded)?;
    Ok(())
}

/// A number as a fixed numeric field, `BadValue` when it has too many digits.
pub(crate) fn set_number(
    message: &mut Message,
    field: u8,
    n: u64,
    reason: &'static str,
) -> Result<(), Error> {
    let digits = spec(field).map_or(0, |s| s.length.max());
    let text = format!("{n:0digits$}");
    if text.len() > digits {
        return Err(Error::BadValue { field, reason });
    }
    message.set(field, &text)?;
    Ok(())
}

/// Copies `fields` (those present) from one message to another.
pub(crate) fn echo(from: &Message, to: &mut Message, fields: &[u8]) -> Result<(), Error> {
    for &field in fields {
        if let Some(value) = from.get(field) {
            to.set(field, value)?;
        }
    }
    Ok(())
}

/// Field 7 (MMDDhhmmss) must name a real month, day and time of day.
pub(crate) fn check_transmission_time(message: &Message) -> Result<(), Error> {
    let Some(value) = message.get(7) else {
        return Ok(());
    };
    let part = |range: std::ops::Range<usize>| {
        value
            .get(range)
            .and_then(|s| s.parse::<u8>().ok())
            .unwrap_or(u8::MAX)
    };
    let valid = (1..=12).contains(&part(0..2))
        && (1..=31).contains(&part(2..4))
        && part(4..6) <= 23
        && part(6..8) <= 59
        && part(8..10) <= 59;
    if valid {
        Ok(())
    } else {
        Err(Error::BadValue {
            field: 7,
            reason: "not a date and time MMDDhhmmss",
        })
    }
}

/// Field 11 as a number.
pub(crate) fn stan_text(stan: u32) -> Result<String, Error> {
    if stan > 999_999 {
        return Err(Error::BadValue {
            field: 11,
            reason: "STAN has at most 6 digits",
        });
    }
    Ok(format!("{stan:06}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_sorts_by_mti_and_rejects_others() {
        let echo = NetworkRequest::new(NetworkCode::Echo, 7, "1128101010").expect("valid");
        let m = Message::unpack(&echo.pack().expect("pack")).expect("unpack");
        assert!(matches!(
            BankMessage::classify(m),
            Ok(BankMessage::NetworkRequest(_))
        ));
        let other = Message::new("0100").expect("mti");
        assert!(matches!(
            BankMessage::classify(other),
            Err(Error::UnexpectedMti { .. })
        ));
        let missing = Message::new("0800")
            .and_then(|m| m.with(70, "301"))
            .expect("valid");
        assert!(matches!(
            BankMessage::classify(missing),
            Err(Error::MissingField { field: 7, .. })
        ));
    }

    #[test]
    fn response_mtis() {
        assert_eq!(response_mti("0200"), Some("0210"));
        assert_eq!(response_mti("0421"), Some("0430"));
        assert_eq!(response_mti("0800"), Some("0810"));
        assert_eq!(response_mti("0210"), None);
    }
}
