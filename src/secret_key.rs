//! The gateway's secret key file: 32 random bytes keying the hashes of authorization codes and
//! browser sessions. Created with mode 0600 when missing, so a restart keeps verifying the codes
//! it sent before.

use anyhow::Context;
use payhub_actors::keyed_hash::{HashKey, KEY_BYTES};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn load_or_create(path: &Path) -> anyhow::Result<HashKey> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!("{}: must hold exactly {KEY_BYTES} bytes", path.display())
            })?;
            Ok(HashKey::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = payhub_actors::ids::os_random::<KEY_BYTES>();
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .with_context(|| format!("creating {}", path.display()))?;
            file.write_all(&key)
                .with_context(|| format!("writing {}", path.display()))?;
            Ok(HashKey::new(key))
        }
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
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
        std::fs::write(&path, b"short").unwrap();
        assert!(
            load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("32 bytes")
        );
    }
}
