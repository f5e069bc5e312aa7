//! The messages that cross between actors owned by different parts of payhub: a payment asks a
//! channel to deliver a notice to the customer, and asks the bank router to debit. Keeping them here
//! lets each side be built and tested alone (through `actix::Recipient`).

use crate::domain::{AccountNumber, Amount, BankId, Currency, Msisdn};
use crate::secret::Secret;
use crate::spelling::ascii_spelling;
use std::time::Duration;

/// Most characters of the merchant's name in a notice's text: with the code, the amount and the
/// warning, an SMS stays within 160 characters.
pub const MERCHANT_NAME_CHARS_MAX: usize = 40;

/// Where a customer notice goes: a mobile number (SMS through the SMSC) or a registered terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Sms(Msisdn),
    /// A registered terminal by its id (`trm_…`); the terminal switch or a channel adapter.
    Terminal(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    Code,
    Outcome,
}

/// What the customer is told. The code, when present, stays wrapped until a channel encodes it.
#[derive(Debug, Clone)]
pub struct Notice {
    pub payment_id: String,
    pub kind: NoticeKind,
    pub merchant_name: String,
    pub amount: Amount,
    pub currency: Currency,
    /// The authorization code (kind `Code`).
    pub code: Option<Secret<String>>,
    /// How long the code stays valid, in seconds (kind `Code`).
    pub validity_s: u32,
    /// `succeeded`, `failed` or `expired` (kind `Outcome`).
    pub outcome: Option<String>,
    /// Said when the receiving number was named for this one payment and is not registered.
    pub unregistered_receiver: bool,
}

impl Notice {
    /// The notice as one line for a person, for channels that carry UTF-8 (the terminal
    /// protocol); short enough for an SMS. The code appears as `code NNNNNN`, bound to the amount
    /// and the merchant.
    pub fn text(&self) -> String {
        self.text_naming(&self.merchant_name)
    }

    /// The same text in printable ASCII, for channels that carry nothing else (SMS): the
    /// merchant's name transliterated ([`ascii_spelling`]), the rest is ASCII already.
    pub fn ascii_text(&self) -> String {
        self.text_naming(&ascii_spelling(&self.merchant_name))
    }

    fn text_naming(&self, merchant: &str) -> String {
        let amount = self.currency.format_amount(self.amount);
        let merchant: String = merchant.chars().take(MERCHANT_NAME_CHARS_MAX).collect();
        match (self.kind, &self.code) {
            (NoticeKind::Code, Some(code)) => format!(
                "payhub: code {} to pay {amount} to {merchant}. Valid {}. Never share it.",
                code.expose(),
                validity_text(self.validity_s)
            ),
            _ => format!(
                "payhub: payment of {amount} to {merchant} {}.",
                self.outcome.as_deref().unwrap_or("updated")
            ),
        }
    }
}

/// How long a code stays valid, never more than it does: whole minutes (rounded down) from a
/// minute up, else seconds.
fn validity_text(validity_s: u32) -> String {
    if validity_s < 60 {
        format!("{validity_s} s")
    } else {
        format!("{} min", validity_s / 60)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryReceipt {
    /// The channel's own reference (SMSC message id, terminal frame id).
    pub message_ref: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    #[error("the terminal is offline")]
    Offline,
    #[error("the channel refused the message: {0}")]
    Rejected(String),
    #[error("no acknowledgement in time")]
    Timeout,
    /// A dedicated terminal did not ACK within its `ack_timeout_ms` (or the sender's wait): the
    /// delivery failed (docs/terminal-protocol.md §5), though the terminal may have shown it.
    #[error("the terminal did not acknowledge in time")]
    NotAcknowledged,
    /// An outcome notice for a dedicated terminal that is offline: the channel keeps it and
    /// sends it when the terminal is back (within a day). Not a failure of the notice.
    #[error("the terminal is offline; the notice goes when it reconnects")]
    Held,
    #[error("the channel is not available")]
    Unavailable,
}

#[derive(Debug, actix::Message)]
#[rtype(result = "Result<DeliveryReceipt, DeliveryError>")]
pub struct Deliver {
    pub destination: Destination,
    pub notice: Notice,
    /// Its `customer_messages` row, when the sender already wrote it (`queued`; SMS destinations
    /// only): the payment writes its outcome SMS's row with the final status, in the same
    /// statement. The channel records the message's fate on that row instead of writing one; a
    /// delivery that fails before reaching the channel is marked on it by the sender.
    pub recorded: Option<i64>,
    /// How long the sender waits for the answer. A channel answers within it: a message that has
    /// not gone out by then fails (`Unavailable`); one sent and not yet acknowledged is `Timeout`
    /// (it may still arrive). A refusal after the sender stopped waiting would reach nobody.
    pub answer_within: Duration,
}

impl Deliver {
    /// Taken off a wait by each hop that hands a delivery on, so its answer has time to come back.
    pub const HOP_MARGIN: Duration = Duration::from_millis(100);
}

/// One debit, as the payment hands it to the bank router. The RRN (field 37) is the idempotency
/// key of the debit and is recorded before the debit is sent.
#[derive(Debug, Clone)]
pub struct DebitRequest {
    pub payment_id: String,
    pub rrn: String,
    pub amount: Amount,
    pub currency: Currency,
    pub payer_bank: BankId,
    pub payer_account: AccountNumber,
    pub payee_account: AccountNumber,
    /// Field 41, the gateway's terminal id for the merchant (8 characters).
    pub terminal_id: String,
    /// Field 42, the card acceptor id (15 characters).
    pub card_acceptor_id: String,
    /// Field 43, merchant name and location (40 characters).
    pub merchant_name_location: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitResponse {
    /// Field 39.
    pub response_code: String,
    /// Field 38, whenever the 0210 carries it (with 94 it is what tells an approved original).
    pub approval_code: Option<String>,
    /// The link that carried the debit.
    pub link: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BankError {
    #[error("no bank link serves bank {0}")]
    NoRoute(BankId),
    #[error("no link to the payer's bank is signed on")]
    Unavailable,
    /// No answer within the link's timeout; a reversal has been queued durably.
    #[error("the bank did not answer in time; a reversal is queued")]
    Timeout,
    #[error("the link is at its in-flight limit")]
    Busy,
    /// The debit's outcome is unknown (no answer, 91, 96, a 0210 without field 39) or a reversal
    /// was asked for, and the reversal could not be stored: nothing may be final until it is.
    #[error("the reversal could not be stored")]
    ReversalNotStored,
    #[error("bank link protocol error: {0}")]
    Protocol(String),
}

#[derive(Debug, actix::Message)]
#[rtype(result = "Result<DebitResponse, BankError>")]
pub struct Debit(pub DebitRequest);

#[cfg(test)]
mod tests {
    use super::*;

    fn code_notice(merchant_name: &str) -> Notice {
        Notice {
            payment_id: "pay_1".into(),
            kind: NoticeKind::Code,
            merchant_name: merchant_name.into(),
            amount: Amount::parse(1234).unwrap(),
            currency: Currency::Cny,
            code: Some(Secret::new("123456".into())),
            validity_s: 300,
            outcome: None,
            unregistered_receiver: false,
        }
    }

    #[test]
    fn code_text_names_amount_merchant_and_code() {
        let notice = code_notice("Book Shop");
        let text = notice.text();
        assert!(text.contains("code 123456"), "{text}");
        assert!(
            text.contains("12.34 CNY") && text.contains("Book Shop"),
            "{text}"
        );
        assert!(text.chars().count() <= 160);
        assert!(!format!("{notice:?}").contains("123456"));
    }

    #[test]
    fn the_ascii_text_spells_the_merchant_in_ascii_letters() {
        let notice = code_notice("Book Shop 书店 Café");
        assert!(notice.text().contains("Book Shop 书店 Café"));
        let text = notice.ascii_text();
        assert!(text.contains("to Book Shop Shu Dian Cafe."), "{text}");
        assert!(text.contains("code 123456"), "{text}");
        assert!(text.is_ascii(), "{text}");
    }

    #[test]
    fn the_validity_said_is_never_more_than_it_is() {
        for (validity_s, said) in [
            (300, "Valid 5 min."),
            (90, "Valid 1 min."),
            (59, "Valid 59 s."),
            (0, "Valid 0 s."),
        ] {
            let notice = Notice {
                validity_s,
                ..code_notice("Book Shop")
            };
            assert!(
                notice.ascii_text().contains(said),
                "{validity_s}: {}",
                notice.ascii_text()
            );
        }
    }

    #[test]
    fn a_long_name_is_cut_after_its_spelling() {
        let text = code_notice(&"书".repeat(100)).ascii_text();
        assert!(text.contains("Never share it."), "{text}");
        assert!(text.chars().count() <= 160, "{text}");
    }
}
