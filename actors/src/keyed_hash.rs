//! Keyed hashes (HMAC-SHA256) for values that must be checked but never stored: authorization
//! codes and browser session tokens. The key comes from the gateway's secret key file.

use crate::secret::Secret;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub const KEY_BYTES: usize = 32;

#[derive(Clone)]
pub struct HashKey(Secret<[u8; KEY_BYTES]>);

impl std::fmt::Debug for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashKey(***)")
    }
}

impl HashKey {
    pub fn new(bytes: [u8; KEY_BYTES]) -> Self {
        Self(Secret::new(bytes))
    }

    pub fn random() -> Self {
        Self::new(crate::ids::os_random::<KEY_BYTES>())
    }

    /// HMAC-SHA256 of `purpose` and `value`; the purpose keeps a code hash from ever equalling a
    /// session hash.
    pub fn hash(&self, purpose: &str, value: &[u8]) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.finalize().into_bytes().into()
    }

    /// Constant-time comparison of `value`'s hash with `expected`.
    pub fn verify(&self, purpose: &str, value: &[u8], expected: &[u8]) -> bool {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .expect("HMAC takes keys of any length");
        mac.update(purpose.as_bytes());
        mac.update(&[0]);
        mac.update(value);
        mac.verify_slice(expected).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_depend_on_key_purpose_and_value() {
        let k = HashKey::new([7; 32]);
        let h = k.hash("code", b"123456");
        assert!(k.verify("code", b"123456", &h));
        assert!(!k.verify("code", b"123457", &h));
        assert!(!k.verify("session", b"123456", &h));
        assert!(!HashKey::new([8; 32]).verify("code", b"123456", &h));
        assert_eq!(format!("{k:?}"), "HashKey(***)");
    }
}
