//! The message value and its wire form: MTI, primary (and secondary) bitmap, then the fields in
//! number order.
//!
//! Representation, chosen for speed: the fields live in one `String` exactly as they go on the
//! wire after the bitmaps (in number order, with their length prefixes), each present value is a
//! (start, length) span into it, and a `u128` says which fields are present. So `unpack` is one
//! allocation and one copy of the input, `pack` is MTI + bitmaps + one copy, and no field
//! allocates. `set` in ascending field order appends; out of order it inserts (a few KiB at most).

use crate::error::Error;
use crate::frame::FRAME_LEN_MAX;
use crate::mask::Shown;
use crate::spec::{Charset, FIELD_MAX, FIELD_MIN, FieldSpec, Length, spec};
use std::fmt;

/// The MTI is 4 ASCII digits.
pub const MTI_LEN: usize = 4;
/// Each bitmap is 16 hex ASCII characters (64 bits).
pub const BITMAP_LEN: usize = 16;

/// Field `n` (1..=128) is bit `128 - n`, so the bits read in field order from the top.
const fn bit(field: u8) -> u128 {
    1u128 << (128 - field as u32)
}

/// Fields 65..=128: any of them present means a secondary bitmap.
const SECONDARY_FIELDS: u128 = u64::MAX as u128;

#[derive(Clone, Copy, Default, Debug)]
struct Span {
    start: u16,
    len: u16,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        let start = usize::from(self.start);
        start..start + usize::from(self.len)
    }
}

/// An ISO 8583 message of the bank link profile: an MTI and fields 2..=128, each value checked
/// against the field table when it is set or unpacked.
#[derive(Clone)]
pub struct Message {
    mti: [u8; MTI_LEN],
    present: u128,
    spans: [Span; 129],
    /// The fields as on the wire: for each present field in number order, prefix then value.
    data: String,
}

impl Message {
    /// An empty message of type `mti` (4 digits).
    pub fn new(mti: &str) -> Result<Message, Error> {
        Ok(Message {
            mti: parse_mti(mti.as_bytes())?,
            present: 0,
            spans: [Span::default(); 129],
            data: String::with_capacity(256),
        })
    }

    /// The message type indicator, 4 digits.
    pub fn mti(&self) -> &str {
        std::str::from_utf8(&self.mti).unwrap_or("")
    }

    /// Changes the MTI (for instance to answer a request with the same fields).
    pub fn set_mti(&mut self, mti: &str) -> Result<&mut Message, Error> {
        self.mti = parse_mti(mti.as_bytes())?;
        Ok(self)
    }

    /// Sets `field` to `value` after checking it against the field table: a fixed field must have
    /// exactly its length (pad before), a variable one at most its maximum, and every character
    /// must be in the field's class. The whole message must still fit in one frame.
    pub fn set(&mut self, field: u8, value: &str) -> Result<&mut Message, Error> {
        let spec = known_field(field)?;
        check_value(spec, value.as_bytes())?;
        let prefix_len = spec.length.prefix_len();
        let old_encoded = self.get(field).map_or(0, |v| prefix_len + v.len());
        let new_encoded = prefix_len + value.len();
        let wire_len =
            header_len(self.present | bit(field)) + self.data.len() - old_encoded + new_encoded;
        if wire_len > FRAME_LEN_MAX {
            return Err(Error::MessageTooLong { len: wire_len });
        }
        let at = match self.spans.get(usize::from(field)) {
            Some(span) if self.has(field) => usize::from(span.start) - prefix_len,
            _ => self.insertion_point(field),
        };
        let mut digits = [b'0'; 3];
        let prefix = length_prefix(&mut digits, prefix_len, value.len());
        if at == self.data.len() {
            self.data.push_str(prefix);
            self.data.push_str(value);
        } else {
            self.data.replace_range(at..at + old_encoded, value);
            self.data.insert_str(at, prefix);
        }
        self.shift_fields_after(field, old_encoded, new_encoded);
        if let Some(span) = self.spans.get_mut(usize::from(field)) {
            // Offsets stay below FRAME_LEN_MAX (checked above), so they fit in u16.
            *span = Span {
                start: (at + prefix_len) as u16,
                len: value.len() as u16,
            };
        }
        self.present |= bit(field);
        Ok(self)
    }

    /// Where `field`'s encoding goes: where the next present field's starts, or the end.
    fn insertion_point(&self, field: u8) -> usize {
        let mut after = self.present & (bit(field) - 1);
        next_field(&mut after)
            .and_then(|next| {
                let span = self.spans.get(usize::from(next))?;
                let prefix_len = spec(next)?.length.prefix_len();
                Some(usize::from(span.start) - prefix_len)
            })
            .unwrap_or(self.data.len())
    }

    /// Moves the spans of the fields after `field` when its encoding changed length.
    fn shift_fields_after(&mut self, field: u8, old_encoded: usize, new_encoded: usize) {
        let mut after = self.present & (bit(field) - 1);
        while let Some(next) = next_field(&mut after) {
            if let Some(span) = self.spans.get_mut(usize::from(next)) {
                span.start = (usize::from(span.start) + new_encoded - old_encoded) as u16;
            }
        }
    }

    /// `set` for chaining by value: `Message::new("0800")?.with(70, "301")?`.
    pub fn with(mut self, field: u8, value: &str) -> Result<Message, Error> {
        self.set(field, value)?;
        Ok(self)
    }

    /// The value of `field`, if present.
    pub fn get(&self, field: u8) -> Option<&str> {
        if !self.has(field) {
            return None;
        }
        let span = self.spans.get(usize::from(field))?;
        self.data.get(span.range())
    }

    /// Whether `field` is present.
    pub fn has(&self, field: u8) -> bool {
        (FIELD_MIN..=FIELD_MAX).contains(&field) && self.present & bit(field) != 0
    }

    /// Removes `field`; returns whether it was present.
    pub fn remove(&mut self, field: u8) -> bool {
        let (Some(value), Some(spec)) = (self.get(field), spec(field)) else {
            return false;
        };
        let (value_len, prefix_len) = (value.len(), spec.length.prefix_len());
        let Some(span) = self.spans.get(usize::from(field)).copied() else {
            return false;
        };
        let at = usize::from(span.start) - prefix_len;
        self.data.replace_range(at..at + prefix_len + value_len, "");
        self.shift_fields_after(field, prefix_len + value_len, 0);
        self.present &= !bit(field);
        true
    }

    /// The present fields in number order, with their values.
    pub fn fields(&self) -> Fields<'_> {
        Fields {
            message: self,
            bits: self.present,
        }
    }

    /// The number of bytes `pack` writes (without a frame header).
    pub fn packed_len(&self) -> usize {
        header_len(self.present) + self.data.len()
    }

    /// The wire form: MTI, bitmap(s), fields.
    pub fn pack(&self) -> Result<Vec<u8>, Error> {
        let mut out = Vec::new();
        self.pack_into(&mut out)?;
        Ok(out)
    }

    /// Appends the wire form to `out` (reuse one buffer to avoid allocating per message).
    pub fn pack_into(&self, out: &mut Vec<u8>) -> Result<(), Error> {
        let len = self.packed_len();
        if len > FRAME_LEN_MAX {
            return Err(Error::MessageTooLong { len });
        }
        out.reserve(len);
        self.write_to(out);
        Ok(())
    }

    /// Writes the wire form; the caller has checked the length.
    pub(crate) fn write_to<S: Sink>(&self, out: &mut S) {
        out.put(&self.mti);
        let secondary = self.present & SECONDARY_FIELDS != 0;
        let primary = (self.present >> 64) as u64 | if secondary { 1 << 63 } else { 0 };
        out.put(&bitmap_hex(primary));
        if secondary {
            out.put(&bitmap_hex(self.present as u64));
        }
        out.put(self.data.as_bytes());
    }

    /// Reads one message (without its frame header). Every byte is checked: the MTI's digits, the
    /// bitmaps' hex, each field's length and characters, and nothing may follow the last field.
    pub fn unpack(bytes: &[u8]) -> Result<Message, Error> {
        if bytes.len() > FRAME_LEN_MAX {
            return Err(Error::MessageTooLong { len: bytes.len() });
        }
        let mut reader = Reader { bytes, pos: 0 };
        let mti = parse_mti(reader.take(0, MTI_LEN)?)?;
        let primary = parse_bitmap(reader.take(1, BITMAP_LEN)?)?;
        let mut present = u128::from(primary) << 64;
        if present & bit(1) != 0 {
            present |= u128::from(parse_bitmap(reader.take(1, BITMAP_LEN)?)?);
            present &= !bit(1);
        }
        // Not `header_len(present)`: a peer may send a secondary bitmap with no field in it.
        let fields_start = reader.pos;
        let mut spans = [Span::default(); 129];
        let mut bits = present;
        let mut last_field = 1;
        while let Some(field) = next_field(&mut bits) {
            last_field = field;
            let spec = known_field(field)?;
            let len = reader.length_prefix(field, spec.length)?;
            // The input is at most FRAME_LEN_MAX bytes, so offsets fit in u16.
            let start = u16::try_from(reader.pos - fields_start)
                .map_err(|_| Error::MessageTooLong { len: bytes.len() })?;
            let value = reader.take(field, len)?;
            check_chars(field, spec.charset, value)?;
            if let Some(span) = spans.get_mut(usize::from(field)) {
                *span = Span {
                    start,
                    len: len as u16,
                };
            }
        }
        if reader.pos != bytes.len() {
            return Err(Error::TrailingBytes {
                last_field,
                count: bytes.len() - reader.pos,
            });
        }
        // Every byte was checked to be printable ASCII above, so this cannot fail.
        let fields = bytes.get(fields_start..).unwrap_or_default();
        let data = String::from_utf8(fields.to_vec()).map_err(|e| Error::BadCharacter {
            field: 0,
            offset: fields_start + e.utf8_error().valid_up_to(),
            charset: Charset::Ans,
        })?;
        Ok(Message {
            mti,
            present,
            spans,
            data,
        })
    }

    /// The fields shown for people: accounts masked, PIN and track data hidden.
    pub fn display_fields(&self) -> impl Iterator<Item = (u8, Shown<'_>)> {
        self.fields()
            .map(|(field, value)| (field, Shown::for_field(field, value)))
    }
}

/// Same MTI and same fields with the same values (however they were built).
impl PartialEq for Message {
    fn eq(&self, other: &Message) -> bool {
        // The data is the wire form of the fields, so equal fields mean equal data.
        self.mti == other.mti && self.present == other.present && self.data == other.data
    }
}

impl Eq for Message {}

/// Masks account numbers and hides PIN and track data (see `mask`).
impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("mti", &self.mti())
            .field("fields", &DebugFields(self))
            .finish()
    }
}

struct DebugFields<'a>(&'a Message);

impl fmt::Debug for DebugFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .display_fields()
                    .map(|(field, shown)| (field, shown.to_string())),
            )
            .finish()
    }
}

/// One line for logs: `0200 3=000000 4=000000001234 … 102=622200******2222`.
impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mti())?;
        for (field, shown) in self.display_fields() {
            write!(f, " {field}={shown}")?;
        }
        Ok(())
    }
}

/// The present fields of a message in number order.
pub struct Fields<'a> {
    message: &'a Message,
    bits: u128,
}

impl<'a> Iterator for Fields<'a> {
    type Item = (u8, &'a str);

    fn next(&mut self) -> Option<(u8, &'a str)> {
        let field = next_field(&mut self.bits)?;
        let span = self.message.spans.get(usize::from(field))?;
        Some((field, self.message.data.get(span.range())?))
    }
}

/// Takes the lowest-numbered field out of `bits`.
fn next_field(bits: &mut u128) -> Option<u8> {
    if *bits == 0 {
        return None;
    }
    let field = bits.leading_zeros() as u8 + 1;
    *bits &= !bit(field);
    Some(field)
}

/// MTI and bitmap(s) length for these present fields.
fn header_len(present: u128) -> usize {
    let secondary = if present & SECONDARY_FIELDS != 0 {
        BITMAP_LEN
    } else {
        0
    };
    MTI_LEN + BITMAP_LEN + secondary
}

fn known_field(field: u8) -> Result<&'static FieldSpec, Error> {
    spec(field).ok_or(Error::UnknownField { field })
}

fn parse_mti(bytes: &[u8]) -> Result<[u8; MTI_LEN], Error> {
    let mti: [u8; MTI_LEN] = bytes.try_into().map_err(|_| Error::BadLength {
        field: 0,
        len: bytes.len(),
        rule: Length::Fixed(MTI_LEN as u16),
    })?;
    check_chars(0, Charset::N, &mti)?;
    Ok(mti)
}

/// Checks a value's length and characters against its spec.
pub(crate) fn check_value(spec: &FieldSpec, value: &[u8]) -> Result<(), Error> {
    if !spec.length.accepts(value.len()) {
        return Err(Error::BadLength {
            field: spec.number,
            len: value.len(),
            rule: spec.length,
        });
    }
    check_chars(spec.number, spec.charset, value)
}

#[inline]
fn check_chars(field: u8, charset: Charset, value: &[u8]) -> Result<(), Error> {
    if charset.allows_all(value) {
        return Ok(());
    }
    // Only on failure: where.
    let offset = value
        .iter()
        .enumerate()
        .position(|(i, &b)| !charset.allows(i, b))
        .unwrap_or_default();
    Err(Error::BadCharacter {
        field,
        offset,
        charset,
    })
}

fn parse_bitmap(hex: &[u8]) -> Result<u64, Error> {
    let mut bits = 0u64;
    for (offset, &b) in hex.iter().enumerate() {
        let nibble = match b {
            b'0'..=b'9' => b - b'0',
            b'A'..=b'F' => b - b'A' + 10,
            b'a'..=b'f' => b - b'a' + 10,
            _ => {
                return Err(Error::BadCharacter {
                    field: 1,
                    offset,
                    charset: Charset::Hex,
                });
            }
        };
        bits = bits << 4 | u64::from(nibble);
    }
    Ok(bits)
}

fn bitmap_hex(bits: u64) -> [u8; BITMAP_LEN] {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = [0u8; BITMAP_LEN];
    for (i, slot) in out.iter_mut().enumerate() {
        let nibble = (bits >> (60 - 4 * i)) & 0xF;
        *slot = HEX.get(nibble as usize).copied().unwrap_or(b'0');
    }
    out
}

/// The `prefix_len` ASCII digits of `len` (none for a fixed field), written into `buf`. Lengths
/// are at most 999 (checked against the spec before).
fn length_prefix(buf: &mut [u8; 3], prefix_len: usize, mut len: usize) -> &str {
    let digits = buf.get_mut(..prefix_len).unwrap_or_default();
    for slot in digits.iter_mut().rev() {
        *slot = b'0' + (len % 10) as u8;
        len /= 10;
    }
    std::str::from_utf8(digits).unwrap_or_default()
}

/// Where `pack` writes: a `Vec<u8>`, or a `BytesMut` in the tokio codec.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// A cursor over the input that never reads past its end.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// The next `len` bytes, or `Truncated` naming `field`.
    fn take(&mut self, field: u8, len: usize) -> Result<&'a [u8], Error> {
        let end = self
            .pos
            .checked_add(len)
            .ok_or(Error::Truncated { field })?;
        let taken = self
            .bytes
            .get(self.pos..end)
            .ok_or(Error::Truncated { field })?;
        self.pos = end;
        Ok(taken)
    }

    /// The value length of `field`: fixed, or read from its LL/LLL prefix and checked.
    fn length_prefix(&mut self, field: u8, length: Length) -> Result<usize, Error> {
        let prefix = match length {
            Length::Fixed(n) => return Ok(usize::from(n)),
            Length::LlVar(_) | Length::LllVar(_) => self.take(field, length.prefix_len())?,
        };
        let mut len = 0usize;
        for &b in prefix {
            if !b.is_ascii_digit() {
                return Err(Error::BadLengthPrefix { field });
            }
            len = len * 10 + usize::from(b - b'0');
        }
        if len > length.max() {
            return Err(Error::BadLength {
                field,
                len,
                rule: length,
            });
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign_on() -> Message {
        Message::new("0800")
            .and_then(|m| m.with(7, "1128101010"))
            .and_then(|m| m.with(11, "000001"))
            .and_then(|m| m.with(70, "001"))
            .expect("valid")
    }

    #[test]
    fn set_checks_length_and_characters() {
        let mut m = Message::new("0200").expect("mti");
        assert!(matches!(
            m.set(4, "1234"),
            Err(Error::BadLength {
                field: 4,
                len: 4,
                ..
            })
        ));
        assert!(matches!(
            m.set(4, "00000000123x"),
            Err(Error::BadCharacter {
                field: 4,
                offset: 11,
                ..
            })
        ));
        assert!(matches!(
            m.set(1, "x"),
            Err(Error::UnknownField { field: 1 })
        ));
        assert!(matches!(
            m.set(65, "x"),
            Err(Error::UnknownField { field: 65 })
        ));
        assert!(matches!(
            m.set(129, "x"),
            Err(Error::UnknownField { field: 129 })
        ));
        assert!(matches!(
            m.set(102, &"1".repeat(29)),
            Err(Error::BadLength {
                field: 102,
                len: 29,
                ..
            })
        ));
        assert!(m.set(102, "").is_ok(), "an empty LLVAR is allowed");
        assert!(Message::new("02x0").is_err() && Message::new("020").is_err());
    }

    #[test]
    fn set_replace_and_remove_keep_other_values() {
        let mut m = sign_on();
        m.set(7, "0101000000").expect("valid");
        m.set(102, "ACC1").expect("valid");
        assert!(m.remove(11));
        assert!(!m.remove(11));
        m.set(102, "ACCOUNT-2").expect("valid");
        let got: Vec<_> = m.fields().collect();
        assert_eq!(got, [(7, "0101000000"), (70, "001"), (102, "ACCOUNT-2")]);
        assert_eq!(m.packed_len(), m.pack().expect("pack").len());
        assert_eq!(
            Message::unpack(&m.pack().expect("pack")).expect("unpack"),
            m
        );
    }

    #[test]
    fn unpack_reports_the_field_and_reason() {
        let good = sign_on().pack().expect("pack");
        assert_eq!(
            Message::unpack(&good[..good.len() - 1]),
            Err(Error::Truncated { field: 70 })
        );
        let mut extra = good.clone();
        extra.push(b'0');
        assert_eq!(
            Message::unpack(&extra),
            Err(Error::TrailingBytes {
                last_field: 70,
                count: 1
            })
        );
        let mut bad = good.clone();
        bad[4] = b'G';
        assert!(matches!(
            Message::unpack(&bad),
            Err(Error::BadCharacter {
                field: 1,
                offset: 0,
                ..
            })
        ));
        assert_eq!(Message::unpack(b"08"), Err(Error::Truncated { field: 0 }));
    }

    /// Found by `cargo fuzz`: a secondary bitmap announced but empty is accepted, and the message
    /// packs without it (and `packed_len` says so).
    #[test]
    fn an_empty_secondary_bitmap_is_dropped_on_repack() {
        let mut bytes = b"0800".to_vec();
        bytes.extend_from_slice(b"80200000000000000000000000000000");
        bytes.extend_from_slice(b"000001");
        let m = Message::unpack(&bytes).expect("valid");
        assert_eq!(m.get(11), Some("000001"));
        let packed = m.pack().expect("pack");
        assert_eq!(packed, b"08000020000000000000000001");
        assert_eq!(m.packed_len(), packed.len());
    }

    #[test]
    fn masks_accounts_in_debug_and_display() {
        let m = Message::new("0200")
            .and_then(|m| m.with(102, "6222000011112222"))
            .and_then(|m| m.with(52, "0123456789ABCDEF"))
            .expect("valid");
        for text in [format!("{m:?}"), m.to_string()] {
            assert!(text.contains("622200******2222"), "{text}");
            assert!(!text.contains("6222000011112222"), "{text}");
            assert!(!text.contains("0123456789ABCDEF"), "{text}");
        }
    }
}
