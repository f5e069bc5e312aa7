//! The PDUs payhub sends, exactly as the SMPP profile (smpp-profile.md) says, and names for the
//! statuses it gets back.

use super::settings::SmppSettings;
use payhub_actors::domain::Msisdn;
use rusmpp::CommandStatus;
use rusmpp::pdus::{BindTransceiver, SubmitSm};
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{
    DataCoding, EsmClass, InterfaceVersion, Npi, RegisteredDelivery, ServiceType, Ton,
};

/// One SMS carries at most 160 characters of the default alphabet.
pub const SMS_TEXT_CHARS_MAX: usize = 160;

/// A PDU field that does not fit its SMPP type; names the field, never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PduError {
    pub field: &'static str,
    pub reason: String,
}

fn c_octets<const MIN: usize, const MAX: usize>(
    field: &'static str,
    value: &str,
) -> Result<COctetString<MIN, MAX>, PduError> {
    COctetString::from_string(value.to_string()).map_err(|e| PduError {
        field,
        reason: e.to_string(),
    })
}

/// `bind_transceiver` with the configured system id and password, an empty `system_type` and
/// interface version 3.4.
pub fn bind_transceiver(settings: &SmppSettings) -> Result<BindTransceiver, PduError> {
    Ok(BindTransceiver::builder()
        .system_id(c_octets("system_id", &settings.system_id)?)
        .password(c_octets("password", settings.password.expose())?)
        .system_type(COctetString::empty())
        .interface_version(InterfaceVersion::Smpp3_4)
        .addr_ton(Ton::Unknown)
        .addr_npi(Npi::Unknown)
        .address_range(COctetString::empty())
        .build())
}

/// One `submit_sm`: alphanumeric sender (TON 5), international ISDN destination (TON 1, NPI 1)
/// without `+`, a delivery receipt asked for, the default alphabet, at most 160 characters.
pub fn submit_sm(source_addr: &str, to: &Msisdn, text: &str) -> Result<SubmitSm, PduError> {
    let text = sms_text(text);
    let short_message = OctetString::from_string(text).map_err(|e| PduError {
        field: "short_message",
        reason: e.to_string(),
    })?;
    Ok(SubmitSm::builder()
        .service_type(ServiceType::default())
        .source_addr_ton(Ton::Alphanumeric)
        .source_addr_npi(Npi::Unknown)
        .source_addr(c_octets("source_addr", source_addr)?)
        .dest_addr_ton(Ton::International)
        .dest_addr_npi(Npi::Isdn)
        .destination_addr(c_octets("destination_addr", to.digits())?)
        .esm_class(EsmClass::default())
        .registered_delivery(RegisteredDelivery::from(1u8))
        .data_coding(DataCoding::McSpecific)
        .short_message(short_message)
        .build())
}

/// The text as the SMSC default alphabet can carry it (`data_coding` 0): every character that
/// GSM 03.38 and ASCII do not put at the same code point becomes `?`, and the text is cut to 160
/// characters. The code comes first in every notice, so a cut never loses it.
pub fn sms_text(text: &str) -> String {
    text.chars()
        .map(|c| if same_in_gsm_and_ascii(c) { c } else { '?' })
        .take(SMS_TEXT_CHARS_MAX)
        .collect()
}

/// `@`, `$` and `_` are in both alphabets but at other code points (GSM 0x00, 0x02, 0x11): an
/// SMSC that reads the bytes as GSM would show `¡`, `¤` and `§`.
fn same_in_gsm_and_ascii(c: char) -> bool {
    c.is_ascii_alphanumeric() || " \n\r!\"#%&'()*+,-./:;<=>?".contains(c)
}

/// How payhub treats a `submit_sm_resp` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubmitVerdict {
    Accepted,
    /// ESME_RTHROTTLED or ESME_RMSGQFUL: try again later.
    Retry,
    /// Any other status fails the delivery.
    Refused,
}

pub fn submit_verdict(status: CommandStatus) -> SubmitVerdict {
    match status {
        CommandStatus::EsmeRok => SubmitVerdict::Accepted,
        CommandStatus::EsmeRthrottled | CommandStatus::EsmeRmsgqful => SubmitVerdict::Retry,
        _ => SubmitVerdict::Refused,
    }
}

/// `EsmeRinvpaswd (0x0000000E)`: the name and the number, for errors and logs.
pub fn status_name(status: CommandStatus) -> String {
    format!("{status:?} (0x{:08X})", u32::from(status))
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_actors::Secret;

    #[test]
    fn submit_sm_follows_the_profile() {
        let to = Msisdn::parse("+8613800138000").unwrap();
        let pdu = submit_sm("PAYHUB", &to, "payhub: code 123456").unwrap();
        assert_eq!(pdu.source_addr_ton, Ton::Alphanumeric);
        assert_eq!(pdu.source_addr.as_str(), "PAYHUB");
        assert_eq!(pdu.dest_addr_ton, Ton::International);
        assert_eq!(pdu.dest_addr_npi, Npi::Isdn);
        assert_eq!(pdu.destination_addr.as_str(), "8613800138000");
        assert_eq!(u8::from(pdu.registered_delivery), 1);
        assert_eq!(u8::from(pdu.data_coding), 0);
        assert_eq!(pdu.short_message().as_ref(), b"payhub: code 123456");
    }

    #[test]
    fn text_is_cut_to_160_default_alphabet_characters() {
        let long = format!("code 123456 {}", "x".repeat(300));
        assert_eq!(sms_text(&long).chars().count(), 160);
        assert_eq!(sms_text("Café {shop} 书"), "Caf? ?shop? ?");
        assert_eq!(sms_text("a@b $1 c_d #2"), "a?b ?1 c?d #2");
    }

    #[test]
    fn bind_is_a_version_3_4_transceiver_bind() {
        let mut settings = SmppSettings::from_config(&crate::config::SmppConfig::default());
        settings.password = Secret::new("pw".into());
        let bind = bind_transceiver(&settings).unwrap();
        assert_eq!(bind.interface_version, InterfaceVersion::Smpp3_4);
        assert_eq!(bind.system_id.as_str(), "payhub");
        assert_eq!(bind.password.as_str(), "pw");
        assert!(bind.system_type.as_str().is_empty());
    }

    #[test]
    fn throttling_and_full_queue_are_retried_other_errors_refused() {
        assert_eq!(
            submit_verdict(CommandStatus::from(0x58u32)),
            SubmitVerdict::Retry
        );
        assert_eq!(
            submit_verdict(CommandStatus::from(0x14u32)),
            SubmitVerdict::Retry
        );
        assert_eq!(
            submit_verdict(CommandStatus::from(0x0Bu32)),
            SubmitVerdict::Refused
        );
        assert_eq!(
            status_name(CommandStatus::EsmeRthrottled),
            "EsmeRthrottled (0x00000058)"
        );
    }
}
