//! The terminal's proof of its registered key: HMAC-SHA256 over a fixed label, the terminal id
//! and the switch's fresh challenge (docs/terminal-protocol.md, "Authentication").

use super::frame::{NONCE_BYTES, PROOF_BYTES, TERMINAL_ID_MAX_BYTES};
use hmac::{Hmac, Mac};
use payhub_actors::Secret;
use sha2::Sha256;

/// Bytes of a dedicated terminal's shared key.
pub const SHARED_KEY_BYTES: usize = 32;
/// Domain separation: a proof for this protocol is never valid anywhere else.
pub const PROOF_LABEL: &[u8] = b"payhub-terminal-v1";

/// A terminal's shared key; `Debug` prints `***`.
#[derive(Clone, Debug)]
pub struct SharedKey(Secret<[u8; SHARED_KEY_BYTES]>);

impl SharedKey {
    pub fn new(bytes: [u8; SHARED_KEY_BYTES]) -> Self {
        Self(Secret::new(bytes))
    }

    /// From the stored column (`terminals.shared_key`): exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; SHARED_KEY_BYTES]>::try_from(bytes)
            .ok()
            .map(Self::new)
    }

    /// From the 64 lower- or upper-case hex characters `payhub terminal add` prints.
    pub fn from_hex(text: &str) -> Result<Self, String> {
        let bytes = hex::decode(text.trim())
            .map_err(|_| "the key must be 64 hexadecimal characters".to_string())?;
        Self::from_slice(&bytes).ok_or_else(|| "the key must be 64 hexadecimal characters".into())
    }

    /// The proof for `terminal_id` answering `nonce`.
    pub fn proof(&self, terminal_id: &str, nonce: &[u8; NONCE_BYTES]) -> [u8; PROOF_BYTES] {
        self.mac(terminal_id, nonce).finalize().into_bytes().into()
    }

    /// Constant-time check of a proof.
    pub fn verify(&self, terminal_id: &str, nonce: &[u8; NONCE_BYTES], proof: &[u8]) -> bool {
        self.mac(terminal_id, nonce).verify_slice(proof).is_ok()
    }

    fn mac(&self, terminal_id: &str, nonce: &[u8; NONCE_BYTES]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.0.expose())
            .expect("HMAC takes keys of any length");
        mac.update(PROOF_LABEL);
        mac.update(&[0]);
        mac.update(terminal_id.as_bytes());
        mac.update(&[0]);
        mac.update(nonce);
        mac
    }
}

/// A terminal id as HELLO may carry it: 1..=64 printable ASCII characters.
pub fn valid_terminal_id(id: &str) -> bool {
    (1..=TERMINAL_ID_MAX_BYTES).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// A fresh challenge from the operating system's CSPRNG.
pub fn fresh_nonce() -> [u8; NONCE_BYTES] {
    payhub_actors::ids::os_random::<NONCE_BYTES>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector_key() -> SharedKey {
        let mut bytes = [0u8; 32];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        SharedKey::new(bytes)
    }

    #[test]
    fn documented_proof_vector() {
        // docs/terminal-protocol.md, "Test vectors".
        let proof = vector_key().proof("trm_test", &[0xAA; 32]);
        assert_eq!(
            hex::encode(proof),
            "e5f7de35ba1655f514f95fe551dd2c1e9c060032fe8a141065c4507b1bd48888"
        );
    }

    #[test]
    fn proofs_bind_key_id_and_nonce() {
        let key = vector_key();
        let proof = key.proof("trm_a", &[1; 32]);
        assert!(key.verify("trm_a", &[1; 32], &proof));
        assert!(!key.verify("trm_b", &[1; 32], &proof));
        assert!(!key.verify("trm_a", &[2; 32], &proof));
        assert!(!SharedKey::new([9; 32]).verify("trm_a", &[1; 32], &proof));
        assert!(!key.verify("trm_a", &[1; 32], &proof[..31]));
        assert_eq!(format!("{key:?}"), "SharedKey(***)");
    }

    #[test]
    fn keys_parse_from_hex() {
        assert!(SharedKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(SharedKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(SharedKey::from_hex("zz").is_err());
        assert!(valid_terminal_id("trm_1") && !valid_terminal_id("") && !valid_terminal_id("a b"));
    }
}
