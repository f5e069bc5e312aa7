//! Test support for the bank simulator (bank link tests, end-to-end tests, benchmarks): the
//! simulator on a thread and runtime of its own, as a separate system would run, and seed rows.
//! Helpers panic on set-up failures: tests only.
//!
//! ```ignore
//! let mut options = SimOptions::new(SimStoreChoice::Memory, &["0001"]);
//! options.seed = seed_accounts("0001", [("acct000000", 1_000)]);
//! let sim = spawn_on_own_thread(options).await;
//! ```

use super::ledger::SeedAccount;
use super::{SimHandle, SimOptions, start};

/// Starts the simulator on a new thread with a current-thread runtime; it runs until
/// [`SimHandle::shutdown`].
pub async fn spawn_on_own_thread(options: SimOptions) -> SimHandle {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime for the bank simulator");
        runtime.block_on(async move {
            let handle = start(options).await.expect("the bank simulator starts");
            let mut stopped = handle.stopped();
            let _ = tx.send(handle);
            let _ = stopped.wait_for(|s| *s).await;
        });
    });
    rx.await
        .expect("the bank simulator thread reports its handle")
}

/// Seed rows for `bank`: `(account, balance_minor)` pairs, in CNY.
pub fn seed_accounts<A: Into<String>>(
    bank: &str,
    accounts: impl IntoIterator<Item = (A, i64)>,
) -> Vec<SeedAccount> {
    accounts
        .into_iter()
        .map(|(account, balance_minor)| SeedAccount {
            bank_id: bank.to_owned(),
            account: account.into(),
            balance_minor,
            currency_numeric: "156".into(),
        })
        .collect()
}
