//! Where the bank simulator keeps accounts and debits: PostgreSQL (schema `bank_sim`, created on
//! start) or memory (`--store memory`, for benchmarks). Both apply [`ledger::decide`] the same way:
//! a debit and its credit happen together or not at all, a repeated field 37 returns the recorded
//! answer, and a reversal undoes an approved debit at most once.

use super::ledger::{
    self, AccountView, Answer, DebitOrder, ReversalOrder, ReversalOutcome, SeedAccount,
    WireIdentity,
};
use deadpool_postgres::{Pool, Transaction};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum SimStoreError {
    #[error("bank simulator database: {0}")]
    Postgres(#[from] tokio_postgres::Error),
    #[error("bank simulator database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// What the simulator knows about a debit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DebitState {
    Approved,
    Declined,
    Reversed,
    /// A reversal arrived for a debit never seen: remembered so a late 0200 cannot debit.
    ReversedUnseen,
}

impl DebitState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Declined => "declined",
            Self::Reversed => "reversed",
            Self::ReversedUnseen => "reversed_unseen",
        }
    }
}

/// A failure the fault switches inject into one debit. Either is recorded as the debit's answer,
/// so that a repeat of the 0200 gets it too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InjectedFailure {
    /// 91: the issuer is down; nothing is applied.
    IssuerInoperative,
    /// 96: the debit is applied, then the system fails.
    MalfunctionAfterApplying,
}

/// The answer to a debit and its state, before its money moves: `None` when it is applied.
fn decision(
    order: &DebitOrder,
    payer: Option<AccountView>,
    injected: Option<InjectedFailure>,
) -> Option<Answer> {
    if injected == Some(InjectedFailure::IssuerInoperative) {
        return Some(Answer::declined(ledger::ISSUER_INOPERATIVE));
    }
    ledger::decide(order, payer).map(Answer::declined)
}

/// The answer to an applied debit: approved, or 96 when a malfunction follows.
fn approval(injected: Option<InjectedFailure>) -> Answer {
    match injected {
        Some(InjectedFailure::MalfunctionAfterApplying) => {
            Answer::declined(ledger::SYSTEM_MALFUNCTION)
        }
        _ => Answer::approved(ledger::approval_code()),
    }
}

/// The answer to a 0200 whose field 37 was reversed before the debit arrived.
fn answer_for_reversed_unseen() -> Answer {
    Answer::declined(ledger::INVALID_TRANSACTION)
}

#[derive(Clone)]
pub enum SimStore {
    Memory(Arc<Mutex<MemoryLedger>>),
    Postgres(PgLedger),
}

impl std::fmt::Debug for SimStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Memory(_) => "SimStore::Memory",
            Self::Postgres(_) => "SimStore::Postgres",
        })
    }
}

impl SimStore {
    pub fn memory(banks: Vec<String>) -> Self {
        Self::Memory(Arc::new(Mutex::new(MemoryLedger::new(banks))))
    }

    /// Opens the PostgreSQL store and creates its schema when missing.
    pub async fn postgres(pool: Pool, banks: Vec<String>) -> Result<Self, SimStoreError> {
        let ledger = PgLedger { pool, banks };
        ledger.create_schema().await?;
        Ok(Self::Postgres(ledger))
    }

    pub fn is_memory(&self) -> bool {
        matches!(self, Self::Memory(_))
    }

    pub async fn seed(&self, accounts: &[SeedAccount]) -> Result<(), SimStoreError> {
        match self {
            Self::Memory(m) => {
                lock(m).seed(accounts);
                Ok(())
            }
            Self::Postgres(p) => p.seed(accounts).await,
        }
    }

    /// Applies a 0200 (or repeats the recorded answer for its field 37), with the failure the
    /// fault switches inject, if any: its answer is recorded and repeated like any other.
    pub async fn debit(
        &self,
        order: &DebitOrder,
        injected: Option<InjectedFailure>,
    ) -> Result<Answer, SimStoreError> {
        match self {
            Self::Memory(m) => Ok(lock(m).debit(order, injected)),
            Self::Postgres(p) => p.debit(order, injected).await,
        }
    }

    /// Applies a 0420/0421: undoes the approved debit with its field 37 once, when field 90
    /// identifies it; otherwise nothing.
    pub async fn reverse(&self, order: &ReversalOrder) -> Result<ReversalOutcome, SimStoreError> {
        match self {
            Self::Memory(m) => Ok(lock(m).reverse(order)),
            Self::Postgres(p) => p.reverse(order).await,
        }
    }

    pub async fn balance(
        &self,
        bank_id: &str,
        account: &str,
    ) -> Result<Option<i64>, SimStoreError> {
        match self {
            Self::Memory(m) => Ok(lock(m)
                .accounts
                .get(&(bank_id.to_owned(), account.to_owned()))
                .map(|a| i64::try_from(a.balance_minor).unwrap_or(i64::MAX))),
            Self::Postgres(p) => p.balance(bank_id, account).await,
        }
    }
}

fn lock(m: &Mutex<MemoryLedger>) -> std::sync::MutexGuard<'_, MemoryLedger> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug, Clone)]
struct Account {
    /// Wider than any seed and amount: credits cannot overflow it, so a debit moves both sides or
    /// neither (the PostgreSQL store answers 96 where its `BIGINT` would overflow).
    balance_minor: i128,
    currency_numeric: String,
}

#[derive(Debug, Clone)]
struct DebitRow {
    answer: Answer,
    state: DebitState,
    payer: (String, String),
    /// The account credited, when it is held here.
    payee: Option<(String, String)>,
    amount_minor: i64,
    /// How the 0200 was identified (none for a reversal of an unseen debit).
    wire: Option<WireIdentity>,
}

#[derive(Debug)]
pub struct MemoryLedger {
    banks: Vec<String>,
    accounts: HashMap<(String, String), Account>,
    debits: HashMap<String, DebitRow>,
}

impl MemoryLedger {
    fn new(banks: Vec<String>) -> Self {
        Self {
            banks,
            accounts: HashMap::new(),
            debits: HashMap::new(),
        }
    }

    fn seed(&mut self, accounts: &[SeedAccount]) {
        for a in accounts {
            self.accounts.insert(
                (a.bank_id.clone(), a.account.clone()),
                Account {
                    balance_minor: a.balance_minor.into(),
                    currency_numeric: a.currency_numeric.clone(),
                },
            );
        }
    }

    fn payee_key(&self, account: &str) -> Option<(String, String)> {
        self.banks
            .iter()
            .map(|b| (b.clone(), account.to_owned()))
            .find(|key| self.accounts.contains_key(key))
    }

    fn debit(&mut self, order: &DebitOrder, injected: Option<InjectedFailure>) -> Answer {
        if let Some(row) = self.debits.get(&order.rrn) {
            return match row.state {
                DebitState::ReversedUnseen => answer_for_reversed_unseen(),
                _ => row.answer.clone().repeated(row.amount_minor),
            };
        }
        let payer = (order.payer_bank.clone(), order.payer_account.clone());
        let view = self.accounts.get(&payer).map(|a| AccountView {
            balance_minor: i64::try_from(a.balance_minor).unwrap_or(i64::MAX),
            currency_numeric: &a.currency_numeric,
        });
        let (answer, state, payee) = match decision(order, view, injected) {
            Some(declined) => (declined, DebitState::Declined, None),
            None => {
                let payee = self.payee_key(&order.payee_account);
                self.move_money(&payer, payee.as_ref(), order.amount_minor);
                (approval(injected), DebitState::Approved, payee)
            }
        };
        self.debits.insert(
            order.rrn.clone(),
            DebitRow {
                answer: answer.clone(),
                state,
                payer,
                payee,
                amount_minor: order.amount_minor,
                wire: Some(order.wire.clone()),
            },
        );
        answer
    }

    fn move_money(&mut self, from: &(String, String), to: Option<&(String, String)>, amount: i64) {
        if let Some(a) = self.accounts.get_mut(from) {
            a.balance_minor -= i128::from(amount);
        }
        if let Some(a) = to.and_then(|to| self.accounts.get_mut(to)) {
            a.balance_minor += i128::from(amount);
        }
    }

    fn reverse(&mut self, order: &ReversalOrder) -> ReversalOutcome {
        let Some(row) = self.debits.get_mut(&order.rrn) else {
            self.debits.insert(
                order.rrn.clone(),
                DebitRow {
                    answer: answer_for_reversed_unseen(),
                    state: DebitState::ReversedUnseen,
                    payer: Default::default(),
                    payee: None,
                    amount_minor: 0,
                    wire: None,
                },
            );
            return ReversalOutcome::NothingToUndo;
        };
        let approved = row.state == DebitState::Approved;
        let outcome = ledger::reversal_outcome(approved, row.wire.as_ref(), order);
        if outcome != ReversalOutcome::Reversed {
            return outcome;
        }
        row.state = DebitState::Reversed;
        let (payer, payee, amount) = (row.payer.clone(), row.payee.clone(), row.amount_minor);
        if let Some(p) = payee {
            self.move_money(&p, Some(&payer), amount);
        } else if let Some(a) = self.accounts.get_mut(&payer) {
            a.balance_minor += i128::from(amount);
        }
        outcome
    }
}

#[derive(Clone)]
pub struct PgLedger {
    pool: Pool,
    banks: Vec<String>,
}

const SCHEMA: &str = "
CREATE SCHEMA IF NOT EXISTS bank_sim;
CREATE TABLE IF NOT EXISTS bank_sim.accounts (
    bank_id           TEXT NOT NULL,
    account           TEXT NOT NULL,
    balance_minor     BIGINT NOT NULL,
    currency_numeric  TEXT NOT NULL,
    PRIMARY KEY (bank_id, account)
);
CREATE TABLE IF NOT EXISTS bank_sim.debits (
    rrn               TEXT PRIMARY KEY,
    state             TEXT NOT NULL,
    response_code     TEXT NOT NULL,
    approval_code     TEXT,
    payer_bank        TEXT NOT NULL,
    payer_account     TEXT NOT NULL,
    payee_bank        TEXT,
    payee_account     TEXT NOT NULL,
    amount_minor      BIGINT NOT NULL,
    created_at        TIMESTAMPTZ NOT NULL DEFAULT now(),
    reversed_at       TIMESTAMPTZ
);
-- How each 0200 was identified (fields 11, 7, 32): its reversal's field 90 must repeat them.
ALTER TABLE bank_sim.debits ADD COLUMN IF NOT EXISTS stan TEXT;
ALTER TABLE bank_sim.debits ADD COLUMN IF NOT EXISTS transmission_time TEXT;
ALTER TABLE bank_sim.debits ADD COLUMN IF NOT EXISTS acquirer_id TEXT;
-- Credits to payees are appended, not applied to the account row: a merchant's settlement
-- account receives most debits, and one hot row would serialise them all.
CREATE TABLE IF NOT EXISTS bank_sim.credits (
    id                BIGSERIAL PRIMARY KEY,
    bank_id           TEXT NOT NULL,
    account           TEXT NOT NULL,
    amount_minor      BIGINT NOT NULL,
    rrn               TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS credits_account ON bank_sim.credits (bank_id, account);";

/// An account's balance: its row plus the credits appended to it.
const BALANCE_SQL: &str = "SELECT a.balance_minor + COALESCE((SELECT sum(c.amount_minor)
         FROM bank_sim.credits c WHERE c.bank_id = a.bank_id AND c.account = a.account), 0)::BIGINT
     FROM bank_sim.accounts a WHERE a.bank_id = $1 AND a.account = $2";

/// An advisory lock key, so two simulators starting on one database create the schema once.
const SCHEMA_LOCK_KEY: i64 = 8_583_020;

impl PgLedger {
    async fn create_schema(&self) -> Result<(), SimStoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK_KEY])
            .await?;
        tx.batch_execute(SCHEMA).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn seed(&self, accounts: &[SeedAccount]) -> Result<(), SimStoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        for a in accounts {
            tx.execute(
                "INSERT INTO bank_sim.accounts (bank_id, account, balance_minor, currency_numeric)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (bank_id, account) DO UPDATE
                 SET balance_minor = EXCLUDED.balance_minor,
                     currency_numeric = EXCLUDED.currency_numeric",
                &[
                    &a.bank_id,
                    &a.account,
                    &a.balance_minor,
                    &a.currency_numeric,
                ],
            )
            .await?;
            tx.execute(
                "DELETE FROM bank_sim.credits WHERE bank_id = $1 AND account = $2",
                &[&a.bank_id, &a.account],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn balance(&self, bank_id: &str, account: &str) -> Result<Option<i64>, SimStoreError> {
        let client = self.pool.get().await?;
        let row = client.query_opt(BALANCE_SQL, &[&bank_id, &account]).await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn debit(
        &self,
        order: &DebitOrder,
        injected: Option<InjectedFailure>,
    ) -> Result<Answer, SimStoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Claim field 37 first: a concurrent twin waits here until this one commits, then reads
        // the recorded answer instead of debiting again.
        if !claim_rrn(&tx, order).await? {
            let answer = recorded_answer(&tx, &order.rrn).await?;
            tx.commit().await?;
            return Ok(answer);
        }
        let payer = payer_for_update(&tx, order).await?;
        let (answer, state, credited) =
            match decision(order, payer.as_ref().map(account_view), injected) {
                Some(declined) => (declined, DebitState::Declined, None),
                None => {
                    let credited = self.move_money(&tx, order).await?;
                    (approval(injected), DebitState::Approved, credited)
                }
            };
        tx.execute(
            "UPDATE bank_sim.debits SET state = $2, response_code = $3, approval_code = $4,
                 payee_bank = $5
             WHERE rrn = $1",
            &[
                &order.rrn,
                &state.as_str(),
                &answer.response_code,
                &answer.approval_code,
                &credited,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(answer)
    }

    /// Debits the payer and credits the payee by an appended row (only the payer's row is
    /// locked); the payee's bank, when the payee holds an account here.
    async fn move_money(
        &self,
        tx: &Transaction<'_>,
        order: &DebitOrder,
    ) -> Result<Option<String>, SimStoreError> {
        tx.execute(
            "UPDATE bank_sim.accounts SET balance_minor = balance_minor - $3
             WHERE bank_id = $1 AND account = $2",
            &[&order.payer_bank, &order.payer_account, &order.amount_minor],
        )
        .await?;
        let payee_bank = tx
            .query_opt(
                "INSERT INTO bank_sim.credits (bank_id, account, amount_minor, rrn)
                 SELECT bank_id, account, $3, $4 FROM bank_sim.accounts
                 WHERE account = $1 AND bank_id = ANY($2)
                 ORDER BY bank_id LIMIT 1
                 RETURNING bank_id",
                &[
                    &order.payee_account,
                    &self.banks,
                    &order.amount_minor,
                    &order.rrn,
                ],
            )
            .await?
            .map(|r| r.get(0));
        Ok(payee_bank)
    }

    async fn reverse(&self, order: &ReversalOrder) -> Result<ReversalOutcome, SimStoreError> {
        let rrn = &order.rrn;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Remember a reversal of an unseen debit (a concurrent 0200 holding the key makes this
        // wait, then do nothing, and the row is read below).
        let unseen = tx
            .execute(
                "INSERT INTO bank_sim.debits (rrn, state, response_code, payer_bank,
                     payer_account, payee_account, amount_minor, reversed_at)
                 VALUES ($1, $2, $3, '', '', '', 0, now())
                 ON CONFLICT (rrn) DO NOTHING",
                &[
                    rrn,
                    &DebitState::ReversedUnseen.as_str(),
                    &answer_for_reversed_unseen().response_code,
                ],
            )
            .await?;
        if unseen == 1 {
            tx.commit().await?;
            return Ok(ReversalOutcome::NothingToUndo);
        }
        let row = tx
            .query_one(
                "SELECT state, payer_bank, payer_account, payee_bank, payee_account, amount_minor,
                     stan, transmission_time, acquirer_id
                 FROM bank_sim.debits WHERE rrn = $1 FOR UPDATE",
                &[rrn],
            )
            .await?;
        let approved = row.get::<_, &str>(0) == DebitState::Approved.as_str();
        let outcome = ledger::reversal_outcome(approved, recorded_wire(&row).as_ref(), order);
        if outcome == ReversalOutcome::Reversed {
            undo_debit(&tx, &row, rrn).await?;
        }
        tx.commit().await?;
        Ok(outcome)
    }
}

/// Records a debit's field 37 as claimed; `false` when it was seen before.
async fn claim_rrn(tx: &Transaction<'_>, order: &DebitOrder) -> Result<bool, SimStoreError> {
    let claimed = tx
        .execute(
            "INSERT INTO bank_sim.debits (rrn, state, response_code, payer_bank,
                 payer_account, payee_account, amount_minor, stan, transmission_time,
                 acquirer_id)
             VALUES ($1, 'claimed', '', $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (rrn) DO NOTHING",
            &[
                &order.rrn,
                &order.payer_bank,
                &order.payer_account,
                &order.payee_account,
                &order.amount_minor,
                &order.wire.stan,
                &order.wire.transmission_time,
                &order.wire.acquirer_id,
            ],
        )
        .await?;
    Ok(claimed == 1)
}

/// The answer recorded for a field 37 seen before.
async fn recorded_answer(tx: &Transaction<'_>, rrn: &str) -> Result<Answer, SimStoreError> {
    let row = tx
        .query_one(
            "SELECT state, response_code, approval_code, amount_minor FROM bank_sim.debits
             WHERE rrn = $1",
            &[&rrn],
        )
        .await?;
    let state: String = row.get(0);
    if state == DebitState::ReversedUnseen.as_str() {
        return Ok(answer_for_reversed_unseen());
    }
    Ok(Answer {
        response_code: row.get(1),
        approval_code: row.get(2),
        original_amount_minor: None,
    }
    .repeated(row.get(3)))
}

/// The payer's balance (with the credits appended to it) and currency, its row locked: read with
/// [`account_view`].
async fn payer_for_update(
    tx: &Transaction<'_>,
    order: &DebitOrder,
) -> Result<Option<tokio_postgres::Row>, SimStoreError> {
    Ok(tx
        .query_opt(
            "SELECT a.balance_minor + COALESCE((SELECT sum(c.amount_minor)
                 FROM bank_sim.credits c WHERE c.bank_id = a.bank_id
                 AND c.account = a.account), 0)::BIGINT, a.currency_numeric
             FROM bank_sim.accounts a WHERE a.bank_id = $1 AND a.account = $2 FOR UPDATE",
            &[&order.payer_bank, &order.payer_account],
        )
        .await?)
}

fn account_view(row: &tokio_postgres::Row) -> AccountView<'_> {
    AccountView {
        balance_minor: row.get(0),
        currency_numeric: row.get(1),
    }
}

/// The wire identity recorded with a debit row (none on rows from before it was kept).
fn recorded_wire(row: &tokio_postgres::Row) -> Option<WireIdentity> {
    Some(WireIdentity {
        stan: row.get::<_, Option<String>>("stan")?,
        transmission_time: row.get::<_, Option<String>>("transmission_time")?,
        acquirer_id: row.get::<_, Option<String>>("acquirer_id")?,
    })
}

/// Gives an approved debit's money back to the payer and takes it from the payee's credits.
async fn undo_debit(
    tx: &Transaction<'_>,
    row: &tokio_postgres::Row,
    rrn: &str,
) -> Result<(), SimStoreError> {
    let amount: i64 = row.get("amount_minor");
    let payer: (&str, &str) = (row.get("payer_bank"), row.get("payer_account"));
    let payee_bank: Option<&str> = row.get("payee_bank");
    tx.execute(
        "UPDATE bank_sim.accounts SET balance_minor = balance_minor + $3
         WHERE bank_id = $1 AND account = $2",
        &[&payer.0, &payer.1, &amount],
    )
    .await?;
    if let Some(bank) = payee_bank {
        tx.execute(
            "INSERT INTO bank_sim.credits (bank_id, account, amount_minor, rrn)
             VALUES ($1, $2, $3, $4)",
            &[
                &bank,
                &row.get::<_, &str>("payee_account"),
                &(-amount),
                &rrn,
            ],
        )
        .await?;
    }
    tx.execute(
        "UPDATE bank_sim.debits SET state = $2, reversed_at = now() WHERE rrn = $1",
        &[&rrn, &DebitState::Reversed.as_str()],
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use payhub_actors::store::testing::fresh_database;

    fn seed() -> Vec<SeedAccount> {
        let acc = |bank: &str, account: &str, balance_minor| SeedAccount {
            bank_id: bank.into(),
            account: account.into(),
            balance_minor,
            currency_numeric: "156".into(),
        };
        vec![acc("0001", "payer", 1_000), acc("0002", "shop", 0)]
    }

    fn order(rrn: &str, amount_minor: i64) -> DebitOrder {
        DebitOrder {
            rrn: rrn.into(),
            payer_bank: "0001".into(),
            payer_account: "payer".into(),
            payee_account: "shop".into(),
            amount_minor,
            currency_numeric: "156".into(),
            wire: WireIdentity {
                stan: "000042".into(),
                transmission_time: "1128110000".into(),
                acquirer_id: "99990001".into(),
            },
        }
    }

    /// A reversal of `rrn` whose field 90 names STAN `stan` (the debits above used 000042).
    fn reversal(rrn: &str, stan: &str) -> ReversalOrder {
        let f90 = format!("0200{stan}112811000000099990001{}", "0".repeat(11));
        ReversalOrder {
            rrn: rrn.into(),
            original: ledger::OriginalElements::parse(&f90).unwrap(),
        }
    }

    /// The same story against both stores: approve, repeat, decline, reverse twice, reverse unseen,
    /// and the injected failures.
    async fn ledger_story(store: SimStore) {
        store.seed(&seed()).await.unwrap();
        let first = store.debit(&order("r1", 600), None).await.unwrap();
        assert!(first.is_approved());
        let repeat = store.debit(&order("r1", 600), None).await.unwrap();
        assert_eq!(repeat, first.clone().repeated(600));
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(400));
        assert_eq!(store.balance("0002", "shop").await.unwrap(), Some(600));
        let poor = store.debit(&order("r2", 600), None).await.unwrap();
        assert_eq!(poor.response_code, "51");
        let mut stranger = order("r3", 1);
        stranger.payer_account = "nobody".into();
        assert_eq!(
            store.debit(&stranger, None).await.unwrap().response_code,
            "14"
        );
        // Field 90 naming another 0200: found by field 37, but not undone.
        let wrong = store.reverse(&reversal("r1", "000043")).await.unwrap();
        assert_eq!(wrong, ReversalOutcome::Mismatch);
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(400));
        let right = store.reverse(&reversal("r1", "000042")).await.unwrap();
        assert_eq!(right, ReversalOutcome::Reversed);
        let again = store.reverse(&reversal("r1", "000042")).await.unwrap();
        assert_eq!(again, ReversalOutcome::NothingToUndo);
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(1_000));
        assert_eq!(store.balance("0002", "shop").await.unwrap(), Some(0));
        let unseen = store.reverse(&reversal("r9", "000042")).await.unwrap();
        assert_eq!(unseen, ReversalOutcome::NothingToUndo);
        let late = store.debit(&order("r9", 10), None).await.unwrap();
        assert_eq!(late.response_code, "12");
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(1_000));
        // Applied, then a malfunction: 96, for the repeat too, and the reversal undoes it.
        let applying = Some(InjectedFailure::MalfunctionAfterApplying);
        let broken = store.debit(&order("r5", 300), applying).await.unwrap();
        assert_eq!(
            (
                broken.response_code.as_str(),
                broken.approval_code.as_deref()
            ),
            ("96", None)
        );
        let repeat = store.debit(&order("r5", 300), None).await.unwrap();
        assert_eq!(repeat, broken.repeated(300));
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(700));
        let undone = store.reverse(&reversal("r5", "000042")).await.unwrap();
        assert_eq!(undone, ReversalOutcome::Reversed);
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(1_000));
        // The issuer down: 91, nothing applied, and the repeat gets the 91 without a debit.
        let down = Some(InjectedFailure::IssuerInoperative);
        let refused = store.debit(&order("r6", 300), down).await.unwrap();
        assert_eq!(refused.response_code, "91");
        let repeat = store.debit(&order("r6", 300), None).await.unwrap();
        assert_eq!(repeat, refused.repeated(300));
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(1_000));
    }

    #[tokio::test]
    async fn memory_ledger() {
        ledger_story(SimStore::memory(vec!["0001".into(), "0002".into()])).await;
    }

    /// A payee seeded at the top of the range still takes a credit whole, and the payer's side
    /// moves with it: no overflow, no half-moved debit.
    #[tokio::test]
    async fn memory_ledger_credits_past_the_seed_range() {
        let store = SimStore::memory(vec!["0001".into(), "0002".into()]);
        let mut accounts = seed();
        accounts[1].balance_minor = i64::MAX;
        store.seed(&accounts).await.unwrap();
        assert!(
            store
                .debit(&order("r1", 600), None)
                .await
                .unwrap()
                .is_approved()
        );
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(400));
        assert_eq!(store.balance("0002", "shop").await.unwrap(), Some(i64::MAX));
        let undone = store.reverse(&reversal("r1", "000042")).await.unwrap();
        assert_eq!(undone, ReversalOutcome::Reversed);
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(1_000));
    }

    #[tokio::test]
    async fn postgres_ledger_and_concurrent_twins() {
        let db = fresh_database().await;
        let banks = vec!["0001".to_string(), "0002".to_string()];
        let store = SimStore::postgres(db.pool.clone(), banks).await.unwrap();
        ledger_story(store.clone()).await;
        // Ten concurrent copies of one 0200 debit once.
        let answers = futures::future::join_all((0..10).map(|_| {
            let store = store.clone();
            async move { store.debit(&order("twin", 100), None).await.unwrap() }
        }))
        .await;
        // One is the original, the rest its repeats (which name its amount).
        let as_repeated: Vec<Answer> = answers.into_iter().map(|a| a.repeated(100)).collect();
        assert!(
            as_repeated
                .iter()
                .all(|a| a == &as_repeated[0] && a.is_approved())
        );
        assert_eq!(store.balance("0001", "payer").await.unwrap(), Some(900));
    }
}
