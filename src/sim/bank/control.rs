//! The simulator's control port: one command per line, one answer line each (see `--help`).

use super::server::SimShared;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

/// The longest command line accepted, in bytes.
pub const LINE_LEN_MAX: usize = 256;
/// Control connections at once; more are closed as they come.
pub const CONNECTIONS_MAX: usize = 16;
/// A control connection silent this long is closed.
pub const IDLE_TIMEOUT_MS: u64 = 60_000;
/// Bytes read from one control connection in all.
const INPUT_MAX_BYTES: u64 = 64 * 1024;

pub async fn serve(
    listener: TcpListener,
    shared: Arc<SimShared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(CONNECTIONS_MAX));
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let Ok((socket, _)) = accepted else {
            continue;
        };
        // Past the bound the connection is dropped, and so closed.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            answer_commands(socket, &shared).await;
            drop(slot);
        });
    }
}

/// Answers a connection's commands until it closes, stays silent for [`IDLE_TIMEOUT_MS`], or
/// does not take an answer within the simulator's write timeout.
async fn answer_commands(socket: TcpStream, shared: &SimShared) {
    let idle = Duration::from_millis(IDLE_TIMEOUT_MS);
    let write_timeout = Duration::from_millis(super::server::WRITE_TIMEOUT_MS);
    let (reader, mut writer) = socket.into_split();
    let mut lines = BufReader::new(reader.take(INPUT_MAX_BYTES)).lines();
    while let Ok(Ok(Some(line))) = tokio::time::timeout(idle, lines.next_line()).await {
        let answer = if line.len() > LINE_LEN_MAX {
            "error: line too long".to_string()
        } else {
            command(shared, line.trim()).await
        };
        let answer = format!("{answer}\n");
        let written = writer.write_all(answer.as_bytes());
        if !matches!(
            tokio::time::timeout(write_timeout, written).await,
            Ok(Ok(()))
        ) {
            return;
        }
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
