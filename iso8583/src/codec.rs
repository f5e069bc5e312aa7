//! tokio-util `Decoder`/`Encoder` over the pure framing functions of `frame` (feature
//! `tokio-codec`). Use with `tokio_util::codec::Framed::new(stream, MessageCodec)`.

use crate::error::Error;
use crate::frame::{HEADER_LEN, split_frame};
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
        match split_frame(src).map_err(CodecError::Frame)? {
            Some((message, consumed)) => {
                let unpacked = Message::unpack(message);
                src.advance(consumed);
                Ok(Some(unpacked))
            }
            None => {
                src.reserve(HEADER_LEN + 256);
                Ok(None)
            }
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
    fn a_frame_over_the_limit_ends_the_stream() {
        let mut buf = BytesMut::from(&[0xFF, 0xFF, b'0'][..]);
        assert!(matches!(
            MessageCodec.decode(&mut buf),
            Err(CodecError::Frame(Error::FrameTooLong { len: 65535 }))
        ));
    }
}
