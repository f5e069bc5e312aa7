//! The gateway's secret key file: 32 random bytes keying the hashes of authorization codes and
//! browser sessions. Created with mode 0600 when missing, so a restart keeps verifying the codes
//! it sent before. A gateway that takes over the database from another host needs that host's
//! file: with a new key, the codes and sessions of payments in flight no longer match.

use anyhow::Context;
use payhub_actors::keyed_hash::{HashKey, KEY_BYTES};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub fn load_or_create(path: &Path) -> anyhow::Result<HashKey> {
    match read(path)? {
        Some(key) => Ok(key),
        None => create(path),
    }
}

fn read(path: &Path) -> anyhow::Result<Option<HashKey>> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("{}: must hold exactly {KEY_BYTES} bytes", path.display())
            })?;
            Ok(Some(HashKey::new(key)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes a new key whole before it takes the file's name: a crash leaves either no file or the
/// whole key, never an empty or short file that every later start would refuse. A key another
/// process put there first is the one used.
fn create(path: &Path) -> anyhow::Result<HashKey> {
    let key = payhub_actors::ids::os_random::<KEY_BYTES>();
    let suffix = hex::encode(payhub_actors::ids::os_random::<8>());
    let temporary = PathBuf::from(format!("{}.{suffix}.tmp", path.display()));
    write_synced(&temporary, &key).with_context(|| format!("writing {}", temporary.display()))?;
    let linked = std::fs::hard_link(&temporary, path);
    let _ = std::fs::remove_file(&temporary);
    match linked {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return theirs(path, e),
        // A file system without hard links (EPERM, EOPNOTSUPP...): the file is created under
        // its own name, whole before this returns (a crash while it is written may leave it
        // short, as before).
        Err(_) => match write_synced(path, &key) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return theirs(path, e),
            Err(e) => return Err(e).with_context(|| format!("writing {}", path.display())),
        },
    }
    sync_directory(path)?;
    Ok(HashKey::new(key))
}

/// The key another process named `path` first; on a file system without hard links it may
/// still be writing it, so a short file is read again, for up to 100 ms.
fn theirs(path: &Path, e: std::io::Error) -> anyhow::Result<HashKey> {
    for _ in 0..10 {
        if let Ok(Some(key)) = read(path) {
            return Ok(key);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    match read(path)? {
        Some(key) => Ok(key),
        None => Err(e).with_context(|| format!("creating {}", path.display())),
    }
}

fn write_synced(path: &Path, key: &[u8]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(key).and_then(|()| file.sync_all())
}

/// The new name lasts a crash only once its directory is synced.
fn sync_directory(path: &Path) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_once_then_reads_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-secret.key");
        let a = load_or_create(&path).unwrap();
        let b = load_or_create(&path).unwrap();
        assert_eq!(a.hash("t", b"x"), b.hash("t", b"x"));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left: {names:?}");
        std::fs::write(&path, b"short").unwrap();
        assert!(
            load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }

    /// Two processes starting at once: the one that names the file second uses the first's key.
    #[test]
    fn a_key_another_process_wrote_first_is_the_one_used() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway-secret.key");
        std::fs::write(&path, [7u8; KEY_BYTES]).unwrap();
        let used = create(&path).unwrap();
        let theirs = HashKey::new([7u8; KEY_BYTES]);
        assert_eq!(used.hash("t", b"x"), theirs.hash("t", b"x"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
