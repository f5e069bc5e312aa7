//! One delivery: record the row (unless the sender did), wait for a window slot, `submit_sm`,
//! retry throttling with backoff, record the outcome. Every wait has a bound.

use super::pdu::{self, SubmitVerdict};
use super::session::Shared;
use super::store;
use payhub_actors::domain::Msisdn;
use payhub_actors::messages::{
    Deliver, DeliveryError, DeliveryReceipt, Destination, Notice, NoticeKind,
};
use payhub_actors::metrics::{global, labels};
use rusmpp::CommandStatus;
use rusmpp::pdus::SubmitSm;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Extra wait beyond the client's own response timeout, so its typed timeout wins.
const SUBMIT_GRACE_MS: u64 = 250;
/// A `submit_sm` goes out only with at least this long left before the sender's deadline: one
/// sent later could only be answered after the sender stopped waiting.
const SUBMIT_TIME_MIN_MS: u64 = 100;

/// Why a delivery failed: what the caller is told, and what the row keeps.
struct Failure {
    error: DeliveryError,
    detail: String,
    /// The connection closed after the `submit_sm` was written: the SMSC may have taken it.
    closed_after_write: bool,
}

impl Failure {
    fn new(error: DeliveryError, detail: impl Into<String>) -> Self {
        Self {
            error,
            detail: detail.into(),
            closed_after_write: false,
        }
    }

    fn closed_after_write() -> Self {
        Self {
            closed_after_write: true,
            ..Self::new(
                DeliveryError::Timeout,
                "the connection closed before the SMSC answered the submit_sm",
            )
        }
    }

    /// What the sender is told. After a close that may have let the message through, a code
    /// stays good (a timeout: it may arrive), and an outcome notice is offered again (told twice
    /// rather than never, as notices go at least once).
    fn error_for(&self, kind: NoticeKind) -> DeliveryError {
        if self.closed_after_write && kind == NoticeKind::Outcome {
            DeliveryError::Unavailable
        } else {
            self.error.clone()
        }
    }
}

enum Attempt {
    Accepted(String),
    Retry(CommandStatus),
}

pub(super) async fn deliver(
    shared: Arc<Shared>,
    msg: Deliver,
) -> Result<DeliveryReceipt, DeliveryError> {
    let Destination::Sms(msisdn) = &msg.destination else {
        return Err(DeliveryError::Rejected(
            "the SMPP channel carries SMS destinations only".into(),
        ));
    };
    // Everything below answers by then, grace included (`Deliver::answer_within`).
    let deadline = Instant::now()
        + msg
            .answer_within
            .saturating_sub(Duration::from_millis(SUBMIT_GRACE_MS));
    let Ok(_pending) = shared.pending.try_acquire() else {
        tracing::warn!("SMPP deliveries at their limit; refused one");
        return Err(DeliveryError::Unavailable);
    };
    if !shared.bound_soon(deadline).await {
        return Err(DeliveryError::Unavailable);
    }
    let notice = &msg.notice;
    let submit = pdu::submit_sm(&shared.settings.source_addr, msisdn, &notice.ascii_text())
        .map_err(|e| DeliveryError::Rejected(e.to_string()))?;
    let row = match msg.recorded {
        Some(row) => row,
        None => record_queued(&shared, notice, msisdn).await?,
    };
    match submit_with_retries(&shared, submit, row, deadline).await {
        Ok(message_ref) => {
            accepted(&shared, row, notice.kind, &message_ref).await;
            Ok(DeliveryReceipt { message_ref })
        }
        Err(failure) => {
            let error = failure.error_for(notice.kind);
            // An outcome the payment recorded and offers again (`Unavailable`) keeps its row
            // `queued` until the payment gives up and marks it failed: a start after a stop in
            // between then offers it too (the router leaves such rows alike).
            let offered_again = msg.recorded.is_some()
                && notice.kind == NoticeKind::Outcome
                && error == DeliveryError::Unavailable;
            not_sent(&shared, row, &notice.payment_id, &failure, !offered_again).await;
            Err(error)
        }
    }
}

/// The message's row, for a notice whose payment did not write one; no row, no message.
async fn record_queued(
    shared: &Shared,
    notice: &Notice,
    msisdn: &Msisdn,
) -> Result<i64, DeliveryError> {
    let masked = msisdn.masked();
    let queued = store::insert_queued(
        &shared.pool,
        shared.clock.now(),
        &notice.payment_id,
        notice.kind,
        &masked,
    );
    within(shared, queued).await.map_err(|e| {
        tracing::error!(error = %e, payment = %notice.payment_id, "SMS not recorded; not sent");
        DeliveryError::Unavailable
    })
}

/// The SMSC took the message: its id goes on the row.
async fn accepted(shared: &Shared, row: i64, kind: NoticeKind, message_ref: &str) {
    let sent = shared
        .writes
        .mark_sent(shared.clock.now(), row, message_ref);
    if let Err(e) = within(shared, sent).await {
        // The SMSC has the message; the row stays `queued` and says no more.
        tracing::error!(error = %e, row, "SMS sent but its row not updated");
    }
    count_submit("ok");
    if kind == NoticeKind::Code {
        global()
            .codes_sent
            .get_or_create(&labels(&[("channel", "sms")]))
            .inc();
    }
}

/// The message was refused or never answered: the row says `failed` when `mark_row` (a late
/// acceptance of an unanswered `submit_sm`, awaited since its timeout, may still mark it sent).
async fn not_sent(shared: &Shared, row: i64, payment_id: &str, failure: &Failure, mark_row: bool) {
    count_submit("error");
    tracing::warn!(payment = %payment_id, reason = %failure.detail, "SMS not sent");
    if !mark_row {
        return;
    }
    let failed = store::mark_failed(&shared.pool, shared.clock.now(), row, &failure.detail);
    if let Err(e) = within(shared, failed).await {
        tracing::error!(error = %e, row, "failed SMS row not updated");
    }
}

async fn within<T>(
    shared: &Shared,
    work: impl Future<Output = Result<T, payhub_actors::store::StoreError>>,
) -> Result<T, String> {
    match tokio::time::timeout(shared.settings.database_timeout(), work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("database: no answer in time".into()),
    }
}

fn count_submit(result: &str) {
    global()
        .smpp_submits
        .get_or_create(&labels(&[("result", result)]))
        .inc();
}

/// Tries until the SMSC answers other than with throttling, at most `submit_attempts_max` times,
/// and no try after `deadline` (the sender's).
async fn submit_with_retries(
    shared: &Shared,
    submit: SubmitSm,
    row: i64,
    deadline: Instant,
) -> Result<String, Failure> {
    let attempts_max = shared.settings.submit_attempts_max;
    let mut attempt = 1;
    loop {
        match submit_once(shared, submit.clone(), row, deadline).await? {
            Attempt::Accepted(message_ref) => return Ok(message_ref),
            Attempt::Retry(status) => {
                count_submit("throttled");
                // The whole session slows down, whether or not this message tries again.
                let backoff = shared.throttled(attempt);
                let next_try = Instant::now() + backoff;
                if attempt >= attempts_max || next_try > deadline {
                    return Err(Failure::new(
                        DeliveryError::Unavailable,
                        format!(
                            "the SMSC still answered {} after {attempt} tries",
                            pdu::status_name(status)
                        ),
                    ));
                }
                attempt += 1;
            }
        }
    }
}

/// Not sent at all (earlier attempts, if any, were throttled): unavailable, not a timeout, which
/// would mean the message may still arrive.
fn not_sent_by(detail: &str) -> Failure {
    Failure::new(DeliveryError::Unavailable, detail)
}

/// One `submit_sm` of the message whose row is `row`.
async fn submit_once(
    shared: &Shared,
    submit: SubmitSm,
    row: i64,
    deadline: Instant,
) -> Result<Attempt, Failure> {
    // At most one backoff cap per attempt: while other submits keep being throttled and keep
    // renewing the pause, this delivery still makes its bounded number of attempts.
    let pause_max = Duration::from_millis(shared.settings.throttle_backoff_max_ms);
    let pause_end = deadline.min(Instant::now() + pause_max);
    let _ = tokio::time::timeout_at(pause_end, shared.submits_resumed()).await;
    let timeout = shared.settings.response_timeout();
    let slot_by = deadline.min(Instant::now() + timeout);
    let slot = tokio::time::timeout_at(slot_by, shared.window.acquire())
        .await
        .map_err(|_| not_sent_by("no SMPP window slot in time"))?
        .map_err(|_| not_sent_by("the session is closed"))?;
    let left = deadline.saturating_duration_since(Instant::now());
    if left < Duration::from_millis(SUBMIT_TIME_MIN_MS) {
        return Err(not_sent_by(
            "no time left to send before the sender stops waiting",
        ));
    }
    let Some(client) = shared.bound_client() else {
        return Err(not_sent_by("the SMPP session is not bound"));
    };
    let timeout = timeout.min(left);
    let answer = tokio::time::timeout(
        timeout + Duration::from_millis(SUBMIT_GRACE_MS),
        client.response_timeout(timeout).submit_sm(submit),
    )
    .await;
    use rusmppc::error::Error;
    match answer {
        Ok(Ok(response)) => Ok(Attempt::Accepted(message_id(
            response.message_id().as_str(),
        ))),
        Ok(Err(Error::UnexpectedResponse { response })) if accepted_unread(&response) => {
            tracing::warn!(
                row,
                "SMS accepted by the SMSC without a readable message id"
            );
            Ok(Attempt::Accepted(String::new()))
        }
        Ok(Err(Error::UnexpectedResponse { response })) => {
            let status = response.status();
            match pdu::submit_verdict(status) {
                SubmitVerdict::Retry => Ok(Attempt::Retry(status)),
                SubmitVerdict::Refused | SubmitVerdict::Accepted => {
                    let name = pdu::status_name(status);
                    Err(Failure::new(
                        DeliveryError::Rejected(format!("the SMSC answered {name}")),
                        format!("submit_sm refused: {name}"),
                    ))
                }
            }
        }
        Ok(Err(Error::ResponseTimeout {
            sequence_number, ..
        })) => {
            // Before the row says `failed`, so a late acceptance finds it.
            shared.await_late_answer(sequence_number, row, slot);
            Err(Failure::new(
                DeliveryError::Timeout,
                "no submit_sm_resp in time",
            ))
        }
        Err(_) => Err(Failure::new(
            DeliveryError::Timeout,
            "no submit_sm_resp in time",
        )),
        // Written, then the connection went: the SMSC may have taken it.
        Ok(Err(Error::ConnectionClosedAwaitingResponse { .. })) => {
            Err(Failure::closed_after_write())
        }
        Ok(Err(e)) => Err(Failure::new(
            DeliveryError::Unavailable,
            format!("submit_sm: {e}"),
        )),
    }
}

/// A `submit_sm_resp` that accepts the message with a body that could not be decoded (rusmppc
/// patch 6): the SMSC has the message, though its id (and so its receipt) cannot be known.
fn accepted_unread(response: &rusmpp::Command) -> bool {
    response.id() == rusmpp::CommandId::SubmitSmResp && response.status() == CommandStatus::EsmeRok
}

/// The SMSC's id from an accepting `submit_sm_resp`'s body, empty when it could not be read.
pub(super) fn message_id_of(pdu: Option<&rusmpp::Pdu>) -> String {
    match pdu {
        Some(rusmpp::Pdu::SubmitSmResp(resp)) => message_id(resp.message_id().as_str()),
        _ => String::new(),
    }
}

/// The SMSC's id as stored: visible ASCII, at most 64 characters.
pub(super) fn message_id(raw: &str) -> String {
    raw.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect()
}
