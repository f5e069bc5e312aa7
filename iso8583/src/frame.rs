//! Framing: every message is preceded by a 2-byte unsigned big-endian length (the header itself
//! not counted); a frame longer than `FRAME_LEN_MAX` is a protocol error. Pure functions over
//! byte slices, so the tokio codec (feature `tokio-codec`) and any other transport share them.

use crate::error::Error;
use crate::message::Message;

/// The longest message a frame may carry, in bytes.
pub const FRAME_LEN_MAX: usize = 8192;
/// The length header, in bytes.
pub const HEADER_LEN: usize = 2;

/// The header announcing a message of `len` bytes.
pub fn header(len: usize) -> Result<[u8; HEADER_LEN], Error> {
    if len > FRAME_LEN_MAX {
        return Err(Error::FrameTooLong { len });
    }
    Ok((len as u16).to_be_bytes())
}

/// Appends header + `message` to `out`.
pub fn write_frame(message: &[u8], out: &mut Vec<u8>) -> Result<(), Error> {
    out.reserve(HEADER_LEN + message.len());
    out.extend_from_slice(&header(message.len())?);
    out.extend_from_slice(message);
    Ok(())
}

/// Packs `message` with its header straight into `out`, without an intermediate buffer.
pub fn pack_framed(message: &Message, out: &mut Vec<u8>) -> Result<(), Error> {
    let len = message.packed_len();
    let header = header(len).map_err(|_| Error::MessageTooLong { len })?;
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&header);
    message.write_to(out);
    Ok(())
}

/// Looks for one whole frame at the start of `buf`.
/// `Ok(Some((message, consumed)))`: a frame is there, `consumed` bytes (header included) can be
/// dropped. `Ok(None)`: more bytes are needed. `Err(FrameTooLong)`: the peer breaks the profile;
/// close the connection (the header is rejected before its body is read, so it cannot make us
/// buffer more than `FRAME_LEN_MAX`).
pub fn split_frame(buf: &[u8]) -> Result<Option<(&[u8], usize)>, Error> {
    let Some(len) = announced_len(buf)? else {
        return Ok(None);
    };
    let end = HEADER_LEN + len;
    Ok(buf.get(HEADER_LEN..end).map(|message| (message, end)))
}

/// The length the header at the start of `buf` announces, once both header bytes are there.
pub fn announced_len(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(&[hi, lo]) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([hi, lo]));
    if len > FRAME_LEN_MAX {
        return Err(Error::FrameTooLong { len });
    }
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_more() {
        let mut out = Vec::new();
        write_frame(b"0800", &mut out).expect("short");
        assert_eq!(out, b"\x00\x040800");
        assert_eq!(split_frame(&out[..1]), Ok(None));
        assert_eq!(split_frame(&out[..5]), Ok(None));
        assert_eq!(split_frame(&out), Ok(Some((&b"0800"[..], 6))));
    }

    #[test]
    fn rejects_frames_over_the_limit() {
        assert_eq!(
            split_frame(&[0x20, 0x01]),
            Err(Error::FrameTooLong { len: 8193 })
        );
        assert_eq!(header(8193), Err(Error::FrameTooLong { len: 8193 }));
        assert!(header(8192).is_ok());
        assert!(write_frame(&[b'0'; 8193], &mut Vec::new()).is_err());
    }
}
