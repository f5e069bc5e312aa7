//! Prefixed random identifiers (`pay_…`, `mer_…`): 128 bits from the OS CSPRNG, hex encoded.

use rand::TryRngCore;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(os_random::<16>()))
}

/// Longest payment id taken from outside (a path): ours are 36 characters.
pub const PAYMENT_ID_MAX_CHARS: usize = 64;

/// Whether `id`, from a path, has the shape of a payment id: `pay_` and then letters, digits or
/// `_`. Anything else names no payment, and is answered without a query (PostgreSQL refuses a NUL
/// in a text parameter, which would read as the database failing).
pub fn is_payment_id(id: &str) -> bool {
    id.len() <= PAYMENT_ID_MAX_CHARS
        && id.strip_prefix("pay_").is_some_and(|rest| {
            !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        })
}

/// `N` bytes from the operating system's CSPRNG. A machine without a working random source cannot
/// run a payment gateway safely, so that failure stops the process.
pub fn os_random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .expect("the operating system's random source failed");
    bytes
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_prefixed_and_distinct() {
        let a = super::new_id("pay");
        let b = super::new_id("pay");
        assert!(a.starts_with("pay_"));
        assert_eq!(a.len(), 4 + 32);
        assert_ne!(a, b);
        assert!(super::is_payment_id(&a));
    }

    #[test]
    fn payment_ids_from_paths_are_checked() {
        use super::is_payment_id;
        assert!(is_payment_id("pay_0123abcd"));
        assert!(!is_payment_id("pay_"));
        assert!(!is_payment_id("mer_0123"));
        assert!(!is_payment_id("pay_../x"));
        assert!(!is_payment_id("pay_ab\0cd"));
        assert!(!is_payment_id(&format!("pay_{}", "a".repeat(80))));
    }
}
