//! `Payhub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed by the
//! merchant's webhook secret (gateway-http.md).

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const HEADER: &str = "Payhub-Signature";

fn mac(secret: &[u8], t: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The header value for `body` signed at `t`.
pub fn sign(secret: &[u8], t: i64, body: &[u8]) -> String {
    let tag = mac(secret, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the header is not `t=<seconds>,v1=<hex>`")]
    Malformed,
    #[error("the signature does not match the body")]
    Mismatch,
    #[error("the timestamp is outside the tolerance")]
    Stale,
}

/// What a merchant does: checks `header` against `body`, and that `t` is within `tolerance_s` of
/// `now` (replay protection). Returns `t`.
pub fn verify(
    secret: &[u8],
    header: &str,
    body: &[u8],
    now_unix: i64,
    tolerance_s: i64,
) -> Result<i64, SignatureError> {
    let mut t = None;
    let mut v1 = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => {
                v1.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    let t = t.ok_or(SignatureError::Malformed)?;
    if v1.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if !v1
        .iter()
        .any(|tag| mac(secret, t, body).verify_slice(tag).is_ok())
    {
        return Err(SignatureError::Mismatch);
    }
    if (now_unix - t).abs() > tolerance_s {
        return Err(SignatureError::Stale);
    }
    Ok(t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_the_documented_scheme() {
        let header = sign(b"whsec_test", 1_700_000_000, b"{\"id\":\"evt_1\"}");
        assert!(header.starts_with("t=1700000000,v1="));
        assert_eq!(header.len(), "t=1700000000,v1=".len() + 64);
        // An independent computation of HMAC-SHA256("<t>.<body>").
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(b"whsec_test").unwrap();
        m.update(b"1700000000.{\"id\":\"evt_1\"}");
        let expected = hex::encode(m.finalize().into_bytes());
        assert!(header.ends_with(&expected));
        let ok = verify(
            b"whsec_test",
            &header,
            b"{\"id\":\"evt_1\"}",
            1_700_000_010,
            300,
        );
        assert_eq!(ok, Ok(1_700_000_000));
        assert_eq!(
            verify(
                b"whsec_test",
                &header,
                b"{\"id\":\"evt_2\"}",
                1_700_000_010,
                300
            ),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(b"other", &header, b"{\"id\":\"evt_1\"}", 1_700_000_010, 300),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify(
                b"whsec_test",
                &header,
                b"{\"id\":\"evt_1\"}",
                1_700_009_999,
                300
            ),
            Err(SignatureError::Stale)
        );
        assert_eq!(
            verify(b"whsec_test", "garbage", b"", 0, 300),
            Err(SignatureError::Malformed)
        );
    }
}
