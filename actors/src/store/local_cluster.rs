//! A private PostgreSQL cluster started from the local server binaries (`initdb`, `postgres`), for
//! the demo and for tests when no `DATABASE_URL` is given. As root it runs as the `postgres` user,
//! because PostgreSQL refuses to run as root.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the server may take to accept connections after it is started.
pub const START_TIMEOUT_MS: u64 = 30_000;
/// How long a fast shutdown may take before the server is killed.
pub const STOP_TIMEOUT_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(
        "PostgreSQL server binaries (initdb, postgres) not found; install them with `apt-get install -y postgresql` or set DATABASE_URL"
    )]
    BinariesMissing,
    #[error(
        "no user `postgres` to run the cluster as (PostgreSQL refuses root); create it or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error("{step} failed: {detail}")]
    Step { step: &'static str, detail: String },
    #[error("PostgreSQL did not accept connections within {START_TIMEOUT_MS} ms; see {0}")]
    StartTimeout(PathBuf),
}

fn step(step: &'static str) -> impl FnOnce(std::io::Error) -> ClusterError {
    move |e| ClusterError::Step {
        step,
        detail: e.to_string(),
    }
}

/// Options that differ between the demo (durable) and tests (fast, nothing to keep).
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub durable: bool,
    pub max_connections: u32,
    /// When set, the server also speaks TLS with this certificate and key (PEM).
    pub tls: Option<ClusterTls>,
}

#[derive(Clone)]
pub struct ClusterTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

/// The private key stays out of `Debug`.
impl std::fmt::Debug for ClusterTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterTls").finish_non_exhaustive()
    }
}

impl ClusterOptions {
    pub const TEST: ClusterOptions = ClusterOptions {
        durable: false,
        max_connections: 300,
        tls: None,
    };
    pub const DEMO: ClusterOptions = ClusterOptions {
        durable: true,
        max_connections: 200,
        tls: None,
    };
}

pub struct LocalCluster {
    data_dir: PathBuf,
    port: u16,
    child: Option<Child>,
}

impl std::fmt::Debug for LocalCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalCluster")
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .finish()
    }
}

/// The directory holding `initdb` and `postgres`: the PATH first, then Debian's layout.
pub fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut candidates: Vec<PathBuf> = on_path;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = entries.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        versions.reverse();
        candidates.extend(versions);
    }
    candidates
        .into_iter()
        .find(|dir| dir.join("initdb").is_file() && dir.join("postgres").is_file())
        .ok_or(ClusterError::BinariesMissing)
}

/// Whether the server can reach `dir`: run as the `postgres` user when this process is root, it
/// needs every folder above `dir` to let that user through (a home folder closed to others does
/// not). Asked of that user itself, with the server's own credentials. Always true when not root.
pub fn server_can_reach(dir: &Path) -> Result<bool, ClusterError> {
    let user = postgres_user()?;
    if user.is_none() {
        return Ok(true);
    }
    let Some(deepest) = dir.ancestors().skip(1).find(|above| above.exists()) else {
        return Ok(true);
    };
    let mut test = Command::new("test");
    test.arg("-x")
        .arg(deepest)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    as_user(&mut test, user);
    let status = test.status().map_err(step(
        "asking whether the postgres user reaches the data folder",
    ))?;
    Ok(status.success())
}

fn postgres_user() -> Result<Option<(u32, u32)>, ClusterError> {
    if !is_root() {
        return Ok(None);
    }
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(step("reading /etc/passwd"))?;
    passwd
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"postgres") && f.len() > 3)
        .and_then(|f| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        .map(Some)
        .ok_or(ClusterError::NoPostgresUser)
}

/// Whether this process runs as root (then the server runs as the `postgres` user).
pub fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, ClusterError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(step("finding a free port"))?;
    Ok(listener
        .local_addr()
        .map_err(step("finding a free port"))?
        .port())
}

impl LocalCluster {
    /// Starts a cluster in `data_dir`, creating it with `initdb` first when it is empty. The server
    /// is stopped when the value is dropped, and also when the thread that started it exits
    /// (parent-death signal), so a crashed test run leaves no server behind.
    pub fn start(data_dir: &Path, options: ClusterOptions) -> Result<Self, ClusterError> {
        let bin = find_bin_dir()?;
        let user = postgres_user()?;
        std::fs::create_dir_all(data_dir).map_err(step("creating the data folder"))?;
        // Handed to the postgres user below, with all it holds: never through a link.
        let link = std::fs::symlink_metadata(data_dir).map_err(step("reading the data folder"))?;
        if link.file_type().is_symlink() {
            return Err(ClusterError::Step {
                step: "checking the data folder",
                detail: format!("{} is a symbolic link", data_dir.display()),
            });
        }
        if let Some((uid, gid)) = user {
            chown_tree(data_dir, uid, gid)?;
        }
        if !data_dir.join("PG_VERSION").exists() {
            let mut initdb = Command::new(bin.join("initdb"));
            initdb
                .arg("-D")
                .arg(data_dir)
                .args([
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-locale",
                    "-N",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            as_user(&mut initdb, user);
            let out = initdb.output().map_err(step("initdb"))?;
            if !out.status.success() {
                return Err(ClusterError::Step {
                    step: "initdb",
                    detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
        }
        let port = free_port()?;
        let log = data_dir.join("server.log");
        let log_file = std::fs::File::create(&log).map_err(step("creating server.log"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&log, Some(uid), Some(gid))
                .map_err(step("chown server.log"))?;
        }
        let mut cmd = Command::new(bin.join("postgres"));
        cmd.arg("-D")
            .arg(data_dir)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1"])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", data_dir.display()))
            .args([
                "-c",
                &format!("max_connections={}", options.max_connections),
            ]);
        if let Some(tls) = &options.tls {
            write_tls_files(data_dir, tls, user)?;
            cmd.args(["-c", "ssl=on", "-c", "ssl_cert_file=server.crt"])
                .args(["-c", "ssl_key_file=server.key"]);
        }
        if !options.durable {
            cmd.args([
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]);
        }
        cmd.stdin(Stdio::null())
            .stdout(log_file.try_clone().map_err(step("log"))?)
            .stderr(log_file);
        as_user(&mut cmd, user);
        die_with_parent(&mut cmd);
        // Out of the caller's process group: Ctrl-C in a terminal signals the whole foreground
        // group, and the server must outlive the caller's shutdown, which still writes to it.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().map_err(step("starting postgres"))?;
        let mut cluster = LocalCluster {
            data_dir: data_dir.to_path_buf(),
            port,
            child: Some(child),
        };
        cluster.wait_ready(&log)?;
        Ok(cluster)
    }

    fn wait_ready(&mut self, log: &Path) -> Result<(), ClusterError> {
        let deadline = Instant::now() + Duration::from_millis(START_TIMEOUT_MS);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let tail = std::fs::read_to_string(log).unwrap_or_default();
                let last = tail.lines().rev().take(3).collect::<Vec<_>>().join(" | ");
                return Err(ClusterError::Step {
                    step: "postgres",
                    detail: format!("exited with {status}: {last}"),
                });
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && std::fs::read_to_string(log)
                    .map(|l| l.contains("ready to accept connections"))
                    .unwrap_or(false)
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ClusterError::StartTimeout(log.to_path_buf()))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A connection URL for database `db` as the `postgres` superuser.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Fast shutdown (SIGINT), waiting up to `STOP_TIMEOUT_MS` before killing.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), libc::SIGINT);
        let deadline = Instant::now() + Duration::from_millis(STOP_TIMEOUT_MS);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `server.crt` and `server.key` in the data folder, the key readable by the server's user alone
/// (PostgreSQL refuses a key others may read).
fn write_tls_files(
    data_dir: &Path,
    tls: &ClusterTls,
    user: Option<(u32, u32)>,
) -> Result<(), ClusterError> {
    use std::os::unix::fs::PermissionsExt;
    let files = [("server.crt", &tls.cert_pem), ("server.key", &tls.key_pem)];
    for (name, pem) in files {
        let path = data_dir.join(name);
        std::fs::write(&path, pem).map_err(step("writing the TLS files"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(step("chmod the TLS files"))?;
        if let Some((uid, gid)) = user {
            std::os::unix::fs::chown(&path, Some(uid), Some(gid))
                .map_err(step("chown the TLS files"))?;
        }
    }
    Ok(())
}

fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), ClusterError> {
    std::os::unix::fs::chown(dir, Some(uid), Some(gid)).map_err(step("chown data folder"))?;
    for entry in std::fs::read_dir(dir)
        .map_err(step("reading data folder"))?
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() && !path.is_symlink() {
            chown_tree(&path, uid, gid)?;
        } else {
            std::os::unix::fs::lchown(&path, Some(uid), Some(gid)).map_err(step("chown"))?;
        }
    }
    Ok(())
}

fn as_user(cmd: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        cmd.gid(gid).uid(uid);
        // The postgres user cannot read root's working directory on every machine.
        cmd.current_dir("/");
    }
}

#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child being exec'd. It runs after the
    // user switch (which would clear it), so the signal survives into postgres.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGINT) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn signal(pid: u32, sig: i32) {
    let Ok(pid) = i32::try_from(pid) else { return };
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
    unsafe {
        libc::kill(pid, sig);
    }
}
