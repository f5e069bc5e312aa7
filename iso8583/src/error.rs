//! One error type for the codec: every variant names where (the field number; 0 is the MTI, 1 the
//! bitmap) and why, so a bad message from a peer can be logged and answered in one line.

use crate::spec::{Charset, Length, field_name};
use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The bytes ended inside this field (or its length prefix).
    #[error("{}: truncated, the message ends inside it", Loc(*field))]
    Truncated { field: u8 },
    /// An LLVAR/LLLVAR length prefix that is not all digits.
    #[error("{}: bad length prefix, not all digits", Loc(*field))]
    BadLengthPrefix { field: u8 },
    /// A value (or a length prefix's value) of a length the spec does not allow.
    #[error("{}: length {len}, must be {rule}", Loc(*field))]
    BadLength { field: u8, len: usize, rule: Length },
    /// A character outside the field's class; `offset` counts from the start of the value.
    #[error(
        "{}: bad character at offset {offset}, not allowed in an {} field",
        Loc(*field),
        charset.abbreviation()
    )]
    BadCharacter {
        field: u8,
        offset: usize,
        charset: Charset,
    },
    /// A field number the profile does not define (or outside 2..=128).
    #[error("{}: unknown field", Loc(*field))]
    UnknownField { field: u8 },
    /// Bytes left over after the last field the bitmap announces (field 1 when it announces
    /// none): the bitmap or that field's length is wrong.
    #[error("{}: {count} bytes after it, the last field the bitmap announces", Loc(*last_field))]
    TrailingBytes { last_field: u8, count: usize },
    /// A frame header announcing more than `FRAME_LEN_MAX` bytes.
    #[error("frame too long: {len} bytes, at most {max}", max = crate::frame::FRAME_LEN_MAX)]
    FrameTooLong { len: usize },
    /// A message that would not fit in one frame.
    #[error("message too long: {len} bytes, at most {max}", max = crate::frame::FRAME_LEN_MAX)]
    MessageTooLong { len: usize },
    /// A typed message without a field it must carry.
    #[error("{}: missing, mandatory in a {mti} message", Loc(*field))]
    MissingField { field: u8, mti: Mti },
    /// A typed message built from a message of another type.
    #[error("{}: {found}, expected {expected}", Loc(0))]
    UnexpectedMti { found: Mti, expected: &'static str },
    /// A value that is well-formed but means nothing in this profile (an unknown network
    /// management code, a date that does not exist, …).
    #[error("{}: {reason}", Loc(*field))]
    BadValue { field: u8, reason: &'static str },
    /// A MAC field that does not match the message under the link's key.
    #[error("{}: MAC does not match", Loc(*field))]
    MacMismatch { field: u8 },
    /// A message checked for a MAC that carries none in its last field.
    #[error("{}: MAC missing", Loc(*field))]
    MacMissing { field: u8 },
}

impl Error {
    /// The field the error is about (0 = MTI, 1 = bitmap), if it is about one.
    pub fn field(&self) -> Option<u8> {
        match self {
            Error::Truncated { field }
            | Error::BadLengthPrefix { field }
            | Error::BadLength { field, .. }
            | Error::BadCharacter { field, .. }
            | Error::UnknownField { field }
            | Error::MissingField { field, .. }
            | Error::BadValue { field, .. }
            | Error::MacMismatch { field }
            | Error::MacMissing { field }
            | Error::TrailingBytes {
                last_field: field, ..
            } => Some(*field),
            Error::UnexpectedMti { .. } => Some(0),
            Error::FrameTooLong { .. } | Error::MessageTooLong { .. } => None,
        }
    }
}

/// A message type indicator inside an error (4 ASCII digits, kept without allocating).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mti(pub [u8; 4]);

impl fmt::Display for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(std::str::from_utf8(&self.0).unwrap_or("????"))
    }
}

impl fmt::Debug for Mti {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mti({self})")
    }
}

/// "field 4 (amount, transaction)", "field 0 (message type indicator)".
struct Loc(u8);

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "field {} ({})", self.0, field_name(self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_field_and_the_reason() {
        let e = Error::BadCharacter {
            field: 4,
            offset: 3,
            charset: Charset::N,
        };
        assert_eq!(
            e.to_string(),
            "field 4 (amount, transaction): bad character at offset 3, not allowed in an n field"
        );
        assert_eq!(e.field(), Some(4));
        let e = Error::BadLength {
            field: 102,
            len: 29,
            rule: Length::LlVar(28),
        };
        assert_eq!(
            e.to_string(),
            "field 102 (account identification 1): length 29, must be at most 28"
        );
        assert_eq!(
            Error::TrailingBytes {
                last_field: 103,
                count: 2
            }
            .to_string(),
            "field 103 (account identification 2): 2 bytes after it, the last field the bitmap \
             announces"
        );
    }
}
