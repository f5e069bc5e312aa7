//! The real `payhub` binary: `pki init`, `merchant add|disable`, `customer add`, `terminal add`,
//! `migrate` and `serve`, against a fresh PostgreSQL database; then the real server started from
//! the written files accepts the issued merchant certificate.

use payhub::http::mtls::ServerTls;
use payhub::http::server::{self, ServerSettings};
use payhub_actors::store::testing::{TestDb, fresh_database};
use serde_json::Value;
use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

/// A command that has not ended after this long is killed: the test that waits on it fails
/// instead of hanging (a `serve` that should have refused to start, say).
const COMMAND_TIMEOUT_MS: u64 = 60_000;

fn payhub(args: &[&str], stdin: Option<&str>) -> Output {
    payhub_with_env(args, stdin, &[])
}

/// [`payhub`] with more environment variables, which need not be UTF-8.
fn payhub_with_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &OsStr)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_payhub"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("payhub runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pid = child.id().to_string();
    let watchdog = done.clone();
    std::thread::spawn(move || {
        for _ in 0..COMMAND_TIMEOUT_MS / 100 {
            if watchdog.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        // Looked at once more: a command that ended meanwhile has been reaped, and its pid may
        // be another process's by now.
        if !watchdog.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = Command::new("kill").args(["-9", &pid]).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    out
}

fn ok_json(args: &[&str], stdin: Option<&str>) -> Value {
    let out = payhub(args, stdin);
    assert!(
        out.status.success(),
        "payhub {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// Fails with exactly one line on standard error, containing `needle`.
fn fails_with(args: &[&str], stdin: Option<&str>, needle: &str) {
    fails_with_env(args, stdin, &[], needle);
}

/// [`fails_with`] with more environment variables.
fn fails_with_env(args: &[&str], stdin: Option<&str>, env: &[(&str, &OsStr)], needle: &str) {
    let out = payhub_with_env(args, stdin, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr}");
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// A flag clap refuses: a non-zero exit naming the problem, no panic. (clap's own message spans
/// several lines — usage and a hint; `main.rs` belongs to the lead.)
fn refused_by_clap(args: &[&str], needle: &str) {
    let out = payhub(args, None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.lines().next().unwrap_or("").starts_with("error:"),
        "{stderr}"
    );
    assert!(stderr.contains(needle), "{args:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

fn init(dir: &Path, db: &TestDb) -> String {
    let out = ok_json(
        &[
            "pki",
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--host",
            "localhost",
            "--host",
            "127.0.0.1",
            "--listen",
            "127.0.0.1:0",
            "--database-url",
            &db.url,
        ],
        None,
    );
    assert_eq!(out["files"].as_array().unwrap().len(), 8);
    dir.join("payhub.toml").to_str().unwrap().to_string()
}

#[actix_rt::test]
async fn pki_init_and_merchant_add_give_a_working_merchant() {
    let db = fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = init(&tmp.path().join("pki"), &db);
    let certs = tmp.path().join("shop");
    let added = ok_json(
        &[
            "merchant",
            "add",
            "--config",
            &config,
            "--name",
            "Book Shop",
            "--bank",
            "0002",
            "--account",
            "6222000011112222",
            "--cert-out",
            certs.to_str().unwrap(),
        ],
        None,
    );
    let merchant_id = added["merchant_id"].as_str().unwrap();
    assert!(merchant_id.starts_with("mer_"));
    // Field 43 carries 15 characters of location, spelled in ASCII: more would be cut.
    fails_with(
        &[
            "merchant",
            "add",
            "--config",
            &config,
            "--name",
            "Tea House",
            "--bank",
            "0002",
            "--account",
            "6222000011113333",
            "--location",
            "北京 Chaoyang CN",
            "--cert-out",
            certs.to_str().unwrap(),
        ],
        None,
        "--location: at most 15 characters",
    );
    assert!(added["webhook_secret"].as_str().unwrap().len() >= 32);
    let cert_pem = std::fs::read(added["cert"].as_str().unwrap()).unwrap();
    let key_pem = std::fs::read(added["key"].as_str().unwrap()).unwrap();
    let ca_pem = std::fs::read(certs.join("ca.crt")).unwrap();
    let cert = openssl::x509::X509::from_pem(&cert_pem).unwrap();

    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT cert_fingerprint, webhook_secret, bank_id, account, length(terminal_id), \
             length(card_acceptor_id), status, cert_pinned FROM merchants WHERE id = $1",
            &[&merchant_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), payhub::pki::fingerprint(&cert));
    assert_eq!(
        row.get::<_, &str>(1),
        added["webhook_secret"].as_str().unwrap()
    );
    assert_eq!(row.get::<_, &str>(2), "0002");
    assert_eq!(row.get::<_, &str>(3), "6222000011112222");
    assert_eq!((row.get::<_, i32>(4), row.get::<_, i32>(5)), (8, 15));
    assert_eq!(row.get::<_, &str>(6), "enabled");
    assert_eq!(
        row.get::<_, Option<bool>>(7),
        Some(false),
        "issued, not pinned"
    );

    // The gateway, started from the written configuration, accepts the issued certificate.
    let cfg = payhub::config::Config::load(Path::new(&config)).unwrap();
    let tls = ServerTls::load(
        &cfg.http.tls_cert,
        &cfg.http.tls_key,
        &cfg.http.merchant_ca_cert,
    )
    .unwrap();
    let running = server::start(
        ServerSettings::from_config(&cfg),
        &tls,
        db.pool.clone(),
        Arc::new(payhub_actors::SystemClock),
        vec![],
    )
    .unwrap();
    let https = reqwest::Client::builder()
        .use_native_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca_pem).unwrap())
        .identity(reqwest::Identity::from_pkcs8_pem(&cert_pem, &key_pem).unwrap())
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/v1/payments", running.addr.port());
    let body = serde_json::json!({"order_id": "cli-1", "amount": 100, "currency": "USD",
        "return_url": "https://s.example/r", "notify_url": "https://s.example/n"});
    let res = https.post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::CREATED);

    ok_json(
        &[
            "merchant",
            "disable",
            "--config",
            &config,
            "--merchant-id",
            merchant_id,
        ],
        None,
    );
    // Disabling takes effect once the server's cached lookup is older than its TTL.
    let ttl_ms = payhub::http::mtls::MERCHANT_CACHE_TTL_MS as u64;
    tokio::time::sleep(std::time::Duration::from_millis(ttl_ms + 100)).await;
    let res = https.post(&url).json(&body).send().await.unwrap();
    assert_eq!(res.status(), reqwest::StatusCode::UNAUTHORIZED);
    running.stop().await;

    // The certificate directory is not overwritten by accident.
    fails_with(
        &[
            "merchant",
            "add",
            "--config",
            &config,
            "--name",
            "Again",
            "--bank",
            "0002",
            "--account",
            "1",
            "--cert-out",
            certs.to_str().unwrap(),
        ],
        None,
        "already exists",
    );
}

#[actix_rt::test]
async fn merchant_add_pins_an_uploaded_certificate() {
    let db = fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = init(&tmp.path().join("pki"), &db);
    let own_ca = payhub::pki::new_ca("shop's own CA").unwrap();
    let own = payhub::pki::issue_client(&own_ca, "shop", payhub::pki::Validity::days_from_now(30))
        .unwrap();
    let cert_file = tmp.path().join("own.crt");
    std::fs::write(&cert_file, own.cert_pem()).unwrap();
    let add = |cert: &str| {
        vec![
            "merchant".to_string(),
            "add".into(),
            "--config".into(),
            config.clone(),
            "--name".into(),
            "Own Cert Shop".into(),
            "--bank".into(),
            "0002".into(),
            "--account".into(),
            "6222000011113333".into(),
            "--cert".into(),
            cert.into(),
        ]
    };
    let args = add(cert_file.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let added = ok_json(&args, None);
    assert_eq!(added["fingerprint"], payhub::pki::fingerprint(&own.cert));
    assert_eq!((&added["key"], &added["ca"]), (&Value::Null, &Value::Null));
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT cert_fingerprint, cert_pinned FROM merchants WHERE id = $1",
            &[&added["merchant_id"].as_str().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), payhub::pki::fingerprint(&own.cert));
    assert_eq!(row.get::<_, Option<bool>>(1), Some(true), "pinned");

    // Not a certificate; both ways at once.
    let not_pem = tmp.path().join("not.crt");
    std::fs::write(&not_pem, "hello").unwrap();
    let args = add(not_pem.to_str().unwrap());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    fails_with(&args, None, "not a PEM certificate");
    let mut both = add(cert_file.to_str().unwrap());
    both.extend(["--cert-out".to_string(), "x".to_string()]);
    let both: Vec<&str> = both.iter().map(String::as_str).collect();
    refused_by_clap(&both, "--cert");
}

#[actix_rt::test]
async fn customer_and_terminal_add() {
    let db = fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = init(&tmp.path().join("pki"), &db);
    let added = ok_json(
        &[
            "customer",
            "add",
            "--config",
            &config,
            "--real-name",
            "Li Lei",
            "--national-id",
            "110101199001011234",
            "--online-id",
            "lilei",
            "--password-stdin",
            "--bank",
            "0001",
            "--account",
            "6222000000000099",
            "--mobile",
            "+8613800138000",
        ],
        Some("s3cret pass\n"),
    );
    let customer_id = added["customer_id"].as_str().unwrap();
    assert!(customer_id.starts_with("cus_"));
    let client = db.pool.get().await.unwrap();
    let hash: String = client
        .query_one(
            "SELECT password_hash FROM customers WHERE id = $1",
            &[&customer_id],
        )
        .await
        .unwrap()
        .get(0);
    let pw = |p: &str| payhub_actors::Secret::new(p.to_string());
    assert!(payhub_actors::password::verify_blocking(
        &pw("s3cret pass"),
        &hash
    ));
    assert!(!payhub_actors::password::verify_blocking(
        &pw("s3cret pass\n"),
        &hash
    ));
    let mobile = client
        .query_one(
            "SELECT kind, msisdn FROM terminals WHERE customer_id = $1",
            &[&customer_id],
        )
        .await
        .unwrap();
    assert_eq!(mobile.get::<_, &str>(0), "mobile");
    assert_eq!(mobile.get::<_, &str>(1), "8613800138000");

    let dedicated = ok_json(
        &[
            "terminal",
            "add",
            "--config",
            &config,
            "--online-id",
            "lilei",
            "--kind",
            "dedicated",
            "--serial",
            "SN-0001",
            "--label",
            "desk token",
        ],
        None,
    );
    let key = dedicated["key"].as_str().unwrap();
    assert_eq!(key.len(), 64);
    assert!(
        key.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    );
    let stored: Vec<u8> = client
        .query_one(
            "SELECT shared_key FROM terminals WHERE id = $1",
            &[&dedicated["terminal_id"].as_str().unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(hex::encode(stored), key);

    let pager = ok_json(
        &[
            "terminal",
            "add",
            "--config",
            &config,
            "--online-id",
            "lilei",
            "--kind",
            "pager",
            "--msisdn",
            "861234567",
        ],
        None,
    );
    assert!(pager["terminal_id"].as_str().unwrap().starts_with("trm_"));
    assert!(pager.get("key").is_none());
    // Disabled, it receives nothing again; an unknown id is one line.
    let pager_id = pager["terminal_id"].as_str().unwrap();
    let disabled = ok_json(
        &[
            "terminal",
            "disable",
            "--config",
            &config,
            "--terminal-id",
            pager_id,
        ],
        None,
    );
    assert_eq!(disabled["status"], "disabled");
    let client = db.pool.get().await.unwrap();
    let status: String = client
        .query_one("SELECT status FROM terminals WHERE id = $1", &[&pager_id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "disabled");
    fails_with(
        &[
            "terminal",
            "disable",
            "--config",
            &config,
            "--terminal-id",
            "trm_nothing",
        ],
        None,
        "no terminal `trm_nothing`",
    );

    fails_with(
        &[
            "terminal",
            "add",
            "--config",
            &config,
            "--online-id",
            "lilei",
            "--kind",
            "mobile",
        ],
        None,
        "--msisdn",
    );
    // A value its domain type refuses is named by its flag, not its field.
    fails_with(
        &[
            "terminal",
            "add",
            "--config",
            &config,
            "--online-id",
            " ",
            "--kind",
            "pager",
        ],
        None,
        "--online-id: ",
    );
    fails_with(
        &[
            "terminal",
            "add",
            "--config",
            &config,
            "--online-id",
            "nobody",
            "--kind",
            "pager",
            "--msisdn",
            "861234567",
        ],
        None,
        "nobody",
    );
    fails_with(
        &[
            "terminal",
            "add",
            "--config",
            &config,
            "--online-id",
            "lilei",
            "--kind",
            "fax",
        ],
        None,
        "kind",
    );
    // A terminal signing in with a key of its own: Ed25519 or P-256, as the switch checks them;
    // another kind would be refused at every sign-in, so it is refused here.
    let key_file = |name: &str, key: openssl::pkey::PKey<openssl::pkey::Private>| {
        let path = tmp.path().join(name);
        std::fs::write(&path, key.public_key_to_pem().unwrap()).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
    let rsa_file = key_file("rsa.pem", openssl::pkey::PKey::from_rsa(rsa).unwrap());
    let ed_file = key_file(
        "ed25519.pem",
        openssl::pkey::PKey::generate_ed25519().unwrap(),
    );
    fn with_key<'a>(config: &'a str, file: &'a str) -> [&'a str; 12] {
        [
            "terminal",
            "add",
            "--config",
            config,
            "--online-id",
            "lilei",
            "--kind",
            "dedicated",
            "--serial",
            "SN-KEY",
            "--public-key-file",
            file,
        ]
    }
    fails_with(
        &with_key(&config, &rsa_file),
        None,
        "only Ed25519 and ECDSA P-256 keys are supported",
    );
    // Its key pair is its proof: no shared key is made or printed.
    let added = ok_json(&with_key(&config, &ed_file), None);
    assert!(added["terminal_id"].is_string());
    assert!(added.get("key").is_none(), "{added}");
    // A number in national form (its trunk 0) cannot go out as an international SMS address;
    // the same mobile number cannot identify two customers.
    for (mobile, refusal) in [
        ("07700900123", "--mobile: must be an international number"),
        ("8613800138000", "already registered"),
    ] {
        fails_with(
            &[
                "customer",
                "add",
                "--config",
                &config,
                "--real-name",
                "Han Meimei",
                "--online-id",
                "hanmeimei",
                "--password-stdin",
                "--bank",
                "0001",
                "--account",
                "1",
                "--mobile",
                mobile,
            ],
            Some("pw"),
            refusal,
        );
    }
    // The online id is unique too.
    fails_with(
        &[
            "customer",
            "add",
            "--config",
            &config,
            "--real-name",
            "X",
            "--online-id",
            "lilei",
            "--password-stdin",
            "--bank",
            "0001",
            "--account",
            "1",
        ],
        Some("pw"),
        "already registered",
    );
    fails_with(
        &[
            "customer",
            "add",
            "--config",
            &config,
            "--real-name",
            "X",
            "--online-id",
            "x",
            "--password-stdin",
            "--bank",
            "0001",
            "--account",
            "1",
        ],
        Some("\n"),
        "password",
    );
    let customers: i64 = client
        .query_one("SELECT count(*) FROM customers", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(customers, 1, "a refused customer leaves nothing behind");
    // The sign-in page looks an identity up as an online id before a mobile number: neither may
    // be the other's, or one customer could not sign in with their number.
    let add = |online_id: &'static str, mobile: Option<&'static str>| {
        let mut args = vec![
            "customer",
            "add",
            "--config",
            config.as_str(),
            "--real-name",
            "Han Meimei",
            "--online-id",
            online_id,
            "--password-stdin",
            "--bank",
            "0001",
            "--account",
            "1",
        ];
        args.extend(mobile.iter().flat_map(|m| ["--mobile", *m]));
        args
    };
    for online_id in ["8613800138000", "+8613800138000"] {
        fails_with(
            &add(online_id, None),
            Some("pw"),
            "is the mobile number of another customer",
        );
    }
    assert!(ok_json(&add("8613900139000", None), Some("pw"))["customer_id"].is_string());
    fails_with(
        &add("hanmeimei", Some("+8613900139000")),
        Some("pw"),
        "is another customer's online id",
    );
    // A customer's own number may be their online id as well.
    assert!(
        ok_json(&add("8613700137000", Some("8613700137000")), Some("pw"))["customer_id"]
            .is_string()
    );
    // A disabled mobile terminal frees its number, for a new customer who got it.
    let lileis_mobile: String = client
        .query_one(
            "SELECT id FROM terminals WHERE kind = 'mobile' AND msisdn = '8613800138000'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let disable = [
        "terminal",
        "disable",
        "--config",
        config.as_str(),
        "--terminal-id",
        lileis_mobile.as_str(),
    ];
    assert_eq!(ok_json(&disable, None)["status"], "disabled");
    assert!(
        ok_json(&add("newcomer", Some("8613800138000")), Some("pw"))["customer_id"].is_string()
    );
}

#[test]
fn bad_flags_and_unreachable_databases_are_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let port = payhub_actors::store::local_cluster::free_port().unwrap();
    let dead = format!("postgres://postgres@127.0.0.1:{port}/payhub");
    let out = payhub(
        &[
            "pki",
            "init",
            "--dir",
            dir.to_str().unwrap(),
            "--database-url",
            &dead,
        ],
        None,
    );
    assert!(out.status.success());
    let config = dir.join("payhub.toml");
    let config = config.to_str().unwrap();
    fails_with(
        &[
            "merchant",
            "add",
            "--config",
            config,
            "--name",
            "S",
            "--bank",
            "0001",
            "--account",
            "1",
            "--cert-out",
            tmp.path().join("s").to_str().unwrap(),
        ],
        None,
        "database unreachable",
    );
    fails_with(
        &[
            "merchant",
            "add",
            "--config",
            config,
            "--name",
            "S",
            "--bank",
            "bank",
            "--account",
            "1",
            "--cert-out",
            "x",
        ],
        None,
        "--bank",
    );
    refused_by_clap(&["merchant", "add", "--config", config], "--name");
    fails_with(&["serve", "--config", config], None, "is not reachable");
    fails_with(&["migrate", "--config", config], None, "migrating");
    fails_with(
        &["merchant"],
        None,
        "payhub merchant: a subcommand is required: add, disable, enable",
    );
    fails_with(&[], None, "payhub: a subcommand is required: ");
    fails_with(
        &["pki", "init", "--dir", dir.to_str().unwrap()],
        None,
        "already exists",
    );
    fails_with(
        &[
            "pki",
            "init",
            "--dir",
            tmp.path().join("h").to_str().unwrap(),
            "--host",
            "a b",
        ],
        None,
        "--host",
    );
    refused_by_clap(
        &[
            "customer",
            "add",
            "--config",
            config,
            "--real-name",
            "X",
            "--online-id",
            "x",
            "--bank",
            "0001",
            "--account",
            "1",
        ],
        "--password-stdin",
    );
}

/// A variable that is not UTF-8 in the environment is passed over, unless the configuration reads
/// it: then one line names it, without its value. (Reading the environment as text panicked,
/// printing the value.)
#[test]
fn an_environment_variable_not_utf8_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let port = payhub_actors::store::local_cluster::free_port().unwrap();
    let dead = format!("postgres://postgres@127.0.0.1:{port}/payhub");
    let dir_arg = dir.to_str().unwrap();
    let out = payhub(
        &["pki", "init", "--dir", dir_arg, "--database-url", &dead],
        None,
    );
    assert!(out.status.success());
    let config = dir.join("payhub.toml");
    let migrate = ["migrate", "--config", config.to_str().unwrap()];
    let not_utf8 = OsStr::from_bytes(b"s3cret\xff");
    fails_with_env(&migrate, None, &[("UNRELATED", not_utf8)], "migrating");
    for name in ["PAYHUB_DATABASE__POOL_SIZE", "DATABASE_URL"] {
        let out = payhub_with_env(&migrate, None, &[(name, not_utf8)]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("{name}: the value is not valid UTF-8")),
            "{stderr}"
        );
        assert!(!stderr.contains("s3cret"), "{stderr}");
    }
}

/// operations.md: "Every command answers `--help`".
#[test]
fn every_command_answers_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["demo"],
        &["pki", "init"],
        &["serve"],
        &["migrate"],
        &["merchant", "add"],
        &["customer", "add"],
        &["terminal", "add"],
        &["terminal", "disable"],
        &["bank-sim"],
        &["smsc-sim"],
        &["iso8583", "decode"],
        &["iso8583", "encode"],
        &["terminal-sim"],
    ];
    for command in commands {
        let args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
        let out = payhub(&args, None);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("Usage: payhub"), "{args:?}: {stdout}");
    }
}

/// `--help` names the environment variables a command reads, never their values: the database
/// URL carries a password.
#[test]
fn help_shows_no_environment_values() {
    for (command, variable) in [
        ("bank-sim", "DATABASE_URL"),
        ("terminal-sim", "PAYHUB_TERMINAL_KEY"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_payhub"))
            .args([command, "--help"])
            .env(variable, "postgres://bank:s3cretPW@db/x")
            .output()
            .expect("payhub runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}");
        assert!(stdout.contains(variable), "{command}: {stdout}");
        assert!(!stdout.contains("s3cretPW"), "{command}: {stdout}");
    }
}

/// `serve` on a database without this build's migrations refuses to start, in one line that
/// says what to run, instead of failing at its first query of a missing table or column.
#[actix_rt::test]
async fn serve_refuses_a_database_short_of_its_migrations() {
    let db = fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = init(&tmp.path().join("pki"), &db);
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute(
            "DELETE FROM refinery_schema_history
              WHERE version = (SELECT max(version) FROM refinery_schema_history)",
        )
        .await
        .unwrap();
    let serve = ["serve", "--config", config.as_str()];
    fails_with(&serve, None, "run `payhub migrate --config FILE` first");
    client
        .batch_execute("DROP TABLE refinery_schema_history")
        .await
        .unwrap();
    fails_with(&serve, None, "is never migrated");
}

/// A `serve` that fails after claiming the database but before any part of it ran (its TLS key
/// file missing) releases its claim, so that the next start does not wait out its heartbeat. One
/// that fails later (its HTTPS address taken, its actors already resuming payments) leaves the
/// claim to lapse.
#[actix_rt::test]
async fn a_start_that_fails_before_anything_ran_releases_its_claim() {
    let db = fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = init(&tmp.path().join("pki"), &db);
    let serve = |env: (&str, &str)| {
        Command::new(env!("CARGO_BIN_EXE_payhub"))
            .args(["serve", "--config", &config])
            .env_remove("DATABASE_URL")
            .env(env.0, env.1)
            .env("PAYHUB_SMPP__ADDR", "127.0.0.1:9")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let released = async || -> bool {
        let client = db.pool.get().await.unwrap();
        let row = client
            .query_one("SELECT released FROM gateway_claim", &[])
            .await
            .unwrap();
        row.get(0)
    };
    let missing = tmp.path().join("no-such.key");
    let out = serve(("PAYHUB_HTTP__TLS_KEY", missing.to_str().unwrap()));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("no-such.key"),
        "{stderr}"
    );
    assert!(released().await, "{stderr}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = serve(("PAYHUB_HTTP__LISTEN", &addr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains(&addr), "{stderr}");
    assert!(!released().await, "actors ran: the claim lapses instead");
}

/// `payhub migrate` and `payhub serve` as an operator runs them, from the file `pki init` wrote:
/// migrating again applies nothing; `serve` prints its bound addresses (port 0 means any free
/// port), answers on them, and stops cleanly on SIGTERM.
#[actix_rt::test]
async fn migrate_and_serve_run_from_the_starter_config() {
    use std::io::BufRead;
    let db = fresh_database().await;
    let tmp = tempfile::tempdir().unwrap();
    let config = init(&tmp.path().join("pki"), &db);
    for _ in 0..2 {
        let applied = ok_json(&["migrate", "--config", &config], None);
        assert_eq!(
            applied["applied"], 0,
            "the test database is migrated already"
        );
    }

    // A mobile number registered in national form before numbers had to be international.
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO customers (id, real_name, online_id, bank_id, account, password_hash)
               VALUES ('cus_old', 'Old Customer', 'old', '0001', '1', 'x');
             INSERT INTO terminals (id, customer_id, kind, msisdn)
               VALUES ('trm_old', 'cus_old', 'mobile', '07700900123');",
        )
        .await
        .unwrap();
    drop(client);

    let mut serve = Command::new(env!("CARGO_BIN_EXE_payhub"))
        .args(["serve", "--config", &config])
        .env_remove("DATABASE_URL")
        // No SMSC or bank here: the session and the links keep retrying, as in production.
        .env("PAYHUB_SMPP__ADDR", "127.0.0.1:9")
        // Off loopback, over plain HTTP: the start warns that the token would cross in clear.
        .env("PAYHUB_OPERATOR__LISTEN", "0.0.0.0:0")
        .env("PAYHUB_OPERATOR__TOKEN", "operator-token-1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read as it comes, so that the log never fills the pipe and stalls the server.
    let mut log = serve.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut log, &mut text).map(|_| text)
    });
    let mut stdout = std::io::BufReader::new(serve.stdout.take().unwrap());
    let mut first_line = String::new();
    stdout.read_line(&mut first_line).unwrap();
    let bound: Value =
        serde_json::from_str(&first_line).unwrap_or_else(|e| panic!("{e}: {first_line:?}"));
    for listener in ["https", "operator", "terminal_switch"] {
        let addr: std::net::SocketAddr = bound[listener].as_str().unwrap().parse().unwrap();
        assert_ne!(addr.port(), 0, "{listener} is printed as bound");
    }
    let operator: std::net::SocketAddr = bound["operator"].as_str().unwrap().parse().unwrap();
    let health = reqwest::get(format!("http://127.0.0.1:{}/healthz", operator.port()))
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    // One gateway per database: a second is refused while the first serves.
    fails_with(
        &["serve", "--config", &config],
        None,
        "another payhub serve is running on database",
    );

    // SAFETY: sends a signal to the child this test started.
    #[allow(unsafe_code)]
    let signalled = unsafe { libc::kill(serve.id() as libc::pid_t, libc::SIGTERM) };
    assert_eq!(signalled, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve stops on SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let stderr = log.join().unwrap().unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains("registered with a national number")
            && stderr.contains("trm_old (customer cus_old)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("operator listener speaks plain HTTP off loopback"),
        "{stderr}"
    );
    assert!(!stderr.contains("operator-token-1"), "{stderr}");
    // Stopped, it has let the database go, and said so: the next gateway need not wait out its
    // heartbeat.
    let released: bool = db
        .pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT released FROM gateway_claim", &[])
        .await
        .unwrap()
        .get(0);
    assert!(released, "the claim is released at shutdown");
    payhub::single_gateway::DatabaseClaim::take(&db.pool, &db.url, "payhub serve test")
        .await
        .expect("the database is free again");
}
