//! `payhub merchant add|disable|enable`, `customer add`, `terminal add|disable` (operations.md): register
//! the gateway's merchants, customers and customer terminals, printing the JSON operators script
//! against. Every problem is one line on standard error (see `main.rs`).

use crate::cli::output;
use crate::config::Config;
use crate::pki::{self, CertifiedKey, Validity};
use anyhow::Context;
use openssl::x509::X509Ref;
use payhub_actors::Secret;
use payhub_actors::domain::{AccountNumber, BankId, FieldError, Msisdn, OnlineId, TerminalKind};
use payhub_actors::store::customers::{self, NewCustomer};
use payhub_actors::store::merchants::{self, MerchantStatus, NewMerchant};
use payhub_actors::store::terminals::{self, NewTerminal, SHARED_KEY_BYTES};
use std::io::Read;
use std::path::{Path, PathBuf};

/// Longest merchant or customer name accepted, in characters.
pub const NAME_MAX_CHARS: usize = 100;
/// Field 43's location part is at most this long, spelled in ASCII as the 0200 carries it.
pub const LOCATION_MAX_CHARS: usize = 15;

#[derive(clap::Subcommand)]
pub enum MerchantCommand {
    /// Registers a merchant and issues its client certificate from the merchant CA.
    Add(MerchantAddArgs),
    /// Refuses the merchant's certificate from now on (401 on every request).
    Disable(MerchantIdArgs),
    /// Accepts the merchant's certificate again.
    Enable(MerchantIdArgs),
}

#[derive(clap::Args)]
pub struct MerchantAddArgs {
    /// The payhub.toml file.
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub name: String,
    /// The settlement bank's id (ISO 8583 field 100 of the payee), 1 to 11 digits.
    #[arg(long)]
    pub bank: String,
    /// The settlement account.
    #[arg(long)]
    pub account: String,
    /// Where merchant.crt, merchant.key and ca.crt are written (a certificate issued by the
    /// merchant CA).
    #[arg(long, required_unless_present = "cert", conflicts_with = "cert")]
    pub cert_out: Option<PathBuf>,
    /// Instead of issuing one: the merchant's own certificate (PEM), pinned by its SHA-256
    /// fingerprint.
    #[arg(long)]
    pub cert: Option<PathBuf>,
    /// Field 41 (8 characters); random digits by default.
    #[arg(long)]
    pub terminal_id: Option<String>,
    /// Field 42 (15 characters); random digits by default.
    #[arg(long)]
    pub card_acceptor_id: Option<String>,
    /// Field 43's city/country part.
    #[arg(long, default_value = "")]
    pub location: String,
    /// Validity of the client certificate, in days.
    #[arg(long, default_value_t = pki::CLIENT_VALIDITY_DAYS)]
    pub cert_days: u32,
    /// Replace certificate files already in --cert-out.
    #[arg(long)]
    pub force: bool,
}

#[derive(clap::Args)]
pub struct MerchantIdArgs {
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long)]
    pub merchant_id: String,
}

#[derive(clap::Subcommand)]
pub enum CustomerCommand {
    /// Registers a customer (the password is read from standard input).
    Add(CustomerAddArgs),
}

#[derive(clap::Args)]
pub struct CustomerAddArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// Actual identity: the customer's real name.
    #[arg(long)]
    pub real_name: String,
    /// Actual identity: national id or similar document number.
    #[arg(long)]
    pub national_id: Option<String>,
    /// Identity for online transactions (the real identity or a free alias).
    #[arg(long)]
    pub online_id: String,
    /// Read the password from standard input (one trailing newline is dropped).
    #[arg(long, required = true)]
    pub password_stdin: bool,
    #[arg(long)]
    pub bank: String,
    #[arg(long)]
    pub account: String,
    /// Registers this mobile telephone as the customer's first terminal.
    #[arg(long)]
    pub mobile: Option<String>,
}

#[derive(clap::Subcommand)]
pub enum TerminalCommand {
    /// Registers a terminal's initial information for a customer.
    Add(TerminalAddArgs),
    /// Disables a terminal: no code or notice is sent to it again.
    Disable(TerminalDisableArgs),
}

#[derive(clap::Args)]
pub struct TerminalDisableArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// The terminal's id (`trm_…`), as `terminal add` printed it.
    #[arg(long)]
    pub terminal_id: String,
}

#[derive(clap::Args)]
pub struct TerminalAddArgs {
    #[arg(long)]
    pub config: PathBuf,
    /// The customer's identity for online transactions.
    #[arg(long)]
    pub online_id: String,
    /// mobile, telephone, pager, pda or dedicated.
    #[arg(long)]
    pub kind: String,
    /// The terminal's telephone number (mobile, telephone, pager, pda).
    #[arg(long)]
    pub msisdn: Option<String>,
    /// The device's serial number.
    #[arg(long)]
    pub serial: Option<String>,
    /// A PEM public key identifying the device.
    #[arg(long)]
    pub public_key_file: Option<PathBuf>,
    /// A name the customer knows the terminal by.
    #[arg(long, default_value = "")]
    pub label: String,
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Ok(Config::load(path)?)
}

/// A pooled connection, or one line saying why the database cannot be reached.
async fn connect(config: &Config) -> anyhow::Result<deadpool_postgres::Client> {
    let pool = config.database.pool(1)?;
    pool.get().await.map_err(|e| {
        let why = payhub_actors::store::with_causes(&e);
        anyhow::anyhow!("database unreachable: {why}")
    })
}

/// A value refused by its domain type, named by its flag (`online_id` is `--online-id`).
fn as_flag(e: FieldError) -> anyhow::Error {
    anyhow::anyhow!("--{}: {}", e.field.replace('_', "-"), e.reason)
}

fn check_name(flag: &str, name: &str) -> anyhow::Result<()> {
    let n = name.trim().chars().count();
    if n == 0 || n > NAME_MAX_CHARS || name.chars().any(char::is_control) {
        anyhow::bail!(
            "{flag}: must be 1 to {NAME_MAX_CHARS} characters without control characters"
        );
    }
    Ok(())
}

fn fixed_digits(flag: &str, value: Option<String>, len: usize) -> anyhow::Result<String> {
    match value {
        None => Ok(merchants::random_digits(len)),
        Some(v) if v.len() == len && v.bytes().all(|b| b.is_ascii_graphic() || b == b' ') => Ok(v),
        Some(_) => anyhow::bail!("{flag}: must be exactly {len} printable ASCII characters"),
    }
}

/// Field 41, 42 and 43 values for a new merchant.
#[derive(Debug, Clone, Default)]
pub struct AcceptorFields {
    pub terminal_id: Option<String>,
    pub card_acceptor_id: Option<String>,
    pub location: String,
}

/// How a merchant's certificate is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertTrust {
    /// Issued by the merchant CA: accepted while it chains to a CA the gateway trusts.
    Issued,
    /// The merchant's own, pinned by its fingerprint: accepted without a trusted issuer.
    Pinned,
}

/// A merchant row for `cert`: a new id, a random webhook secret, fields 41/42.
pub fn new_merchant(
    name: &str,
    bank_id: BankId,
    account: AccountNumber,
    (cert, trust): (&X509Ref, CertTrust),
    fields: Option<AcceptorFields>,
) -> NewMerchant {
    let fields = fields.unwrap_or_default();
    NewMerchant {
        id: payhub_actors::ids::new_id("mer"),
        name: name.trim().to_string(),
        cert_fingerprint: pki::fingerprint(cert),
        cert_serial: pki::serial_hex(cert),
        cert_pinned: trust == CertTrust::Pinned,
        webhook_secret: Secret::new(format!(
            "whsec_{}",
            hex::encode(payhub_actors::ids::os_random::<32>())
        )),
        bank_id,
        account,
        terminal_id: fields
            .terminal_id
            .unwrap_or_else(|| merchants::random_digits(merchants::TERMINAL_ID_LEN)),
        card_acceptor_id: fields
            .card_acceptor_id
            .unwrap_or_else(|| merchants::random_digits(merchants::CARD_ACCEPTOR_ID_LEN)),
        location: fields.location,
    }
}

pub async fn merchant(cmd: MerchantCommand) -> anyhow::Result<()> {
    match cmd {
        MerchantCommand::Add(args) => merchant_add(args).await,
        MerchantCommand::Disable(args) => merchant_status(args, MerchantStatus::Disabled).await,
        MerchantCommand::Enable(args) => merchant_status(args, MerchantStatus::Enabled).await,
    }
}

async fn merchant_status(args: MerchantIdArgs, status: MerchantStatus) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let client = connect(&config).await?;
    merchants::set_status(&client, &args.merchant_id, status).await?;
    output::result(serde_json::json!({"merchant_id": args.merchant_id, "status": status.as_str()}))
}

async fn merchant_add(args: MerchantAddArgs) -> anyhow::Result<()> {
    check_name("--name", &args.name)?;
    let bank = BankId::parse(&args.bank).map_err(as_flag)?;
    let account = AccountNumber::parse(&args.account).map_err(as_flag)?;
    let spelled = payhub_actors::spelling::ascii_spelling(&args.location);
    if spelled.chars().count() > LOCATION_MAX_CHARS {
        // Field 43 keeps 15: the rest would be cut from every 0200 without a word.
        anyhow::bail!(
            "--location: at most {LOCATION_MAX_CHARS} characters as field 43 spells it \
             (`{spelled}`)"
        );
    }
    let fields = AcceptorFields {
        terminal_id: Some(fixed_digits(
            "--terminal-id",
            args.terminal_id.clone(),
            merchants::TERMINAL_ID_LEN,
        )?),
        card_acceptor_id: Some(fixed_digits(
            "--card-acceptor-id",
            args.card_acceptor_id.clone(),
            merchants::CARD_ACCEPTOR_ID_LEN,
        )?),
        location: args.location.clone(),
    };
    let config = load_config(&args.config)?;
    if let Some(uploaded) = &args.cert {
        let cert = read_uploaded_cert(uploaded)?;
        let pinned = (&*cert, CertTrust::Pinned);
        let new = new_merchant(args.name.trim(), bank, account, pinned, Some(fields));
        merchants::insert(&connect(&config).await?, &new).await?;
        let cert_path = std::path::absolute(uploaded).unwrap_or_else(|_| uploaded.clone());
        return print_merchant(&new, &cert_path, None);
    }
    let ca_key = config.http.merchant_ca_key.as_ref().with_context(
        || "http.merchant_ca_key: not set; `merchant add` signs with the merchant CA key",
    )?;
    let ca = pki::load_ca(&config.http.merchant_ca_cert, ca_key)?;
    let server_ca = pki::server_ca_for(&config.http.tls_cert)?;
    let client = connect(&config).await?;

    let cert = pki::issue_client(
        &ca,
        args.name.trim(),
        Validity::days_from_now(args.cert_days),
    )?;
    let issued = (&*cert.cert, CertTrust::Issued);
    let new = new_merchant(args.name.trim(), bank, account, issued, Some(fields));
    let out = args.cert_out.as_deref().context("--cert-out: missing")?;
    let files = write_merchant_files(out, &cert, &server_ca.to_pem()?, args.force)?;
    if let Err(e) = merchants::insert(&client, &new).await {
        for f in &files {
            let _ = std::fs::remove_file(f);
        }
        return Err(e.into());
    }
    print_merchant(&new, &files[0], Some((&files[1], &files[2])))
}

/// The merchant's own certificate: one PEM certificate, within its validity.
fn read_uploaded_cert(path: &Path) -> anyhow::Result<openssl::x509::X509> {
    let pem = std::fs::read(path).with_context(|| format!("--cert: reading {}", path.display()))?;
    let cert = openssl::x509::X509::from_pem(&pem)
        .map_err(|_| anyhow::anyhow!("--cert: {} is not a PEM certificate", path.display()))?;
    if !pki::within_validity(&cert) {
        anyhow::bail!("--cert: the certificate is not within its validity");
    }
    Ok(cert)
}

/// The JSON `merchant add` prints; `key` and `ca` only when the gateway issued the certificate.
fn print_merchant(
    new: &NewMerchant,
    cert: &Path,
    issued: Option<(&PathBuf, &PathBuf)>,
) -> anyhow::Result<()> {
    output::result(serde_json::json!({
        "merchant_id": new.id,
        "webhook_secret": new.webhook_secret.expose(),
        "cert": cert,
        "key": issued.map(|(key, _)| key),
        "ca": issued.map(|(_, ca)| ca),
        "fingerprint": new.cert_fingerprint,
    }))
}

/// `merchant.crt`, `merchant.key` (0600) and `ca.crt` in `dir`; returns their absolute paths.
fn write_merchant_files(
    dir: &Path,
    cert: &CertifiedKey,
    server_ca_pem: &[u8],
    force: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("{}", dir.display()))?;
    let paths = vec![
        dir.join("merchant.crt"),
        dir.join("merchant.key"),
        dir.join(pki::SERVER_CA_CERT),
    ];
    if !force && let Some(existing) = paths.iter().find(|p| p.exists()) {
        anyhow::bail!(
            "{} already exists (use --force to replace it)",
            existing.display()
        );
    }
    pki::write_public(&paths[0], &cert.cert_pem(), force)?;
    pki::write_private(&paths[1], &cert.key_pem(), force)?;
    pki::write_public(&paths[2], server_ca_pem, force)?;
    Ok(paths)
}

/// Longest standard input read for a password: the password's limit and a CR LF.
const PASSWORD_READ_MAX_BYTES: u64 = payhub_actors::password::PASSWORD_MAX_BYTES as u64 + 2;

/// The password on standard input, one trailing newline (LF or CR LF) dropped.
fn read_password(input: impl Read) -> anyhow::Result<Secret<String>> {
    let mut raw = Vec::new();
    input
        .take(PASSWORD_READ_MAX_BYTES + 1)
        .read_to_end(&mut raw)
        .context("reading the password from standard input")?;
    let mut text = String::from_utf8(raw)
        .map_err(|_| anyhow::anyhow!("the password on standard input is not UTF-8"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    let max = payhub_actors::password::PASSWORD_MAX_BYTES;
    if text.is_empty() || text.len() > max {
        anyhow::bail!("the password on standard input must be 1 to {max} bytes");
    }
    Ok(Secret::new(text))
}

pub async fn customer(cmd: CustomerCommand) -> anyhow::Result<()> {
    match cmd {
        CustomerCommand::Add(args) => customer_add(args).await,
    }
}

async fn customer_add(args: CustomerAddArgs) -> anyhow::Result<()> {
    check_name("--real-name", &args.real_name)?;
    if let Some(id) = &args.national_id {
        check_name("--national-id", id)?;
    }
    let online_id = OnlineId::parse(&args.online_id).map_err(as_flag)?;
    let bank = BankId::parse(&args.bank).map_err(as_flag)?;
    let account = AccountNumber::parse(&args.account).map_err(as_flag)?;
    let mobile = match &args.mobile {
        Some(m) => {
            Some(Msisdn::parse(m).map_err(|_| anyhow::anyhow!("--mobile: {}", Msisdn::EXPECTED))?)
        }
        None => None,
    };
    let password = read_password(std::io::stdin().lock())?;
    let config = load_config(&args.config)?;
    let mut client = connect(&config).await?;
    let password_hash = payhub_actors::password::hash(password).await?;
    let new = NewCustomer {
        id: payhub_actors::ids::new_id("cus"),
        real_name: Secret::new(args.real_name.trim().to_string()),
        national_id: args.national_id.map(|n| Secret::new(n.trim().to_string())),
        online_id,
        bank_id: bank,
        account,
        password_hash: Secret::new(password_hash),
    };
    let terminal_id = customers::insert(&mut client, &new, mobile.as_ref()).await?;
    let mut out = serde_json::json!({ "customer_id": new.id });
    if let Some(t) = terminal_id {
        out["terminal_id"] = t.into();
    }
    output::result(out)
}

pub async fn terminal(cmd: TerminalCommand) -> anyhow::Result<()> {
    match cmd {
        TerminalCommand::Add(args) => terminal_add(args).await,
        TerminalCommand::Disable(args) => terminal_disable(args).await,
    }
}

async fn terminal_disable(args: TerminalDisableArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    let client = connect(&config).await?;
    if !terminals::disable(&client, &args.terminal_id).await? {
        anyhow::bail!("--terminal-id: no terminal `{}`", args.terminal_id);
    }
    output::result(serde_json::json!({ "terminal_id": args.terminal_id, "status": "disabled" }))
}

fn read_public_key(path: &Path) -> anyhow::Result<String> {
    let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let pem = String::from_utf8(pem).map_err(|_| {
        anyhow::anyhow!("--public-key-file {}: not a PEM public key", path.display())
    })?;
    // The switch's own check, so that a key it would refuse at every sign-in is refused here.
    crate::channels::terminal::auth::TerminalPublicKey::from_pem(&pem)
        .map_err(|e| anyhow::anyhow!("--public-key-file {}: {e}", path.display()))?;
    Ok(pem)
}

async fn terminal_add(args: TerminalAddArgs) -> anyhow::Result<()> {
    let online_id = OnlineId::parse(&args.online_id).map_err(as_flag)?;
    let kind = TerminalKind::parse(&args.kind).map_err(as_flag)?;
    let msisdn = match &args.msisdn {
        Some(m) => Some(Msisdn::parse(m).map_err(as_flag)?),
        None => None,
    };
    let public_key_pem = match &args.public_key_file {
        Some(p) => Some(read_public_key(p)?),
        None => None,
    };
    // A terminal with a key pair of its own proves itself with that alone.
    let key = (kind == TerminalKind::Dedicated && public_key_pem.is_none())
        .then(payhub_actors::ids::os_random::<SHARED_KEY_BYTES>);
    let mut terminal = NewTerminal {
        id: payhub_actors::ids::new_id("trm"),
        customer_id: String::new(),
        kind,
        label: args.label,
        msisdn,
        serial: args.serial,
        shared_key: key.map(Secret::new),
        public_key_pem,
    };
    terminal.check()?;
    let config = load_config(&args.config)?;
    let client = connect(&config).await?;
    terminal.customer_id = customers::id_by_online_id(&client, &online_id)
        .await?
        .with_context(|| format!("no customer with online id `{}`", online_id.as_str()))?;
    terminals::insert(&client, &terminal).await?;
    let mut out = serde_json::json!({ "terminal_id": terminal.id, "kind": kind.as_str() });
    if let Some(key) = key {
        out["key"] = hex::encode(key).into();
    }
    output::result(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_trailing_newline_is_dropped() {
        assert_eq!(read_password(&b"pw\n"[..]).unwrap().expose(), "pw");
        assert_eq!(read_password(&b"pw\r\n"[..]).unwrap().expose(), "pw");
        assert_eq!(read_password(&b"pw\n\n"[..]).unwrap().expose(), "pw\n");
        assert_eq!(read_password(&b" pw "[..]).unwrap().expose(), " pw ");
        assert!(read_password(&b"\n"[..]).is_err());
        assert!(read_password(&vec![b'a'; 300][..]).is_err());
    }

    #[test]
    fn acceptor_fields_have_fixed_lengths() {
        assert_eq!(fixed_digits("--t", None, 8).unwrap().len(), 8);
        assert!(fixed_digits("--t", Some("1234".into()), 8).is_err());
        assert_eq!(
            fixed_digits("--t", Some("ABCD1234".into()), 8).unwrap(),
            "ABCD1234"
        );
    }
}
