//! The terminal's proof of its registered key: HMAC-SHA256 over a fixed label, the terminal id
//! and the switch's fresh challenge (docs/terminal-protocol.md, "Authentication").

use super::frame::{Frame, NONCE_BYTES, PROOF_BYTES, TERMINAL_ID_MAX_BYTES};
use hmac::{Hmac, Mac};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{Id, PKey, Private, Public};
use openssl::sign::{Signer, Verifier};
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
        mac.update(&proof_message(terminal_id, nonce));
        mac
    }
}

/// What is MACed or signed: the label, 0x00, the terminal id, 0x00, the challenge.
pub fn proof_message(terminal_id: &str, nonce: &[u8; NONCE_BYTES]) -> Vec<u8> {
    let mut message = Vec::with_capacity(PROOF_LABEL.len() + terminal_id.len() + 2 + NONCE_BYTES);
    message.extend_from_slice(PROOF_LABEL);
    message.push(0);
    message.extend_from_slice(terminal_id.as_bytes());
    message.push(0);
    message.extend_from_slice(nonce);
    message
}

/// A terminal's registered public key (`terminals.public_key`, PEM): Ed25519, or ECDSA on P-256
/// with SHA-256.
#[derive(Clone)]
pub struct TerminalPublicKey(PKey<Public>);

impl std::fmt::Debug for TerminalPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TerminalPublicKey")
    }
}

impl TerminalPublicKey {
    pub fn from_pem(pem: &str) -> Result<Self, String> {
        let key = PKey::public_key_from_pem(pem.as_bytes())
            .map_err(|_| "not a PEM public key".to_string())?;
        if supported(&key) {
            Ok(Self(key))
        } else {
            Err("only Ed25519 and ECDSA P-256 keys are supported".into())
        }
    }

    /// Checks a SIGNATURE frame's signature of the proof message.
    pub fn verify(&self, terminal_id: &str, nonce: &[u8; NONCE_BYTES], signature: &[u8]) -> bool {
        let message = proof_message(terminal_id, nonce);
        let verified = match self.0.id() {
            Id::ED25519 => Verifier::new_without_digest(&self.0)
                .and_then(|mut v| v.verify_oneshot(signature, &message)),
            _ => Verifier::new(MessageDigest::sha256(), &self.0).and_then(|mut v| {
                v.update(&message)?;
                v.verify(signature)
            }),
        };
        verified.unwrap_or(false)
    }
}

fn supported<T: openssl::pkey::HasPublic>(key: &PKey<T>) -> bool {
    match key.id() {
        Id::ED25519 => true,
        Id::EC => key
            .ec_key()
            .ok()
            .and_then(|ec| ec.group().curve_name())
            .is_some_and(|nid| nid == Nid::X9_62_PRIME256V1),
        _ => false,
    }
}

/// What a terminal proves itself with: the shared key (PROOF) or its private key (SIGNATURE).
#[derive(Clone, Debug)]
pub enum TerminalKey {
    Shared(SharedKey),
    Private(Secret<PKey<Private>>),
}

impl From<SharedKey> for TerminalKey {
    fn from(key: SharedKey) -> Self {
        TerminalKey::Shared(key)
    }
}

impl TerminalKey {
    /// An Ed25519 or ECDSA P-256 private key from PEM (PKCS#8 or SEC1).
    pub fn private_from_pem(pem: &[u8]) -> Result<Self, String> {
        let key =
            PKey::private_key_from_pem(pem).map_err(|_| "not a PEM private key".to_string())?;
        if supported(&key) {
            Ok(TerminalKey::Private(Secret::new(key)))
        } else {
            Err("only Ed25519 and ECDSA P-256 keys are supported".into())
        }
    }

    /// The frame answering the challenge `nonce`.
    pub fn proof_frame(
        &self,
        terminal_id: &str,
        nonce: &[u8; NONCE_BYTES],
    ) -> Result<Frame, String> {
        match self {
            TerminalKey::Shared(key) => Ok(Frame::Proof {
                mac: key.proof(terminal_id, nonce),
            }),
            TerminalKey::Private(key) => {
                let key = key.expose();
                let message = proof_message(terminal_id, nonce);
                let signature = match key.id() {
                    Id::ED25519 => Signer::new_without_digest(key)
                        .and_then(|mut s| s.sign_oneshot_to_vec(&message)),
                    _ => Signer::new(MessageDigest::sha256(), key).and_then(|mut s| {
                        s.update(&message)?;
                        s.sign_to_vec()
                    }),
                };
                signature
                    .map(|signature| Frame::Signature { signature })
                    .map_err(|e| format!("signing the challenge failed: {e}"))
            }
        }
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
    fn signatures_verify_with_the_registered_public_key() {
        let ed = PKey::generate_ed25519().unwrap();
        let group = openssl::ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let ec = PKey::from_ec_key(openssl::ec::EcKey::generate(&group).unwrap()).unwrap();
        for private in [ed, ec] {
            let public_pem = String::from_utf8(private.public_key_to_pem().unwrap()).unwrap();
            let public = TerminalPublicKey::from_pem(&public_pem).unwrap();
            let pem = private.private_key_to_pem_pkcs8().unwrap();
            let key = TerminalKey::private_from_pem(&pem).unwrap();
            let Frame::Signature { signature } = key.proof_frame("trm_a", &[3; 32]).unwrap() else {
                panic!("a private key signs");
            };
            assert!(public.verify("trm_a", &[3; 32], &signature));
            assert!(!public.verify("trm_b", &[3; 32], &signature));
            assert!(!public.verify("trm_a", &[4; 32], &signature));
            assert!(!public.verify("trm_a", &[3; 32], b"garbage"));
            assert_eq!(format!("{key:?}"), "Private(***)");
        }
        let rsa = PKey::from_rsa(openssl::rsa::Rsa::generate(2048).unwrap()).unwrap();
        let rsa_pem = String::from_utf8(rsa.public_key_to_pem().unwrap()).unwrap();
        assert!(TerminalPublicKey::from_pem(&rsa_pem).is_err());
        assert!(TerminalPublicKey::from_pem("junk").is_err());
    }

    #[test]
    fn keys_parse_from_hex() {
        assert!(SharedKey::from_hex(&"ab".repeat(32)).is_ok());
        assert!(SharedKey::from_hex(&"ab".repeat(31)).is_err());
        assert!(SharedKey::from_hex("zz").is_err());
        assert!(valid_terminal_id("trm_1") && !valid_terminal_id("") && !valid_terminal_id("a b"));
    }
}
