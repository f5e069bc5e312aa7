//! `payhub serve` and `payhub migrate`: start-up and wiring. [`Gateway::start`] composes every
//! part in one process — the same function serves `serve`, the demo and the end-to-end tests —
//! and [`Gateway::shutdown`] stops them in the order that loses nothing: stop taking requests
//! (those in progress finish, up to `server::SHUTDOWN_TIMEOUT_S`), then the workers, then the
//! channels and the bank links (sign-off, unbind).

use crate::channels::{router, smpp};
use crate::cli::output;
use crate::config::Config;
use crate::http::operator::{self, LinkStatusSource, OperatorState};
use crate::http::{mtls, pages, server};
use crate::single_gateway::DatabaseClaim;
use actix::Addr;
use anyhow::Context;
use payhub_actors::bank::{self, BankRouter};
use payhub_actors::clock::SharedClock;
use payhub_actors::store::prepared::Prepared;
use payhub_actors::store::redacted_url;
use payhub_actors::transaction::writer::PaymentWriter;
use payhub_actors::transaction::{Deps, PaymentRegistry, PaymentSettings, start_registry};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};

pub async fn migrate(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let pool = config.database.pool(1)?;
    let applied = payhub_actors::store::migrate(&pool)
        .await
        .with_context(|| format!("migrating {}", redacted_url(&config.database.url)))?;
    output::result(format!("{{\"applied\":{applied}}}"))
}

/// Every part of the gateway, running.
pub struct Gateway {
    pub https_addr: SocketAddr,
    pub operator_addr: SocketAddr,
    pub terminal_switch_addr: SocketAddr,
    pub pool: deadpool_postgres::Pool,
    https: server::RunningServer,
    operator: actix_web::dev::ServerHandle,
    expiry: crate::expiry::ExpiryWorker,
    webhooks: crate::webhooks::WebhookWorker,
    pub registry: Addr<PaymentRegistry>,
    pub bank: Addr<BankRouter>,
    channels: router::Channels,
    smpp: Option<Addr<smpp::SmppSession>>,
    /// Released last, when every part has stopped.
    claim: DatabaseClaim,
}

impl Gateway {
    /// Starts every part from `config`. Nothing is left running when it fails.
    pub async fn start(config: &Config, clock: SharedClock) -> anyhow::Result<Gateway> {
        let session_name = crate::single_gateway::session_name();
        let pool =
            (config.database).pool_named(config.database.pool_size, Some(session_name.clone()))?;
        check_database(&pool, &config.database.url).await?;
        let claim = DatabaseClaim::take(&pool, &config.database.url, &session_name).await?;
        let checked = match Checked::read(config, &pool).await {
            Ok(checked) => checked,
            Err(e) => {
                // Nothing of this gateway ran: the next one need not wait out its heartbeat.
                // (Past this point actors may write, and a failed start leaves the claim to
                // lapse.)
                claim.release().await;
                return Err(e);
            }
        };
        let Checked {
            tls,
            hash_key,
            links,
            smpp_settings,
        } = checked;
        // From here on actors run: a failure must stop them again.
        let bank = bank::start(pool.clone(), clock.clone(), links, &config.institution.id)?;
        let smpp = match config.smpp.enabled {
            true => smpp::start(pool.clone(), clock.clone(), smpp_settings).ok(),
            false => None,
        };
        let parts = Parts {
            claim,
            pool,
            clock,
            tls,
            hash_key,
            bank: bank.clone(),
            smpp: smpp.clone(),
        };
        let started = Self::start_rest(config, parts).await;
        if started.is_err() {
            let _ = bank.send(bank::Shutdown).await;
            if let Some(smpp) = smpp {
                let _ = smpp.send(smpp::Shutdown).await;
            }
        }
        started
    }

    async fn start_rest(config: &Config, parts: Parts) -> anyhow::Result<Gateway> {
        let Parts {
            claim,
            pool,
            clock,
            tls,
            hash_key,
            bank,
            smpp,
        } = parts;
        let sms = smpp.clone().map(|a| a.recipient());
        let channels = router::start_from_config(config, pool.clone(), clock.clone(), sms).await?;

        let webhooks =
            crate::webhooks::start_worker(pool.clone(), clock.clone(), (&config.webhooks).into())?;
        let registry = start_registry(Deps {
            pool: pool.clone(),
            writer: PaymentWriter::start(pool.clone()),
            clock: clock.clone(),
            settings: Arc::new(payment_settings(config)),
            hash_key: hash_key.clone(),
            channel: channels.recipient(),
            bank: bank.clone(),
            webhook_outbox: webhooks.outbox.clone(),
        });
        let mut pages = pages::PagesState::new(
            registry.clone(),
            pool.clone(),
            hash_key,
            clock.clone(),
            config.payments.allow_unregistered_receiver,
        );
        pages.code_resends_max = config.payments.code_resends_max;

        let (operator_addr, operator_server) = match start_operator(config, &pool, &bank) {
            Ok(started) => started,
            Err(e) => {
                channels.shutdown();
                return Err(e);
            }
        };
        let operator = operator_server.handle();
        actix_rt::spawn(operator_server);

        let https = server::start(
            server::ServerSettings::from_config(config),
            &tls,
            pool.clone(),
            clock.clone(),
            vec![Arc::new(pages::configure(pages))],
        );
        let https = match https {
            Ok(https) => https,
            Err(e) => {
                operator.stop(false).await;
                channels.shutdown();
                return Err(e.into());
            }
        };
        let expiry = start_expiry(config, &pool, &clock);
        Ok(Gateway {
            https_addr: https.addr,
            operator_addr,
            terminal_switch_addr: channels.switch.addr,
            pool,
            https,
            operator,
            expiry,
            webhooks,
            registry,
            bank,
            channels,
            smpp,
            claim,
        })
    }

    /// Stops taking requests, then the workers, then the channels and the bank links.
    pub async fn shutdown(self) {
        self.https.stop().await;
        self.operator.stop(true).await;
        self.expiry.stop().await;
        self.webhooks.shutdown.cancel();
        self.channels.shutdown();
        if let Some(smpp) = self.smpp {
            let _ = smpp.send(smpp::Shutdown).await;
        }
        let _ = self.bank.send(bank::Shutdown).await;
        self.webhooks.finished().await;
        self.claim.release().await;
        self.pool.close();
    }
}

/// The operator listener, not yet spawned.
fn start_operator(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    bank: &Addr<BankRouter>,
) -> anyhow::Result<(SocketAddr, actix_web::dev::Server)> {
    if !config.operator.listen.ip().is_loopback() && config.operator.token.is_some() {
        // Off loopback the page is reached with the token, which plain HTTP shows the network.
        tracing::warn!(
            listen = %config.operator.listen,
            "the operator listener speaks plain HTTP off loopback: its token and session cookie \
             cross the network unencrypted; keep it on loopback or put TLS in front of it"
        );
    }
    let links: Arc<dyn LinkStatusSource> = Arc::new(crate::bank_links::BankLinks(bank.clone()));
    let state = OperatorState {
        pool: pool.clone(),
        links,
        token: config.operator.token.clone(),
    };
    operator::start(config.operator.listen, state).with_context(|| {
        format!(
            "operator listener: cannot listen on {}",
            config.operator.listen
        )
    })
}

/// The worker that expires payments past their lifetime and forgets old sign-in failures (kept
/// for two lockout windows).
fn start_expiry(
    config: &Config,
    pool: &deadpool_postgres::Pool,
    clock: &SharedClock,
) -> crate::expiry::ExpiryWorker {
    crate::expiry::spawn(
        pool.clone(),
        clock.clone(),
        crate::expiry::ExpirySettings {
            login_failures_kept_s: 2 * config.payments.identity_lockout_s,
            ..crate::expiry::ExpirySettings::new(config.http.public_url.clone())
        },
    )
}

/// What `Gateway::start` reads and checks before any part of it runs.
struct Checked {
    tls: mtls::ServerTls,
    hash_key: payhub_actors::keyed_hash::HashKey,
    links: Vec<payhub_actors::bank::LinkSettings>,
    smpp_settings: smpp::SmppSettings,
}

impl Checked {
    async fn read(config: &Config, pool: &deadpool_postgres::Pool) -> anyhow::Result<Self> {
        // After the database answers: a gateway that cannot start says so in one line.
        raise_open_files_limit();
        let tls = mtls::ServerTls::load(
            &config.http.tls_cert,
            &config.http.tls_key,
            &config.http.merchant_ca_cert,
        )?;
        let hash_key = crate::secret_key::load_or_create(&config.secret_key_path())?;
        let links =
            crate::bank_links::all_link_settings(&config.links).map_err(anyhow::Error::msg)?;
        let smpp_settings = smpp::SmppSettings::from_config(&config.smpp);
        if config.smpp.enabled {
            smpp_settings
                .validate()
                .map_err(|e| anyhow::anyhow!("smpp: {e}"))?;
        }
        adopt_orphaned_reversals(pool, &links).await?;
        report_national_numbers(pool).await;
        Ok(Self {
            tls,
            hash_key,
            links,
            smpp_settings,
        })
    }
}

/// What `Gateway::start` has made before the parts that can still fail.
struct Parts {
    claim: DatabaseClaim,
    pool: deadpool_postgres::Pool,
    clock: SharedClock,
    tls: mtls::ServerTls,
    hash_key: payhub_actors::keyed_hash::HashKey,
    bank: Addr<BankRouter>,
    smpp: Option<Addr<smpp::SmppSession>>,
}

/// The `[payments]` rules as the payment actors take them.
pub fn payment_settings(config: &Config) -> PaymentSettings {
    let p = &config.payments;
    let longest_link_ms = config
        .links
        .iter()
        .map(|l| l.response_timeout_ms)
        .max()
        .unwrap_or(0);
    PaymentSettings {
        code_digits: p.code_digits,
        code_validity_s: p.code_validity_s,
        code_attempts_max: p.code_attempts_max,
        code_resends_max: p.code_resends_max,
        code_resend_interval_s: p.code_resend_interval_s,
        password_attempts_max: p.password_attempts_max,
        identity_failures_max: p.identity_failures_max,
        identity_lockout_s: p.identity_lockout_s,
        allow_unregistered_receiver: p.allow_unregistered_receiver,
        in_flight_max: p.in_flight_max,
        public_url: config.http.public_url.clone(),
        // The router answers on its own within a link's timeout; this only guards against a
        // router that never answers.
        debit_timeout_ms: PaymentSettings::default()
            .debit_timeout_ms
            .max(longest_link_ms * 2),
        ..PaymentSettings::default()
    }
}

/// Reversals still pending on a link the configuration no longer has follow it when it was
/// renamed (a configured link has its address); those of a BIPS no longer configured are not
/// sent, and the operator is told at every start.
async fn adopt_orphaned_reversals(
    pool: &deadpool_postgres::Pool,
    links: &[payhub_actors::bank::LinkSettings],
) -> anyhow::Result<()> {
    let adopted = payhub_actors::bank::reversals::adopt_orphans(pool, links)
        .await
        .context("pending reversals of links no longer configured")?;
    if adopted.moved > 0 {
        tracing::warn!(
            moved = adopted.moved,
            "pending reversals of renamed links moved to their new names"
        );
    }
    if adopted.stranded > 0 {
        tracing::error!(
            stranded = adopted.stranded,
            links = adopted.stranded_links.join(", "),
            "pending reversals of links no longer configured (no configured link has their \
             name or address): not sent until a link with either is configured"
        );
    }
    if adopted.readdressed > 0 {
        tracing::warn!(
            readdressed = adopted.readdressed,
            links = adopted.readdressed_links.join(", "),
            "pending reversals stored for another address of their link go to its address now: \
             if that is another BIPS, it answers 00 to a debit it never saw and the debit stands"
        );
    }
    Ok(())
}

/// Numbers registered before they had to be international (a trunk `0`) are not used: an SMS
/// to one would go out as an international address and be refused or misrouted. The operator is
/// told at every start which terminals they are (at most `NATIONAL_NUMBERS_LISTED_MAX`), until
/// they are disabled. Each is named with its customer's id, not the online id (which may be a
/// phone number, and the log is no place for one). A report, not a condition of the start: an
/// error is logged and skipped.
async fn report_national_numbers(pool: &deadpool_postgres::Pool) {
    const NATIONAL_NUMBERS_LISTED_MAX: i64 = 20;
    let listed = async {
        let client = pool.get().await?;
        client
            .query(
                "SELECT t.id || ' (customer ' || t.customer_id || ')' FROM terminals t
                  WHERE t.msisdn LIKE '0%' AND t.status = 'enabled' ORDER BY t.id LIMIT $1",
                &[&NATIONAL_NUMBERS_LISTED_MAX],
            )
            .await
            .map_err(payhub_actors::store::StoreError::from)
    };
    match listed.await {
        Ok(rows) if rows.is_empty() => {}
        Ok(rows) => {
            let terminals: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            tracing::error!(
                terminals = terminals.join(", "),
                "terminals registered with a national number (a leading 0) get no SMS: register \
                 the number again with its country code (payhub terminal add), then payhub \
                 terminal disable --terminal-id the old one"
            );
        }
        Err(e) => tracing::warn!(error = %e, "could not look for national numbers"),
    }
}

/// A first query with a clear message when the database cannot be reached.
async fn check_database(pool: &deadpool_postgres::Pool, url: &str) -> anyhow::Result<()> {
    let client = pool
        .get()
        .await
        .with_context(|| format!("database {} is not reachable", redacted_url(url)))?;
    client
        .query_one_cached("SELECT 1", &[])
        .await
        .with_context(|| format!("database {} does not answer", redacted_url(url)))?;
    let behind = payhub_actors::store::schema_behind(&client)
        .await
        .with_context(|| format!("database {}: reading its migrations", redacted_url(url)))?;
    if let Some(behind) = behind {
        let applied = behind.applied.map_or("never migrated".to_string(), |v| {
            format!("at migration {v}")
        });
        anyhow::bail!(
            "database {} is {applied}, this build needs migration {}: run `payhub migrate --config FILE` first",
            redacted_url(url),
            behind.needed
        );
    }
    Ok(())
}

/// Ctrl-C and SIGTERM, caught from the moment this is made. Make it before telling anyone the
/// process is ready: a signal that comes before its handler is installed kills the process.
pub struct ShutdownSignal {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl ShutdownSignal {
    pub fn install() -> Self {
        Self {
            interrupt: signal(SignalKind::interrupt()).ok(),
            terminate: signal(SignalKind::terminate()).ok(),
        }
    }

    /// Waits for Ctrl-C or SIGTERM.
    pub async fn wait(&mut self) {
        tokio::select! {
            _ = next(self.interrupt.as_mut()) => {}
            _ = next(self.terminate.as_mut()) => {}
        }
    }

    /// Runs `stopping` (a shutdown, which may wait on requests in progress for a while). Ctrl-C or
    /// SIGTERM again meanwhile ends the process at once, as a crash would: every effect outside
    /// the process was committed first, and the next start takes over what was in flight.
    pub async fn unless_asked_again(mut self, stopping: impl std::future::Future<Output = ()>) {
        tokio::select! {
            () = stopping => {}
            () = self.wait() => {
                tracing::warn!("asked again to stop: stopping at once, the shutdown unfinished");
                std::process::exit(1);
            }
        }
    }
}

/// The next delivery of a signal; never, if its handler could not be installed.
async fn next(signal: Option<&mut Signal>) {
    match signal {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Raises the soft limit on open files to the hard one. Every connection (HTTPS, terminals, bank
/// links, the SMSC, the database pool) holds a file descriptor, and the common soft default of
/// 1,024 is far below what the listeners' own caps allow. A failure is logged, not fatal.
#[allow(unsafe_code)]
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct they are given.
    let raised = unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            false
        } else if limit.rlim_cur >= limit.rlim_max {
            true
        } else {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0
        }
    };
    if raised {
        tracing::debug!(open_files_max = limit.rlim_cur, "open files limit");
    } else {
        let error = std::io::Error::last_os_error();
        tracing::warn!(%error, "could not raise the open files limit");
    }
}

pub async fn run(config: &Path) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let clock: SharedClock = Arc::new(payhub_actors::SystemClock);
    let gateway = Gateway::start(&config, clock).await?;
    let mut shutdown = ShutdownSignal::install();
    output::note(serde_json::json!({
        "https": gateway.https_addr.to_string(),
        "operator": gateway.operator_addr.to_string(),
        "terminal_switch": gateway.terminal_switch_addr.to_string(),
    }));
    tracing::info!(https = %gateway.https_addr, operator = %gateway.operator_addr, "payhub serving");
    shutdown.wait().await;
    tracing::info!("shutting down (Ctrl-C or SIGTERM again stops at once)");
    shutdown.unless_asked_again(gateway.shutdown()).await;
    Ok(())
}
