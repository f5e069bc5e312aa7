//! Prefixed random identifiers (`pay_…`, `mer_…`): 128 bits from the OS CSPRNG, hex encoded.

use rand::TryRngCore;

pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", hex::encode(os_random::<16>()))
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
    }
}
