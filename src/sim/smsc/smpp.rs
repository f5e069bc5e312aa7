//! The simulator's SMPP side on rusmpp's codec: one task per connection reads commands and
//! answers them; a writer task owns the socket's sending half, so answers delayed by a switch and
//! delivery receipts can be sent while the reader goes on.

use super::state::{ReceiptRoute, SimMessage, SimState, Verdict, lock};
use crate::channels::smpp::receipt;
use futures::{SinkExt, StreamExt};
use rusmpp::command::CommandParts;
use rusmpp::pdus::{
    BindReceiverResp, BindTransceiverResp, BindTransmitterResp, DeliverSm, SubmitSm, SubmitSmResp,
};
use rusmpp::tokio_codec::CommandCodec;
use rusmpp::types::{COctetString, OctetString};
use rusmpp::values::{EsmClass, Npi, RegisteredDelivery, Ton};
use rusmpp::{Command, CommandId, CommandStatus, Pdu};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::codec::Framed;

/// Largest PDU accepted, in bytes.
const COMMAND_LENGTH_MAX_BYTES: usize = 4_096;
/// Connections served at once; more are closed at once.
pub const CONNECTIONS_MAX: usize = 64;
/// Answers and receipts waiting to be written, per connection.
const OUTGOING_MAX: usize = 256;
/// Submits answered later (a delay switch) at once per connection; past it, throttled.
const ANSWERS_PENDING_MAX: u64 = 1_024;
/// How long one PDU may take to be written: a peer that stops reading is dropped, and its
/// connection slot freed, rather than holding the session for ever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unbound session may take to write its last answers.
const CLOSE_GRACE: Duration = Duration::from_millis(200);
const ACCEPT_RETRY_DELAY: Duration = Duration::from_millis(50);
/// How often a session looks at the enquire_link switch while it is off.
const ENQUIRE_LINK_IDLE_CHECK: Duration = Duration::from_millis(100);
/// Receipts remembered until the ESME answers them, per connection.
const RECEIPTS_UNANSWERED_MAX: usize = 1_024;
/// The simulator's own name in bind responses.
const SMSC_SYSTEM_ID: &str = "payhub-smsc";

/// Accepts connections until `stop` turns true; then every session closes.
pub async fn accept(listener: TcpListener, state: Arc<SimState>, stop: watch::Receiver<bool>) {
    let open = Arc::new(tokio::sync::Semaphore::new(CONNECTIONS_MAX));
    let mut stopping = stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopping.changed() => return,
        };
        let Ok((stream, _peer)) = accepted else {
            // Out of descriptors or similar: wait instead of spinning.
            tokio::time::sleep(ACCEPT_RETRY_DELAY).await;
            continue;
        };
        let Ok(slot) = open.clone().try_acquire_owned() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let session = Session::new(state.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            session.serve(stream, stop).await;
            drop(slot);
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BindKind {
    Transmitter,
    Receiver,
    Transceiver,
}

#[derive(Debug, Clone)]
struct Bound {
    system_id: String,
    kind: BindKind,
}

/// The answer to a bind of any kind.
struct BindReply {
    kind: BindKind,
    status: CommandStatus,
}

impl BindReply {
    fn command(&self, sequence_number: u32) -> Command {
        let name = c_octets(SMSC_SYSTEM_ID);
        let (id, pdu): (CommandId, Pdu) = match self.kind {
            BindKind::Transmitter => (
                CommandId::BindTransmitterResp,
                BindTransmitterResp::builder()
                    .system_id(name)
                    .build()
                    .into(),
            ),
            BindKind::Receiver => (
                CommandId::BindReceiverResp,
                BindReceiverResp::builder().system_id(name).build().into(),
            ),
            BindKind::Transceiver => (
                CommandId::BindTransceiverResp,
                BindTransceiverResp::builder()
                    .system_id(name)
                    .build()
                    .into(),
            ),
        };
        if self.status == CommandStatus::EsmeRok {
            Command::new(self.status, sequence_number, pdu)
        } else {
            bodiless(id, self.status, sequence_number)
        }
    }
}

struct Session {
    state: Arc<SimState>,
    /// Among the simulator's sessions, for the receipts routed to it.
    id: u64,
    bound: Option<Bound>,
    /// Sequence numbers of the commands the simulator sends (receipts).
    sequence: Arc<AtomicU32>,
    outstanding: Arc<AtomicU64>,
    /// Receipts sent and not yet answered: (sequence number, message id).
    receipts: Arc<Mutex<VecDeque<(u32, String)>>>,
}

enum Next {
    Continue,
    /// Close after the queued answers are written (unbind).
    Close,
    /// Close at once, as a crashing SMSC or a cut line would.
    Drop,
}

impl Session {
    fn new(state: Arc<SimState>) -> Self {
        Self {
            id: state.session_id(),
            state,
            bound: None,
            sequence: Arc::new(AtomicU32::new(1)),
            outstanding: Arc::new(AtomicU64::new(0)),
            receipts: Arc::new(Mutex::new(VecDeque::new())),
        }
    }

    async fn serve(mut self, stream: TcpStream, mut stop: watch::Receiver<bool>) {
        let framed = Framed::new(
            stream,
            CommandCodec::new().with_max_length(COMMAND_LENGTH_MAX_BYTES),
        );
        let (mut sink, mut commands) = framed.split();
        let (out_tx, mut out_rx) = mpsc::channel::<Command>(OUTGOING_MAX);
        let mut writer = tokio::spawn(async move {
            while let Some(command) = out_rx.recv().await {
                let sent = tokio::time::timeout(WRITE_TIMEOUT, sink.send(command)).await;
                if !matches!(sent, Ok(Ok(()))) {
                    // Closing would flush what the peer does not read: dropped instead.
                    return;
                }
            }
            let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.close()).await;
        });
        let mut pinged_at = tokio::time::Instant::now();
        let ending = loop {
            let ping_at = self.next_enquire_link(pinged_at);
            let command = tokio::select! {
                command = commands.next() => command,
                _ = stop.changed() => break Next::Drop,
                // The peer stopped reading (or closed): nothing more can be answered.
                _ = &mut writer => break Next::Drop,
                () = tokio::time::sleep_until(ping_at) => {
                    pinged_at = tokio::time::Instant::now();
                    if self.bound.is_some() && self.state.switches().enquire_link_interval_ms > 0 {
                        let sequence_number = self.sequence.fetch_add(1, Ordering::SeqCst);
                        let ping = Command::new(CommandStatus::EsmeRok, sequence_number, Pdu::EnquireLink);
                        let _ = out_tx.send(ping).await;
                    }
                    continue;
                }
            };
            let Some(Ok(command)) = command else {
                // Closed, or a frame the codec cannot read: a real SMSC drops such a peer.
                break Next::Drop;
            };
            match self.on_command(command, &out_tx).await {
                Next::Continue => {}
                ending => break ending,
            }
        };
        if self.bound.is_some() {
            self.state.count(|s| s.sessions_bound -= 1);
            self.state.remove_receiver(self.id);
        }
        drop(out_tx);
        if matches!(ending, Next::Close) {
            // Let queued answers (the unbind_resp) go out first.
            let _ = tokio::time::timeout(CLOSE_GRACE, &mut writer).await;
        }
        // Answers still waiting on a delay hold the channel open; the socket closes now.
        writer.abort();
    }

    /// When to send the next `enquire_link` of the simulator's own.
    fn next_enquire_link(&self, pinged_at: tokio::time::Instant) -> tokio::time::Instant {
        match self.state.switches().enquire_link_interval_ms {
            0 => tokio::time::Instant::now() + ENQUIRE_LINK_IDLE_CHECK,
            ms => pinged_at + Duration::from_millis(ms),
        }
    }

    async fn on_command(&mut self, command: Command, out: &mpsc::Sender<Command>) -> Next {
        let sequence_number = command.sequence_number();
        match command.id() {
            CommandId::DeliverSmResp => {
                self.acknowledged(command.status(), sequence_number);
                return Next::Continue;
            }
            CommandId::EnquireLinkResp => {
                self.state.count(|s| s.enquire_link_resps += 1);
                return Next::Continue;
            }
            _ => {}
        }
        match command.pdu() {
            Some(Pdu::BindTransceiver(b)) => {
                let credentials = (b.system_id.as_str(), b.password.as_str());
                self.answer_bind(BindKind::Transceiver, credentials, (sequence_number, out))
                    .await;
            }
            Some(Pdu::BindTransmitter(b)) => {
                let credentials = (b.system_id.as_str(), b.password.as_str());
                self.answer_bind(BindKind::Transmitter, credentials, (sequence_number, out))
                    .await;
            }
            Some(Pdu::BindReceiver(b)) => {
                let credentials = (b.system_id.as_str(), b.password.as_str());
                self.answer_bind(BindKind::Receiver, credentials, (sequence_number, out))
                    .await;
            }
            Some(Pdu::SubmitSm(submit)) => {
                return self.submit(submit.clone(), sequence_number, out).await;
            }
            Some(Pdu::EnquireLink) => {
                self.state.count(|s| s.enquire_links += 1);
                let reply = Command::new(
                    CommandStatus::EsmeRok,
                    sequence_number,
                    Pdu::EnquireLinkResp,
                );
                let _ = out.send(reply).await;
            }
            Some(Pdu::Unbind) => {
                self.state.count(|s| s.unbinds += 1);
                let reply = Command::new(CommandStatus::EsmeRok, sequence_number, Pdu::UnbindResp);
                let _ = out.send(reply).await;
                return Next::Close;
            }
            _ if command.id().is_response() => {}
            _ => {
                let nack = bodiless(
                    CommandId::GenericNack,
                    CommandStatus::EsmeRinvcmdid,
                    sequence_number,
                );
                let _ = out.send(nack).await;
            }
        }
        Next::Continue
    }

    /// Answers a bind; a session bound to take receipts is then one they may go to (never
    /// before its bind's answer is queued).
    async fn answer_bind(
        &mut self,
        kind: BindKind,
        credentials: (&str, &str),
        (sequence_number, out): (u32, &mpsc::Sender<Command>),
    ) {
        let reply = self.bind(kind, credentials);
        let accepted = reply.status == CommandStatus::EsmeRok;
        let _ = out.send(reply.command(sequence_number)).await;
        if accepted && kind != BindKind::Transmitter {
            self.state
                .add_receiver(self.id, credentials.0, self.route(out));
        }
    }

    fn bind(&mut self, kind: BindKind, (system_id, password): (&str, &str)) -> BindReply {
        let status = if self.bound.is_some() {
            CommandStatus::EsmeRalybnd
        } else if system_id != self.state.system_id {
            CommandStatus::EsmeRinvsysid
        } else if password != self.state.password {
            CommandStatus::EsmeRinvpaswd
        } else {
            CommandStatus::EsmeRok
        };
        if status == CommandStatus::EsmeRok {
            self.bound = Some(Bound {
                system_id: system_id.to_string(),
                kind,
            });
            self.state.count(|s| {
                s.binds_accepted += 1;
                s.sessions_bound += 1;
            });
        } else {
            self.state.count(|s| s.binds_refused += 1);
        }
        BindReply { kind, status }
    }

    async fn submit(
        &mut self,
        submit: SubmitSm,
        sequence_number: u32,
        out: &mpsc::Sender<Command>,
    ) -> Next {
        let Some(bound) = self.bound.clone().filter(|b| b.kind != BindKind::Receiver) else {
            refuse_submit(out, CommandStatus::EsmeRinvbndsts, sequence_number).await;
            return Next::Continue;
        };
        let verdict = self.state.next_verdict();
        self.state.count(|s| s.submits += 1);
        if verdict == Verdict::Drop {
            return Next::Drop;
        }
        if self.outstanding.load(Ordering::SeqCst) >= ANSWERS_PENDING_MAX {
            refuse_submit(out, CommandStatus::EsmeRthrottled, sequence_number).await;
            return Next::Continue;
        }
        let now = self.outstanding.fetch_add(1, Ordering::SeqCst) + 1;
        self.state
            .count(|s| s.max_outstanding = s.max_outstanding.max(now));
        let answer = Answer {
            state: self.state.clone(),
            out: out.clone(),
            outstanding: self.outstanding.clone(),
            system_id: bound.system_id,
            // A transmitter bind cannot take receipts on its own session.
            receipts_to: (bound.kind == BindKind::Transceiver).then(|| self.route(out)),
        };
        tokio::spawn(answer.run(submit, sequence_number, verdict));
        Next::Continue
    }

    /// Where receipts for this session go.
    fn route(&self, out: &mpsc::Sender<Command>) -> ReceiptRoute {
        ReceiptRoute {
            out: out.clone(),
            sequence: self.sequence.clone(),
            unanswered: self.receipts.clone(),
        }
    }

    /// The ESME answered a receipt: marks its message when the answer was status 0.
    fn acknowledged(&self, status: CommandStatus, sequence_number: u32) {
        let message_id = {
            let mut sent = lock(&self.receipts);
            let found = sent.iter().position(|(seq, _)| *seq == sequence_number);
            found.and_then(|at| sent.remove(at)).map(|(_, id)| id)
        };
        if let Some(message_id) = message_id {
            let ok = status == CommandStatus::EsmeRok;
            self.state
                .update_message(&message_id, |m| m.receipt_acknowledged = ok);
        }
    }
}

/// Answers one `submit_sm` after the configured delay, then sends its receipt.
struct Answer {
    state: Arc<SimState>,
    out: mpsc::Sender<Command>,
    outstanding: Arc<AtomicU64>,
    system_id: String,
    /// A transceiver's own session; a transmitter's receipts go to a receiver bound as its
    /// `system_id`, if one is, when the receipt is sent.
    receipts_to: Option<ReceiptRoute>,
}

/// A `submit_sm_resp` refusing submit `sequence_number` with `status`.
async fn refuse_submit(out: &mpsc::Sender<Command>, status: CommandStatus, sequence_number: u32) {
    let reply = bodiless(CommandId::SubmitSmResp, status, sequence_number);
    let _ = out.send(reply).await;
}

/// One answer outstanding, counted until dropped.
struct Pending(Arc<AtomicU64>);

impl Drop for Pending {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Answer {
    async fn run(self, submit: SubmitSm, sequence_number: u32, verdict: Verdict) {
        // Outstanding until its answer is queued for the writer (or the writer is gone), so that
        // `ANSWERS_PENDING_MAX` bounds the tasks of a peer that stopped reading too.
        let pending = Pending(self.outstanding.clone());
        let switches = self.state.switches();
        if switches.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(switches.delay_ms)).await;
        }
        let Verdict::Status(status) = verdict else {
            return self.accept(submit, sequence_number, pending).await;
        };
        self.state.count(|s| s.submits_refused += 1);
        refuse_submit(&self.out, CommandStatus::from(status), sequence_number).await;
    }

    async fn accept(self, submit: SubmitSm, sequence_number: u32, pending: Pending) {
        let message_id = hex::encode(payhub_actors::ids::os_random::<8>());
        let now = chrono::Utc::now();
        let message = SimMessage {
            message_id: message_id.clone(),
            system_id: self.system_id.clone(),
            source_addr: submit.source_addr.as_str().to_string(),
            source_addr_ton: u8::from(submit.source_addr_ton),
            destination_addr: submit.destination_addr.as_str().to_string(),
            dest_addr_ton: u8::from(submit.dest_addr_ton),
            dest_addr_npi: u8::from(submit.dest_addr_npi),
            registered_delivery: u8::from(submit.registered_delivery),
            data_coding: u8::from(submit.data_coding),
            text: String::from_utf8_lossy(submit.short_message().as_ref()).into_owned(),
            received_at: now.to_rfc3339(),
            receipt_stat: None,
            receipt_acknowledged: false,
        };
        let registered_delivery = message.registered_delivery;
        self.state.record(message);
        let pdu = SubmitSmResp::builder()
            .message_id(c_octets(&message_id))
            .build();
        let reply = Command::new(CommandStatus::EsmeRok, sequence_number, pdu);
        let queued = self.out.send(reply).await.is_ok();
        // Answered: its receipt, which may wait a while, is not an outstanding submit.
        drop(pending);
        if !queued {
            return;
        }
        let switches = self.state.switches();
        let wanted = wants_receipt(registered_delivery, &switches.receipt_stat);
        if !(wanted && switches.receipts) {
            return;
        }
        if switches.receipt_delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(switches.receipt_delay_ms)).await;
        }
        let route = self.receipts_to.clone();
        let Some(route) = route.or_else(|| self.state.receiver_of(&self.system_id)) else {
            return;
        };
        let stamp = now.format("%y%m%d%H%M").to_string();
        let done = chrono::Utc::now().format("%y%m%d%H%M").to_string();
        let text = receipt::format(&message_id, &switches.receipt_stat, &stamp, &done);
        let deliver = DeliverSm::builder()
            .source_addr_ton(submit.dest_addr_ton)
            .source_addr_npi(submit.dest_addr_npi)
            .source_addr(submit.destination_addr.clone())
            .dest_addr_ton(Ton::Alphanumeric)
            .dest_addr_npi(Npi::Unknown)
            .destination_addr(submit.source_addr.clone())
            .esm_class(EsmClass::from(0x04))
            .registered_delivery(RegisteredDelivery::from(0u8))
            .short_message(OctetString::from_string(text).unwrap_or_default())
            .build();
        let sequence_number = route.sequence.fetch_add(1, Ordering::SeqCst);
        let command = Command::new(CommandStatus::EsmeRok, sequence_number, deliver);
        {
            let mut unanswered = lock(&route.unanswered);
            if unanswered.len() >= RECEIPTS_UNANSWERED_MAX {
                unanswered.pop_front();
            }
            unanswered.push_back((sequence_number, message_id.clone()));
        }
        if route.out.send(command).await.is_ok() {
            self.state.count(|s| s.receipts_sent += 1);
            self.state.update_message(&message_id, |m| {
                m.receipt_stat = Some(switches.receipt_stat.clone())
            });
        }
    }
}

/// A response without a body: what SMPP v3.4 sends with a non-zero status.
fn bodiless(id: CommandId, status: CommandStatus, sequence_number: u32) -> Command {
    Command::from_parts(CommandParts::new(id, status, sequence_number, None))
}

/// A C-octet string from simulator-made ASCII (ids, names); empty when it cannot be one.
fn c_octets<const MIN: usize, const MAX: usize>(value: &str) -> COctetString<MIN, MAX> {
    COctetString::from_string(value.to_string()).unwrap_or_else(|_| COctetString::empty())
}

/// Whether a message's `registered_delivery` asks for a receipt with `stat` (SMPP v3.4 5.2.17):
/// on any final outcome (1), or on a failure only (2).
fn wants_receipt(registered_delivery: u8, stat: &str) -> bool {
    match registered_delivery & 0x03 {
        1 => true,
        2 => stat != "DELIVRD",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_receipt_on_failure_only_is_not_sent_for_a_delivered_message() {
        use super::wants_receipt;
        assert!(wants_receipt(0x01, "DELIVRD"));
        assert!(wants_receipt(0x01, "UNDELIV"));
        assert!(!wants_receipt(0x02, "DELIVRD"));
        assert!(wants_receipt(0x02, "UNDELIV"));
        assert!(!wants_receipt(0x00, "UNDELIV"));
        assert!(!wants_receipt(0x03, "DELIVRD"), "3 is reserved");
        assert!(
            wants_receipt(0x11, "DELIVRD"),
            "other bits are not about receipts"
        );
    }
}
