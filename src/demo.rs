//! `payhub demo`: the whole system on one machine with no set-up (issue 7). PostgreSQL from
//! `DATABASE_URL` or a private cluster in the demo's own folder (or, run as root from a folder
//! the `postgres` user cannot reach, in one of its own under `/var/lib/payhub-demo`, which
//! outlives the demo folder: remove both to start over), migrations, two bank simulators
//! (one run by a third party, one by the payer's bank), the SMSC simulator, the terminal switch
//! with one simulated dedicated terminal, the gateway on TLS, a sample merchant and two sample
//! customers; one payment end to end as a self-check; then serving until Ctrl-C and a clean
//! shutdown.
//!
//! Enrollment goes through the operator commands themselves (`merchant add`, `customer add`,
//! `terminal add`), so the demo exercises what an operator scripts.

mod selfcheck;

use crate::cli::output;
use crate::config::Config;
use crate::serve::Gateway;
use crate::sim;
use anyhow::Context;
use payhub_actors::clock::SharedClock;
use payhub_actors::store::local_cluster::{self, ClusterOptions, LocalCluster};
use payhub_actors::store::prepared::Prepared;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the demo keeps its PostgreSQL cluster, certificates and configuration.
    #[arg(long, default_value = ".payhub-demo")]
    pub dir: PathBuf,
    /// The gateway's HTTPS listener (merchant API and pay pages).
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub https_listen: SocketAddr,
    /// The operator listener (metrics, health, operator page).
    #[arg(long, default_value = "127.0.0.1:9090")]
    pub operator_listen: SocketAddr,
    /// The SMSC simulator's HTTP port, where `GET /messages` lists the SMS sent.
    #[arg(long, default_value = "127.0.0.1:9025")]
    pub smsc_http_listen: SocketAddr,
    /// Run the self-check payment, then shut down instead of serving until Ctrl-C.
    #[arg(long)]
    pub check_only: bool,
}

/// The sample data, also printed for the person trying the demo.
pub mod sample {
    pub const INSTITUTION_ID: &str = "99990001";
    pub const THIRD_PARTY_BANK: &str = "0001";
    pub const PAYER_BANK: &str = "0002";
    pub const MERCHANT_NAME: &str = "Demo Book Shop";
    pub const MERCHANT_ACCOUNT: &str = "6222000099990000";
    pub struct Customer {
        pub real_name: &'static str,
        pub online_id: &'static str,
        pub password: &'static str,
        pub bank: &'static str,
        pub account: &'static str,
        pub mobile: &'static str,
        pub balance_minor: i64,
    }
    pub const CUSTOMERS: [Customer; 2] = [
        Customer {
            real_name: "Li Lei",
            online_id: "lilei",
            password: "demo-pass-lilei",
            bank: THIRD_PARTY_BANK,
            account: "6222000011112222",
            mobile: "8613800138000",
            balance_minor: 10_000_000,
        },
        Customer {
            real_name: "Han Meimei",
            online_id: "hanmeimei",
            password: "demo-pass-hanmeimei",
            bank: PAYER_BANK,
            account: "6222000033334444",
            mobile: "8613900139000",
            balance_minor: 5_000_000,
        },
    ];
}

/// The demo's database: the operator's own, or a private cluster stopped when the demo ends.
pub struct DemoDatabase {
    pub url: String,
    pub cluster: Option<LocalCluster>,
}

impl DemoDatabase {
    pub fn open(dir: &Path) -> anyhow::Result<Self> {
        if let Ok(url) = std::env::var("DATABASE_URL") {
            return Ok(Self { url, cluster: None });
        }
        let data = cluster_folder(dir)?;
        let cluster = LocalCluster::start(&data, ClusterOptions::DEMO)
            .with_context(|| format!("starting PostgreSQL in {}", data.display()))?;
        Ok(Self {
            url: cluster.url("postgres"),
            cluster: Some(cluster),
        })
    }
}

/// Where a demo run as root keeps its cluster when the `postgres` user cannot reach the demo
/// folder: one folder per demo folder below this one. Not `/var/tmp`: anyone may make a folder or
/// a link there before root does, and old files there are cleaned away.
const UNREACHABLE_DEMO_CLUSTERS: &str = "/var/lib/payhub-demo";

/// `DIR/pg`; or, when the server (run as the `postgres` user under root) cannot reach it, as
/// under root's own home folder, a folder of this demo folder's own below
/// `UNREACHABLE_DEMO_CLUSTERS`, open to that user.
fn cluster_folder(dir: &Path) -> anyhow::Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let inside = dir.join("pg");
    if local_cluster::server_can_reach(&inside)? {
        return Ok(inside);
    }
    let digest = openssl::sha::sha256(dir.as_os_str().as_bytes());
    let base = Path::new(UNREACHABLE_DEMO_CLUSTERS);
    let own = base.join(hex::encode(&digest[..8]));
    root_only_folder(base)?;
    root_only_folder(&own)?;
    let outside = own.join("pg");
    if !local_cluster::server_can_reach(&outside)? {
        anyhow::bail!(
            "the postgres user cannot reach {} nor {}: pass --dir with a folder it can reach",
            inside.display(),
            outside.display()
        );
    }
    output::note(format!(
        "The postgres user cannot reach {}: the demo's database is kept in {} instead.",
        dir.display(),
        outside.display()
    ));
    Ok(outside)
}

/// `path` as a folder only root can change and anyone can pass through (0755): made so when
/// missing; refused when it is a link, or another user's, or writable by others.
fn root_only_folder(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    if let Err(e) = std::fs::DirBuilder::new().mode(0o755).create(path)
        && e.kind() != std::io::ErrorKind::AlreadyExists
    {
        return Err(e).with_context(|| format!("creating {}", path.display()));
    }
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_dir() || meta.uid() != 0 || meta.mode() & 0o022 != 0 || meta.mode() & 0o005 != 0o005
    {
        anyhow::bail!(
            "{} must be a folder of root's, writable by root only and open to others (0755); \
             remove it or pass --dir",
            path.display()
        );
    }
    Ok(())
}

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    if path.is_absolute() {
        return Ok(path.to_path_buf());
    }
    Ok(std::env::current_dir()
        .context("reading the current folder")?
        .join(path))
}

/// Refuses early, with the fix, when a fixed port is taken.
/// `addr` once found free, with a free port in place of port 0: the configuration's pay_url and
/// the guide name the port, so it is chosen before they are written.
fn free_address(addr: SocketAddr, flag: &str) -> anyhow::Result<SocketAddr> {
    TcpListener::bind(addr)
        .and_then(|listener| listener.local_addr())
        .map_err(|e| {
            anyhow::anyhow!(
                "{addr} is not free ({e}); stop what uses it or pass {flag} 127.0.0.1:PORT"
            )
        })
}

/// Everything the demo started, stopped in reverse order.
struct Running {
    gateway: Gateway,
    banks: Vec<sim::bank::SimHandle>,
    smsc: sim::smsc::SmscSim,
    terminal: sim::terminal::SimHandle,
}

pub async fn run(mut args: DemoArgs) -> anyhow::Result<()> {
    args.https_listen = free_address(args.https_listen, "--https-listen")?;
    args.operator_listen = free_address(args.operator_listen, "--operator-listen")?;
    args.smsc_http_listen = free_address(args.smsc_http_listen, "--smsc-http-listen")?;
    let dir = absolute(&args.dir)?;
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("creating the demo folder {}", dir.display()))?;
    let db = DemoDatabase::open(&dir)?;
    let pool = payhub_actors::store::pool(&db.url, 4)?;
    payhub_actors::store::migrate(&pool)
        .await
        .context("applying migrations")?;
    output::note(format!(
        "PostgreSQL ready ({}).",
        payhub_actors::store::redacted_url(&db.url)
    ));

    let running = start_all(&args, &dir, &db.url, pool.clone()).await;
    let running = match running {
        Ok(r) => r,
        Err(e) => {
            pool.close();
            return Err(e);
        }
    };
    // As operations.md orders it: the URLs and what to do, one payment end to end, then serving.
    if !args.check_only {
        print_guide(&args, &dir, &running);
    }
    let outcome = selfcheck::run(&running.gateway, &dir, &running.smsc).await;
    match &outcome {
        Ok(line) => output::note(format!("\nSelf-check: {line}")),
        Err(e) => output::note(format!(
            "\nSelf-check FAILED: {}",
            crate::cli::one_line_error(e)
        )),
    }
    if outcome.is_ok() && !args.check_only {
        let mut shutdown = crate::serve::ShutdownSignal::install();
        output::note("\nPress Ctrl-C to stop.");
        shutdown.wait().await;
        output::note(
            "\nShutting down: signing off the bank links, unbinding from the SMSC, draining \
             (Ctrl-C again stops at once).",
        );
        shutdown.unless_asked_again(stop_all(running)).await;
    } else {
        stop_all(running).await;
    }
    pool.close();
    drop(db);
    output::note("payhub demo stopped.");
    outcome.map(|_| ())
}

async fn start_all(
    args: &DemoArgs,
    dir: &Path,
    db_url: &str,
    pool: deadpool_postgres::Pool,
) -> anyhow::Result<Running> {
    let banks = start_banks(pool.clone()).await?;
    let mut smsc_options = sim::smsc::SmscSimOptions::loopback("payhub", "demosmsc");
    smsc_options.http = Some(args.smsc_http_listen);
    smsc_options.print = false;
    let smsc = sim::smsc::start(smsc_options)
        .await
        .context("starting the SMSC simulator")?;

    let config_path = write_config(args, dir, db_url, &banks, smsc.smpp_addr())?;
    let config = load_own_config(&config_path)?;
    let clock: SharedClock = Arc::new(payhub_actors::SystemClock);
    let gateway = Gateway::start(&config, clock).await?;
    enroll(&config_path, dir, &pool).await?;
    let terminal = start_terminal(dir, &gateway).await?;
    Ok(Running {
        gateway,
        banks,
        smsc,
        terminal,
    })
}

async fn stop_all(running: Running) {
    running.terminal.stop();
    running.gateway.shutdown().await;
    running.smsc.stop().await;
    for bank in &running.banks {
        bank.shutdown();
    }
}

async fn start_banks(pool: deadpool_postgres::Pool) -> anyhow::Result<Vec<sim::bank::SimHandle>> {
    let mut handles = Vec::new();
    for bank in [sample::THIRD_PARTY_BANK, sample::PAYER_BANK] {
        let mut options =
            sim::bank::SimOptions::new(sim::bank::SimStoreChoice::Postgres(pool.clone()), &[bank]);
        let seed: String = std::iter::once("bank_id,account,balance_minor,currency\n".to_string())
            .chain(
                sample::CUSTOMERS
                    .iter()
                    .filter(|c| c.bank == bank)
                    .map(|c| format!("{bank},{},{},CNY\n", c.account, c.balance_minor)),
            )
            .chain(
                (bank == sample::THIRD_PARTY_BANK)
                    .then(|| format!("{bank},{},0,CNY\n", sample::MERCHANT_ACCOUNT)),
            )
            .collect();
        options.seed = sim::bank::ledger::parse_seed(&seed, &[bank.to_string()])
            .map_err(anyhow::Error::msg)?;
        handles.push(
            sim::bank::start(options)
                .await
                .with_context(|| format!("starting the bank simulator for bank {bank}"))?,
        );
    }
    Ok(handles)
}

fn write_config(
    args: &DemoArgs,
    dir: &Path,
    db_url: &str,
    banks: &[sim::bank::SimHandle],
    smsc: SocketAddr,
) -> anyhow::Result<PathBuf> {
    let pki = dir.join("pki");
    if !pki.join(crate::pki::SERVER_CERT).exists() {
        crate::pki::init(&crate::pki::InitArgs {
            dir: pki.clone(),
            hosts: Vec::new(),
            listen: args.https_listen,
            database_url: Some(db_url.to_string()),
            force: false,
        })
        .context("creating the demo's certificates")?;
    }
    let path = |name: &str| toml::Value::String(pki.join(name).display().to_string()).to_string();
    let text = format!(
        r#"# Written by `payhub demo` at every start.
[database]
url = {db_url}
pool_size = 8

[http]
listen = "{https}"
public_url = "https://localhost:{https_port}"
tls_cert = {tls_cert}
tls_key = {tls_key}
merchant_ca_cert = {ca_cert}
merchant_ca_key = {ca_key}

[institution]
id = "{institution}"

[security]
secret_key_file = {secret}

[smpp]
addr = "{smsc}"
system_id = "payhub"
password = "demosmsc"
source_addr = "PAYHUB"

[terminal_switch]
listen = "127.0.0.1:0"

[operator]
listen = "{operator}"

[webhooks]
# The demo's merchant receives its webhooks on this machine.
allow_private_destinations = true

[[links]]
name = "bips-third-party"
addr = "{bank_a}"
owner = "third_party"
banks = ["{bank_a_id}"]
response_timeout_ms = 5000
echo_interval_s = 30

[[links]]
name = "bips-payer-bank"
addr = "{bank_b}"
owner = "payer_bank"
banks = ["{bank_b_id}"]
response_timeout_ms = 5000
echo_interval_s = 30
"#,
        db_url = toml::Value::String(db_url.to_string()),
        https = args.https_listen,
        https_port = args.https_listen.port(),
        tls_cert = path(crate::pki::SERVER_CERT),
        tls_key = path(crate::pki::SERVER_KEY),
        ca_cert = path(crate::pki::MERCHANT_CA_CERT),
        ca_key = path(crate::pki::MERCHANT_CA_KEY),
        secret = path(crate::pki::SECRET_KEY),
        institution = sample::INSTITUTION_ID,
        operator = args.operator_listen,
        bank_a = banks[0].addr(),
        bank_a_id = sample::THIRD_PARTY_BANK,
        bank_b = banks[1].addr(),
        bank_b_id = sample::PAYER_BANK,
    );
    let file = dir.join("payhub.toml");
    // Private, as `pki init` writes it: it holds the database URL and the SMSC password.
    crate::pki::write_private(&file, text.as_bytes(), true)?;
    Ok(file)
}

/// The demo's configuration as it wrote it. `PAYHUB_*` overrides set for a real gateway in the
/// same shell do not apply: the demo's database, simulators and addresses are its own, and its
/// sample customers must not land in the operator's database.
fn load_own_config(path: &Path) -> anyhow::Result<Config> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Config::from_toml(&text, &[]).with_context(|| path.display().to_string())
}

/// Runs one of our own operator commands and returns its JSON output. Like the demo's gateway,
/// the command reads the demo's configuration as written, without `PAYHUB_*` overrides.
async fn payhub_command(args: &[&str], stdin: Option<&str>) -> anyhow::Result<serde_json::Value> {
    use tokio::io::AsyncWriteExt;
    let exe = std::env::current_exe().context("finding the payhub binary")?;
    let mut command = tokio::process::Command::new(exe);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("PAYHUB_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("running payhub")?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        anyhow::bail!(
            "payhub {}: {}",
            args.first().copied().unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    serde_json::from_slice(&out.stdout).context("reading the command's JSON")
}

/// The sample merchant, customers and dedicated terminal, registered once and kept.
async fn enroll(config: &Path, dir: &Path, pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    let config_arg = config.display().to_string();
    enroll_merchant(&config_arg, dir, pool).await?;
    enroll_customers(&config_arg, pool).await?;
    enroll_terminal(&config_arg, dir, pool).await
}

/// Whether the row an earlier run saved in `file` (its `key` value, a merchant or terminal id)
/// is in this database: a new cluster, or another `DATABASE_URL`, does not have it.
async fn saved_and_registered(
    file: &Path,
    key: &str,
    query: &str,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<bool> {
    let Ok(text) = std::fs::read(file) else {
        return Ok(false);
    };
    let saved: serde_json::Value = serde_json::from_slice(&text).unwrap_or_default();
    let Some(id) = saved[key].as_str() else {
        return Ok(false);
    };
    let client = pool.get().await?;
    Ok(client.query_opt_cached(query, &[&id]).await?.is_some())
}

/// `payhub merchant add`, its certificate and key kept under `dir/merchant`.
async fn enroll_merchant(
    config_arg: &str,
    dir: &Path,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<()> {
    let merchant_dir = dir.join("merchant");
    let merchant_file = merchant_dir.join("merchant.json");
    let query = "SELECT 1 FROM merchants WHERE id = $1";
    if !saved_and_registered(&merchant_file, "merchant_id", query, pool).await? {
        let out = payhub_command(
            &[
                "merchant",
                "add",
                "--config",
                config_arg,
                "--name",
                sample::MERCHANT_NAME,
                "--bank",
                sample::THIRD_PARTY_BANK,
                "--account",
                sample::MERCHANT_ACCOUNT,
                "--cert-out",
                &merchant_dir.display().to_string(),
                "--force",
            ],
            None,
        )
        .await?;
        crate::pki::write_private(&merchant_file, out.to_string().as_bytes(), true)?;
    }
    Ok(())
}

/// `payhub customer add` for each sample customer not yet registered.
async fn enroll_customers(config_arg: &str, pool: &deadpool_postgres::Pool) -> anyhow::Result<()> {
    let client = pool.get().await?;
    for c in &sample::CUSTOMERS {
        let known = client
            .query_opt_cached(
                "SELECT 1 FROM customers WHERE online_id = $1",
                &[&c.online_id],
            )
            .await?
            .is_some();
        if known {
            continue;
        }
        payhub_command(
            &[
                "customer",
                "add",
                "--config",
                config_arg,
                "--real-name",
                c.real_name,
                "--online-id",
                c.online_id,
                "--password-stdin",
                "--bank",
                c.bank,
                "--account",
                c.account,
                "--mobile",
                c.mobile,
            ],
            Some(&format!("{}\n", c.password)),
        )
        .await?;
    }
    Ok(())
}

/// `payhub terminal add` for the second customer's set-top box, its credentials kept in `dir`.
async fn enroll_terminal(
    config_arg: &str,
    dir: &Path,
    pool: &deadpool_postgres::Pool,
) -> anyhow::Result<()> {
    let terminal_file = dir.join("terminal.json");
    let query = "SELECT 1 FROM terminals WHERE id = $1";
    if !saved_and_registered(&terminal_file, "terminal_id", query, pool).await? {
        let out = payhub_command(
            &[
                "terminal",
                "add",
                "--config",
                config_arg,
                "--online-id",
                sample::CUSTOMERS[1].online_id,
                "--kind",
                "dedicated",
                "--label",
                "Set-top box",
                "--serial",
                "STB-0001",
            ],
            None,
        )
        .await?;
        crate::pki::write_private(&terminal_file, out.to_string().as_bytes(), true)?;
    }
    Ok(())
}

/// The simulated dedicated terminal of the second customer, connected to the switch. It prints
/// each code it gets; a person types it on the pay page.
async fn start_terminal(dir: &Path, gateway: &Gateway) -> anyhow::Result<sim::terminal::SimHandle> {
    use crate::channels::terminal::{auth::SharedKey, client::ClientOptions, tls::ClientTls};
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("terminal.json"))?)?;
    let id = saved["terminal_id"]
        .as_str()
        .context("terminal.json: no terminal_id")?;
    let key = saved["key"].as_str().context("terminal.json: no key")?;
    let ca = std::fs::read(dir.join("pki").join(crate::pki::SERVER_CA_CERT))?;
    let config = sim::terminal::SimConfig {
        client: ClientOptions {
            switch: gateway.terminal_switch_addr.to_string(),
            server_name: Some("localhost".into()),
            terminal_id: id.to_string(),
            key: SharedKey::from_hex(key).map_err(anyhow::Error::msg)?.into(),
            tls: ClientTls::Ca(ca),
        },
        behaviour: sim::terminal::DeliveryBehaviour::Acknowledge,
        answer_pings: true,
        answer: None,
    };
    let mut handle = sim::terminal::spawn(config)
        .await
        .context("connecting the simulated terminal")?;
    let (_, none) = tokio::sync::mpsc::channel(1);
    let mut events = std::mem::replace(&mut handle.events, none);
    actix_rt::spawn(async move {
        while let Some(event) = events.recv().await {
            if let sim::terminal::SimEvent::Code {
                code,
                amount,
                currency,
                merchant,
                payment_id,
                ..
            } = event
            {
                // The demo's console stands for the device's screen; logs never carry codes.
                output::note(format!(
                    "[set-top box] code {code} to pay {}.{:02} {currency} to {merchant} ({payment_id})",
                    amount / 100,
                    amount % 100
                ));
            }
        }
    });
    Ok(handle)
}

fn print_guide(args: &DemoArgs, dir: &Path, running: &Running) {
    let https = running.gateway.https_addr;
    let merchant_dir = dir.join("merchant");
    let [lilei, han] = &sample::CUSTOMERS;
    output::note(format!(
        r#"
payhub demo is running.

  Merchant API    https://localhost:{port}/v1   (client certificate: {cert})
  Operator page   http://{operator}/   (metrics at /metrics, health at /healthz and /readyz)
  SMS sent        http://{smsc}/messages   (the SMSC simulator; codes also appear below)
  Terminal switch {switch}   (a simulated set-top box of {han_name} is connected)

Sample customers (identity / password):
  {lilei_id} / {lilei_pw}   mobile +{lilei_mobile}, account at bank {lilei_bank} (third-party BIPS)
  {han_id} / {han_pw}   mobile +{han_mobile}, account at bank {han_bank} (payer bank's BIPS), set-top box

Create a payment as the merchant:
  curl --cacert {ca} --cert {cert} --key {key} \
    -H 'Content-Type: application/json' -H 'Idempotency-Key: {order}' \
    -d '{{"order_id":"{order}","amount":1234,"currency":"CNY","description":"2 books","return_url":"https://shop.example/return","notify_url":"https://shop.example/hooks"}}' \
    https://localhost:{port}/v1/payments

(Sent again, it answers the same payment; change the order id and key for another.)
Open the "pay_url" it returns in a browser (accept the demo certificate, or trust {ca}),
sign in as a sample customer, read the code at http://{smsc}/messages (SMS) or below
(set-top box), and type it on the code page. A first payment runs now, as a self-check."#,
        port = https.port(),
        // Unique per run: an order id of an earlier run's (the database is kept) would be refused.
        order = format!("demo-{}", chrono::Utc::now().timestamp()),
        operator = running.gateway.operator_addr,
        smsc = args.smsc_http_listen,
        switch = running.gateway.terminal_switch_addr,
        ca = dir.join("pki").join(crate::pki::SERVER_CA_CERT).display(),
        cert = merchant_dir.join("merchant.crt").display(),
        key = merchant_dir.join("merchant.key").display(),
        han_name = han.real_name,
        lilei_id = lilei.online_id,
        lilei_pw = lilei.password,
        lilei_mobile = lilei.mobile,
        lilei_bank = lilei.bank,
        han_id = han.online_id,
        han_pw = han.password,
        han_mobile = han.mobile,
        han_bank = han.bank,
    ));
}

#[cfg(test)]
mod tests {
    use super::root_only_folder;
    use std::os::unix::fs::PermissionsExt;

    /// The folder root hands to the `postgres` user is made by root, or refused: a link another
    /// user planted (to `/etc`, say) or a folder others may write is never used.
    #[test]
    fn only_a_folder_of_roots_is_used_for_a_cluster() {
        let tmp = tempfile::tempdir().unwrap();
        let root = payhub_actors::store::local_cluster::is_root();
        let fresh = tmp.path().join("fresh");
        assert_eq!(root_only_folder(&fresh).is_ok(), root, "made, 0755, root's");
        let target = tmp.path().join("target");
        std::fs::create_dir(&target).unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(root_only_folder(&link).is_err(), "a link");
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(root_only_folder(&open).is_err(), "writable by others");
    }
}
