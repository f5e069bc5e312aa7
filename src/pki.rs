//! `payhub pki init`: the gateway's server CA and server certificate, the merchant CA, the gateway
//! secret key and a starter `payhub.toml`; and the certificate issuing that `merchant add` and the
//! tests use. Keys are EC P-256 (fast handshakes), written as PKCS#8 PEM with mode 0600.

use anyhow::Context;
use openssl::asn1::Asn1Time;
use openssl::bn::BigNum;
use openssl::ec::{EcGroup, EcKey};
use openssl::error::ErrorStack;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder, X509Ref};
use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Validity of the two CAs.
pub const CA_VALIDITY_DAYS: u32 = 3650;
/// Validity of the gateway's server certificate (the CA/Browser Forum's old ceiling).
pub const SERVER_VALIDITY_DAYS: u32 = 825;
/// Validity of a merchant's client certificate.
pub const CLIENT_VALIDITY_DAYS: u32 = 730;
/// Certificates start this long before issue, so a peer whose clock lags still accepts them.
const BACKDATE_S: i64 = 300;

pub const SERVER_CA_CERT: &str = "ca.crt";
pub const SERVER_CA_KEY: &str = "ca.key";
pub const SERVER_CERT: &str = "server.crt";
pub const SERVER_KEY: &str = "server.key";
pub const MERCHANT_CA_CERT: &str = "merchant-ca.crt";
pub const MERCHANT_CA_KEY: &str = "merchant-ca.key";
pub const SECRET_KEY: &str = "gateway-secret.key";
pub const CONFIG_FILE: &str = "payhub.toml";

#[derive(clap::Subcommand)]
pub enum PkiCommand {
    /// Creates the server certificate and key, the merchant CA, and a starter payhub.toml.
    Init(InitArgs),
}

#[derive(Clone, clap::Args)]
pub struct InitArgs {
    #[arg(long)]
    pub dir: PathBuf,
    /// Host names and addresses for the server certificate (default localhost and 127.0.0.1).
    #[arg(long = "host")]
    pub hosts: Vec<String>,
    /// The address `payhub serve` listens on, written to payhub.toml.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub listen: std::net::SocketAddr,
    /// Written to payhub.toml; when absent the file leaves it empty and DATABASE_URL fills it.
    #[arg(long)]
    pub database_url: Option<String>,
    /// Replace files that already exist (by default an existing key is never overwritten).
    #[arg(long)]
    pub force: bool,
}

pub fn run(cmd: PkiCommand) -> anyhow::Result<()> {
    match cmd {
        PkiCommand::Init(args) => {
            let written = init(&args)?;
            let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
            crate::cli::output::result(serde_json::json!({ "dir": args.dir, "files": files }))
        }
    }
}

/// A certificate and its private key.
#[derive(Clone)]
pub struct CertifiedKey {
    pub cert: X509,
    pub key: PKey<Private>,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("subject", &self.common_name())
            .field("key", &"***")
            .finish()
    }
}

impl CertifiedKey {
    pub fn cert_pem(&self) -> Vec<u8> {
        self.cert.to_pem().expect("encoding a certificate we hold")
    }

    /// The key as PKCS#8 PEM (`BEGIN PRIVATE KEY`), as reqwest's `Identity::from_pkcs8_pem` takes.
    pub fn key_pem(&self) -> Vec<u8> {
        self.key
            .private_key_to_pem_pkcs8()
            .expect("encoding a key we hold")
    }

    /// SHA-256 of the certificate's DER, lower-case hex: what `merchants.cert_fingerprint` holds.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.cert)
    }

    /// The serial number in upper-case hex.
    pub fn serial_hex(&self) -> String {
        serial_hex(&self.cert)
    }

    fn common_name(&self) -> String {
        self.cert
            .subject_name()
            .entries_by_nid(Nid::COMMONNAME)
            .next()
            .map(|e| String::from_utf8_lossy(e.data().as_slice()).into_owned())
            .unwrap_or_default()
    }

    /// Reads a certificate and key from PEM.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, ErrorStack> {
        Ok(Self {
            cert: X509::from_pem(cert_pem)?,
            key: PKey::private_key_from_pem(key_pem)?,
        })
    }
}

/// SHA-256 of a certificate's DER, lower-case hex.
/// Whether `cert` is within its validity now.
pub fn within_validity(cert: &X509Ref) -> bool {
    Asn1Time::days_from_now(0).is_ok_and(|now| cert.not_before() <= now && now <= cert.not_after())
}

/// The start and end of `cert`'s validity.
pub fn validity(
    cert: &X509Ref,
) -> Option<(chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>)> {
    Some((utc(cert.not_before())?, utc(cert.not_after())?))
}

fn utc(time: &openssl::asn1::Asn1TimeRef) -> Option<chrono::DateTime<chrono::Utc>> {
    let epoch = Asn1Time::from_unix(0).ok()?;
    let since = epoch.diff(time).ok()?;
    let seconds = i64::from(since.days) * 86_400 + i64::from(since.secs);
    chrono::DateTime::from_timestamp(seconds, 0)
}

/// The serial number of `cert` in upper-case hex.
pub fn serial_hex(cert: &X509Ref) -> String {
    cert.serial_number()
        .to_bn()
        .and_then(|bn| bn.to_hex_str().map(|s| s.to_string()))
        .unwrap_or_default()
}

pub fn fingerprint(cert: &X509Ref) -> String {
    cert.digest(MessageDigest::sha256())
        .map(|d| hex::encode(&*d))
        .unwrap_or_default()
}

pub(crate) fn new_key() -> Result<PKey<Private>, ErrorStack> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1)?;
    PKey::from_ec_key(EcKey::generate(&group)?)
}

/// 128 random bits, the top bit cleared so the serial is positive.
fn random_serial() -> Result<openssl::asn1::Asn1Integer, ErrorStack> {
    let mut bytes = payhub_actors::ids::os_random::<16>();
    bytes[0] &= 0x7f;
    BigNum::from_slice(&bytes)?.to_asn1_integer()
}

/// When a certificate is valid, in Unix seconds.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before_unix: i64,
    pub not_after_unix: i64,
}

impl Validity {
    pub fn days_from_now(days: u32) -> Self {
        let now = chrono::Utc::now().timestamp();
        Self {
            not_before_unix: now - BACKDATE_S,
            not_after_unix: now + i64::from(days) * 86_400,
        }
    }
}

fn builder(
    common_name: &str,
    key: &PKey<Private>,
    validity: Validity,
) -> Result<X509Builder, ErrorStack> {
    let mut name = X509NameBuilder::new()?;
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "payhub")?;
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)?;
    let name = name.build();
    let mut b = X509::builder()?;
    b.set_version(2)?;
    let serial = random_serial()?;
    b.set_serial_number(&serial)?;
    b.set_subject_name(&name)?;
    b.set_issuer_name(&name)?;
    b.set_pubkey(key)?;
    let not_before = Asn1Time::from_unix(validity.not_before_unix)?;
    let not_after = Asn1Time::from_unix(validity.not_after_unix)?;
    b.set_not_before(&not_before)?;
    b.set_not_after(&not_after)?;
    Ok(b)
}

/// A self-signed CA.
pub fn new_ca(common_name: &str) -> Result<CertifiedKey, ErrorStack> {
    let validity = Validity::days_from_now(CA_VALIDITY_DAYS);
    ca_certificate(common_name, None, validity, new_key()?)
}

/// A CA that issues leaf certificates only (path length 0) for `key`, signed by `parent`
/// (self-signed without one).
pub(crate) fn ca_certificate(
    common_name: &str,
    parent: Option<&CertifiedKey>,
    validity: Validity,
    key: PKey<Private>,
) -> Result<CertifiedKey, ErrorStack> {
    let mut b = builder(common_name, &key, validity)?;
    if let Some(parent) = parent {
        b.set_issuer_name(parent.cert.subject_name())?;
    }
    b.append_extension(BasicConstraints::new().critical().ca().pathlen(0).build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .key_cert_sign()
            .crl_sign()
            .build()?,
    )?;
    let ski = SubjectKeyIdentifier::new().build(&b.x509v3_context(None, None))?;
    b.append_extension(ski)?;
    b.sign(
        parent.map_or(&key, |parent| &parent.key),
        MessageDigest::sha256(),
    )?;
    Ok(CertifiedKey {
        cert: b.build(),
        key,
    })
}

enum Leaf<'a> {
    Server(&'a [String]),
    Client,
}

fn issue(
    ca: &CertifiedKey,
    common_name: &str,
    leaf: Leaf<'_>,
    validity: Validity,
) -> Result<CertifiedKey, ErrorStack> {
    let key = new_key()?;
    let mut b = builder(common_name, &key, validity)?;
    b.set_issuer_name(ca.cert.subject_name())?;
    b.append_extension(BasicConstraints::new().critical().build()?)?;
    b.append_extension(
        KeyUsage::new()
            .critical()
            .digital_signature()
            .key_agreement()
            .build()?,
    )?;
    match leaf {
        Leaf::Server(hosts) => {
            b.append_extension(ExtendedKeyUsage::new().server_auth().build()?)?;
            let mut san = SubjectAlternativeName::new();
            for host in hosts {
                if host.parse::<IpAddr>().is_ok() {
                    san.ip(host);
                } else {
                    san.dns(host);
                }
            }
            let san = san.build(&b.x509v3_context(Some(&ca.cert), None))?;
            b.append_extension(san)?;
        }
        Leaf::Client => {
            b.append_extension(ExtendedKeyUsage::new().client_auth().build()?)?;
        }
    }
    let ctx = b.x509v3_context(Some(&ca.cert), None);
    let ski = SubjectKeyIdentifier::new().build(&ctx)?;
    let aki = AuthorityKeyIdentifier::new().keyid(false).build(&ctx)?;
    b.append_extension(ski)?;
    b.append_extension(aki)?;
    b.sign(&ca.key, MessageDigest::sha256())?;
    Ok(CertifiedKey {
        cert: b.build(),
        key,
    })
}

/// The gateway's server certificate for `hosts` (names and IP addresses), signed by `ca`.
pub fn issue_server(ca: &CertifiedKey, hosts: &[String]) -> Result<CertifiedKey, ErrorStack> {
    let cn = hosts.first().map(String::as_str).unwrap_or("localhost");
    issue(
        ca,
        cn,
        Leaf::Server(hosts),
        Validity::days_from_now(SERVER_VALIDITY_DAYS),
    )
}

/// A merchant's client certificate, signed by the merchant CA.
pub fn issue_client(
    ca: &CertifiedKey,
    common_name: &str,
    validity: Validity,
) -> Result<CertifiedKey, ErrorStack> {
    issue(ca, common_name, Leaf::Client, validity)
}

/// Host names must be DNS names or IP addresses; anything else is refused before a certificate
/// carries it.
fn check_host(host: &str) -> anyhow::Result<()> {
    let dns_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'*');
    if host.parse::<IpAddr>().is_ok() || dns_ok {
        Ok(())
    } else {
        anyhow::bail!("--host `{host}`: not a DNS name or IP address")
    }
}

/// Writes a file that must not already exist (unless `force`), with `mode`.
fn write_new(path: &Path, bytes: &[u8], mode: u32, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(mode);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut file = options.open(path).with_context(|| {
        if path.exists() && !force {
            format!(
                "{} already exists (use --force to replace it)",
                path.display()
            )
        } else {
            format!("writing {}", path.display())
        }
    })?;
    file.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    if force {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
    }
    Ok(())
}

/// Writes a private key or secret (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    write_new(path, bytes, 0o600, force)
}

/// Writes a public file (mode 0644).
pub fn write_public(path: &Path, bytes: &[u8], force: bool) -> anyhow::Result<()> {
    write_new(path, bytes, 0o644, force)
}

/// Creates everything `pki init` promises; returns the files written.
pub fn init(args: &InitArgs) -> anyhow::Result<Vec<PathBuf>> {
    let hosts = if args.hosts.is_empty() {
        vec!["localhost".to_string(), "127.0.0.1".to_string()]
    } else {
        args.hosts.clone()
    };
    for host in &hosts {
        check_host(host)?;
    }
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let dir = args
        .dir
        .canonicalize()
        .with_context(|| format!("{}", args.dir.display()))?;
    let server_ca = new_ca("payhub gateway server CA")?;
    let server = issue_server(&server_ca, &hosts)?;
    let merchant_ca = new_ca("payhub merchant CA")?;
    let secret = payhub_actors::ids::os_random::<32>();
    let config = starter_config(&dir, &hosts, args)?;

    let files: [(&str, Vec<u8>, bool); 8] = [
        (SERVER_CA_CERT, server_ca.cert_pem(), false),
        (SERVER_CA_KEY, server_ca.key_pem(), true),
        (SERVER_CERT, server.cert_pem(), false),
        (SERVER_KEY, server.key_pem(), true),
        (MERCHANT_CA_CERT, merchant_ca.cert_pem(), false),
        (MERCHANT_CA_KEY, merchant_ca.key_pem(), true),
        (SECRET_KEY, secret.to_vec(), true),
        // It may hold the database URL's password and the SMSC account's.
        (CONFIG_FILE, config.into_bytes(), true),
    ];
    if !args.force
        && let Some((name, _, _)) = files.iter().find(|(name, _, _)| dir.join(name).exists())
    {
        anyhow::bail!(
            "{} already exists (use --force to replace it)",
            dir.join(name).display()
        );
    }
    let mut written = Vec::new();
    for (name, bytes, private) in files {
        let path = dir.join(name);
        if private {
            write_private(&path, &bytes, args.force)?;
        } else {
            write_public(&path, &bytes, args.force)?;
        }
        written.push(path);
    }
    Ok(written)
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A payhub.toml with only the keys operations.md names; every other key has a default.
fn starter_config(dir: &Path, hosts: &[String], args: &InitArgs) -> anyhow::Result<String> {
    let host = hosts.first().map(String::as_str).unwrap_or("localhost");
    let url_host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => format!("[{v6}]"),
        _ => host.to_string(),
    };
    let public_url = format!("https://{url_host}:{}", args.listen.port());
    let path = |name: &str| toml_string(&dir.join(name).display().to_string());
    let db_url = args.database_url.as_deref().unwrap_or("");
    Ok(format!(
        r#"# payhub configuration, written by `payhub pki init`. Keys: operations.md.
# Every key can be overridden by PAYHUB_<SECTION>__<KEY>, e.g. PAYHUB_DATABASE__URL.

[database]
# When empty, DATABASE_URL fills it. TLS: `?sslmode=require` (or `prefer`, the default, or
# `disable`); with `tls_ca_cert` the server's certificate must come from that CA for the URL's host.
url = {db_url}
pool_size = 16
# tls_ca_cert = "/etc/payhub/database-ca.crt"
# A statement running longer (a lock wait included) is cancelled, and its step fails cleanly.
statement_timeout_ms = 10000

[http]
listen = {listen}
public_url = {public_url}
tls_cert = {tls_cert}
tls_key = {tls_key}
merchant_ca_cert = {ca_cert}
merchant_ca_key = {ca_key}

[institution]
id = "99990001"

[security]
secret_key_file = {secret}

[smpp]
addr = "127.0.0.1:2775"
system_id = "payhub"
password = "secret"
source_addr = "PAYHUB"

[webhooks]
# Whether a merchant's notify_url may lead to a loopback, private or link-local address (this
# network). Keep false when merchants you do not run choose their notify_url (webhooks then also
# ignore HTTP(S)_PROXY, since a proxy would resolve the merchant's name out of sight). Set true
# for a trial with the merchant's receiver on this machine or network.
allow_private_destinations = false

# One [[links]] section per bank information processing system, for example:
# [[links]]
# name = "bips-a"
# addr = "127.0.0.1:8583"
# owner = "third_party"
# banks = ["0001", "0002"]
"#,
        db_url = toml_string(db_url),
        listen = toml_string(&args.listen.to_string()),
        public_url = toml_string(&public_url),
        tls_cert = path(SERVER_CERT),
        tls_key = path(SERVER_KEY),
        ca_cert = path(MERCHANT_CA_CERT),
        ca_key = path(MERCHANT_CA_KEY),
        secret = path(SECRET_KEY),
    ))
}

/// The server CA a merchant should trust: `ca.crt` beside the server certificate when present,
/// else the last certificate of the server certificate file (its chain's root).
pub fn server_ca_for(tls_cert: &Path) -> anyhow::Result<X509> {
    let beside = tls_cert
        .parent()
        .unwrap_or(Path::new("."))
        .join(SERVER_CA_CERT);
    let path = if beside.exists() {
        beside
    } else {
        tls_cert.to_path_buf()
    };
    let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let chain =
        X509::stack_from_pem(&pem).with_context(|| format!("{}: not PEM", path.display()))?;
    chain
        .into_iter()
        .last()
        .with_context(|| format!("{}: no certificate", path.display()))
}

/// Reads a CA certificate and key from PEM files.
pub fn load_ca(cert: &Path, key: &Path) -> anyhow::Result<CertifiedKey> {
    let cert_pem = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
    let key_pem = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
    CertifiedKey::from_pem(&cert_pem, &key_pem).with_context(|| {
        format!(
            "{} / {}: not a PEM certificate and key",
            cert.display(),
            key.display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::stack::Stack;
    use openssl::x509::X509StoreContext;
    use openssl::x509::store::X509StoreBuilder;

    fn verifies(ca: &X509, leaf: &X509) -> bool {
        let mut store = X509StoreBuilder::new().unwrap();
        store.add_cert(ca.clone()).unwrap();
        let store = store.build();
        let mut ctx = X509StoreContext::new().unwrap();
        ctx.init(&store, leaf, &Stack::new().unwrap(), |c| c.verify_cert())
            .unwrap()
    }

    #[test]
    fn issued_certificates_chain_to_their_ca_only() {
        let ca = new_ca("test CA").unwrap();
        let other = new_ca("other CA").unwrap();
        let client = issue_client(&ca, "shop", Validity::days_from_now(1)).unwrap();
        assert!(verifies(&ca.cert, &client.cert));
        assert!(!verifies(&other.cert, &client.cert));
        assert_eq!(client.fingerprint().len(), 64);
        assert!(!format!("{client:?}").contains("PRIVATE"));
        let server = issue_server(&ca, &["localhost".into(), "127.0.0.1".into()]).unwrap();
        let sans = server.cert.subject_alt_names().unwrap();
        assert!(sans.iter().any(|n| n.dnsname() == Some("localhost")));
        assert!(
            sans.iter()
                .any(|n| n.ipaddress() == Some(&[127, 0, 0, 1][..]))
        );
    }

    #[test]
    fn init_writes_every_file_with_private_modes_and_a_loadable_config() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let args = InitArgs {
            dir: dir.path().join("pki"),
            hosts: vec![],
            listen: "127.0.0.1:8443".parse().unwrap(),
            database_url: None,
            force: false,
        };
        let written = init(&args).unwrap();
        assert_eq!(written.len(), 8);
        let mode = |name: &str| {
            std::fs::metadata(args.dir.join(name))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(SERVER_KEY), 0o600);
        assert_eq!(mode(MERCHANT_CA_KEY), 0o600);
        assert_eq!(mode(SECRET_KEY), 0o600);
        assert_eq!(mode(CONFIG_FILE), 0o600);
        assert_eq!(std::fs::read(args.dir.join(SECRET_KEY)).unwrap().len(), 32);
        let text = std::fs::read_to_string(args.dir.join(CONFIG_FILE)).unwrap();
        let env = vec![("DATABASE_URL".to_string(), "postgres://x/y".to_string())];
        let config = crate::config::Config::from_toml(&text, &env).unwrap();
        assert_eq!(config.http.public_url.as_str(), "https://localhost:8443/");
        let server_ca = server_ca_for(&config.http.tls_cert).unwrap();
        let server = X509::from_pem(&std::fs::read(&config.http.tls_cert).unwrap()).unwrap();
        assert!(verifies(&server_ca, &server));
        let err = init(&args).unwrap_err().to_string();
        assert!(err.contains("already exists"), "{err}");
    }

    #[test]
    fn bad_hosts_are_refused() {
        assert!(check_host("gateway.example").is_ok());
        assert!(check_host("::1").is_ok());
        assert!(check_host("bad host").is_err());
        assert!(check_host("").is_err());
    }
}
