//! The rows a payment actor reads and the small writes it makes outside the final transition.

use super::PaymentError;
use crate::bank::OriginalDebit;
use crate::domain::{AccountNumber, Amount, BankId, Currency, PaymentStatus};
use crate::secret::mask_account;
use crate::spelling::ascii_spelling;
use crate::store::prepared::Prepared;
use chrono::{DateTime, Utc};
use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

/// What a payment actor keeps of its `payments` row and its merchant. `Debug` leaves out the
/// keyed hashes, the receiver's number and the debit's parties.
#[derive(Clone)]
pub struct PaymentRow {
    pub id: String,
    pub merchant_id: String,
    pub merchant_name: String,
    pub status: PaymentStatus,
    pub amount: Amount,
    pub currency: Currency,
    pub customer_id: Option<String>,
    pub password_failures: i32,
    pub session_hash: Option<Vec<u8>>,
    pub channel: Option<String>,
    pub terminal_id: Option<String>,
    pub receiver_msisdn: Option<String>,
    pub code_hash: Option<Vec<u8>>,
    pub code_expires_at: Option<DateTime<Utc>>,
    pub code_failures: i32,
    pub code_sends: i32,
    pub code_sent_at: Option<DateTime<Utc>>,
    pub code_delivery_failures: i32,
    /// Why the last code could not be sent, until a code is.
    pub code_delivery_error: Option<String>,
    pub rrn: Option<String>,
    /// The 0200's wire identity, committed with `processing`.
    pub original_debit: Option<OriginalDebit>,
    pub expires_at: DateTime<Utc>,
    // What the payment object (and so the webhook event) shows besides the above.
    pub order_id: String,
    pub description: String,
    pub return_url: String,
    pub notify_url: String,
    pub created_at: DateTime<Utc>,
    /// The merchant's side of the debit, read with the row.
    pub merchant_side: MerchantSide,
    /// The payer's bank and account: read with the row, or at login.
    pub payer: Option<Payer>,
}

impl std::fmt::Debug for PaymentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PaymentRow")
            .field("id", &self.id)
            .field("merchant_id", &self.merchant_id)
            .field("status", &self.status)
            .field("amount", &self.amount)
            .field("currency", &self.currency)
            .field("customer_id", &self.customer_id)
            .field("code_failures", &self.code_failures)
            .field("code_sends", &self.code_sends)
            .field("rrn", &self.rrn)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The merchant's fields of a debit besides its name (fields 103, 41, 42 and 43), as stored.
#[derive(Clone)]
pub struct MerchantSide {
    pub location: String,
    pub account: String,
    pub terminal_id: String,
    pub card_acceptor_id: String,
}

/// The payer's bank and account (fields 100 and 102), as stored; parsed when a debit is made.
#[derive(Clone)]
pub struct Payer {
    pub bank_id: String,
    pub account: String,
}

/// Accounts are masked in `Debug`, as everywhere else.
impl std::fmt::Debug for MerchantSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MerchantSide")
            .field("account", &crate::secret::mask_account(&self.account))
            .field("terminal_id", &self.terminal_id)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Payer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Payer")
            .field("bank_id", &self.bank_id)
            .field("account", &crate::secret::mask_account(&self.account))
            .finish()
    }
}

const PAYMENT_COLUMNS: &str = "p.id, p.merchant_id, m.name AS merchant_name, p.status,
    p.amount_minor, p.currency, p.customer_id, p.password_failures, p.session_hash, p.channel,
    p.terminal_id, p.receiver_msisdn, p.code_hash, p.code_expires_at, p.code_failures,
    p.code_sends, p.code_sent_at, p.code_delivery_failures, p.code_delivery_error, p.rrn,
    p.bank_link, p.debit_link_addr, p.debit_stan, p.debit_f7, p.debit_acquirer_id, p.expires_at,
    p.order_id, p.description, p.return_url, p.notify_url, p.created_at, m.location AS merchant_location,
    m.account AS merchant_account, m.terminal_id AS merchant_terminal_id,
    m.card_acceptor_id AS merchant_card_acceptor_id, c.bank_id AS payer_bank_id,
    c.account AS payer_account";

/// The tables `PAYMENT_COLUMNS` reads, after `payments p`.
const PAYMENT_JOINS: &str = "JOIN merchants m ON m.id = p.merchant_id
    LEFT JOIN customers c ON c.id = p.customer_id";

fn corrupt(field: &str) -> PaymentError {
    invalid(&format!("payments.{field}"))
}

/// A stored value that does not parse; `column` is qualified with its table.
fn invalid(column: &str) -> PaymentError {
    PaymentError::Storage(format!("{column} holds an invalid value"))
}

impl PaymentRow {
    fn from_row(row: &Row) -> Result<Self, PaymentError> {
        let status: String = row.get("status");
        let currency: String = row.get("currency");
        Ok(Self {
            id: row.get("id"),
            merchant_id: row.get("merchant_id"),
            merchant_name: row.get("merchant_name"),
            status: PaymentStatus::parse(&status).ok_or_else(|| corrupt("status"))?,
            amount: Amount::parse(row.get("amount_minor")).map_err(|_| corrupt("amount_minor"))?,
            currency: Currency::parse(&currency).map_err(|_| corrupt("currency"))?,
            customer_id: row.get("customer_id"),
            password_failures: row.get("password_failures"),
            session_hash: row.get("session_hash"),
            channel: row.get("channel"),
            terminal_id: row.get("terminal_id"),
            receiver_msisdn: row.get("receiver_msisdn"),
            code_hash: row.get("code_hash"),
            code_expires_at: row.get("code_expires_at"),
            code_failures: row.get("code_failures"),
            code_sends: row.get("code_sends"),
            code_sent_at: row.get("code_sent_at"),
            code_delivery_failures: row.get("code_delivery_failures"),
            code_delivery_error: row.get("code_delivery_error"),
            rrn: row.get("rrn"),
            original_debit: original_debit(row),
            expires_at: row.get("expires_at"),
            order_id: row.get("order_id"),
            description: row.get("description"),
            return_url: row.get("return_url"),
            notify_url: row.get("notify_url"),
            created_at: row.get("created_at"),
            merchant_side: MerchantSide {
                location: row.get("merchant_location"),
                account: row.get("merchant_account"),
                terminal_id: row.get("merchant_terminal_id"),
                card_acceptor_id: row.get("merchant_card_acceptor_id"),
            },
            payer: payer(row.get("payer_bank_id"), row.get("payer_account")),
        })
    }
}

fn payer(bank_id: Option<String>, account: Option<String>) -> Option<Payer> {
    Some(Payer {
        bank_id: bank_id?,
        account: account?,
    })
}

fn original_debit(row: &Row) -> Option<OriginalDebit> {
    Some(OriginalDebit {
        link: row.get::<_, Option<String>>("bank_link")?,
        link_addr: row.get("debit_link_addr"),
        stan: row.get::<_, Option<String>>("debit_stan")?,
        transmission_time: row.get::<_, Option<String>>("debit_f7")?,
        acquirer_id: row.get("debit_acquirer_id"),
    })
}

pub async fn load_payment(
    client: &impl GenericClient,
    payment_id: &str,
) -> Result<PaymentRow, PaymentError> {
    let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments p {PAYMENT_JOINS} WHERE p.id = $1");
    match client.query_opt_cached(&sql, &[&payment_id]).await? {
        Some(row) => PaymentRow::from_row(&row),
        None => Err(PaymentError::NotFound),
    }
}

/// Where a resume stopped: the last payment it loaded, in resume order (`processing` first, for
/// their money is held until the bank is asked to undo the debit; then by expiry).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    awaiting_code: bool,
    expires_at: DateTime<Utc>,
    id: String,
}

impl ResumePoint {
    /// Before every payment.
    pub fn start() -> Self {
        Self {
            awaiting_code: false,
            expires_at: DateTime::UNIX_EPOCH,
            id: String::new(),
        }
    }

    pub fn after(row: &PaymentRow) -> Self {
        Self {
            awaiting_code: row.status == PaymentStatus::AwaitingCode,
            expires_at: row.expires_at,
            id: row.id.clone(),
        }
    }
}

/// The payments whose actor must run again after a restart (or, `processing_only`, those a
/// sweep looks at), after `after` in resume order, at most `limit`: one query per page, not one
/// per actor (10,000 actors each waiting for a pooled connection held their loads in memory at
/// once).
pub async fn resumable_payments(
    client: &impl GenericClient,
    after: &ResumePoint,
    limit: i64,
    processing_only: bool,
) -> Result<Vec<PaymentRow>, PaymentError> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM payments_open o JOIN payments p ON p.id = o.payment_id
         {PAYMENT_JOINS}
         WHERE p.status IN ('awaiting_code', 'processing')
           AND (p.status = 'processing' OR NOT $5)
           AND (p.status = 'awaiting_code', p.expires_at, p.id) > ($1, $2, $3)
         ORDER BY p.status = 'awaiting_code', p.expires_at, p.id LIMIT $4"
    );
    client
        .query_cached(
            &sql,
            &[
                &after.awaiting_code,
                &after.expires_at,
                &after.id,
                &limit,
                &processing_only,
            ],
        )
        .await?
        .iter()
        .map(PaymentRow::from_row)
        .collect()
}

/// Final payments whose outcome notice is still `queued` (and not held for, nor being sent to,
/// an offline terminal, which goes when that terminal is back) though it was written before `before`
/// (within the day before it): their notice was lost with the process that was to send it, between
/// the final status's commit and the channel. Each with its notice's row, oldest first. The day's
/// messages are found by V68's block range index on their age, not by reading every message.
pub async fn orphaned_outcome_notices(
    client: &impl GenericClient,
    before: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<(PaymentRow, i64)>, PaymentError> {
    client
        .query(
            &orphaned_outcome_notices_sql(),
            &[
                &before,
                &limit,
                &crate::store::messages::HELD_NOTICE,
                &crate::store::messages::HELD_NOTICE_SENDING,
            ],
        )
        .await?
        .iter()
        .map(|r| Ok((PaymentRow::from_row(r)?, r.get("notice_row"))))
        .collect()
}

/// The outcome notice row of a final payment still `queued`: written with the final status, its
/// notice not yet handed to the channel.
pub async fn queued_outcome_notice(
    client: &impl GenericClient,
    payment_id: &str,
) -> Result<Option<i64>, PaymentError> {
    let row = client
        .query_opt(
            "SELECT id FROM customer_messages
             WHERE payment_id = $1 AND kind = 'outcome' AND status = 'queued'
             ORDER BY id DESC LIMIT 1",
            &[&payment_id],
        )
        .await?;
    Ok(row.map(|r| r.get(0)))
}

fn orphaned_outcome_notices_sql() -> String {
    const HELD: &str = crate::store::messages::held_or_being_sent!("n.error", "$3", "$4");
    format!(
        "SELECT {PAYMENT_COLUMNS}, n.id AS notice_row
         FROM customer_messages n JOIN payments p ON p.id = n.payment_id {PAYMENT_JOINS}
         WHERE n.kind = 'outcome' AND n.status = 'queued' AND n.created_at < $1
           AND n.created_at > $1 - interval '1 day'
           AND (n.error IS NULL OR NOT {HELD})
         ORDER BY n.id LIMIT $2"
    )
}

/// A customer found by the identity typed on the login page. `Debug` shows the id alone.
#[derive(Clone)]
pub struct CustomerLogin {
    pub id: String,
    pub password_hash: String,
    /// The mobile number typed as the identity, when that is how the customer signed in.
    pub typed_msisdn: Option<String>,
    /// Whom a debit after this login takes the money from.
    pub payer: Payer,
}

/// A sign-in attempt, counted before the password is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Its `login_failures` row: a failure unless a right password removes it.
    Counted(i64),
    /// The identity is locked until then; nothing was counted.
    Locked(DateTime<Utc>),
}

impl std::fmt::Debug for CustomerLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CustomerLogin")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// What the password step knows before the hash: from one statement (V67's `login_begin`). No
/// `Debug`: its key holds the identity as typed.
pub struct LoginStart {
    /// The enabled customer whose online id, or registered mobile number, is the identity.
    pub customer: Option<CustomerLogin>,
    /// The key under which failures of the identity count ([`lockout_key`]).
    pub key: String,
    pub attempt: Attempt,
    /// The known customer's enabled terminals, for the code's route.
    pub terminals: Vec<TerminalRow>,
}

/// Finds the customer and counts the attempt as a failure, unless the identity is locked (the
/// rule of [`locked_until`]), with the customer's terminals: one statement, under a per-identity
/// lock (V65) so that concurrent attempts on several payments see each other.
pub async fn begin_login(
    client: &impl GenericClient,
    identity: &str,
    failures_max: u32,
    window: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<LoginStart, PaymentError> {
    let (window_s, max) = lockout_params(failures_max, window);
    let msisdn = crate::domain::Msisdn::parse(identity).ok();
    let digits = msisdn.as_ref().map(|m| m.digits().to_string());
    let plus = digits.as_ref().map(|d| format!("+{d}"));
    let key = lockout_key(identity);
    let row = client
        .query_one_cached(
            "SELECT customer_id, password_hash, typed_msisdn, bank_id, account, lockout_key,
                 attempt_id, locked_until, terminal_ids, terminal_kinds, terminal_labels,
                 terminal_msisdns
             FROM login_begin($1, $2, $3, $4, $5, $6, $7)",
            &[&identity, &digits, &plus, &key, &now, &window_s, &max],
        )
        .await?;
    let attempt = match (row.get(6), row.get(7)) {
        (Some(id), _) => Attempt::Counted(id),
        (None, Some(until)) => Attempt::Locked(until),
        (None, None) => {
            return Err(PaymentError::Storage("login_begin answered neither".into()));
        }
    };
    let customer = row.get::<_, Option<String>>(0).map(|id| CustomerLogin {
        id,
        password_hash: row.get(1),
        typed_msisdn: row.get(2),
        payer: Payer {
            bank_id: row.get(3),
            account: row.get(4),
        },
    });
    Ok(LoginStart {
        customer,
        key: row.get(5),
        attempt,
        terminals: terminals_of(&row, 8),
    })
}

/// The key under which an identity's failures count, made from what was typed alone: a mobile
/// number's digits, whatever its spelling, or the online id without regard to case. Whether the
/// identity names a customer must not change the key, or the lock would tell who is registered
/// (V70).
pub fn lockout_key(identity: &str) -> String {
    match crate::domain::Msisdn::parse(identity) {
        Ok(msisdn) => format!("msisdn:{}", msisdn.digits()),
        Err(_) => format!("identity:{}", identity.trim().to_lowercase()),
    }
}

/// The terminals `login_begin` returns as four parallel arrays from column `first`.
fn terminals_of(row: &Row, first: usize) -> Vec<TerminalRow> {
    let ids: Vec<String> = row.get::<_, Option<_>>(first).unwrap_or_default();
    let kinds: Vec<String> = row.get::<_, Option<_>>(first + 1).unwrap_or_default();
    let labels: Vec<String> = row.get::<_, Option<_>>(first + 2).unwrap_or_default();
    let msisdns: Vec<Option<String>> = row.get::<_, Option<_>>(first + 3).unwrap_or_default();
    ids.into_iter()
        .zip(kinds)
        .zip(labels)
        .zip(msisdns)
        .map(|(((id, kind), label), msisdn)| TerminalRow {
            id,
            kind,
            label,
            msisdn,
        })
        .collect()
}

/// When the identity is locked, until when: the last `failures_max` failures fell within one
/// lockout window, and the newest of them is less than a window old. The rule is V65's
/// `login_locked_until`, which `login_attempt_begin` applies too.
pub async fn locked_until(
    client: &impl GenericClient,
    key: &str,
    failures_max: u32,
    window: chrono::Duration,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, PaymentError> {
    let (window_s, max) = lockout_params(failures_max, window);
    let row = client
        .query_one_cached(
            "SELECT login_locked_until($1, $2, $3, $4)",
            &[&key, &now, &window_s, &max],
        )
        .await?;
    Ok(row.get(0))
}

/// The lockout's bounds as V65's functions take them: the window in seconds, the failures.
fn lockout_params(failures_max: u32, window: chrono::Duration) -> (i64, i32) {
    let max = i32::try_from(failures_max).unwrap_or(i32::MAX);
    (window.num_seconds(), max)
}

/// A fresh code, written as one statement: the payment's code (voiding any earlier one) and its
/// channel, an audit line, and, when the code goes by SMS, that message's `queued` row. At login
/// the same statement moves the payment to `awaiting_code` with its customer and browser session,
/// and removes the sign-in attempt, counted as a failure until then. No `Debug`: it holds the
/// keyed hashes and the receiver's number.
pub struct CodeIssue<'a> {
    pub payment_id: &'a str,
    /// The status the payment must still be in: `awaiting_customer` at login, `awaiting_code` for
    /// a resend.
    pub from: PaymentStatus,
    pub customer_id: &'a str,
    pub session_hash: &'a [u8],
    pub code_hash: &'a [u8],
    pub code_expires_at: DateTime<Utc>,
    pub at: DateTime<Utc>,
    pub channel: &'a str,
    pub terminal_id: Option<&'a str>,
    pub receiver_msisdn: Option<&'a str>,
    /// The sign-in attempt a passed password step removes (it was counted as a failure).
    pub passed_attempt: Option<i64>,
    pub audit_detail: serde_json::Value,
    /// The masked number when the code goes by SMS.
    pub sms_to: Option<&'a str>,
}

const ISSUE_CODE_SQL: &str = "
    WITH moved AS (
        UPDATE payments SET status = 'awaiting_code', customer_id = $2, session_hash = $3,
            code_hash = $4, code_expires_at = $5, code_sent_at = $6, code_sends = code_sends + 1,
            channel = $7, terminal_id = $8, receiver_msisdn = $9, code_delivery_error = NULL,
            updated_at = $6
        WHERE id = $1 AND status = $10 AND expires_at > $6
        RETURNING id),
    cleared AS (
        DELETE FROM login_failures WHERE id = $11 AND EXISTS (SELECT FROM moved)),
    audited AS (
        INSERT INTO audit_log (at, payment_id, event, detail)
        SELECT $6, id, 'code_issued', $12 FROM moved),
    message AS (
        INSERT INTO customer_messages
            (payment_id, kind, channel, destination, status, created_at, updated_at)
        SELECT id, 'code', 'sms', $13, 'queued', $6, $6 FROM moved WHERE $13::text IS NOT NULL
        RETURNING id)
    SELECT EXISTS (SELECT FROM moved), (SELECT id FROM message)";

/// Writes `issue`; `None` when the payment was no longer in `issue.from`, or its lifetime had
/// ended at `issue.at` (nothing is written), otherwise the SMS's `customer_messages` row, if any.
pub async fn issue_code(
    client: &impl GenericClient,
    issue: &CodeIssue<'_>,
) -> Result<Option<Option<i64>>, PaymentError> {
    let row = client
        .query_one_cached(
            ISSUE_CODE_SQL,
            &[
                &issue.payment_id,
                &issue.customer_id,
                &issue.session_hash,
                &issue.code_hash,
                &issue.code_expires_at,
                &issue.at,
                &issue.channel,
                &issue.terminal_id,
                &issue.receiver_msisdn,
                &issue.from.as_str(),
                &issue.passed_attempt,
                &issue.audit_detail,
                &issue.sms_to,
            ],
        )
        .await?;
    let moved: bool = row.get(0);
    Ok(moved.then(|| row.get(1)))
}

/// Who the debit is between: the payer's bank and account (fields 100, 102) and the merchant's
/// side (fields 103, 41, 42 and 43).
#[derive(Debug, Clone)]
pub struct DebitParties {
    pub payer_bank: BankId,
    pub payer_account: AccountNumber,
    pub merchant_account: AccountNumber,
    pub terminal_id: String,
    pub card_acceptor_id: String,
    pub name_location: String,
}

impl DebitParties {
    /// From what the payment's row holds: no read on the debit path.
    pub fn of(row: &PaymentRow) -> Result<DebitParties, PaymentError> {
        let payer = row.payer.as_ref().ok_or(PaymentError::NotFound)?;
        let account =
            |number: &str, what: &str| AccountNumber::parse(number).map_err(|_| invalid(what));
        let side = &row.merchant_side;
        Ok(DebitParties {
            payer_bank: BankId::parse(&payer.bank_id).map_err(|_| invalid("customers.bank_id"))?,
            payer_account: account(&payer.account, "customers.account")?,
            name_location: name_location(&row.merchant_name, &side.location),
            merchant_account: account(&side.account, "merchants.account")?,
            terminal_id: side.terminal_id.clone(),
            card_acceptor_id: side.card_acceptor_id.clone(),
        })
    }
}

/// Field 43 (`ans`): the name in the first 25 characters, the location in the remaining 15, 40 in
/// all, spelled in ASCII.
fn name_location(name: &str, location: &str) -> String {
    let clean = |s: &str, n: usize| -> String { ascii_spelling(s).chars().take(n).collect() };
    format!("{:<25}{:<15}", clean(name, 25), clean(location, 15))
}

/// A customer's registered terminal, as offered for the code. `Debug` masks the number.
#[derive(Clone, PartialEq, Eq)]
pub struct TerminalRow {
    pub id: String,
    pub kind: String,
    pub label: String,
    pub msisdn: Option<String>,
}

impl std::fmt::Debug for TerminalRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TerminalRow")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .field("msisdn", &self.msisdn.as_deref().map(mask_account))
            .finish()
    }
}

impl TerminalRow {
    /// Whether the customer's `name` for a terminal is this one: its id, or its label in any case.
    pub fn named(&self, name: &str) -> bool {
        self.id == name || (!self.label.is_empty() && self.label.eq_ignore_ascii_case(name))
    }
}

pub async fn customer_terminals(
    client: &impl GenericClient,
    customer_id: &str,
) -> Result<Vec<TerminalRow>, PaymentError> {
    let rows = client
        .query_cached(
            "SELECT id, kind, label, msisdn FROM terminals
             WHERE customer_id = $1 AND status = 'enabled' ORDER BY created_at, id LIMIT 32",
            &[&customer_id],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| TerminalRow {
            id: r.get(0),
            kind: r.get(1),
            label: r.get(2),
            msisdn: r.get(3),
        })
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn debug_output_holds_no_hash_account_or_number() {
        let payer = super::Payer {
            bank_id: "0001".into(),
            account: "6222000011112222".into(),
        };
        let login = super::CustomerLogin {
            id: "cus_1".into(),
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            typed_msisdn: Some("8613800138000".into()),
            payer: payer.clone(),
        };
        let terminal = super::TerminalRow {
            id: "trm_1".into(),
            kind: "mobile".into(),
            label: "Work".into(),
            msisdn: Some("8613800138000".into()),
        };
        let shown = format!("{payer:?} {login:?} {terminal:?}");
        for secret in ["00001111", "argon2id", "8613800138000"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let msisdn = crate::domain::Msisdn::parse("+8613800138000").unwrap();
        assert!(!format!("{msisdn:?}").contains("38001380"), "{msisdn:?}");
    }

    #[test]
    fn the_lockout_key_depends_on_the_typed_identity_alone() {
        use super::lockout_key;
        assert_eq!(lockout_key("+8613800138000"), "msisdn:8613800138000");
        assert_eq!(lockout_key(" 8613800138000"), lockout_key("+8613800138000"));
        assert_eq!(lockout_key("Alice"), "identity:alice");
        assert_eq!(lockout_key("ALICE "), lockout_key("alice"));
    }

    /// Whatever the table's size, the start reads the last day's messages through V68's index on
    /// their age: with sequential scans priced out, a statement no index can serve would still
    /// scan the table.
    #[tokio::test]
    async fn the_start_finds_orphaned_notices_through_the_age_index() {
        let sql = super::orphaned_outcome_notices_sql()
            .replace("$1", "now()")
            .replace("$2", "10")
            .replace("$3", "'held'")
            .replace("$4", "'sending by '");
        let plan = crate::store::testing::plan_without_seq_scans(&sql).await;
        assert!(plan.contains("customer_messages_by_age"), "{plan}");
        assert!(!plan.contains("Seq Scan on customer_messages"), "{plan}");
    }

    #[test]
    fn field_43_is_forty_characters() {
        let f = super::name_location("Book Shop 书店", "Beijing CN");
        assert_eq!(f.len(), 40);
        assert_eq!(&f[..25], "Book Shop Shu Dian       ");
        assert_eq!(&f[25..35], "Beijing CN");
        let cut = super::name_location(&"书".repeat(30), "北京\tCN");
        assert_eq!(cut.len(), 40);
        assert_eq!(&cut[25..], "Bei Jing CN    ");
    }
}
