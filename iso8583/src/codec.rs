//! tokio-util `Decoder`/`Encoder` over the pure framing functions of `frame` (feature
//! `tokio-codec`). Use with `tokio_util::codec::Framed::new(stream, MessageCodec)`.

use crate::error::Error;
use crate::frame::{HEADER_LEN, split_frame};
use crate::mac::{MacKey, unpack_verified};
use crate::message::{Message, Sink};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// What ends a connection: the socket failed, or the peer broke the framing (a frame over
/// `FRAME_LEN_MAX`). A malformed message inside a good frame does not; see `MessageCodec`.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Frame(Error),
}

/// Frames to and from whole messages. Each decoded item is the unpacked message or the reason it
/// is malformed, so one bad message can be logged (or answered with response code 30) while the
/// connection goes on; a stream error (`CodecError`) means the connection must be closed.
#[derive(Clone, Copy, Debug, Default)]
pub struct MessageCodec;

impl Decoder for MessageCodec {
    type Item = Result<Message, Error>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        decode_with(src, Message::unpack)
    }
}

/// `MessageCodec`'s decoder for a link that may MAC its messages: with a key, each message's MAC
/// is checked over the bytes as received (`mac::unpack_verified`), since the message re-packed may
/// differ from them (an empty secondary bitmap is accepted but never written). A bad or missing
/// MAC is a malformed message, not a stream error.
#[derive(Clone, Debug, Default)]
pub struct VerifyingCodec {
    key: Option<MacKey>,
}

impl VerifyingCodec {
    pub fn new(key: Option<MacKey>) -> Self {
        Self { key }
    }
}

impl Decoder for VerifyingCodec {
    type Item = Result<Message, Error>;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, CodecError> {
        match &self.key {
            Some(key) => decode_with(src, |bytes| unpack_verified(bytes, key)),
            None => decode_with(src, Message::unpack),
        }
    }
}

/// Takes one whole frame off `src` and unpacks its message with `unpack`.
fn decode_with(
    src: &mut BytesMut,
    unpack: impl FnOnce(&[u8]) -> Result<Message, Error>,
) -> Result<Option<Result<Message, Error>>, CodecError> {
    match split_frame(src).map_err(CodecError::Frame)? {
        Some((message, consumed)) => {
            let unpacked = unpack(message);
            src.advance(consumed);
            Ok(Some(unpacked))
        }
        None => {
            src.reserve(HEADER_LEN + 256);
            Ok(None)
        }
    }
}

impl Encoder<&Message> for MessageCodec {
    type Error = CodecError;

    fn encode(&mut self, message: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        let len = message.packed_len();
        let header = crate::frame::header(len)
            .map_err(|_| CodecError::Frame(Error::MessageTooLong { len }))?;
        dst.reserve(HEADER_LEN + len);
        dst.put_slice(&header);
        message.write_to(dst);
        Ok(())
    }
}

impl Encoder<Message> for MessageCodec {
    type Error = CodecError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&message, dst)
    }
}

/// Frames to and from raw message bytes, for callers that unpack themselves.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = Bytes;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Bytes>, CodecError> {
        let Some((message, consumed)) = split_frame(src).map_err(CodecError::Frame)? else {
            return Ok(None);
        };
        let len = message.len();
        src.advance(consumed - len);
        Ok(Some(src.split_to(len).freeze()))
    }
}

impl Encoder<&[u8]> for FrameCodec {
    type Error = CodecError;

    fn encode(&mut self, message: &[u8], dst: &mut BytesMut) -> Result<(), CodecError> {
        let header = crate::frame::header(message.len()).map_err(CodecError::Frame)?;
        dst.reserve(HEADER_LEN + message.len());
        dst.put_slice(&header);
        dst.put_slice(message);
        Ok(())
    }
}

impl Sink for BytesMut {
    fn put(&mut self, bytes: &[u8]) {
        self.put_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_split_frames_and_keeps_going_after_a_bad_message() {
        let good = Message::new("0800")
            .and_then(|m| m.with(70, "301"))
            .expect("valid");
        let mut wire = BytesMut::new();
        MessageCodec.encode(&good, &mut wire).expect("encode");
        FrameCodec
            .encode(&b"08x0"[..], &mut wire)
            .expect("encode raw");
        let mut codec = MessageCodec;
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        for byte in wire.iter() {
            buf.put_u8(*byte);
            while let Some(item) = codec.decode(&mut buf).expect("framing is fine") {
                decoded.push(item);
            }
        }
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0], Ok(good));
        assert!(matches!(
            decoded[1],
            Err(Error::BadCharacter { field: 0, .. })
        ));
        assert!(buf.is_empty());
    }

    #[test]
    fn the_verifying_codec_checks_the_mac_of_each_message() {
        let key = MacKey::new([7; 16]);
        let echo = Message::new("0800")
            .and_then(|m| m.with(11, "000001"))
            .and_then(|m| m.with(70, "301"))
            .expect("valid");
        let mut wire = BytesMut::new();
        let signed = crate::mac::pack_signed(&echo, &key).expect("sign");
        FrameCodec.encode(&signed[..], &mut wire).expect("encode");
        MessageCodec.encode(&echo, &mut wire).expect("encode");
        let mut codec = VerifyingCodec::new(Some(key));
        let first = codec.decode(&mut wire).expect("framing").expect("a frame");
        assert!(first.expect("verifies").has(128));
        let second = codec.decode(&mut wire).expect("framing").expect("a frame");
        assert_eq!(second, Err(Error::MacMissing { field: 128 }));
        let mut wire = BytesMut::new();
        MessageCodec.encode(&echo, &mut wire).expect("encode");
        let unchecked = VerifyingCodec::new(None)
            .decode(&mut wire)
            .expect("framing");
        assert_eq!(unchecked, Some(Ok(echo)));
    }

    #[test]
    fn a_frame_over_the_limit_ends_the_stream() {
        let mut buf = BytesMut::from(&[0xFF, 0xFF, b'0'][..]);
        assert!(matches!(
            MessageCodec.decode(&mut buf),
            Err(CodecError::Frame(Error::FrameTooLong { len: 65535 }))
        ));
    }
}
