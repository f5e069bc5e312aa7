//! How many bytes the link has handed to its writer that the socket has not yet taken, and how
//! many the socket has taken in all. The writer's buffer has no bound of its own: a bank that
//! never reads would grow it without end. The codec counts what it encodes, the transport what the
//! socket accepts; the link reads the difference, and whether it still moves.

use bytes::BytesMut;
use payhub_iso8583::Message;
use payhub_iso8583::codec::{CodecError, MessageCodec};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::codec::Encoder;

/// The counts shared by one connection's codec and transport.
#[derive(Clone, Debug, Default)]
pub struct Unsent(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    unsent: AtomicUsize,
    taken: AtomicU64,
}

impl Unsent {
    /// Bytes encoded and not yet taken by the socket.
    pub fn bytes(&self) -> usize {
        self.0.unsent.load(Ordering::Relaxed)
    }

    /// Bytes the socket has taken since the connection opened.
    pub fn taken(&self) -> u64 {
        self.0.taken.load(Ordering::Relaxed)
    }

    /// `MessageCodec`, counting what it encodes.
    pub fn codec(&self) -> CountingCodec {
        CountingCodec(self.clone())
    }

    /// `io`, counting what the socket takes.
    pub fn transport<W>(&self, io: W) -> CountingTransport<W> {
        CountingTransport {
            io,
            unsent: self.clone(),
        }
    }
}

pub struct CountingCodec(Unsent);

impl Encoder<Message> for CountingCodec {
    type Error = CodecError;

    fn encode(&mut self, message: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        let before = dst.len();
        MessageCodec.encode(&message, dst)?;
        (self.0)
            .0
            .unsent
            .fetch_add(dst.len() - before, Ordering::Relaxed);
        Ok(())
    }
}

pub struct CountingTransport<W> {
    io: W,
    unsent: Unsent,
}

impl<W: AsyncWrite + Unpin> AsyncWrite for CountingTransport<W> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = written {
            let counts = &self.unsent.0;
            // Saturating: bytes written by anything but the counting codec are not counted in.
            let _ = counts
                .unsent
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |unsent| {
                    Some(unsent.saturating_sub(n))
                });
            counts.taken.fetch_add(n as u64, Ordering::Relaxed);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn counts_encoded_bytes_until_the_transport_takes_them() {
        let unsent = Unsent::default();
        let mut buffer = BytesMut::new();
        let message = Message::new("0800").unwrap().with(70, "301").unwrap();
        unsent.codec().encode(message, &mut buffer).unwrap();
        assert_eq!(unsent.bytes(), buffer.len());
        let mut transport = unsent.transport(Vec::new());
        transport.write_all(&buffer[..5]).await.unwrap();
        assert_eq!(unsent.bytes(), buffer.len() - 5);
        transport.write_all(&buffer[5..]).await.unwrap();
        assert_eq!(unsent.bytes(), 0);
        assert_eq!(unsent.taken(), buffer.len() as u64);
    }
}
