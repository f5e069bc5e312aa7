//! Idempotency keys for `POST /v1/payments`: the first response to a key is stored with the
//! payment, in the same transaction, and replayed for 24 hours to the same request; a different
//! request under the same key is refused.

use super::StoreError;
use crate::store::prepared::Prepared;
use chrono::{DateTime, Duration, Utc};
use deadpool_postgres::GenericClient;
use sha2::{Digest, Sha256};

/// How long a key's response is replayed.
pub const REPLAY_WINDOW_S: i64 = 24 * 3600;
/// Longest key accepted, in characters (gateway-http.md: 1..255 printable).
pub const KEY_MAX_CHARS: usize = 255;

/// A valid `Idempotency-Key` header value: 1..=255 printable ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(value: &str) -> Result<Self, crate::domain::FieldError> {
        let printable = value.bytes().all(|b| (0x20..=0x7e).contains(&b));
        if (1..=KEY_MAX_CHARS).contains(&value.len()) && printable {
            Ok(Self(value.to_string()))
        } else {
            Err(crate::domain::FieldError::new(
                "Idempotency-Key",
                "must be 1 to 255 printable ASCII characters",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// SHA-256 of the method, the path and the request body in canonical form, so a merchant's retry
/// matches whatever its JSON encoder's whitespace or key order.
pub fn request_hash(method: &str, path: &str, canonical_body: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [method, path, canonical_body] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize().into()
}

/// A stored first response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredResponse {
    pub request_hash: Vec<u8>,
    pub status: u16,
    pub body: String,
    pub created_at: DateTime<Utc>,
}

impl StoredResponse {
    pub fn is_fresh(&self, now: DateTime<Utc>) -> bool {
        now - self.created_at < Duration::seconds(REPLAY_WINDOW_S)
    }
}

pub async fn find(
    client: &impl GenericClient,
    merchant_id: &str,
    key: &IdempotencyKey,
) -> Result<Option<StoredResponse>, StoreError> {
    let row = client
        .query_opt_cached(
            "SELECT request_hash, response_status, response_body, created_at \
             FROM idempotency_keys WHERE merchant_id = $1 AND key = $2",
            &[&merchant_id, &key.as_str()],
        )
        .await?;
    Ok(row.map(|r| StoredResponse {
        request_hash: r.get(0),
        status: r.get::<_, i16>(1).try_into().unwrap_or(0),
        body: r.get(2),
        created_at: r.get(3),
    }))
}

/// Forgets a key whose replay window has passed (only that version of it).
pub async fn delete_stale(
    client: &impl GenericClient,
    merchant_id: &str,
    key: &IdempotencyKey,
    created_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    client
        .execute_cached(
            "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 AND created_at = $3",
            &[&merchant_id, &key.as_str(), &created_at],
        )
        .await?;
    Ok(())
}

/// Deletes up to `batch_max` keys older than the replay window; returns how many.
pub async fn purge_stale(
    client: &impl GenericClient,
    now: DateTime<Utc>,
    batch_max: i64,
) -> Result<u64, StoreError> {
    let cutoff = now - Duration::seconds(REPLAY_WINDOW_S);
    Ok(client
        .execute_cached(
            "DELETE FROM idempotency_keys WHERE ctid IN (SELECT ctid FROM idempotency_keys \
             WHERE created_at <= $1 LIMIT $2)",
            &[&cutoff, &batch_max],
        )
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_printable_and_bounded() {
        assert!(IdempotencyKey::parse("a").is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(255)).is_ok());
        assert!(IdempotencyKey::parse(&"k".repeat(256)).is_err());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("a\tb").is_err());
        assert!(IdempotencyKey::parse("ключ").is_err());
    }

    #[test]
    fn hash_separates_parts() {
        assert_ne!(
            request_hash("POST", "/a", "b"),
            request_hash("POST", "/ab", "")
        );
    }
}
