//! Which terminals are connected now: terminal id → its session actor. The router asks here first,
//! so a delivery to an offline terminal fails at once instead of waiting for anything.

use super::frame::ErrorCode;
use super::session::{Close, TerminalSessionActor};
use actix::Addr;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone)]
pub struct SwitchRegistry {
    inner: Arc<Mutex<Inner>>,
    /// This switch among all that ever ran on the database: a held notice another one marked as
    /// being sent was left by an earlier process (`held_outcomes`).
    switch_id: Arc<str>,
}

#[derive(Default)]
struct Inner {
    sessions: HashMap<String, Entry>,
    next_session_no: u64,
}

struct Entry {
    session_no: u64,
    addr: Addr<TerminalSessionActor>,
}

impl std::fmt::Debug for SwitchRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SwitchRegistry")
            .field("connected", &self.lock().sessions.len())
            .finish()
    }
}

impl SwitchRegistry {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            switch_id: payhub_actors::ids::new_id("sw").into(),
        }
    }

    pub fn switch_id(&self) -> &str {
        &self.switch_id
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves a map that is still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A number that tells this session apart from earlier ones of the same terminal.
    pub fn next_session_no(&self) -> u64 {
        let mut inner = self.lock();
        inner.next_session_no += 1;
        inner.next_session_no
    }

    /// Records a new session; an older session of the same terminal is told to close (a device
    /// that reconnects after a silent network loss replaces its half-open connection).
    pub fn register(&self, terminal_id: &str, session_no: u64, addr: Addr<TerminalSessionActor>) {
        let previous = self
            .lock()
            .sessions
            .insert(terminal_id.to_string(), Entry { session_no, addr });
        if let Some(old) = previous {
            old.addr.do_send(Close {
                code: ErrorCode::Replaced,
                reason: "another connection of this terminal authenticated",
            });
        }
    }

    /// Forgets a session, unless a newer one of the same terminal has replaced it.
    pub fn unregister(&self, terminal_id: &str, session_no: u64) {
        let mut inner = self.lock();
        if inner
            .sessions
            .get(terminal_id)
            .is_some_and(|e| e.session_no == session_no)
        {
            inner.sessions.remove(terminal_id);
        }
    }

    /// The live session of a terminal, if it is connected.
    pub fn session(&self, terminal_id: &str) -> Option<Addr<TerminalSessionActor>> {
        self.lock()
            .sessions
            .get(terminal_id)
            .map(|e| e.addr.clone())
            .filter(|addr| addr.connected())
    }

    pub fn is_online(&self, terminal_id: &str) -> bool {
        self.session(terminal_id).is_some()
    }

    pub fn connected_count(&self) -> usize {
        self.lock().sessions.len()
    }

    /// The ids of connected terminals, sorted.
    pub fn connected_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.lock().sessions.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// Tells every session to close (switch shutdown).
    pub fn close_all(&self) {
        let sessions: Vec<Addr<TerminalSessionActor>> = self
            .lock()
            .sessions
            .values()
            .map(|e| e.addr.clone())
            .collect();
        for addr in sessions {
            addr.do_send(Close {
                code: ErrorCode::ShuttingDown,
                reason: "the switch is shutting down",
            });
        }
    }
}

impl Default for SwitchRegistry {
    fn default() -> Self {
        Self::new()
    }
}
