//! The first key that an object of a JSON document repeats. serde_json keeps the last of repeated
//! keys, and other parsers keep the first (RFC 8259: "the behavior ... is unpredictable"): a
//! merchant's body with two `amount`s could be read as one amount by whatever signed or checked it
//! on the way, and charged as the other. The API refuses such a body instead.

use serde::de::{Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Deserializes any JSON value, keeping only the first key repeated within one of its objects
/// (at any depth).
pub struct RepeatedKey(pub Option<String>);

/// The first key `json` repeats within one object; `None` also when it is not valid JSON (which
/// the caller's own parse reports).
pub fn repeated_key(json: &[u8]) -> Option<String> {
    serde_json::from_slice::<RepeatedKey>(json).ok()?.0
}

impl<'de> Deserialize<'de> for RepeatedKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RepeatedKeyVisitor)
    }
}

struct RepeatedKeyVisitor;

impl<'de> Visitor<'de> for RepeatedKeyVisitor {
    type Value = RepeatedKey;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<RepeatedKey, E> {
        Ok(RepeatedKey(None))
    }

    fn visit_i64<E>(self, _: i64) -> Result<RepeatedKey, E> {
        Ok(RepeatedKey(None))
    }

    fn visit_u64<E>(self, _: u64) -> Result<RepeatedKey, E> {
        Ok(RepeatedKey(None))
    }

    fn visit_f64<E>(self, _: f64) -> Result<RepeatedKey, E> {
        Ok(RepeatedKey(None))
    }

    fn visit_str<E>(self, _: &str) -> Result<RepeatedKey, E> {
        Ok(RepeatedKey(None))
    }

    fn visit_unit<E>(self) -> Result<RepeatedKey, E> {
        Ok(RepeatedKey(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RepeatedKey, A::Error> {
        let mut first = None;
        while let Some(RepeatedKey(inner)) = seq.next_element()? {
            first = first.or(inner);
        }
        Ok(RepeatedKey(first))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RepeatedKey, A::Error> {
        let mut seen = HashSet::new();
        let mut first = None;
        while let Some(key) = map.next_key::<String>()? {
            if first.is_some() {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            let RepeatedKey(inner) = map.next_value()?;
            first = inner;
            if first.is_none() && !seen.insert(key.clone()) {
                first = Some(key);
            }
        }
        Ok(RepeatedKey(first))
    }
}

#[cfg(test)]
mod tests {
    use super::repeated_key;

    #[test]
    fn finds_the_first_key_repeated_in_an_object_at_any_depth() {
        assert_eq!(repeated_key(br#"{"a":1,"b":2}"#), None);
        assert_eq!(repeated_key(br#"{"a":1,"a":2}"#).as_deref(), Some("a"));
        assert_eq!(
            repeated_key(br#"{"a":1,"b":{"c":1,"c":2},"a":3}"#).as_deref(),
            Some("c")
        );
        assert_eq!(repeated_key(br#"[{"x":1},{"x":2}]"#), None);
        assert_eq!(repeated_key(br#"[{"x":1,"x":2}]"#).as_deref(), Some("x"));
        // Escapes name the same key.
        assert_eq!(repeated_key(br#"{"a":1,"\u0061":2}"#).as_deref(), Some("a"));
        assert_eq!(repeated_key(b"not json"), None);
    }
}
