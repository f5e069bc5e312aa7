//! `payhub bank-sim` (issue 4): a bank information processing system on the bank link profile,
//! for operators, tests, benchmarks and the demo. Start it in-process with [`start`].

pub mod control;
pub mod faults;
pub mod ledger;
pub mod server;
pub mod store;
pub mod testing;

pub use faults::Faults;
pub use server::{SimTls, StatsSnapshot};

use anyhow::Context as _;
use server::{SimShared, SimStats};
use std::net::SocketAddr;
use std::sync::Arc;
use store::SimStore;
use tokio::net::TcpListener;
use tokio::sync::watch;

const AFTER_HELP: &str = "\
Fault switches (all off by default) are set at start by the flags above and at run time on the
control port (--control ADDR), a line protocol over TCP, one command per line:
  faults                      the switches as JSON
  set SWITCH VALUE            drop_pct | delay_ms | duplicate_pct | close_every | fail_pct
                              | reversal_fail_pct | approved_as
  stats                       counters as JSON (connections, sign_ons, debits, reversals,
                              reversals_applied, reversal_mismatches, ...)
  balance BANK_ID ACCOUNT     an account's balance in minor units
Each answer is one line: JSON, a number, `ok`, or `error: REASON`.
A 0420/0421 undoes the debit of its field 37 only when field 90 repeats that 0200's MTI, STAN,
field 7 and field 32; otherwise nothing is undone, the 0430 still says 00, and
reversal_mismatches counts it.
Example: printf 'set drop_pct 10\\n' | nc 127.0.0.1 9001

The seed file is CSV with the header `bank_id,account,balance_minor,currency` (currency CNY,
USD, EUR or its ISO 4217 number) and sets those accounts' balances at start. With port 0 the
bound addresses are printed as JSON on the first line of standard output.";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StoreKind {
    Postgres,
    Memory,
}

#[derive(clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct BankSimArgs {
    /// Address of the ISO 8583 listener (port 0: any free port).
    #[arg(long)]
    pub listen: SocketAddr,
    /// PostgreSQL for accounts and debits (schema `bank_sim`, created on start).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// A bank id (field 100) this system serves; repeat for several banks.
    #[arg(long = "bank", required = true, num_args = 1.., value_delimiter = ',')]
    pub banks: Vec<String>,
    /// Seed CSV: `bank_id,account,balance_minor,currency`.
    #[arg(long)]
    pub seed: Option<std::path::PathBuf>,
    /// Where accounts live: `postgres` (default) or `memory` (benchmarks; same logic).
    #[arg(long, value_enum, default_value_t = StoreKind::Postgres)]
    pub store: StoreKind,
    /// Address of the control port (fault switches at run time, stats, balances).
    #[arg(long)]
    pub control: Option<SocketAddr>,
    /// Hex of the 16-byte X9.19 MAC key: requests must carry a good MAC, answers carry one.
    #[arg(long)]
    pub mac_key: Option<String>,
    /// Serve TLS with this certificate (PEM, chain allowed); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Seed of the fault generator, so a run can be replayed.
    #[arg(long, default_value_t = 1)]
    pub rng_seed: u64,
    #[command(flatten)]
    pub faults: Faults,
}

/// Where the in-process simulator keeps its accounts.
#[derive(Debug, Clone)]
pub enum SimStoreChoice {
    Memory,
    Postgres(deadpool_postgres::Pool),
}

/// Everything [`start`] needs. `Debug` leaves out the MAC key and the seed's accounts.
#[derive(Clone)]
pub struct SimOptions {
    pub listen: SocketAddr,
    pub banks: Vec<String>,
    pub store: SimStoreChoice,
    pub seed: Vec<ledger::SeedAccount>,
    pub faults: Faults,
    pub rng_seed: u64,
    pub control: Option<SocketAddr>,
    pub mac_key: Option<[u8; 16]>,
    /// Serve TLS instead of plain TCP.
    pub tls: Option<SimTls>,
}

impl std::fmt::Debug for SimOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimOptions")
            .field("listen", &self.listen)
            .field("banks", &self.banks)
            .field("store", &self.store)
            .field("seed_accounts", &self.seed.len())
            .field("faults", &self.faults)
            .field("rng_seed", &self.rng_seed)
            .field("control", &self.control)
            .field("mac", &self.mac_key.is_some())
            .field("tls", &self.tls)
            .finish()
    }
}

impl SimOptions {
    /// A simulator on a free loopback port serving `banks`, no faults, no control port.
    pub fn new(store: SimStoreChoice, banks: &[&str]) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            banks: banks.iter().map(|b| b.to_string()).collect(),
            store,
            seed: Vec::new(),
            faults: Faults::default(),
            rng_seed: 1,
            control: None,
            mac_key: None,
            tls: None,
        }
    }
}

/// A running simulator. Dropping the handle does not stop it; call [`SimHandle::shutdown`].
pub struct SimHandle {
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    shared: Arc<SimShared>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl SimHandle {
    /// The ISO 8583 listener's bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    pub fn faults(&self) -> Faults {
        self.shared.faults.get()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.replace(faults);
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.shared.stats.snapshot()
    }

    pub async fn balance(&self, bank_id: &str, account: &str) -> anyhow::Result<Option<i64>> {
        Ok(self.shared.store.balance(bank_id, account).await?)
    }

    /// Turns true when [`SimHandle::shutdown`] is called (for a thread hosting the simulator).
    pub fn stopped(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Stops accepting and closes every connection.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Starts the simulator on the current tokio runtime.
pub async fn start(options: SimOptions) -> anyhow::Result<SimHandle> {
    options.faults.check().map_err(anyhow::Error::msg)?;
    for bank in &options.banks {
        payhub_actors::domain::BankId::parse(bank)
            .map_err(|_| anyhow::anyhow!("--bank {bank}: must be 1 to 11 digits"))?;
    }
    let store = match options.store {
        SimStoreChoice::Memory => SimStore::memory(options.banks.clone()),
        SimStoreChoice::Postgres(pool) => SimStore::postgres(pool, options.banks.clone())
            .await
            .context("bank-sim database")?,
    };
    store
        .seed(&options.seed)
        .await
        .context("seeding accounts")?;
    let listener = TcpListener::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(SimShared {
        banks: options.banks,
        store,
        faults: faults::FaultSwitches::new(options.faults),
        stats: SimStats::default(),
        rng_seed: options.rng_seed,
        mac: options.mac_key.map(payhub_iso8583::mac::MacKey::new),
        tls: options.tls,
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let control_addr = match options.control {
        Some(at) => {
            let listener = TcpListener::bind(at)
                .await
                .with_context(|| format!("control port {at}"))?;
            let bound = listener.local_addr()?;
            tokio::spawn(control::serve(
                listener,
                shared.clone(),
                shutdown_rx.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    tokio::spawn(server::serve(listener, shared.clone(), shutdown_rx));
    Ok(SimHandle {
        addr,
        control_addr,
        shared,
        shutdown,
    })
}

pub async fn run(args: BankSimArgs) -> anyhow::Result<()> {
    let seed = match &args.seed {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the seed file {}", path.display()))?;
            ledger::parse_seed(&text, &args.banks).map_err(anyhow::Error::msg)?
        }
        None => Vec::new(),
    };
    let mac_key = args.mac_key.as_deref().map(parse_mac_key).transpose()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(SimTls::from_files(cert, key)?),
        _ => None,
    };
    let store = match args.store {
        StoreKind::Memory => SimStoreChoice::Memory,
        StoreKind::Postgres => {
            let url = args.database_url.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "--database-url (or DATABASE_URL) is required with --store postgres"
                )
            })?;
            let pool = payhub_actors::store::pool(url, 16)?;
            // Fail now, in one line, when the database cannot be reached.
            let _probe = pool.get().await.map_err(|e| {
                let why = payhub_actors::store::with_causes(&e);
                anyhow::anyhow!(
                    "database {}: {why}",
                    payhub_actors::store::redacted_url(url)
                )
            })?;
            SimStoreChoice::Postgres(pool)
        }
    };
    let handle = start(SimOptions {
        listen: args.listen,
        banks: args.banks,
        store,
        seed,
        faults: args.faults,
        rng_seed: args.rng_seed,
        control: args.control,
        mac_key,
        tls,
    })
    .await?;
    let mut shutdown = crate::serve::ShutdownSignal::install();
    let control = handle
        .control_addr()
        .map_or("null".to_string(), |a| format!("\"{a}\""));
    crate::cli::output::note(format!(
        "{{\"listen\":\"{}\",\"control\":{control}}}",
        handle.addr()
    ));
    shutdown.wait().await;
    handle.shutdown();
    Ok(())
}

/// `--mac-key`: 32 hex characters.
fn parse_mac_key(hex_key: &str) -> anyhow::Result<[u8; 16]> {
    hex::decode(hex_key.trim())
        .ok()
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .ok_or_else(|| anyhow::anyhow!("--mac-key: must be 32 hex characters"))
}
