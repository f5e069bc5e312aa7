//! What the simulator remembers and how tests steer it: the messages it accepted, counters, and
//! the switches that make it throttle, fail, stall or drop.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::Mutex;

/// Messages kept for `GET /messages`; older ones are forgotten.
pub const MESSAGES_MAX: usize = 10_000;

/// How the simulator answers. Counters (`*_next`) count down with each `submit_sm`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Switches {
    /// Answer ESME_RTHROTTLED (0x58) to the next N `submit_sm`.
    pub throttle_next: u32,
    /// Answer ESME_RMSGQFUL (0x14) to the next N `submit_sm`.
    pub queue_full_next: u32,
    /// Answer this `command_status` to every `submit_sm` while it is not 0.
    pub error_status: u32,
    /// Wait this long before answering each `submit_sm`.
    pub delay_ms: u64,
    /// Close the connection instead of answering the next N `submit_sm`.
    pub drop_next: u32,
    /// Send a delivery receipt for each accepted message that asks for one.
    pub receipts: bool,
    /// The `stat:` of those receipts.
    pub receipt_stat: String,
    /// Wait this long before sending each receipt.
    pub receipt_delay_ms: u64,
    /// Send `enquire_link` to each bound ESME this often (0 = never).
    pub enquire_link_interval_ms: u64,
}

impl Default for Switches {
    fn default() -> Self {
        Self {
            throttle_next: 0,
            queue_full_next: 0,
            error_status: 0,
            delay_ms: 0,
            drop_next: 0,
            receipts: true,
            receipt_stat: "DELIVRD".into(),
            receipt_delay_ms: 0,
            enquire_link_interval_ms: 0,
        }
    }
}

/// What the simulator does with one `submit_sm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Accept,
    Status(u32),
    Drop,
}

impl Switches {
    /// Decides the answer to the next `submit_sm`, counting down the switch used.
    pub fn next_verdict(&mut self) -> Verdict {
        if self.drop_next > 0 {
            self.drop_next -= 1;
            Verdict::Drop
        } else if self.throttle_next > 0 {
            self.throttle_next -= 1;
            Verdict::Status(0x58)
        } else if self.queue_full_next > 0 {
            self.queue_full_next -= 1;
            Verdict::Status(0x14)
        } else if self.error_status != 0 {
            Verdict::Status(self.error_status)
        } else {
            Verdict::Accept
        }
    }
}

/// One accepted message, as `GET /messages` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimMessage {
    pub message_id: String,
    pub system_id: String,
    pub source_addr: String,
    pub source_addr_ton: u8,
    pub destination_addr: String,
    pub dest_addr_ton: u8,
    pub dest_addr_npi: u8,
    pub registered_delivery: u8,
    pub data_coding: u8,
    pub text: String,
    /// RFC 3339.
    pub received_at: String,
    /// The `stat:` of the receipt sent, once sent.
    pub receipt_stat: Option<String>,
    /// Whether the ESME answered that receipt with `deliver_sm_resp` status 0.
    pub receipt_acknowledged: bool,
}

/// Counters for tests and operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub binds_accepted: u64,
    pub binds_refused: u64,
    pub sessions_bound: u64,
    pub submits: u64,
    pub submits_refused: u64,
    /// The most `submit_sm` one session had unanswered at once.
    pub max_outstanding: u64,
    pub receipts_sent: u64,
    /// `enquire_link` received from ESMEs.
    pub enquire_links: u64,
    /// `enquire_link_resp` received for the simulator's own `enquire_link`.
    pub enquire_link_resps: u64,
    pub unbinds: u64,
}

/// `Debug` shows the bind's system id, never its password.
pub struct SimState {
    pub system_id: String,
    pub password: String,
    /// Print each accepted message on standard output (the command line does).
    pub print: bool,
    switches: Mutex<Switches>,
    messages: Mutex<VecDeque<SimMessage>>,
    stats: Mutex<SimStats>,
    /// Sessions bound to take receipts (receiver and transceiver binds), newest last, by
    /// session id: a transmitter's receipts go to one of its `system_id`.
    receivers: Mutex<Vec<(u64, String, ReceiptRoute)>>,
    sessions_started: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for SimState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimState")
            .field("system_id", &self.system_id)
            .field("print", &self.print)
            .finish_non_exhaustive()
    }
}

/// Where a session's receipts are written, numbered and awaited.
#[derive(Debug, Clone)]
pub struct ReceiptRoute {
    pub out: tokio::sync::mpsc::Sender<rusmpp::Command>,
    pub sequence: std::sync::Arc<std::sync::atomic::AtomicU32>,
    /// Receipts sent and not yet answered: (sequence number, message id).
    pub unanswered: std::sync::Arc<Mutex<VecDeque<(u32, String)>>>,
}

impl SimState {
    pub fn new(system_id: String, password: String, switches: Switches, print: bool) -> Self {
        Self {
            system_id,
            password,
            print,
            switches: Mutex::new(switches),
            messages: Mutex::new(VecDeque::new()),
            stats: Mutex::new(SimStats::default()),
            receivers: Mutex::new(Vec::new()),
            sessions_started: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A new session's id.
    pub fn session_id(&self) -> u64 {
        (self.sessions_started).fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Session `id`, bound as `system_id`, takes receipts.
    pub fn add_receiver(&self, id: u64, system_id: &str, route: ReceiptRoute) {
        lock(&self.receivers).push((id, system_id.to_string(), route));
    }

    /// Session `id` ended.
    pub fn remove_receiver(&self, id: u64) {
        lock(&self.receivers).retain(|(session, ..)| *session != id);
    }

    /// The newest session of `system_id` that takes receipts.
    pub fn receiver_of(&self, system_id: &str) -> Option<ReceiptRoute> {
        lock(&self.receivers)
            .iter()
            .rev()
            .find(|(_, bound_as, _)| bound_as == system_id)
            .map(|(.., route)| route.clone())
    }

    pub fn switches(&self) -> Switches {
        lock(&self.switches).clone()
    }

    pub fn set_switches(&self, switches: Switches) {
        *lock(&self.switches) = switches;
    }

    pub fn next_verdict(&self) -> Verdict {
        lock(&self.switches).next_verdict()
    }

    pub fn messages(&self) -> Vec<SimMessage> {
        lock(&self.messages).iter().cloned().collect()
    }

    /// The newest message to `destination` that `wanted` accepts: what that phone shows last.
    pub fn newest_message_to(
        &self,
        destination: &str,
        wanted: impl Fn(&SimMessage) -> bool,
    ) -> Option<SimMessage> {
        lock(&self.messages)
            .iter()
            .rev()
            .find(|m| m.destination_addr == destination && wanted(m))
            .cloned()
    }

    pub fn record(&self, message: SimMessage) {
        if self.print {
            crate::cli::output::note(format!(
                "smsc-sim: message {} from {} to {}: {}",
                message.message_id, message.source_addr, message.destination_addr, message.text
            ));
        }
        let mut messages = lock(&self.messages);
        if messages.len() >= MESSAGES_MAX {
            messages.pop_front();
        }
        messages.push_back(message);
    }

    pub fn update_message(&self, message_id: &str, update: impl FnOnce(&mut SimMessage)) {
        let mut messages = lock(&self.messages);
        if let Some(m) = messages
            .iter_mut()
            .rev()
            .find(|m| m.message_id == message_id)
        {
            update(m);
        }
    }

    pub fn stats(&self) -> SimStats {
        lock(&self.stats).clone()
    }

    pub fn count(&self, update: impl FnOnce(&mut SimStats)) {
        update(&mut lock(&self.stats));
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_count_down_in_order() {
        let mut s = Switches {
            drop_next: 1,
            throttle_next: 2,
            queue_full_next: 1,
            ..Switches::default()
        };
        let verdicts: Vec<_> = (0..5).map(|_| s.next_verdict()).collect();
        assert_eq!(
            verdicts,
            [
                Verdict::Drop,
                Verdict::Status(0x58),
                Verdict::Status(0x58),
                Verdict::Status(0x14),
                Verdict::Accept
            ]
        );
        s.error_status = 0x0B;
        assert_eq!(s.next_verdict(), Verdict::Status(0x0B));
        assert_eq!(s.next_verdict(), Verdict::Status(0x0B));
    }

    #[test]
    fn switches_patch_from_partial_json() {
        let s: Switches = serde_json::from_str(r#"{"throttle_next":3}"#).unwrap();
        assert_eq!(s.throttle_next, 3);
        assert!(s.receipts);
        assert!(serde_json::from_str::<Switches>(r#"{"bogus":1}"#).is_err());
    }
}
