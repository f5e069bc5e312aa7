//! The durable reversal queue (store-and-forward): a reversal is written here before its 0420 is
//! first sent, and stays pending until a 0430 that processed it arrives (one saying the BIPS
//! could not, 91 or 96, is sent again a bounded number of times). The link reloads its pending reversals
//! after a reconnect or a restart, and, when more wait than it holds at once
//! (`LinkSettings::reversals_loaded_max`), as those it holds are answered.

use crate::store::StoreError;
use crate::store::prepared::Prepared;
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// The default of `LinkSettings::reversals_loaded_max`.
pub const PENDING_LOAD_MAX: usize = 10_000;

/// Why a reversal was queued (the `reason` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalReason {
    /// No 0210 within the response timeout (or the connection dropped first).
    Timeout,
    /// The BIPS answered 91 or 96.
    Response91,
    Response96,
    /// The BIPS answered a code the profile does not list (an approval of another kind, such as
    /// 08 or 11, as well as a decline): what it did to the account is not known.
    ResponseUnlisted,
    /// The gateway could not complete the payment after an approval.
    GatewayIncomplete,
}

impl ReversalReason {
    /// The 0210 answers after which the debit is reversed to be safe (iso8583-profile.md: 91
    /// issuer or switch inoperative, 96 system malfunction): the bank may have debited anyway.
    /// So is any two-character code the profile does not list. A reversal of a debit the BIPS
    /// declined costs one message (it answers `00`, nothing to undo); a debit it approved under
    /// a code the gateway does not know would otherwise stay taken from a failed payment.
    pub fn of_response(response_code: &str) -> Option<Self> {
        match response_code {
            "91" => Some(Self::Response91),
            "96" => Some(Self::Response96),
            "00" | "94" | "05" | "12" | "13" | "14" | "30" | "51" | "57" | "61" => None,
            code if code.len() == 2 => Some(Self::ResponseUnlisted),
            _ => None,
        }
    }

    /// Whether the reversal may go at once: the BIPS answered the debit (91, 96, a code not
    /// listed), so it has processed it. Otherwise (no answer, or an outcome the gateway could not complete, where
    /// holding costs nothing) the 0200 may still be on its way or in the works there, and a
    /// reversal that overtook it would find nothing to undo, answer 00, and let the debit stand.
    pub fn debit_answered(self) -> bool {
        matches!(
            self,
            Self::Response91 | Self::Response96 | Self::ResponseUnlisted
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Response91 => "response_91",
            Self::Response96 => "response_96",
            Self::ResponseUnlisted => "response_unlisted",
            Self::GatewayIncomplete => "gateway_incomplete",
        }
    }
}

/// What a reversal needs to be sent: field 37, 4, 49 and the original data elements (field 90).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalRecord {
    pub payment_id: Option<String>,
    pub link_name: String,
    /// The link's address (the BIPS that received the debit); `None` before V71.
    pub link_addr: Option<String>,
    pub rrn: String,
    pub amount_minor: i64,
    pub currency_numeric: String,
    pub original_stan: String,
    /// Field 7 of the original, MMDDhhmmss.
    pub original_f7: String,
    /// Field 32 of the original 0200 (the gateway's institution id when it left), which field 90
    /// repeats. The 0420's own field 32 is the gateway's id when the 0420 leaves.
    pub acquirer_id: String,
}

impl ReversalRecord {
    /// Field 90: original MTI, STAN, field 7, field 32 right-justified zero-filled to 11, 11 zeros.
    pub fn original_data_elements(&self) -> String {
        format!(
            "0200{:0>6}{:0>10}{:0>11}00000000000",
            self.original_stan, self.original_f7, self.acquirer_id
        )
    }
}

/// A reversal waiting for its 0430.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReversal {
    pub id: i64,
    pub record: ReversalRecord,
    /// Sends so far: 0 means the next one is the 0420, later ones are 0421.
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// 0430s that said the BIPS could not process it (91, 96), since it was loaded.
    pub refusals: u32,
}

impl PendingReversal {
    pub fn mti(&self) -> &'static str {
        if self.attempts == 0 { "0420" } else { "0421" }
    }
}

/// Queues a reversal, due at once after a 91 or 96, else after `hold` (see
/// [`ReversalReason::debit_answered`]). A second reversal for the same RRN is the same one: the
/// existing row is returned while it waits for its 0430, and `None` once the 0430 came (nothing
/// is left to send).
pub async fn queue(
    pool: &Pool,
    record: &ReversalRecord,
    reason: ReversalReason,
    now: DateTime<Utc>,
    hold: std::time::Duration,
) -> Result<Option<PendingReversal>, StoreError> {
    let client = pool.get().await?;
    let r = record;
    // First sent once the debit, unanswered, is surely done at the BIPS: `hold` (the link's
    // response timeout) from now, which is after the debit was sent.
    let first_send = match reason.debit_answered() {
        true => now,
        false => now + chrono::Duration::from_std(hold).unwrap_or(chrono::Duration::zero()),
    };
    // payment_id references payments: a debit sent for no stored payment (an operator's test
    // debit) keeps its reversal, without the reference.
    let inserted = client
        .query_opt_cached(
            "INSERT INTO reversals (payment_id, link_name, rrn, amount_minor, currency_numeric,
                 original_mti, original_stan, original_f7, acquirer_id, reason, created_at,
                 next_attempt_at, link_addr)
             VALUES ((SELECT id FROM payments WHERE id = $1), $2, $3, $4, $5, '0200', $6, $7, $8,
                 $9, $10, $12, $11)
             ON CONFLICT (rrn) DO NOTHING
             RETURNING id",
            &[
                &r.payment_id,
                &r.link_name,
                &r.rrn,
                &r.amount_minor,
                &r.currency_numeric,
                &r.original_stan,
                &r.original_f7,
                &r.acquirer_id,
                &reason.as_str(),
                &now,
                &r.link_addr,
                &first_send,
            ],
        )
        .await?;
    match inserted {
        Some(row) => Ok(Some(PendingReversal {
            id: row.get(0),
            record: record.clone(),
            attempts: 0,
            next_attempt_at: first_send,
            refusals: 0,
        })),
        None => {
            let row = client
                .query_opt(
                    &format!("{SELECT_REVERSAL} WHERE rrn = $1 AND completed_at IS NULL"),
                    &[&r.rrn],
                )
                .await?;
            Ok(row.as_ref().map(from_row))
        }
    }
}

const SELECT_REVERSAL: &str = "SELECT id, payment_id, link_name, link_addr, rrn, amount_minor, \
     currency_numeric, original_stan, original_f7, acquirer_id, attempts, next_attempt_at \
     FROM reversals";

fn from_row(row: &tokio_postgres::Row) -> PendingReversal {
    PendingReversal {
        id: row.get("id"),
        record: ReversalRecord {
            payment_id: row.get("payment_id"),
            link_name: row.get("link_name"),
            link_addr: row.get("link_addr"),
            rrn: row.get("rrn"),
            amount_minor: row.get("amount_minor"),
            currency_numeric: row.get("currency_numeric"),
            original_stan: row.get("original_stan"),
            original_f7: row.get("original_f7"),
            acquirer_id: row.get("acquirer_id"),
        },
        attempts: row.get("attempts"),
        next_attempt_at: row.get("next_attempt_at"),
        refusals: 0,
    }
}

/// What [`adopt_orphans`] did with the pending reversals of links no longer configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Adopted {
    /// Moved to the configured link with their link's address: the same BIPS, renamed (its old
    /// name unconfigured, or now another link's).
    pub moved: u64,
    /// Still on an unconfigured link: no configured link has its address (the BIPS was removed,
    /// or its address changed with its name). Sent elsewhere, a reversal would be answered
    /// `00` by a BIPS that never saw the debit, and the debit would stand; so they wait, and the
    /// operator is told.
    pub stranded: i64,
    /// The names of the links they wait for, in order: a link configured again under its name
    /// sends them.
    pub stranded_links: Vec<String>,
    /// On a configured link whose address is not the one they were stored with: sent to the
    /// link's address now. The same BIPS moved, or another BIPS under the old name, which would
    /// answer `00` to a debit it never saw; which of the two, only the operator knows.
    pub readdressed: i64,
    /// The names of those links, in order.
    pub readdressed_links: Vec<String>,
}

/// Pending reversals of a link that is no longer configured would never be sent: links load
/// theirs by name. Those of a link renamed (a configured link has its address) follow it, also
/// when their old name now belongs to a link at another address.
pub async fn adopt_orphans(
    pool: &Pool,
    links: &[super::LinkSettings],
) -> Result<Adopted, StoreError> {
    let names: Vec<&str> = links.iter().map(|l| l.name.as_str()).collect();
    let addrs: Vec<&str> = links.iter().map(|l| l.addr.as_str()).collect();
    let client = pool.get().await?;
    let moved = client
        .execute(
            "UPDATE reversals r SET link_name = l.name
             FROM (SELECT DISTINCT ON (addr) name, addr
                   FROM unnest($1::text[], $2::text[]) WITH ORDINALITY AS t(name, addr, n)
                   ORDER BY addr, n) l
             WHERE r.completed_at IS NULL AND r.link_addr = l.addr AND r.link_name <> l.name
               AND NOT EXISTS (SELECT 1 FROM unnest($1::text[], $2::text[]) AS c(name, addr)
                                WHERE c.name = r.link_name AND c.addr = r.link_addr)",
            &[&names, &addrs],
        )
        .await?;
    let stranded = client
        .query_one(
            "SELECT count(*), coalesce(array_agg(DISTINCT link_name ORDER BY link_name), '{}')
             FROM reversals WHERE completed_at IS NULL AND link_name <> ALL($1::text[])",
            &[&names],
        )
        .await?;
    let readdressed = client
        .query_one(
            "SELECT count(*), coalesce(array_agg(DISTINCT r.link_name ORDER BY r.link_name), '{}')
             FROM reversals r
             JOIN unnest($1::text[], $2::text[]) AS l(name, addr) ON l.name = r.link_name
             WHERE r.completed_at IS NULL AND r.link_addr IS DISTINCT FROM l.addr
               AND r.link_addr IS NOT NULL",
            &[&names, &addrs],
        )
        .await?;
    Ok(Adopted {
        moved,
        stranded: stranded.get(0),
        stranded_links: stranded.get(1),
        readdressed: readdressed.get(0),
        readdressed_links: readdressed.get(1),
    })
}

/// The link's reversals still waiting for a 0430, oldest first.
pub async fn pending(
    pool: &Pool,
    link_name: &str,
    limit: usize,
) -> Result<Vec<PendingReversal>, StoreError> {
    let client = pool.get().await?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &format!(
                "{SELECT_REVERSAL} WHERE link_name = $1 AND completed_at IS NULL \
                 ORDER BY id LIMIT $2"
            ),
            &[&link_name, &limit],
        )
        .await?;
    Ok(rows.iter().map(from_row).collect())
}

/// Records one send (0420 or 0421) and when the next repeat is due.
pub async fn mark_sent(
    pool: &Pool,
    id: i64,
    now: DateTime<Utc>,
    next_attempt_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute_cached(
            "UPDATE reversals SET attempts = attempts + 1, last_sent_at = $2, next_attempt_at = $3
             WHERE id = $1 AND completed_at IS NULL",
            &[&id, &now, &next_attempt_at],
        )
        .await?;
    Ok(())
}

/// Keeps the code of a 0430 that refused a reversal still pending (91, 96; none when it had no
/// field 39): `response_code` of a pending reversal is its last refusal's. `next_attempt_at` is
/// when it goes again, the refusal's backoff counted.
pub async fn note_refusal(
    pool: &Pool,
    id: i64,
    response_code: Option<&str>,
    next_attempt_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute_cached(
            "UPDATE reversals SET response_code = coalesce($2, response_code),
                 next_attempt_at = $3
             WHERE id = $1 AND completed_at IS NULL",
            &[&id, &response_code, &next_attempt_at],
        )
        .await?;
    Ok(())
}

/// Closes a reversal when its 0430 arrives.
pub async fn complete(
    pool: &Pool,
    id: i64,
    response_code: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let client = pool.get().await?;
    client
        .execute_cached(
            "UPDATE reversals SET completed_at = $2, response_code = $3
             WHERE id = $1 AND completed_at IS NULL",
            &[&id, &now, &response_code],
        )
        .await?;
    Ok(())
}

/// Pending reversals of one link, for operators.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReversalBacklog {
    pub pending: i64,
    pub oldest_created_at: Option<DateTime<Utc>>,
}

pub async fn backlog(pool: &Pool, link_name: &str) -> Result<ReversalBacklog, StoreError> {
    let client = pool.get().await?;
    let row = client
        .query_one_cached(
            "SELECT count(*), min(created_at) FROM reversals
             WHERE link_name = $1 AND completed_at IS NULL",
            &[&link_name],
        )
        .await?;
    Ok(ReversalBacklog {
        pending: row.get(0),
        oldest_created_at: row.get(1),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testing::fresh_database;

    fn record(rrn: &str) -> ReversalRecord {
        ReversalRecord {
            payment_id: Some("pay_missing".into()),
            link_name: "bips-a".into(),
            link_addr: Some("127.0.0.1:8583".into()),
            rrn: rrn.into(),
            amount_minor: 1234,
            currency_numeric: "156".into(),
            original_stan: "000042".into(),
            original_f7: "1128110000".into(),
            acquirer_id: "99990001".into(),
        }
    }

    /// After the gateway's id changed, the 0420 is sent under the id it has now (field 32, the
    /// sender) and names the debit's acquirer in field 90.
    #[test]
    fn a_reversal_says_who_sends_it_and_who_sent_the_debit() {
        let now = chrono::Utc::now();
        let advice = crate::bank::wire::reversal_advice(
            &record("000000000001"),
            false,
            "000007",
            now,
            "77770002",
        )
        .unwrap();
        assert_eq!(advice.get(32), Some("77770002"));
        assert_eq!(advice.get(90).map(|f| &f[20..31]), Some("00099990001"));
    }

    #[test]
    fn field_90_has_the_profile_layout() {
        let f90 = record("r1").original_data_elements();
        assert_eq!(
            f90,
            "0200000042112811000000099990001".to_owned() + "00000000000"
        );
        assert_eq!(f90.len(), 42);
    }

    #[tokio::test]
    async fn queue_is_idempotent_per_rrn_and_tracks_the_backlog() {
        let db = fresh_database().await;
        let t0 = Utc::now();
        let hold = std::time::Duration::from_secs(5);
        let queue_one = async |rrn: &str| {
            queue(&db.pool, &record(rrn), ReversalReason::Timeout, t0, hold)
                .await
                .unwrap()
        };
        let a = queue_one("rrn000000001").await.unwrap();
        let again = queue_one("rrn000000001").await.unwrap();
        assert_eq!(a.id, again.id);
        assert_eq!(a.mti(), "0420");
        // Unanswered, the debit may still be at the BIPS: the reversal waits the hold.
        assert_eq!(a.next_attempt_at, t0 + chrono::Duration::seconds(5));
        let b = queue(
            &db.pool,
            &record("rrn000000002"),
            ReversalReason::Response96,
            t0 + chrono::Duration::seconds(1),
            hold,
        )
        .await
        .unwrap()
        .unwrap();
        // Answered 96, the debit is done there: at once.
        assert_eq!(b.next_attempt_at, t0 + chrono::Duration::seconds(1));
        let backlog0 = backlog(&db.pool, "bips-a").await.unwrap();
        assert_eq!(backlog0.pending, 2);
        mark_sent(&db.pool, a.id, t0, t0 + chrono::Duration::seconds(10))
            .await
            .unwrap();
        let listed = pending(&db.pool, "bips-a", PENDING_LOAD_MAX).await.unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].mti(), "0421");
        assert_eq!(listed[0].record.payment_id, None);
        complete(&db.pool, a.id, "00", t0).await.unwrap();
        let backlog1 = backlog(&db.pool, "bips-a").await.unwrap();
        assert_eq!(backlog1.pending, 1);
        assert!(backlog1.oldest_created_at.unwrap() > t0);
        // Answered: queued again, there is nothing left to send.
        assert!(queue_one("rrn000000001").await.is_none());
    }
}
