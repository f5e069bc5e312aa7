//! Names spelled in printable ASCII, for the two channels that carry nothing else: an SMS in the
//! SMSC default alphabet (`data_coding` 0, smpp-profile.md) and ISO 8583 field 43 (`ans 40`). The
//! merchant's name is how a customer tells that a code belongs to this payment, so a name in
//! another script is transliterated ("书店" → "Shu Dian", "Café Zoë" → "Cafe Zoe"), not lost to
//! `?` or blanks. The pages and the terminal protocol (UTF-8) show the name as registered.

/// `text` transliterated into printable ASCII and spaces. A character with no ASCII spelling
/// becomes `?`; control characters are dropped.
pub fn ascii_spelling(text: &str) -> String {
    deunicode::deunicode_with_tofu(text, "?")
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ascii_spelling;

    #[test]
    fn names_in_other_scripts_are_spelled_in_ascii_letters() {
        assert_eq!(ascii_spelling("Book Shop"), "Book Shop");
        assert_eq!(ascii_spelling("书店"), "Shu Dian");
        assert_eq!(ascii_spelling("Café Zoë"), "Cafe Zoe");
        assert_eq!(ascii_spelling("Müller Bücher"), "Muller Bucher");
        assert_eq!(ascii_spelling("Магазин"), "Magazin");
    }

    #[test]
    fn the_result_is_printable_ascii_whatever_the_input() {
        for hostile in [
            "tab\there",
            "line\nbreak\r",
            "\u{0}\u{7f}\u{200b}",
            "\u{10ffff}",
            "🛒",
        ] {
            let spelled = ascii_spelling(hostile);
            assert!(
                spelled.chars().all(|c| c.is_ascii_graphic() || c == ' '),
                "{hostile:?} → {spelled:?}"
            );
        }
    }
}
