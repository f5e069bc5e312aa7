//! The notice as a text message to the terminal's registered number, through the SMPP channel:
//! for PDAs (and any other kind whose devices take SMS). It is available exactly when the SMS
//! channel is; the SMPP actor records the `customer_messages` row.

use super::ChannelAdapter;
use crate::channels::router::TerminalKind;
use actix::Recipient;
use futures::future::BoxFuture;
use payhub_actors::domain::Msisdn;
use payhub_actors::messages::{Deliver, DeliveryError, DeliveryReceipt, Destination, Notice};
use std::time::Duration;

pub struct SmsTextAdapter {
    kind: TerminalKind,
    sms: Recipient<Deliver>,
}

impl SmsTextAdapter {
    /// Serves `kind` over `sms`.
    pub fn new(kind: TerminalKind, sms: Recipient<Deliver>) -> Self {
        Self { kind, sms }
    }
}

impl ChannelAdapter for SmsTextAdapter {
    fn kind(&self) -> TerminalKind {
        self.kind
    }

    fn channel(&self) -> &'static str {
        "sms"
    }

    fn available(&self) -> bool {
        self.sms.connected()
    }

    fn records_messages(&self) -> bool {
        true
    }

    fn deliver(
        &self,
        number: Msisdn,
        notice: Notice,
        recorded: Option<i64>,
        answer_within: Duration,
    ) -> BoxFuture<'static, Result<DeliveryReceipt, DeliveryError>> {
        Box::pin(send_sms(
            self.sms.clone(),
            number,
            notice,
            recorded,
            answer_within,
        ))
    }
}

/// Hands one notice to the SMS channel, waiting at most `answer_within` for its answer (the
/// channel is asked for it a hop's margin before).
pub async fn send_sms(
    sms: Recipient<Deliver>,
    number: Msisdn,
    notice: Notice,
    recorded: Option<i64>,
    answer_within: Duration,
) -> Result<DeliveryReceipt, DeliveryError> {
    let deliver = Deliver {
        destination: Destination::Sms(number),
        notice,
        recorded,
        answer_within: answer_within.saturating_sub(Deliver::HOP_MARGIN),
    };
    match tokio::time::timeout(answer_within, sms.send(deliver)).await {
        Ok(Ok(result)) => result,
        Ok(Err(_mailbox_closed)) => Err(DeliveryError::Unavailable),
        Err(_) => Err(DeliveryError::Timeout),
    }
}
