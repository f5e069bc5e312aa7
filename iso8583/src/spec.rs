//! The field table as data: ISO 8583:1987 in ASCII, laid out like jPOS `ISO87APackager` and
//! pyiso8583's `default_ascii`, with the bank link profile's choices where it is stricter
//! (iso8583-profile.md: field 49 is `n 3`, the MACs are 16 hex characters).

/// Which characters a field may hold. Every class is a subset of printable ASCII, so a checked
/// value is always valid UTF-8.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charset {
    /// Digits `0-9`.
    N,
    /// Letters, digits and space (alphanumeric fields are right-padded with spaces).
    An,
    /// Printable ASCII, space to `~`.
    Ans,
    /// Hex digits: binary data written as two characters per byte (PIN block, MACs).
    Hex,
    /// `C` or `D` (credit/debit) then digits: the `x+n` amounts.
    Xn,
    /// Track 2 data: digits, `=` and `D`.
    Z,
}

impl Charset {
    /// Whether `byte` may appear at `position` of a value of this class.
    pub const fn allows(self, position: usize, byte: u8) -> bool {
        match self {
            Charset::N => byte.is_ascii_digit(),
            Charset::An => byte.is_ascii_alphanumeric() || byte == b' ',
            Charset::Ans => matches!(byte, b' '..=b'~'),
            Charset::Hex => byte.is_ascii_hexdigit(),
            Charset::Xn if position == 0 => matches!(byte, b'C' | b'D'),
            Charset::Xn => byte.is_ascii_digit(),
            Charset::Z => byte.is_ascii_digit() || matches!(byte, b'=' | b'D'),
        }
    }

    /// Whether every byte of `value` is allowed. Branch-free per byte so that it vectorizes:
    /// this is most of `unpack`'s work.
    #[inline]
    pub fn allows_all(self, value: &[u8]) -> bool {
        match self {
            Charset::N => all_bytes(value, is_digit),
            Charset::An => all_bytes(value, |b| is_digit(b) | is_letter(b) | (b == b' ')),
            Charset::Ans => all_bytes(value, |b| b.wrapping_sub(b' ') < 95),
            Charset::Hex => all_bytes(value, |b| is_digit(b) | ((b | 0x20).wrapping_sub(b'a') < 6)),
            Charset::Z => all_bytes(value, |b| is_digit(b) | (b == b'=') | (b == b'D')),
            Charset::Xn => match value.split_first() {
                Some((first, rest)) => matches!(first, b'C' | b'D') && all_bytes(rest, is_digit),
                None => true,
            },
        }
    }

    /// The profile's abbreviation (`n`, `an`, `ans`, …), for messages.
    pub const fn abbreviation(self) -> &'static str {
        match self {
            Charset::N => "n",
            Charset::An => "an",
            Charset::Ans => "ans",
            Charset::Hex => "hex",
            Charset::Xn => "x+n",
            Charset::Z => "z",
        }
    }
}

#[inline(always)]
fn all_bytes(value: &[u8], allowed: impl Fn(u8) -> bool) -> bool {
    value.iter().fold(true, |ok, &b| ok & allowed(b))
}

#[inline(always)]
fn is_digit(b: u8) -> bool {
    b.wrapping_sub(b'0') < 10
}

#[inline(always)]
fn is_letter(b: u8) -> bool {
    (b | 0x20).wrapping_sub(b'a') < 26
}

/// How a field's length is written on the wire. Lengths count characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Length {
    /// Exactly this many characters, no prefix.
    Fixed(u16),
    /// 2 ASCII digits of length, then at most this many characters.
    LlVar(u16),
    /// 3 ASCII digits of length, then at most this many characters.
    LllVar(u16),
}

impl Length {
    /// The number of prefix digits (0 for fixed fields).
    pub const fn prefix_len(self) -> usize {
        match self {
            Length::Fixed(_) => 0,
            Length::LlVar(_) => 2,
            Length::LllVar(_) => 3,
        }
    }

    /// The longest value allowed.
    pub const fn max(self) -> usize {
        match self {
            Length::Fixed(n) | Length::LlVar(n) | Length::LllVar(n) => n as usize,
        }
    }

    /// Whether a value of `len` characters fits.
    pub const fn accepts(self, len: usize) -> bool {
        match self {
            Length::Fixed(n) => len == n as usize,
            Length::LlVar(n) | Length::LllVar(n) => len <= n as usize,
        }
    }
}

impl std::fmt::Display for Length {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Length::Fixed(n) => write!(f, "exactly {n}"),
            Length::LlVar(n) | Length::LllVar(n) => write!(f, "at most {n}"),
        }
    }
}

/// One data element: its number, name, length rule and character class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FieldSpec {
    pub number: u8,
    pub name: &'static str,
    pub length: Length,
    pub charset: Charset,
}

/// The lowest and highest data element numbers a message can carry (1 is the secondary bitmap).
pub const FIELD_MIN: u8 = 2;
pub const FIELD_MAX: u8 = 128;

/// The spec of data element `field`, or `None` when the profile does not define it (0, 1, 65:
/// the MTI, the secondary bitmap and the tertiary bitmap indicator, which this profile never uses).
pub fn spec(field: u8) -> Option<&'static FieldSpec> {
    SPECS.get(usize::from(field)).and_then(Option::as_ref)
}

/// The name of `field` for messages: data element names, plus the MTI (0) and bitmap (1).
pub fn field_name(field: u8) -> &'static str {
    match field {
        0 => "message type indicator",
        1 => "bitmap",
        65 => "tertiary bitmap (not supported)",
        _ => spec(field).map_or("unknown field", |s| s.name),
    }
}

const fn fixed(number: u8, name: &'static str, len: u16, charset: Charset) -> Option<FieldSpec> {
    Some(FieldSpec {
        number,
        name,
        length: Length::Fixed(len),
        charset,
    })
}

const fn llvar(number: u8, name: &'static str, max: u16, charset: Charset) -> Option<FieldSpec> {
    Some(FieldSpec {
        number,
        name,
        length: Length::LlVar(max),
        charset,
    })
}

const fn lllvar(number: u8, name: &'static str, max: u16, charset: Charset) -> Option<FieldSpec> {
    Some(FieldSpec {
        number,
        name,
        length: Length::LllVar(max),
        charset,
    })
}

use Charset::{An, Ans, Hex, N, Xn, Z};

/// Indexed by field number; entry `i` describes field `i` (a unit test checks it).
static SPECS: [Option<FieldSpec>; 129] = [
    None, // 0: MTI
    None, // 1: secondary bitmap
    llvar(2, "primary account number", 19, N),
    fixed(3, "processing code", 6, N),
    fixed(4, "amount, transaction", 12, N),
    fixed(5, "amount, settlement", 12, N),
    fixed(6, "amount, cardholder billing", 12, N),
    fixed(7, "transmission date and time", 10, N),
    fixed(8, "amount, cardholder billing fee", 8, N),
    fixed(9, "conversion rate, settlement", 8, N),
    fixed(10, "conversion rate, cardholder billing", 8, N),
    fixed(11, "system trace audit number", 6, N),
    fixed(12, "local transaction time", 6, N),
    fixed(13, "local transaction date", 4, N),
    fixed(14, "expiration date", 4, N),
    fixed(15, "settlement date", 4, N),
    fixed(16, "conversion date", 4, N),
    fixed(17, "capture date", 4, N),
    fixed(18, "merchant type", 4, N),
    fixed(19, "acquiring institution country code", 3, N),
    fixed(20, "PAN extended country code", 3, N),
    fixed(21, "forwarding institution country code", 3, N),
    fixed(22, "point of service entry mode", 3, N),
    fixed(23, "card sequence number", 3, N),
    fixed(24, "network international identifier", 3, N),
    fixed(25, "point of service condition code", 2, N),
    fixed(26, "point of service PIN capture code", 2, N),
    fixed(27, "authorization identification response length", 1, N),
    fixed(28, "amount, transaction fee", 9, Xn),
    fixed(29, "amount, settlement fee", 9, Xn),
    fixed(30, "amount, transaction processing fee", 9, Xn),
    fixed(31, "amount, settlement processing fee", 9, Xn),
    llvar(32, "acquiring institution id", 11, N),
    llvar(33, "forwarding institution id", 11, N),
    llvar(34, "PAN extended", 28, Ans),
    llvar(35, "track 2 data", 37, Z),
    lllvar(36, "track 3 data", 104, Ans),
    fixed(37, "retrieval reference number", 12, An),
    fixed(38, "approval code", 6, An),
    fixed(39, "response code", 2, An),
    fixed(40, "service restriction code", 3, An),
    fixed(41, "terminal id", 8, Ans),
    fixed(42, "card acceptor id", 15, Ans),
    fixed(43, "card acceptor name and location", 40, Ans),
    llvar(44, "additional response data", 25, Ans),
    llvar(45, "track 1 data", 76, Ans),
    lllvar(46, "additional data, ISO", 999, Ans),
    lllvar(47, "additional data, national", 999, Ans),
    lllvar(48, "additional data, private", 999, Ans),
    fixed(49, "currency code, transaction", 3, N),
    fixed(50, "currency code, settlement", 3, An),
    fixed(51, "currency code, cardholder billing", 3, An),
    fixed(52, "PIN data", 16, Hex),
    fixed(53, "security related control information", 16, N),
    lllvar(54, "additional amounts", 120, Ans),
    lllvar(55, "reserved ISO", 999, Ans),
    lllvar(56, "reserved ISO", 999, Ans),
    lllvar(57, "reserved national", 999, Ans),
    lllvar(58, "reserved national", 999, Ans),
    lllvar(59, "reserved national", 999, Ans),
    lllvar(60, "reserved private", 999, Ans),
    lllvar(61, "reserved private", 999, Ans),
    lllvar(62, "reserved private", 999, Ans),
    lllvar(63, "reserved private", 999, Ans),
    fixed(64, "message authentication code", 16, Hex),
    None, // 65: tertiary bitmap indicator
    fixed(66, "settlement code", 1, N),
    fixed(67, "extended payment code", 2, N),
    fixed(68, "receiving institution country code", 3, N),
    fixed(69, "settlement institution country code", 3, N),
    fixed(70, "network management code", 3, N),
    fixed(71, "message number", 4, N),
    fixed(72, "message number, last", 4, N),
    fixed(73, "action date", 6, N),
    fixed(74, "credits, number", 10, N),
    fixed(75, "credits reversal, number", 10, N),
    fixed(76, "debits, number", 10, N),
    fixed(77, "debits reversal, number", 10, N),
    fixed(78, "transfer, number", 10, N),
    fixed(79, "transfer reversal, number", 10, N),
    fixed(80, "inquiries, number", 10, N),
    fixed(81, "authorizations, number", 10, N),
    fixed(82, "credits, processing fee amount", 12, N),
    fixed(83, "credits, transaction fee amount", 12, N),
    fixed(84, "debits, processing fee amount", 12, N),
    fixed(85, "debits, transaction fee amount", 12, N),
    fixed(86, "credits, amount", 16, N),
    fixed(87, "credits reversal, amount", 16, N),
    fixed(88, "debits, amount", 16, N),
    fixed(89, "debits reversal, amount", 16, N),
    fixed(90, "original data elements", 42, N),
    fixed(91, "file update code", 1, An),
    fixed(92, "file security code", 2, An),
    fixed(93, "response indicator", 5, An),
    fixed(94, "service indicator", 7, An),
    fixed(95, "replacement amounts", 42, An),
    fixed(96, "message security code", 16, Hex),
    fixed(97, "amount, net settlement", 17, Xn),
    fixed(98, "payee", 25, Ans),
    llvar(99, "settlement institution id", 11, N),
    llvar(100, "receiving institution id", 11, N),
    llvar(101, "file name", 17, Ans),
    llvar(102, "account identification 1", 28, Ans),
    llvar(103, "account identification 2", 28, Ans),
    lllvar(104, "transaction description", 100, Ans),
    lllvar(105, "reserved ISO", 999, Ans),
    lllvar(106, "reserved ISO", 999, Ans),
    lllvar(107, "reserved ISO", 999, Ans),
    lllvar(108, "reserved ISO", 999, Ans),
    lllvar(109, "reserved ISO", 999, Ans),
    lllvar(110, "reserved ISO", 999, Ans),
    lllvar(111, "reserved ISO", 999, Ans),
    lllvar(112, "reserved national", 999, Ans),
    lllvar(113, "reserved national", 999, Ans),
    lllvar(114, "reserved national", 999, Ans),
    lllvar(115, "reserved national", 999, Ans),
    lllvar(116, "reserved national", 999, Ans),
    lllvar(117, "reserved national", 999, Ans),
    lllvar(118, "reserved national", 999, Ans),
    lllvar(119, "reserved national", 999, Ans),
    lllvar(120, "reserved private", 999, Ans),
    lllvar(121, "reserved private", 999, Ans),
    lllvar(122, "reserved private", 999, Ans),
    lllvar(123, "reserved private", 999, Ans),
    lllvar(124, "reserved private", 999, Ans),
    lllvar(125, "reserved private", 999, Ans),
    lllvar(126, "reserved private", 999, Ans),
    lllvar(127, "reserved private", 999, Ans),
    fixed(128, "message authentication code", 16, Hex),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_all_agrees_with_allows() {
        let classes = [
            Charset::N,
            Charset::An,
            Charset::Ans,
            Charset::Hex,
            Charset::Xn,
            Charset::Z,
        ];
        for class in classes {
            for b in 0..=255u8 {
                for at in [0, 1] {
                    let value = if at == 0 { vec![b] } else { vec![b'C', b] };
                    let expected = value.iter().enumerate().all(|(i, &c)| class.allows(i, c));
                    assert_eq!(class.allows_all(&value), expected, "{class:?} {value:?}");
                }
            }
            assert!(class.allows_all(b""));
        }
    }

    #[test]
    fn entry_i_describes_field_i() {
        for (i, entry) in SPECS.iter().enumerate() {
            if let Some(s) = entry {
                assert_eq!(usize::from(s.number), i, "{}", s.name);
            }
        }
        assert!(spec(0).is_none() && spec(1).is_none() && spec(65).is_none());
        assert!(spec(129).is_none());
    }

    #[test]
    fn profile_fields_are_as_written() {
        let want = [
            (3, Length::Fixed(6), Charset::N),
            (4, Length::Fixed(12), Charset::N),
            (7, Length::Fixed(10), Charset::N),
            (11, Length::Fixed(6), Charset::N),
            (12, Length::Fixed(6), Charset::N),
            (13, Length::Fixed(4), Charset::N),
            (32, Length::LlVar(11), Charset::N),
            (37, Length::Fixed(12), Charset::An),
            (38, Length::Fixed(6), Charset::An),
            (39, Length::Fixed(2), Charset::An),
            (41, Length::Fixed(8), Charset::Ans),
            (42, Length::Fixed(15), Charset::Ans),
            (43, Length::Fixed(40), Charset::Ans),
            (49, Length::Fixed(3), Charset::N),
            (70, Length::Fixed(3), Charset::N),
            (90, Length::Fixed(42), Charset::N),
            (100, Length::LlVar(11), Charset::N),
            (102, Length::LlVar(28), Charset::Ans),
            (103, Length::LlVar(28), Charset::Ans),
            (128, Length::Fixed(16), Charset::Hex),
        ];
        for (field, length, charset) in want {
            let s = spec(field).expect("profile field");
            assert_eq!((s.length, s.charset), (length, charset), "field {field}");
        }
    }
}
