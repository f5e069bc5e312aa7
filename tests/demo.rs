//! `payhub demo` as a newcomer runs it: to its self-check, then Ctrl-C, then a clean exit. Its log
//! (standard error) is grepped for the sample account numbers, passwords and codes.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The demo starts PostgreSQL, two banks, an SMSC and the gateway, then pays once.
const DEMO_START_TIMEOUT_S: u64 = 240;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A demo started as from a shell, up to its "Press Ctrl-C"; what it printed until then.
struct Demo {
    child: std::process::Child,
    https_port: u16,
    printed: Vec<String>,
    /// Standard output from then on.
    rest: std::sync::mpsc::Receiver<String>,
    /// Standard error, whole once the demo ends.
    log: std::thread::JoinHandle<String>,
}

fn start_demo(dir: &std::path::Path) -> Demo {
    let https_port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_payhub"))
        .arg("demo")
        .arg("--dir")
        .arg(dir.join("demo"))
        .args(["--https-listen", &format!("127.0.0.1:{https_port}")])
        .args(["--operator-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--smsc-http-listen", &format!("127.0.0.1:{}", free_port())])
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A process group of its own, as a shell's foreground job: Ctrl-C signals all of it.
        .process_group(0)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut printed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(DEMO_START_TIMEOUT_S);
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let ready = line.contains("Press Ctrl-C to stop.");
                printed.push(line);
                if ready {
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    Demo {
        child,
        https_port,
        printed,
        rest: rx,
        log,
    }
}

impl Demo {
    /// Ctrl-C in a terminal: SIGINT to the whole group, the demo's PostgreSQL included.
    fn ctrl_c(&self) {
        let group = format!("-{}", self.child.id());
        let status = Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(0));
    }

    /// How the demo ended, failing the test past `within`.
    fn ended_within(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not stop in time");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[test]
fn demo_runs_its_self_check_and_stops_cleanly_on_ctrl_c() {
    // Closed to others (0700), as root's home folder is: run as root, the private cluster's
    // server (the `postgres` user) cannot reach it, and the demo keeps its database elsewhere.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let mut demo = start_demo(dir.path());
    let printed = &demo.printed;
    let out = printed.join("\n");
    assert!(
        out.contains("Press Ctrl-C to stop."),
        "the demo did not come up:\n{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("Self-check: payment pay_") && l.contains("succeeded")),
        "{out}"
    );
    for what in [
        "pay_url",
        "lilei / demo-pass-lilei",
        "/messages",
        "curl --cacert",
        "--cert",
    ] {
        assert!(
            out.contains(what),
            "the guide does not mention {what}:\n{out}"
        );
    }

    demo.ctrl_c();
    let status = demo.ended_within(Duration::from_secs(60));
    let rest: Vec<String> = demo.rest.try_iter().collect();
    let printed = &demo.printed;
    // The database kept outside the demo folder, if it was: removed with the demo folder.
    if let Some(line) = printed
        .iter()
        .find(|l| l.contains("the demo's database is kept in "))
    {
        let kept = line
            .rsplit("kept in ")
            .next()
            .and_then(|rest| rest.strip_suffix(" instead."))
            .unwrap_or_else(|| panic!("{line}"));
        let own = std::path::Path::new(kept).parent().unwrap();
        assert!(own.starts_with("/var/lib/payhub-demo"), "{line}");
        std::fs::remove_dir_all(own).unwrap();
    }
    assert!(status.success(), "exit {status:?}; {}", rest.join("\n"));
    assert!(
        rest.iter().any(|l| l.contains("payhub demo stopped.")),
        "{rest:?}"
    );

    let log = demo.log.join().unwrap();
    // Its database outlives the gateway's shutdown, which still writes (the claim's release).
    for trouble in ["not released", "lost or stopped answering"] {
        assert!(!log.contains(trouble), "{trouble}:\n{log}");
    }
    for secret in [
        "6222000011112222",
        "6222000033334444",
        "6222000099990000",
        "demo-pass-lilei",
        "demo-pass-hanmeimei",
        "demosmsc",
    ] {
        assert!(!log.contains(secret), "the log shows {secret}");
    }
    assert!(
        !log.contains("code "),
        "the log may show an authorization code:\n{log}"
    );
}

/// `payhub demo --check-only` over the demo folder `dir`: its exit status and standard output.
fn check_only(dir: &std::path::Path) -> (std::process::ExitStatus, String) {
    check_only_on(dir, || free_port().to_string())
}

/// [`check_only`] with its listeners on the ports `port` gives.
fn check_only_on(
    dir: &std::path::Path,
    port: impl Fn() -> String,
) -> (std::process::ExitStatus, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_payhub"))
        .arg("demo")
        .arg("--check-only")
        .arg("--dir")
        .arg(dir)
        .args(["--https-listen", &format!("127.0.0.1:{}", port())])
        .args(["--operator-listen", &format!("127.0.0.1:{}", port())])
        .args(["--smsc-http-listen", &format!("127.0.0.1:{}", port())])
        .env_remove("DATABASE_URL")
        // Meant for a real gateway in the same shell: the demo's database is its own.
        .env(
            "PAYHUB_DATABASE__URL",
            "postgres://nobody@127.0.0.1:1/elsewhere",
        )
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (
        out.status,
        format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
    )
}

/// A demo folder kept from an earlier run, over a new database (its cluster deleted here; another
/// `DATABASE_URL` alike): the merchant and the set-top box it saved are registered again, and the
/// self-check passes.
#[test]
fn a_kept_demo_folder_over_a_new_database_registers_its_samples_again() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let demo = dir.path().join("demo");
    let (status, out) = check_only(&demo);
    assert!(status.success(), "{out}");
    assert!(demo.join("merchant/merchant.json").exists(), "{out}");
    std::fs::remove_dir_all(demo.join("pg")).unwrap();
    let (status, out) = check_only(&demo);
    assert!(status.success(), "{out}");
    assert!(out.contains("Self-check: payment pay_"), "{out}");
}

/// operations.md: "port `0` means any free port". The demo's pay_url names the port it chose.
#[test]
fn a_demo_on_port_0_gives_pay_urls_with_its_port() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let demo = dir.path().join("demo");
    let (status, out) = check_only_on(&demo, || "0".into());
    assert!(status.success(), "{out}");
    let config = std::fs::read_to_string(demo.join("payhub.toml")).unwrap();
    let public_url = config
        .lines()
        .find(|l| l.starts_with("public_url"))
        .unwrap_or_else(|| panic!("{config}"));
    assert!(public_url.contains("https://localhost:"), "{public_url}");
    assert!(!public_url.ends_with(":0\""), "{public_url}");
}

/// A shutdown waits for requests in progress (a customer's code step); Ctrl-C again stops at once.
#[test]
fn a_second_ctrl_c_stops_the_demo_at_once() {
    use openssl::ssl::{SslConnector, SslMethod, SslVerifyMode};
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut demo = start_demo(dir.path());
    assert!(
        demo.printed.iter().any(|l| l.contains("Press Ctrl-C")),
        "{:?}",
        demo.printed
    );
    // A request in progress: its head sent, its body still to come.
    let mut connector = SslConnector::builder(SslMethod::tls()).unwrap();
    connector.set_verify(SslVerifyMode::NONE);
    let tcp = std::net::TcpStream::connect(("127.0.0.1", demo.https_port)).unwrap();
    let mut tls = connector.build().connect("localhost", tcp).unwrap();
    tls.write_all(
        b"POST /pay/pay_00000000000000000000000000000000/login HTTP/1.1\r\nHost: localhost\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 64\r\n\r\n",
    )
    .unwrap();
    tls.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));

    demo.ctrl_c();
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        demo.child.try_wait().unwrap().is_none(),
        "the shutdown waits for the request in progress"
    );
    demo.ctrl_c();
    let status = demo.ended_within(Duration::from_secs(5));

    assert_eq!(status.code(), Some(1));
    let log = demo.log.join().unwrap();
    assert!(log.contains("stopping at once"), "{log}");
    drop(tls);
}
