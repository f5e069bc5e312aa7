//! `payhub iso8583 decode|encode` (issue 3, operations.md): an operator's view of one bank-link
//! message, as JSON `{"mti":"0200","fields":{"3":"000000",…}}` with fields in number order.

use anyhow::{Context, bail};
use payhub_iso8583::Message;
use payhub_iso8583::mask::Shown;
use std::io::Read;

/// The most standard input `decode`/`encode` read: a message is at most 8192 bytes, so its hex or
/// JSON is far below this.
const STDIN_LEN_MAX: u64 = 64 * 1024;

#[derive(clap::Subcommand)]
pub enum Iso8583Command {
    /// Decodes one message (hex, without its length header) to JSON.
    Decode {
        /// The message as hex; read from standard input when absent.
        hex: Option<String>,
        /// Show account numbers, PIN and track data in full (`decode --reveal | encode`
        /// round-trips; masked output does not).
        #[arg(long)]
        reveal: bool,
    },
    /// Reads the JSON of `decode` on standard input and prints the message as hex.
    Encode,
}

pub fn run(cmd: Iso8583Command) -> anyhow::Result<()> {
    let line = match cmd {
        Iso8583Command::Decode { hex, reveal } => {
            let hex = match hex {
                Some(hex) => hex,
                None => read_stdin()?,
            };
            decode(&hex, reveal)?
        }
        Iso8583Command::Encode => encode(&read_stdin()?)?,
    };
    crate::cli::output::result(line)
}

/// The JSON line for the message in `hex` (whitespace ignored).
pub fn decode(hex: &str, reveal: bool) -> anyhow::Result<String> {
    let compact: String = hex.split_whitespace().collect();
    let bytes = hex::decode(&compact).context("the message is not hex")?;
    let message = Message::unpack(&bytes)?;
    Ok(to_json(&message, reveal))
}

/// The hex of the message described by `json`.
pub fn encode(json: &str) -> anyhow::Result<String> {
    let value: serde_json::Value =
        serde_json::from_str(json).context("standard input is not JSON")?;
    let Some(mti) = value.get("mti").and_then(|m| m.as_str()) else {
        bail!("\"mti\" must be a string of 4 digits");
    };
    let mut message = Message::new(mti)?;
    let Some(fields) = value.get("fields").and_then(|f| f.as_object()) else {
        bail!("\"fields\" must be an object of field number to string value");
    };
    for (key, value) in fields {
        let field: u8 = key
            .parse()
            .with_context(|| format!("field {key:?}: not a field number"))?;
        let Some(text) = value.as_str() else {
            bail!("field {field}: the value must be a string");
        };
        message.set(field, text)?;
    }
    Ok(hex::encode(message.pack()?))
}

fn to_json(message: &Message, reveal: bool) -> String {
    let fields: Vec<String> = message
        .fields()
        .map(|(field, value)| {
            let shown = if reveal {
                value.to_owned()
            } else {
                Shown::for_field(field, value).to_string()
            };
            format!("\"{field}\":{}", serde_json::Value::String(shown))
        })
        .collect();
    format!(
        "{{\"mti\":{},\"fields\":{{{}}}}}",
        serde_json::Value::String(message.mti().to_owned()),
        fields.join(",")
    )
}

fn read_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin()
        .take(STDIN_LEN_MAX)
        .read_to_string(&mut text)
        .context("reading standard input")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_masks_and_encode_reverses_reveal() {
        let m = Message::new("0200")
            .and_then(|m| m.with(4, "000000001234"))
            .and_then(|m| m.with(102, "6222000011112222"))
            .expect("valid");
        let hex = hex::encode(m.pack().expect("pack"));
        assert_eq!(
            decode(&hex, false).expect("decodes"),
            r#"{"mti":"0200","fields":{"4":"000000001234","102":"622200******2222"}}"#
        );
        let revealed = decode(&hex, true).expect("decodes");
        assert_eq!(encode(&revealed).expect("encodes"), hex);
    }
}
