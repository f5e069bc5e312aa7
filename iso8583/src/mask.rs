//! What people may see of a field: account numbers keep their first 6 and last 4 characters, PIN
//! blocks, track data and security codes are never shown.

use std::fmt;

/// Account numbers: PAN, extended PAN, account identification 1 and 2.
pub const MASKED_FIELDS: [u8; 4] = [2, 34, 102, 103];
/// Never shown at all: track 2, track 3, track 1, PIN data, message security code.
pub const HIDDEN_FIELDS: [u8; 5] = [35, 36, 45, 52, 96];

/// A field value as it may be printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown<'a> {
    Plain(&'a str),
    /// First 6 and last 4 kept (only the last 4 when the value is short, nothing when very short).
    Masked(&'a str),
    Hidden,
}

impl<'a> Shown<'a> {
    pub fn for_field(field: u8, value: &'a str) -> Shown<'a> {
        if HIDDEN_FIELDS.contains(&field) {
            Shown::Hidden
        } else if MASKED_FIELDS.contains(&field) {
            Shown::Masked(value)
        } else {
            Shown::Plain(value)
        }
    }
}

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shown::Plain(value) => f.write_str(value),
            Shown::Masked(value) => write_masked(f, value),
            Shown::Hidden => f.write_str("***"),
        }
    }
}

/// The same rule as `payhub_actors::secret::mask_account` (this crate sits below that one).
fn write_masked(f: &mut fmt::Formatter<'_>, value: &str) -> fmt::Result {
    let n = value.chars().count();
    let (head, tail) = match n {
        11.. => (6, 4),
        5..=10 => (0, 4),
        _ => (0, 0),
    };
    for (i, c) in value.chars().enumerate() {
        if i < head || i >= n - tail {
            write!(f, "{c}")?;
        } else {
            f.write_str("*")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_like_the_gateway() {
        let shown = |field, value| Shown::for_field(field, value).to_string();
        assert_eq!(shown(102, "6222000011112222"), "622200******2222");
        assert_eq!(shown(2, "12345678"), "****5678");
        assert_eq!(shown(103, "123"), "***");
        assert_eq!(shown(52, "0123456789ABCDEF"), "***");
        assert_eq!(shown(4, "000000001234"), "000000001234");
    }
}
