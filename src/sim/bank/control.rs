//! The simulator's control port: one command per line, one answer line each (see `--help`).

use super::server::SimShared;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The longest command line accepted, in bytes.
pub const LINE_LEN_MAX: usize = 256;

pub async fn serve(
    listener: TcpListener,
    shared: Arc<SimShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((socket, _)) = accepted else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let (reader, mut writer) = socket.into_split();
            let mut lines = BufReader::new(reader.take(64 * 1024)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = if line.len() > LINE_LEN_MAX {
                    "error: line too long".to_string()
                } else {
                    command(&shared, line.trim()).await
                };
                if writer
                    .write_all(format!("{answer}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
    }
}

use tokio::io::AsyncReadExt;

/// Runs one control command and returns its answer line.
pub async fn command(shared: &SimShared, line: &str) -> String {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["faults"] => serde_json::to_string(&shared.faults.get()).unwrap_or_default(),
        ["stats"] => serde_json::to_string(&shared.stats.snapshot()).unwrap_or_default(),
        ["set", key, value] => match shared.faults.set(key, value) {
            Ok(_) => "ok".into(),
            Err(e) => format!("error: {e}"),
        },
        ["balance", bank, account] => match shared.store.balance(bank, account).await {
            Ok(Some(b)) => b.to_string(),
            Ok(None) => "error: unknown account".into(),
            Err(e) => format!("error: {e}"),
        },
        _ => "error: unknown command (faults | set SWITCH VALUE | stats | balance BANK ACCOUNT)"
            .into(),
    }
}
