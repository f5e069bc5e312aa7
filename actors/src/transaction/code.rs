//! Authorization codes and RRNs, drawn from the OS CSPRNG, and browser session tokens, derived
//! from the random cookie the gateway gave the browser.

use crate::ids::os_random;
use crate::keyed_hash::HashKey;
use crate::secret::Secret;

/// Keyed-hash purposes: a code hash never equals a session hash.
pub const CODE_PURPOSE: &str = "authorization-code";
pub const SESSION_PURPOSE: &str = "browser-session";
pub const CSRF_PURPOSE: &str = "csrf";
pub const SESSION_TOKEN_PURPOSE: &str = "browser-session-token";

pub const CODE_DIGITS_MIN: u32 = 6;
pub const CODE_DIGITS_MAX: u32 = 8;

/// A uniformly drawn code of `digits` decimal digits (6..=8), zero-padded.
pub fn new_code(digits: u32) -> Secret<String> {
    assert!(
        (CODE_DIGITS_MIN..=CODE_DIGITS_MAX).contains(&digits),
        "code length is validated with the configuration"
    );
    let modulus = 10u64.pow(digits);
    // Rejection sampling keeps every code equally likely.
    let limit = u64::MAX - u64::MAX % modulus;
    loop {
        let draw = u64::from_le_bytes(os_random::<8>());
        if draw < limit {
            return Secret::new(format!(
                "{:0width$}",
                draw % modulus,
                width = digits as usize
            ));
        }
    }
}

/// The keyed hash of a code bound to its payment (a code of one payment never checks on another).
pub fn code_hash(key: &HashKey, payment_id: &str, code: &str) -> Vec<u8> {
    key.hash(CODE_PURPOSE, format!("{payment_id}\0{code}").as_bytes())
        .to_vec()
}

pub fn code_matches(key: &HashKey, payment_id: &str, code: &str, expected: &[u8]) -> bool {
    key.verify(
        CODE_PURPOSE,
        format!("{payment_id}\0{code}").as_bytes(),
        expected,
    )
}

/// A browser session token: 256 bits, hex.
/// The session token of the browser holding `csrf_cookie` (a random value the gateway set) for
/// payment `payment_id`: the same browser always gets the same token, and only it can.
pub fn browser_session_token(key: &HashKey, payment_id: &str, csrf_cookie: &str) -> Secret<String> {
    let token = key.hash(
        SESSION_TOKEN_PURPOSE,
        format!("{payment_id}\0{csrf_cookie}").as_bytes(),
    );
    Secret::new(hex::encode(token))
}

pub fn session_hash(key: &HashKey, payment_id: &str, token: &str) -> Vec<u8> {
    key.hash(SESSION_PURPOSE, format!("{payment_id}\0{token}").as_bytes())
        .to_vec()
}

pub fn session_matches(key: &HashKey, payment_id: &str, token: &str, expected: &[u8]) -> bool {
    key.verify(
        SESSION_PURPOSE,
        format!("{payment_id}\0{token}").as_bytes(),
        expected,
    )
}

/// A retrieval reference number (ISO 8583 field 37, an 12): 12 characters of `0-9A-Z`, about 62
/// bits, so RRNs of independent gateways sharing a BIPS do not collide.
/// Whether a customer sent `code_sends` codes may ask for another, `resends_max` at most.
pub fn resends_left(code_sends: i32, resends_max: u32) -> bool {
    u32::try_from(code_sends - 1).is_ok_and(|resent| resent < resends_max)
}

pub fn new_rrn() -> String {
    const ALPHABET: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let bytes = os_random::<12>();
    // 256 % 36 = 4: the bias is under 2% on one character and harmless for uniqueness.
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_have_the_configured_digits_and_vary() {
        for digits in 6..=8 {
            let code = new_code(digits);
            assert_eq!(code.expose().len(), digits as usize);
            assert!(code.expose().bytes().all(|b| b.is_ascii_digit()));
        }
        let codes: std::collections::HashSet<String> =
            (0..50).map(|_| new_code(6).into_inner()).collect();
        assert!(codes.len() > 45, "codes repeat too often: {}", codes.len());
    }

    #[test]
    fn code_and_session_hashes_are_bound_to_the_payment() {
        let key = HashKey::new([3; 32]);
        let h = code_hash(&key, "pay_a", "123456");
        assert!(code_matches(&key, "pay_a", "123456", &h));
        assert!(!code_matches(&key, "pay_b", "123456", &h));
        assert!(!session_matches(&key, "pay_a", "123456", &h));
        let s = session_hash(&key, "pay_a", "tok");
        assert!(session_matches(&key, "pay_a", "tok", &s));
        assert!(!session_matches(&key, "pay_a", "tok2", &s));
    }

    #[test]
    fn rrns_are_twelve_alphanumerics() {
        let rrn = new_rrn();
        assert_eq!(rrn.len(), 12);
        assert!(
            rrn.bytes()
                .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
        );
        assert_ne!(new_rrn(), rrn);
    }
}
