//! The terminal protocol's frames (docs/terminal-protocol.md): layout, types, encoding and a
//! decoder that never panics on arbitrary bytes. No I/O here; `FrameCodec` adapts it to
//! tokio-util's framing.
//!
//! ```text
//! frame = length:u16be  type:u8  body          (length counts type + body, 1..=MAX_FRAME_BYTES)
//! str   = len:u16be utf-8 bytes                (per-field limits below)
//! ```

use bytes::{Buf, BufMut, BytesMut};

/// Largest frame, counted from the type byte to the end of the body.
pub const MAX_FRAME_BYTES: usize = 4096;
/// The bytes of the length prefix.
pub const LENGTH_BYTES: usize = 2;
/// The protocol version a HELLO announces.
pub const PROTOCOL_VERSION: u8 = 1;
/// Challenge nonces and proofs are 32 bytes.
pub const NONCE_BYTES: usize = 32;
pub const PROOF_BYTES: usize = 32;
/// Longest terminal id, payment id, code, currency, merchant name, outcome, text and reason.
pub const TERMINAL_ID_MAX_BYTES: usize = 64;
pub const PAYMENT_ID_MAX_BYTES: usize = 64;
pub const CODE_MAX_BYTES: usize = 16;
pub const CURRENCY_MAX_BYTES: usize = 3;
pub const MERCHANT_MAX_BYTES: usize = 256;
pub const OUTCOME_MAX_BYTES: usize = 32;
pub const TEXT_MAX_BYTES: usize = 1024;
pub const REASON_MAX_BYTES: usize = 256;
/// Longest signature in a SIGNATURE frame (Ed25519: 64; ECDSA P-256 DER: at most 72).
pub const SIGNATURE_MAX_BYTES: usize = 256;

/// Frame type bytes.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const CHALLENGE: u8 = 0x02;
    pub const PROOF: u8 = 0x03;
    pub const WELCOME: u8 = 0x04;
    pub const SIGNATURE: u8 = 0x07;
    pub const PING: u8 = 0x05;
    pub const PONG: u8 = 0x06;
    pub const CODE: u8 = 0x10;
    pub const OUTCOME: u8 = 0x11;
    pub const ACK: u8 = 0x12;
    pub const NACK: u8 = 0x13;
    pub const ERROR: u8 = 0x7F;
}

/// Codes carried by an ERROR frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    Protocol = 1,
    AuthenticationFailed = 2,
    UnsupportedVersion = 3,
    Timeout = 4,
    Busy = 5,
    Replaced = 6,
    ShuttingDown = 7,
}

impl ErrorCode {
    pub fn from_u16(value: u16) -> Option<Self> {
        [
            Self::Protocol,
            Self::AuthenticationFailed,
            Self::UnsupportedVersion,
            Self::Timeout,
            Self::Busy,
            Self::Replaced,
            Self::ShuttingDown,
        ]
        .into_iter()
        .find(|c| *c as u16 == value)
    }
}

/// An authorization code with its transaction, switch → terminal.
#[derive(Clone, PartialEq, Eq)]
pub struct CodeFrame {
    pub msg_id: u32,
    pub payment_id: String,
    pub code: String,
    pub amount_minor: u64,
    pub currency: String,
    pub merchant: String,
    pub validity_s: u32,
    /// Bit 0: the receiver was named for this one payment and is not registered.
    pub flags: u8,
    /// The same notice as one line of text, for devices that only display.
    pub text: String,
}

impl std::fmt::Debug for CodeFrame {
    // The code never reaches logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeFrame")
            .field("msg_id", &self.msg_id)
            .field("payment_id", &self.payment_id)
            .field("code", &"***")
            .field("amount_minor", &self.amount_minor)
            .field("currency", &self.currency)
            .field("merchant", &self.merchant)
            .field("validity_s", &self.validity_s)
            .field("flags", &self.flags)
            .finish_non_exhaustive()
    }
}

/// The outcome of a payment, switch → terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutcomeFrame {
    pub msg_id: u32,
    pub payment_id: String,
    pub outcome: String,
    pub amount_minor: u64,
    pub currency: String,
    pub merchant: String,
    pub text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u8,
        terminal_id: String,
    },
    Challenge {
        nonce: [u8; NONCE_BYTES],
    },
    Proof {
        mac: [u8; PROOF_BYTES],
    },
    Welcome {
        keepalive_interval_ms: u32,
        ack_timeout_ms: u32,
    },
    /// The proof of a terminal registered with a public key instead of a shared key.
    Signature {
        signature: Vec<u8>,
    },
    Ping {
        nonce: u32,
    },
    Pong {
        nonce: u32,
    },
    Code(CodeFrame),
    Outcome(OutcomeFrame),
    Ack {
        msg_id: u32,
    },
    Nack {
        msg_id: u32,
        reason: String,
    },
    Error {
        code: u16,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame length {0} is outside 1..={MAX_FRAME_BYTES}")]
    BadLength(usize),
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    #[error("{frame}.{field}: {reason}")]
    Field {
        frame: &'static str,
        field: &'static str,
        reason: &'static str,
    },
    #[error("{frame}: {0} bytes left over after the last field", frame = .1)]
    TrailingBytes(usize, &'static str),
    #[error("a field is longer than its frame allows")]
    TooLongToEncode,
    #[error("i/o: {0}")]
    Io(String),
}

impl From<std::io::Error> for FrameError {
    fn from(e: std::io::Error) -> Self {
        FrameError::Io(e.to_string())
    }
}

impl Frame {
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "HELLO",
            Frame::Challenge { .. } => "CHALLENGE",
            Frame::Proof { .. } => "PROOF",
            Frame::Welcome { .. } => "WELCOME",
            Frame::Signature { .. } => "SIGNATURE",
            Frame::Ping { .. } => "PING",
            Frame::Pong { .. } => "PONG",
            Frame::Code(_) => "CODE",
            Frame::Outcome(_) => "OUTCOME",
            Frame::Ack { .. } => "ACK",
            Frame::Nack { .. } => "NACK",
            Frame::Error { .. } => "ERROR",
        }
    }

    pub fn error(code: ErrorCode, message: &str) -> Frame {
        Frame::Error {
            code: code as u16,
            message: truncate(message, REASON_MAX_BYTES),
        }
    }

    /// Appends the whole frame (length prefix included) to `out`.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), FrameError> {
        let mut body = BytesMut::new();
        let ty = self.encode_body(&mut body)?;
        let length = 1 + body.len();
        if length > MAX_FRAME_BYTES {
            return Err(FrameError::TooLongToEncode);
        }
        out.reserve(LENGTH_BYTES + length);
        out.put_u16(length as u16);
        out.put_u8(ty);
        out.extend_from_slice(&body);
        Ok(())
    }

    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.to_vec())
    }

    fn encode_body(&self, b: &mut BytesMut) -> Result<u8, FrameError> {
        Ok(match self {
            Frame::Hello {
                version,
                terminal_id,
            } => {
                b.put_u8(*version);
                put_str(b, terminal_id, TERMINAL_ID_MAX_BYTES)?;
                kind::HELLO
            }
            Frame::Challenge { nonce } => {
                b.extend_from_slice(nonce);
                kind::CHALLENGE
            }
            Frame::Proof { mac } => {
                b.extend_from_slice(mac);
                kind::PROOF
            }
            Frame::Welcome {
                keepalive_interval_ms,
                ack_timeout_ms,
            } => {
                b.put_u32(*keepalive_interval_ms);
                b.put_u32(*ack_timeout_ms);
                kind::WELCOME
            }
            Frame::Signature { signature } => {
                put_bytes(b, signature, SIGNATURE_MAX_BYTES)?;
                kind::SIGNATURE
            }
            Frame::Ping { nonce } => {
                b.put_u32(*nonce);
                kind::PING
            }
            Frame::Pong { nonce } => {
                b.put_u32(*nonce);
                kind::PONG
            }
            Frame::Code(c) => {
                b.put_u32(c.msg_id);
                put_str(b, &c.payment_id, PAYMENT_ID_MAX_BYTES)?;
                put_str(b, &c.code, CODE_MAX_BYTES)?;
                b.put_u64(c.amount_minor);
                put_str(b, &c.currency, CURRENCY_MAX_BYTES)?;
                put_str(b, &c.merchant, MERCHANT_MAX_BYTES)?;
                b.put_u32(c.validity_s);
                b.put_u8(c.flags);
                put_str(b, &c.text, TEXT_MAX_BYTES)?;
                kind::CODE
            }
            Frame::Outcome(o) => {
                b.put_u32(o.msg_id);
                put_str(b, &o.payment_id, PAYMENT_ID_MAX_BYTES)?;
                put_str(b, &o.outcome, OUTCOME_MAX_BYTES)?;
                b.put_u64(o.amount_minor);
                put_str(b, &o.currency, CURRENCY_MAX_BYTES)?;
                put_str(b, &o.merchant, MERCHANT_MAX_BYTES)?;
                put_str(b, &o.text, TEXT_MAX_BYTES)?;
                kind::OUTCOME
            }
            Frame::Ack { msg_id } => {
                b.put_u32(*msg_id);
                kind::ACK
            }
            Frame::Nack { msg_id, reason } => {
                b.put_u32(*msg_id);
                put_str(b, reason, REASON_MAX_BYTES)?;
                kind::NACK
            }
            Frame::Error { code, message } => {
                b.put_u16(*code);
                put_str(b, message, REASON_MAX_BYTES)?;
                kind::ERROR
            }
        })
    }

    /// Takes one whole frame off the front of `buf`. `Ok(None)`: more bytes are needed (nothing is
    /// consumed). An error means the peer is broken and the connection should close.
    pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        if buf.len() < LENGTH_BYTES {
            return Ok(None);
        }
        let length = u16::from_be_bytes([buf[0], buf[1]]) as usize;
        if length == 0 || length > MAX_FRAME_BYTES {
            return Err(FrameError::BadLength(length));
        }
        if buf.len() < LENGTH_BYTES + length {
            buf.reserve(LENGTH_BYTES + length - buf.len());
            return Ok(None);
        }
        buf.advance(LENGTH_BYTES);
        let payload = buf.split_to(length);
        Self::decode_payload(payload[0], &payload[1..]).map(Some)
    }

    /// Decodes the type byte and body of one frame.
    pub fn decode_payload(ty: u8, body: &[u8]) -> Result<Frame, FrameError> {
        let name = type_name(ty).ok_or(FrameError::UnknownType(ty))?;
        let mut r = Reader {
            rest: body,
            frame: name,
        };
        let frame = match ty {
            kind::HELLO => Frame::Hello {
                version: r.u8("version")?,
                terminal_id: r.str("terminal_id", TERMINAL_ID_MAX_BYTES)?,
            },
            kind::CHALLENGE => Frame::Challenge {
                nonce: r.array("nonce")?,
            },
            kind::PROOF => Frame::Proof {
                mac: r.array("mac")?,
            },
            kind::WELCOME => Frame::Welcome {
                keepalive_interval_ms: r.u32("keepalive_interval_ms")?,
                ack_timeout_ms: r.u32("ack_timeout_ms")?,
            },
            kind::SIGNATURE => Frame::Signature {
                signature: r.bytes("signature", SIGNATURE_MAX_BYTES)?.to_vec(),
            },
            kind::PING => Frame::Ping {
                nonce: r.u32("nonce")?,
            },
            kind::PONG => Frame::Pong {
                nonce: r.u32("nonce")?,
            },
            kind::CODE => Frame::Code(CodeFrame {
                msg_id: r.u32("msg_id")?,
                payment_id: r.str("payment_id", PAYMENT_ID_MAX_BYTES)?,
                code: r.str("code", CODE_MAX_BYTES)?,
                amount_minor: r.u64("amount_minor")?,
                currency: r.str("currency", CURRENCY_MAX_BYTES)?,
                merchant: r.str("merchant", MERCHANT_MAX_BYTES)?,
                validity_s: r.u32("validity_s")?,
                flags: r.u8("flags")?,
                text: r.str("text", TEXT_MAX_BYTES)?,
            }),
            kind::OUTCOME => Frame::Outcome(OutcomeFrame {
                msg_id: r.u32("msg_id")?,
                payment_id: r.str("payment_id", PAYMENT_ID_MAX_BYTES)?,
                outcome: r.str("outcome", OUTCOME_MAX_BYTES)?,
                amount_minor: r.u64("amount_minor")?,
                currency: r.str("currency", CURRENCY_MAX_BYTES)?,
                merchant: r.str("merchant", MERCHANT_MAX_BYTES)?,
                text: r.str("text", TEXT_MAX_BYTES)?,
            }),
            kind::ACK => Frame::Ack {
                msg_id: r.u32("msg_id")?,
            },
            kind::NACK => Frame::Nack {
                msg_id: r.u32("msg_id")?,
                reason: r.str("reason", REASON_MAX_BYTES)?,
            },
            _ => Frame::Error {
                code: r.u16("code")?,
                message: r.str("message", REASON_MAX_BYTES)?,
            },
        };
        if !r.rest.is_empty() {
            return Err(FrameError::TrailingBytes(r.rest.len(), name));
        }
        Ok(frame)
    }
}

fn type_name(ty: u8) -> Option<&'static str> {
    Some(match ty {
        kind::HELLO => "HELLO",
        kind::CHALLENGE => "CHALLENGE",
        kind::PROOF => "PROOF",
        kind::WELCOME => "WELCOME",
        kind::SIGNATURE => "SIGNATURE",
        kind::PING => "PING",
        kind::PONG => "PONG",
        kind::CODE => "CODE",
        kind::OUTCOME => "OUTCOME",
        kind::ACK => "ACK",
        kind::NACK => "NACK",
        kind::ERROR => "ERROR",
        _ => return None,
    })
}

fn put_str(b: &mut BytesMut, value: &str, max_bytes: usize) -> Result<(), FrameError> {
    put_bytes(b, value.as_bytes(), max_bytes)
}

fn put_bytes(b: &mut BytesMut, value: &[u8], max_bytes: usize) -> Result<(), FrameError> {
    if value.len() > max_bytes {
        return Err(FrameError::TooLongToEncode);
    }
    b.put_u16(value.len() as u16);
    b.extend_from_slice(value);
    Ok(())
}

/// `value` cut to at most `max_bytes` on a character boundary.
pub fn truncate(value: &str, max_bytes: usize) -> String {
    let mut end = value.len().min(max_bytes);
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    value[..end].to_string()
}

/// Reads the fields of one body; every error names the frame and the field.
struct Reader<'a> {
    rest: &'a [u8],
    frame: &'static str,
}

impl Reader<'_> {
    fn fail(&self, field: &'static str, reason: &'static str) -> FrameError {
        FrameError::Field {
            frame: self.frame,
            field,
            reason,
        }
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&[u8], FrameError> {
        if self.rest.len() < n {
            return Err(self.fail(field, "the frame ends inside this field"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], FrameError> {
        let bytes = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, FrameError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }

    fn bytes(&mut self, field: &'static str, max_bytes: usize) -> Result<&[u8], FrameError> {
        let len = self.u16(field)? as usize;
        if len > max_bytes {
            return Err(self.fail(field, "longer than the protocol allows"));
        }
        self.take(field, len)
    }

    fn str(&mut self, field: &'static str, max_bytes: usize) -> Result<String, FrameError> {
        let frame = self.frame;
        let bytes = self.bytes(field, max_bytes)?;
        let text = std::str::from_utf8(bytes).map_err(|_| FrameError::Field {
            frame,
            field,
            reason: "not UTF-8",
        })?;
        Ok(text.to_string())
    }
}

/// tokio-util framing for [`Frame`].
#[derive(Debug, Default, Clone, Copy)]
pub struct FrameCodec;

impl tokio_util::codec::Decoder for FrameCodec {
    type Item = Frame;
    type Error = FrameError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FrameError> {
        Frame::decode(src)
    }
}

impl tokio_util::codec::Encoder<Frame> for FrameCodec {
    type Error = FrameError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), FrameError> {
        frame.encode(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample_code() -> Frame {
        Frame::Code(CodeFrame {
            msg_id: 1,
            payment_id: "pay_1".into(),
            code: "123456".into(),
            amount_minor: 1234,
            currency: "CNY".into(),
            merchant: "Book Shop".into(),
            validity_s: 300,
            flags: 0,
            text: "code 123456".into(),
        })
    }

    fn all_samples() -> Vec<Frame> {
        vec![
            Frame::Hello {
                version: 1,
                terminal_id: "trm_test".into(),
            },
            Frame::Challenge { nonce: [0xAA; 32] },
            Frame::Proof { mac: [7; 32] },
            Frame::Signature {
                signature: vec![1, 2, 3],
            },
            Frame::Welcome {
                keepalive_interval_ms: 30_000,
                ack_timeout_ms: 5_000,
            },
            Frame::Ping { nonce: 9 },
            Frame::Pong { nonce: 9 },
            sample_code(),
            Frame::Outcome(OutcomeFrame {
                msg_id: 2,
                payment_id: "pay_1".into(),
                outcome: "succeeded".into(),
                amount_minor: 1234,
                currency: "CNY".into(),
                merchant: "Book Shop".into(),
                text: "paid".into(),
            }),
            Frame::Ack { msg_id: 1 },
            Frame::Nack {
                msg_id: 1,
                reason: "display broken".into(),
            },
            Frame::error(ErrorCode::AuthenticationFailed, "authentication failed"),
        ]
    }

    #[test]
    fn every_frame_round_trips() {
        for frame in all_samples() {
            let mut buf = BytesMut::from(&frame.to_bytes().unwrap()[..]);
            assert_eq!(Frame::decode(&mut buf).unwrap(), Some(frame));
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn partial_frames_wait_for_more_bytes() {
        let bytes = sample_code().to_bytes().unwrap();
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(Frame::decode(&mut buf).unwrap(), None, "cut at {cut}");
            assert_eq!(buf.len(), cut, "nothing consumed");
        }
    }

    #[test]
    fn documented_test_vectors() {
        // docs/terminal-protocol.md, "Test vectors" (the PROOF is checked in auth.rs).
        let vectors: Vec<(Frame, &str)> = vec![
            (
                Frame::Hello {
                    version: 1,
                    terminal_id: "trm_test".into(),
                },
                "000c0101000874726d5f74657374",
            ),
            (
                Frame::Challenge { nonce: [0xAA; 32] },
                "002102aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            ),
            (
                Frame::Welcome {
                    keepalive_interval_ms: 30_000,
                    ack_timeout_ms: 5_000,
                },
                "0009040000753000001388",
            ),
            (
                Frame::Signature {
                    signature: vec![0xAB; 4],
                },
                "00070700\
                 04abababab",
            ),
            (Frame::Ping { nonce: 1 }, "00050500000001"),
            (Frame::Pong { nonce: 1 }, "00050600000001"),
            (
                sample_code(),
                "003e100000000100057061795f31000631323334353600000000000004d2\
                 0003434e590009426f6f6b2053686f700000012c00000b636f646520313233343536",
            ),
            (
                Frame::Outcome(OutcomeFrame {
                    msg_id: 2,
                    payment_id: "pay_1".into(),
                    outcome: "succeeded".into(),
                    amount_minor: 1234,
                    currency: "CNY".into(),
                    merchant: "Book Shop".into(),
                    text: "paid".into(),
                }),
                "0035110000000200057061795f31000973756363656564656400000000000004d2\
                 0003434e590009426f6f6b2053686f70000470616964",
            ),
            (Frame::Ack { msg_id: 1 }, "00051200000001"),
            (
                Frame::Nack {
                    msg_id: 1,
                    reason: "display broken".into(),
                },
                "00151300000001000e646973706c61792062726f6b656e",
            ),
            (
                Frame::error(ErrorCode::AuthenticationFailed, "authentication failed"),
                "001a7f0002001561757468656e7469636174696f6e206661696c6564",
            ),
        ];
        for (frame, hex_text) in vectors {
            assert_eq!(
                hex::encode(frame.to_bytes().unwrap()),
                hex_text,
                "{}",
                frame.name()
            );
            let mut buf = BytesMut::from(&hex::decode(hex_text).unwrap()[..]);
            assert_eq!(Frame::decode(&mut buf).unwrap(), Some(frame));
        }
    }

    #[test]
    fn errors_name_the_frame_and_field() {
        let mut buf = BytesMut::from(&[0, 3, kind::ACK, 0, 1][..]);
        assert_eq!(
            Frame::decode(&mut buf).unwrap_err().to_string(),
            "ACK.msg_id: the frame ends inside this field"
        );
        let mut buf = BytesMut::from(&[0, 1, 0x42][..]);
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::UnknownType(0x42)));
        let mut buf = BytesMut::from(&[0xFF, 0xFF][..]);
        assert_eq!(Frame::decode(&mut buf), Err(FrameError::BadLength(65535)));
    }

    #[test]
    fn code_never_shows_in_debug() {
        assert!(!format!("{:?}", sample_code()).contains("123456"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn decoder_never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..6000)) {
            let mut buf = BytesMut::from(&bytes[..]);
            // Decode until it needs more bytes or fails; each step must consume or stop.
            loop {
                let before = buf.len();
                match Frame::decode(&mut buf) {
                    Ok(Some(_)) => prop_assert!(buf.len() < before),
                    Ok(None) | Err(_) => break,
                }
            }
        }

        #[test]
        fn decoder_never_panics_on_valid_length_prefix(ty in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..600)) {
            let mut bytes = ((body.len() + 1) as u16).to_be_bytes().to_vec();
            bytes.push(ty);
            bytes.extend_from_slice(&body);
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(frame)) = Frame::decode(&mut buf) {
                // Whatever decodes re-encodes to the same bytes.
                prop_assert_eq!(frame.to_bytes().unwrap(), bytes);
            }
        }
    }
}
