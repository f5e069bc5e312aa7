//! The debit: reserved with the bank router, committed as `processing`, sent, and ended by field
//! 39; a debit whose outcome cannot be known is reversed before the payment fails.

use super::PaymentCore;
use crate::bank::reversals::ReversalReason;
use crate::bank::{PrepareDebit, ReverseDebit, SendPrepared};
use crate::domain::{FailureCode, PaymentStatus};
use crate::messages::{BankError, DebitRequest, DebitResponse};
use crate::store::StoreError;
use crate::transaction::code::new_rrn;
use crate::transaction::event::{self, Outcome};
use crate::transaction::store;
use crate::transaction::writer::ToProcessing;
use crate::transaction::{CodeReply, PaymentError};
use chrono::{DateTime, Utc};
use std::time::Duration as StdDuration;

/// How a debit ended, before it is written.
#[derive(Debug, PartialEq)]
pub(super) enum DebitEnd {
    Outcome(Outcome),
    /// The outcome cannot be known: reverse, then `failed`/`bank_unavailable`.
    Unknown(&'static str),
}

impl PaymentCore {
    /// Two phases: the bank router reserves the 0200's wire identity (link, STAN, field 7), the
    /// payment commits it with `processing`, and only then does the 0200 leave. A reversal, even
    /// after a restart, can then name the original exactly.
    pub(super) async fn debit(&mut self, now: DateTime<Utc>) -> Result<CodeReply, PaymentError> {
        // Another try: its own writes say where the payment is from here on.
        self.processing_unsure = false;
        let request = self.debit_request(new_rrn()).await?;
        let wait = StdDuration::from_millis(self.settings().debit_timeout_ms);
        let prepared =
            match tokio::time::timeout(wait, self.deps.bank.send(PrepareDebit(request))).await {
                Ok(Ok(Ok(prepared))) => prepared,
                // Nothing was sent: the payment fails while still awaiting its code.
                unsent => {
                    tracing::warn!(payment = %self.row.id, ?unsent, "no bank link took the debit");
                    let outcome = Outcome::failed(FailureCode::BankUnavailable, None);
                    self.finish(&[PaymentStatus::AwaitingCode], outcome).await?;
                    return Ok(CodeReply::Finished(self.row.status));
                }
            };
        let original = prepared.original();
        let to_processing = ToProcessing {
            payment_id: self.row.id.clone(),
            rrn: prepared.rrn().to_owned(),
            original: original.clone(),
            at: now,
        };
        // Bounded by `wait` as the bank's steps are (the writer's own wait may be shorter).
        let write = self.deps.writer.to_processing(to_processing);
        let written = tokio::time::timeout(wait, write).await.unwrap_or_else(|_| {
            let waited = wait.as_millis();
            Err(StoreError::Pool(format!(
                "no answer from the database in {waited} ms"
            )))
        });
        let moved = match written {
            Ok(moved) => moved,
            Err(e) => {
                // A write that timed out may still commit: the row, not memory, then says where
                // the payment is, and a `processing` one is reversed at its next deadline (its
                // reserved 0200 never left) instead of at the payment's expiry. Read back as
                // still awaiting its code, it is read again at each retry for a while.
                if let Err(reload) = self.reload().await {
                    tracing::warn!(payment = %self.row.id, error = %reload, "cannot reload");
                }
                self.processing_unsure = self.row.status == PaymentStatus::AwaitingCode;
                return Err(e.into());
            }
        };
        if !moved {
            // The reservation lapses unsent. The row moved on behind this actor (an earlier
            // write committed late, say): unread, it may be `processing`, so it is read again
            // at the next retry rather than at the payment's expiry.
            if let Err(e) = self.reload().await {
                self.processing_unsure = self.row.status == PaymentStatus::AwaitingCode;
                return Err(e);
            }
            return Ok(CodeReply::Finished(self.row.status));
        }
        event::log_step("debit_sent");
        self.row.status = PaymentStatus::Processing;
        self.row.rrn = Some(prepared.rrn().to_owned());
        self.row.original_debit = Some(original);
        self.row.code_hash = None;
        let answer = tokio::time::timeout(wait, self.deps.bank.send(SendPrepared(prepared))).await;
        match answer {
            Ok(Ok(answer)) => match debit_end(answer) {
                DebitEnd::Outcome(outcome) => {
                    self.answered = Some(Box::new(outcome));
                    if let Err(e) = self.write_answer().await {
                        // The customer's result page shows the payment in progress meanwhile.
                        let payment = &self.row.id;
                        tracing::warn!(%payment, error = %e, "the answer is not stored yet; will retry");
                    }
                }
                DebitEnd::Unknown(reason) => _ = self.reverse_then_fail(reason).await?,
            },
            Ok(Err(_mailbox)) => _ = self.reverse_then_fail("bank_router_gone").await?,
            Err(_elapsed) => _ = self.reverse_then_fail("no_answer").await?,
        }
        Ok(CodeReply::Finished(self.row.status))
    }

    /// Writes the bank's answer held in `answered` as the final status; it is kept until then.
    pub(super) async fn write_answer(&mut self) -> Result<(), PaymentError> {
        let Some(outcome) = self.answered.as_deref().cloned() else {
            return Ok(());
        };
        self.finish(&[PaymentStatus::Processing], outcome).await?;
        self.answered = None;
        Ok(())
    }

    async fn debit_request(&self, rrn: String) -> Result<DebitRequest, PaymentError> {
        if self.row.customer_id.is_none() {
            return Err(PaymentError::Storage(
                "awaiting_code without a customer".into(),
            ));
        }
        let parties = store::DebitParties::of(&self.row)?;
        Ok(DebitRequest {
            payment_id: self.row.id.clone(),
            rrn,
            amount: self.row.amount,
            currency: self.row.currency,
            payer_bank: parties.payer_bank,
            payer_account: parties.payer_account,
            payee_account: parties.merchant_account,
            terminal_id: parties.terminal_id,
            card_acceptor_id: parties.card_acceptor_id,
            merchant_name_location: parties.name_location,
        })
    }

    /// For a payment whose debit outcome is unknown: queue the reversal with the bank router,
    /// and only then write `failed`/`bank_unavailable`. If the router refuses, the payment stays
    /// `processing` and the actor tries again later.
    pub(super) async fn reverse_then_fail(&mut self, reason: &str) -> Result<bool, PaymentError> {
        let Some(rrn) = self.row.rrn.clone() else {
            // No RRN was ever recorded, so no debit was ever sent.
            let outcome = Outcome::failed(FailureCode::BankUnavailable, None);
            self.finish(&[PaymentStatus::Processing], outcome).await?;
            return Ok(true);
        };
        // The same request the debit carried (the RRN finds it at the BIPS).
        let request = self.debit_request(rrn).await?;
        tracing::info!(payment = %self.row.id, reason, "reversing a debit of unknown outcome");
        let wait = StdDuration::from_millis(self.settings().debit_timeout_ms);
        let reverse = ReverseDebit {
            request,
            original: self.row.original_debit.clone(),
        };
        let queued = tokio::time::timeout(wait, self.deps.bank.send(reverse)).await;
        if !matches!(queued, Ok(Ok(Ok(())))) {
            tracing::warn!(payment = %self.row.id, ?queued, "reversal not queued yet; will retry");
            return Ok(false);
        }
        let outcome = Outcome::failed(FailureCode::BankUnavailable, None);
        self.finish(&[PaymentStatus::Processing], outcome).await?;
        Ok(true)
    }
}

/// How field 39 (or its absence) ends the payment.
fn debit_end(answer: Result<DebitResponse, BankError>) -> DebitEnd {
    match answer {
        Ok(r) if r.response_code == "00" => DebitEnd::Outcome(Outcome::succeeded(r.approval_code)),
        // A duplicate: the original's outcome. An approval code says it was approved; without one
        // the outcome cannot be known.
        Ok(r) if r.response_code == "94" => match r.approval_code {
            Some(approval) => DebitEnd::Outcome(Outcome::succeeded(Some(approval))),
            None => DebitEnd::Unknown("duplicate_without_outcome"),
        },
        // The bank could not decide, and the debit was reversed to be safe: the bank was
        // unavailable, not the customer declined (a merchant may try again later).
        Ok(r)
            if matches!(
                ReversalReason::of_response(&r.response_code),
                Some(ReversalReason::Response91 | ReversalReason::Response96)
            ) =>
        {
            DebitEnd::Outcome(Outcome::failed(
                FailureCode::BankUnavailable,
                Some(r.response_code),
            ))
        }
        // Any other code but 00 and 94 is the bank's answer: declined, with its code (one the
        // profile does not list was reversed as well, to be safe).
        Ok(r) => DebitEnd::Outcome(Outcome::failed(
            FailureCode::BankDeclined,
            Some(r.response_code),
        )),
        // The router stored the reversal itself (`Timeout`), or nothing was sent (a reservation
        // that lapsed or a link that went down: `Unavailable`).
        Err(
            BankError::Timeout | BankError::NoRoute(_) | BankError::Unavailable | BankError::Busy,
        ) => DebitEnd::Outcome(Outcome::failed(FailureCode::BankUnavailable, None)),
        Err(BankError::Protocol(_)) => DebitEnd::Unknown("protocol_error"),
        // The router could not store the reversal: the payment stays `processing` until one is.
        Err(BankError::ReversalNotStored) => DebitEnd::Unknown("reversal_not_stored"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(code: &str, approval: Option<&str>) -> Result<DebitResponse, BankError> {
        Ok(DebitResponse {
            response_code: code.into(),
            approval_code: approval.map(Into::into),
            link: "bips-a".into(),
        })
    }

    #[test]
    fn a_duplicate_is_the_original_outcome_when_it_tells_it() {
        assert_eq!(
            debit_end(answered("94", Some("A00001"))),
            DebitEnd::Outcome(Outcome::succeeded(Some("A00001".into())))
        );
        assert_eq!(
            debit_end(answered("94", None)),
            DebitEnd::Unknown("duplicate_without_outcome")
        );
        // Field 38 on a decline changes nothing.
        assert_eq!(
            debit_end(answered("51", Some("A00001"))),
            DebitEnd::Outcome(Outcome::failed(
                FailureCode::BankDeclined,
                Some("51".into())
            ))
        );
    }

    #[test]
    fn a_bank_that_cannot_decide_is_unavailable_not_a_decline() {
        for code in ["91", "96"] {
            assert_eq!(
                debit_end(answered(code, None)),
                DebitEnd::Outcome(Outcome::failed(
                    FailureCode::BankUnavailable,
                    Some(code.into())
                ))
            );
        }
    }

    #[test]
    fn a_reversal_not_stored_keeps_the_payment_open() {
        assert_eq!(
            debit_end(Err(BankError::ReversalNotStored)),
            DebitEnd::Unknown("reversal_not_stored")
        );
        assert_eq!(
            debit_end(Err(BankError::Timeout)),
            DebitEnd::Outcome(Outcome::failed(FailureCode::BankUnavailable, None))
        );
    }
}
