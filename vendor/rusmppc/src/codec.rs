//! payhub patch 6: a PDU whose body cannot be decoded no longer ends the connection.
//!
//! `CommandCodec` returns an error for a whole, well-framed PDU whose body it cannot read (a
//! C-octet string without its NUL, a field past its maximum), and the framed stream ends after
//! any error. An SMSC that kept such a `deliver_sm` for resending then ended every session right
//! after its bind. This codec cuts each PDU out by its `command_length` first and decodes it on
//! its own. A body that cannot be read becomes `Pdu::Other` under the PDU's own command id,
//! status and sequence number (with an empty body), so the client can answer it, and the
//! stream goes on with the next PDU. Framing errors (a length under 16 or over the maximum)
//! still end the stream: after them no PDU boundary can be trusted.

use rusmpp::{
    Command, CommandId, CommandStatus, Pdu,
    tokio_codec::{CommandCodec, DecodeError, EncodeError},
    types::AnyOctetString,
};
use tokio_util::{
    bytes::BytesMut,
    codec::{Decoder, Encoder},
};

const HEADER_LENGTH: usize = 16;

/// [`CommandCodec`], with each PDU decoded on its own (see the module's documentation).
#[derive(Debug)]
pub(crate) struct LenientCodec {
    inner: CommandCodec,
    max_length: usize,
}

impl LenientCodec {
    pub(crate) fn new(max_length: usize) -> Self {
        Self {
            inner: CommandCodec::new().with_max_length(max_length),
            max_length,
        }
    }
}

/// A big-endian u32 at `at` of a slice known to be long enough.
fn u32_at(src: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([src[at], src[at + 1], src[at + 2], src[at + 3]])
}

impl Decoder for LenientCodec {
    type Item = Command;
    type Error = DecodeError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Command>, DecodeError> {
        if src.len() < HEADER_LENGTH {
            return Ok(None);
        }
        let length = usize::try_from(u32_at(src, 0)).unwrap_or(usize::MAX);
        if !(HEADER_LENGTH..=self.max_length).contains(&length) {
            // The inner codec names the framing error.
            return self.inner.decode(src);
        }
        if src.len() < length {
            src.reserve(length - src.len());
            return Ok(None);
        }
        let mut pdu = src.split_to(length);
        let (id, status, sequence_number) = (u32_at(&pdu, 4), u32_at(&pdu, 8), u32_at(&pdu, 12));
        match self.inner.decode(&mut pdu) {
            Ok(Some(command)) => Ok(Some(command)),
            Err(DecodeError::Decode(err)) => {
                tracing::warn!(target: "rusmppc::codec", id, sequence_number, %err, "undecodable PDU body");
                let pdu = Pdu::Other {
                    command_id: CommandId::from(id),
                    body: AnyOctetString::empty(),
                };
                Ok(Some(Command::new(
                    CommandStatus::from(status),
                    sequence_number,
                    pdu,
                )))
            }
            // A whole PDU was given: the inner codec cannot ask for more.
            Ok(None) => Err(DecodeError::MinLength {
                actual: length,
                min: length + 1,
            }),
            Err(err) => Err(err),
        }
    }
}

impl Encoder<&Command> for LenientCodec {
    type Error = EncodeError;

    fn encode(&mut self, command: &Command, dst: &mut BytesMut) -> Result<(), EncodeError> {
        self.inner.encode(command, dst)
    }
}
