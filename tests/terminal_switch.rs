//! The terminal switch and the channel router over real TCP/TLS on port 0, with a real PostgreSQL
//! database per test and the real terminal simulator.

use payhub::channels::router::{self, Channels, ListTerminals, TerminalKind};
use payhub::channels::terminal::SwitchSettings;
use payhub::channels::terminal::auth::SharedKey;
use payhub::channels::terminal::client::{ClientError, ClientOptions};
use payhub::channels::terminal::frame::{ErrorCode, Frame};
use payhub::channels::terminal::tls::{ClientTls, self_signed_acceptor};
use payhub::sim::terminal::{DeliveryBehaviour, SimConfig, SimEvent, SimHandle, spawn};
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::{Amount, Currency, Msisdn};
use payhub_actors::messages::{Deliver, DeliveryError, Destination, Notice, NoticeKind};
use payhub_actors::store::testing::{TestDb, fresh_database};
use payhub_actors::{Secret, SystemClock};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Generous bound on waits that should end at once; a hang fails the test instead of stalling it.
const PROMPT: Duration = Duration::from_secs(5);
/// An ACK timeout far longer than PROMPT, so an answer within PROMPT was not a timeout.
const LONG_ACK_MS: u64 = 60_000;

struct Env {
    db: TestDb,
    channels: Channels,
    ca_pem: Vec<u8>,
    customer_id: String,
    payment_id: String,
}

fn settings(ack_timeout_ms: u64, keepalive_interval_ms: u64) -> SwitchSettings {
    SwitchSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ack_timeout_ms,
        keepalive_interval_ms,
        handshake_timeout_ms: 5_000,
        handshakes_max: 16,
        handshakes_per_peer_max: 8,
        sessions_max: 16,
        pending_max: 4,
    }
}

async fn start(settings: SwitchSettings) -> Env {
    let db = fresh_database().await;
    let (acceptor, ca_pem) = self_signed_acceptor("127.0.0.1").unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let channels = router::start(db.pool.clone(), clock, settings, Some(acceptor), None)
        .await
        .unwrap();
    let customer_id = insert_customer(&db, "cus_a").await;
    let payment_id = insert_payment(&db, &customer_id).await;
    Env {
        db,
        channels,
        ca_pem,
        customer_id,
        payment_id,
    }
}

async fn insert_customer(db: &TestDb, id: &str) -> String {
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO customers (id, real_name, online_id, bank_id, account, password_hash)
             VALUES ($1, 'Li Lei', $1, '0001', '6222020000000001', 'x')",
            &[&id],
        )
        .await
        .unwrap();
    id.to_string()
}

async fn insert_payment(db: &TestDb, customer_id: &str) -> String {
    let client = db.pool.get().await.unwrap();
    client
        .batch_execute(
            "INSERT INTO merchants (id, name, cert_fingerprint, cert_serial, webhook_secret, bank_id,
                                    account, terminal_id, card_acceptor_id)
             VALUES ('mer_1', 'Book Shop', 'fp', '1', 's', '0002', '1234', 'T0000001', 'M00000000000001')",
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO payments (id, merchant_id, order_id, amount_minor, currency, return_url,
                                   notify_url, status, customer_id, channel, created_at, expires_at,
                                   updated_at)
             VALUES ('pay_1', 'mer_1', 'A-1', 1234, 'CNY', 'https://shop/r', 'https://shop/n',
                     'awaiting_code', $1, 'terminal', now(), now() + interval '15 minutes', now())",
            &[&customer_id],
        )
        .await
        .unwrap();
    "pay_1".into()
}

/// A code notice for 12.34 CNY at Book Shop.
fn code_notice(payment_id: &str, code: &str) -> Notice {
    Notice {
        payment_id: payment_id.into(),
        kind: NoticeKind::Code,
        merchant_name: "Book Shop".into(),
        amount: Amount::parse(1234).unwrap(),
        currency: Currency::Cny,
        code: Some(Secret::new(code.into())),
        validity_s: 300,
        outcome: None,
        unregistered_receiver: false,
    }
}

/// Registers a terminal; dedicated ones get a fresh key.
async fn insert_terminal(
    db: &TestDb,
    customer_id: &str,
    id: &str,
    kind: TerminalKind,
    msisdn: Option<&str>,
) -> SharedKey {
    let key = payhub_actors::ids::os_random::<32>();
    let shared_key = (kind == TerminalKind::Dedicated).then(|| key.to_vec());
    let serial = Some(format!("SN-{id}"));
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO terminals (id, customer_id, kind, label, msisdn, serial, shared_key)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
            &[
                &id,
                &customer_id,
                &kind.as_str(),
                &format!("my {}", kind.as_str()),
                &msisdn,
                &serial,
                &shared_key,
            ],
        )
        .await
        .unwrap();
    SharedKey::new(key)
}

impl Env {
    fn client_options(&self, terminal_id: &str, key: &SharedKey) -> ClientOptions {
        ClientOptions {
            switch: self.channels.switch.addr.to_string(),
            server_name: None,
            terminal_id: terminal_id.into(),
            key: key.clone().into(),
            tls: ClientTls::Ca(self.ca_pem.clone()),
        }
    }

    async fn terminal(
        &self,
        terminal_id: &str,
        key: &SharedKey,
        behaviour: DeliveryBehaviour,
    ) -> SimHandle {
        let sim = spawn(SimConfig {
            client: self.client_options(terminal_id, key),
            behaviour,
            answer_pings: true,
            answer: None,
        })
        .await
        .unwrap();
        // Registered before WELCOME: deliverable as soon as the terminal is in.
        assert!(self.channels.switch.registry.is_online(terminal_id));
        sim
    }

    async fn wait_online(&self, terminal_id: &str, online: bool) {
        let registry = &self.channels.switch.registry;
        tokio::time::timeout(PROMPT, async {
            while registry.is_online(terminal_id) != online {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{terminal_id} never became online={online}"));
    }

    async fn deliver(
        &self,
        destination: Destination,
        notice: Notice,
    ) -> Result<String, DeliveryError> {
        let sent = self.channels.router.send(Deliver {
            destination,
            notice,
            recorded: None,
            answer_within: PROMPT,
        });
        tokio::time::timeout(PROMPT, sent)
            .await
            .expect("the router answered promptly")
            .expect("router alive")
            .map(|r| r.message_ref)
    }

    fn code_notice(&self, code: &str) -> Notice {
        code_notice(&self.payment_id, code)
    }

    /// The outcome notice (succeeded) of the test's payment.
    fn outcome_notice(&self) -> Notice {
        Notice {
            kind: NoticeKind::Outcome,
            code: None,
            outcome: Some("succeeded".into()),
            ..self.code_notice("000000")
        }
    }

    /// Registers a dedicated terminal of the test's customer; its key.
    async fn dedicated(&self, id: &str) -> SharedKey {
        insert_terminal(
            &self.db,
            &self.customer_id,
            id,
            TerminalKind::Dedicated,
            None,
        )
        .await
    }

    async fn send_code(&self, terminal_id: &str, code: &str) -> Result<String, DeliveryError> {
        let destination = Destination::Terminal(terminal_id.into());
        self.deliver(destination, self.code_notice(code)).await
    }

    async fn choices(&self) -> Vec<router::TerminalChoice> {
        let list = ListTerminals {
            customer_id: self.customer_id.clone(),
        };
        self.channels.router.send(list).await.unwrap().unwrap()
    }

    /// (channel, destination, status, message_ref, error) of every customer message, in order.
    async fn messages(&self) -> Vec<(String, String, String, Option<String>, Option<String>)> {
        let client = self.db.pool.get().await.unwrap();
        client
            .query(
                "SELECT channel, destination, status, message_ref, error FROM customer_messages ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
    }
}

#[actix_rt::test]
async fn dedicated_terminal_authenticates_and_receives_code_amount_and_merchant() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let mut sim = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;

    let message_ref = env.send_code("trm_box", "493817").await.unwrap();

    match sim.next_delivery(PROMPT).await {
        Some(SimEvent::Code {
            payment_id,
            code,
            amount,
            currency,
            merchant,
            validity_s,
            text,
            acknowledged,
            ..
        }) => {
            assert_eq!((payment_id.as_str(), code.as_str()), ("pay_1", "493817"));
            assert_eq!(
                (amount, currency.as_str(), merchant.as_str()),
                (1234, "CNY", "Book Shop")
            );
            assert_eq!(validity_s, 300);
            assert!(
                text.contains("code 493817") && text.contains("12.34 CNY"),
                "{text}"
            );
            assert!(acknowledged);
        }
        other => panic!("expected a code, got {other:?}"),
    }
    let messages = env.messages().await;
    assert_eq!(messages.len(), 1);
    let (channel, destination, status, stored_ref, error) = &messages[0];
    assert_eq!(
        (channel.as_str(), destination.as_str(), status.as_str()),
        ("terminal", "trm_box", "delivered")
    );
    assert_eq!(stored_ref.as_deref(), Some(message_ref.as_str()));
    assert_eq!(*error, None);
    assert!(!message_ref.contains("493817"));
    let metrics = payhub_actors::metrics::global().render();
    assert!(
        metrics.contains("payhub_codes_sent_total{channel=\"terminal\"}"),
        "{metrics}"
    );

    // A code for a receiver named for this one payment says so on the device.
    let mut named = env.code_notice("975310");
    named.unregistered_receiver = true;
    env.deliver(Destination::Terminal("trm_box".into()), named)
        .await
        .unwrap();
    assert!(matches!(
        sim.next_delivery(PROMPT).await,
        Some(SimEvent::Code {
            unregistered_receiver: true,
            ..
        })
    ));

    // The outcome notice goes the same way.
    let outcome = env.outcome_notice();
    env.deliver(Destination::Terminal("trm_box".into()), outcome)
        .await
        .unwrap();
    match sim.next_delivery(PROMPT).await {
        Some(SimEvent::Outcome {
            outcome, merchant, ..
        }) => {
            assert_eq!(
                (outcome.as_str(), merchant.as_str()),
                ("succeeded", "Book Shop")
            )
        }
        other => panic!("expected an outcome, got {other:?}"),
    }
}

/// An outcome notice whose row the final write made (`recorded`), sent again at a start after a
/// crash: the delivery ends that row, and writes no other (a row left `queued` is sent again at
/// every start).
#[actix_rt::test]
async fn an_outcome_notice_ends_the_row_written_with_the_final_status() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let mut sim = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    let client = env.db.pool.get().await.unwrap();
    let row: i64 = client
        .query_one(
            "INSERT INTO customer_messages
                 (payment_id, kind, channel, destination, status, created_at, updated_at)
             VALUES ($1, 'outcome', 'terminal', 'trm_box', 'queued', now(), now()) RETURNING id",
            &[&env.payment_id],
        )
        .await
        .unwrap()
        .get(0);
    let outcome = env.outcome_notice();
    let sent = env.channels.router.send(Deliver {
        destination: Destination::Terminal("trm_box".into()),
        notice: outcome,
        recorded: Some(row),
        answer_within: PROMPT,
    });
    tokio::time::timeout(PROMPT, sent)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(matches!(
        sim.next_delivery(PROMPT).await,
        Some(SimEvent::Outcome { .. })
    ));
    let messages = env.messages().await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0].2, "delivered");
}

async fn refused(env: &Env, terminal_id: &str, key: &SharedKey) -> (u16, String) {
    let config = SimConfig {
        client: env.client_options(terminal_id, key),
        behaviour: DeliveryBehaviour::Acknowledge,
        answer_pings: true,
        answer: None,
    };
    match spawn(config).await {
        Err(ClientError::Refused { code, message }) => (code, message),
        Err(other) => panic!("expected a refusal, got {other}"),
        Ok(_) => panic!("{terminal_id} was let in"),
    }
}

async fn audited_refusals(env: &Env) -> Vec<serde_json::Value> {
    let client = env.db.pool.get().await.unwrap();
    client
        .query(
            "SELECT detail FROM audit_log WHERE event = 'terminal_refused' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[actix_rt::test]
async fn wrong_key_unregistered_and_disabled_terminals_are_refused_and_audited() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let wrong = SharedKey::new([7; 32]);
    let auth_failed = ErrorCode::AuthenticationFailed as u16;

    assert_eq!(refused(&env, "trm_box", &wrong).await.0, auth_failed);
    assert_eq!(refused(&env, "trm_nobody", &key).await.0, auth_failed);
    let _mobile = insert_terminal(
        &env.db,
        &env.customer_id,
        "trm_phone",
        TerminalKind::Mobile,
        Some("8613800000001"),
    )
    .await;
    assert_eq!(refused(&env, "trm_phone", &key).await.0, auth_failed);
    let client = env.db.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE terminals SET status = 'disabled' WHERE id = 'trm_box'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(refused(&env, "trm_box", &key).await.0, auth_failed);
    assert!(!env.channels.switch.registry.is_online("trm_box"));

    let reasons: Vec<String> = audited_refusals(&env)
        .await
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        reasons,
        [
            "wrong proof",
            "unregistered terminal",
            "terminal is not of kind dedicated",
            "terminal or customer disabled"
        ]
    );
    let details = format!("{:?}", audited_refusals(&env).await);
    assert!(!details.contains(&hex::encode([7u8; 32])));
}

#[actix_rt::test]
async fn offline_terminal_fails_at_once_and_is_shown_unavailable() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let _key = env.dedicated("trm_box").await;

    let result = env.send_code("trm_box", "111111").await;
    assert_eq!(result, Err(DeliveryError::Offline));
    let messages = env.messages().await;
    assert_eq!(messages[0].2, "failed");
    assert_eq!(messages[0].4.as_deref(), Some("the terminal is offline"));

    let choices = env.choices().await;
    assert_eq!(choices.len(), 1);
    assert!(!choices[0].available);
    assert_eq!(choices[0].unavailable_reason, Some("offline"));
}

#[actix_rt::test]
async fn of_two_terminals_the_chosen_one_gets_the_code() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key_a = env.dedicated("trm_a").await;
    let key_b = env.dedicated("trm_b").await;
    let mut sim_a = env
        .terminal("trm_a", &key_a, DeliveryBehaviour::Acknowledge)
        .await;
    let mut sim_b = env
        .terminal("trm_b", &key_b, DeliveryBehaviour::Acknowledge)
        .await;

    let choices = env.choices().await;
    let ids: Vec<(&str, bool)> = choices
        .iter()
        .map(|c| (c.id.as_str(), c.available))
        .collect();
    assert_eq!(ids, [("trm_a", true), ("trm_b", true)]);

    env.send_code("trm_b", "222222").await.unwrap();
    match sim_b.next_delivery(PROMPT).await {
        Some(SimEvent::Code {
            code, terminal_id, ..
        }) => assert_eq!((code.as_str(), terminal_id.as_str()), ("222222", "trm_b")),
        other => panic!("trm_b expected the code, got {other:?}"),
    }
    assert_eq!(sim_a.next_delivery(Duration::from_millis(200)).await, None);
    assert_eq!(env.messages().await[0].1, "trm_b");
}

#[actix_rt::test]
async fn a_terminal_that_drops_mid_delivery_fails_the_delivery_without_waiting_for_the_timeout() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let mut sim = env
        .terminal("trm_box", &key, DeliveryBehaviour::DropConnection)
        .await;

    let result = env.send_code("trm_box", "333333").await;
    assert_eq!(result, Err(DeliveryError::Offline));
    assert!(matches!(
        sim.next_delivery(PROMPT).await,
        Some(SimEvent::Code {
            acknowledged: false,
            ..
        })
    ));
    env.wait_online("trm_box", false).await;
    assert_eq!(env.messages().await[0].2, "failed");
}

#[actix_rt::test]
async fn silent_and_refusing_terminals_time_out_or_reject() {
    let env = start(settings(300, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let sim = env
        .terminal("trm_box", &key, DeliveryBehaviour::Silent)
        .await;
    let result = env.send_code("trm_box", "444444").await;
    assert_eq!(result, Err(DeliveryError::NotAcknowledged));
    sim.stop();
    env.wait_online("trm_box", false).await;

    let _sim = env
        .terminal("trm_box", &key, DeliveryBehaviour::Refuse)
        .await;
    let result = env.send_code("trm_box", "555555").await;
    assert_eq!(
        result,
        Err(DeliveryError::Rejected("refused by the simulator".into()))
    );
    let statuses: Vec<String> = env.messages().await.into_iter().map(|m| m.2).collect();
    assert_eq!(statuses, ["failed", "failed"]);
}

/// An outcome a connected terminal does not acknowledge (it may have vanished without closing
/// its connection) is kept, not failed: it is offered again on that connection once it has
/// outlived the silence limit (so the terminal is alive), and otherwise at the next connection.
#[actix_rt::test]
async fn an_outcome_the_terminal_does_not_acknowledge_is_kept_and_offered_again() {
    // ACKs awaited 300 ms; a terminal silent for 2 × 500 ms is dropped.
    let env = start(settings(300, 500)).await;
    let key = env.dedicated("trm_box").await;
    let mut silent = env
        .terminal("trm_box", &key, DeliveryBehaviour::Silent)
        .await;
    let outcome = env.outcome_notice();
    let result = env
        .deliver(Destination::Terminal("trm_box".into()), outcome)
        .await;
    assert_eq!(result, Err(DeliveryError::Held));
    for offer in ["first", "again, on the same connection"] {
        let shown = silent.next_delivery(PROMPT).await;
        assert!(
            matches!(shown, Some(SimEvent::Outcome { .. })),
            "{offer}: {shown:?}"
        );
    }
    silent.stop();
    env.wait_online("trm_box", false).await;
    assert_eq!(env.messages().await[0].2, "queued", "still kept");
    let mut back = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    assert!(matches!(
        back.next_delivery(PROMPT).await,
        Some(SimEvent::Outcome { .. })
    ));
    tokio::time::timeout(PROMPT, async {
        while env.messages().await[0].2 != "delivered" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("delivered at the next connection");
}

/// Outcomes held for a terminal, sent when it connects, that it leaves unanswered: they stay
/// held, and once the connection outlived the silence limit (so the terminal is alive) they are
/// offered again on it, a bounded number of times; the next connection gets them.
#[actix_rt::test]
async fn held_outcomes_left_unanswered_are_offered_again_on_the_same_connection() {
    use payhub::channels::terminal::held_outcomes::UNANSWERED_WAITS_MAX;
    // ACKs awaited 300 ms; a terminal silent for 2 × 300 ms is dropped.
    let env = start(settings(300, 300)).await;
    let key = env.dedicated("trm_box").await;
    for _ in 0..2 {
        let outcome = env.outcome_notice();
        let result = env
            .deliver(Destination::Terminal("trm_box".into()), outcome)
            .await;
        assert_eq!(result, Err(DeliveryError::Held), "offline: held");
    }
    let mut silent = env
        .terminal("trm_box", &key, DeliveryBehaviour::Silent)
        .await;
    let offers = 2 * (1 + UNANSWERED_WAITS_MAX);
    let mut shown_at = Vec::new();
    for offer in 0..offers {
        let shown = silent.next_delivery(PROMPT).await;
        assert!(
            matches!(shown, Some(SimEvent::Outcome { .. })),
            "offer {offer}: {shown:?}"
        );
        shown_at.push(std::time::Instant::now());
    }
    // Between rounds, the second's ACK wait (300 ms) and the silence limit (600 ms).
    let between_rounds = shown_at[2] - shown_at[1];
    assert!(
        between_rounds >= Duration::from_millis(800),
        "{between_rounds:?}"
    );
    assert_eq!(
        silent.next_delivery(Duration::from_millis(1_500)).await,
        None
    );
    silent.stop();
    env.wait_online("trm_box", false).await;
    let mut back = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    for _ in 0..2 {
        assert!(matches!(
            back.next_delivery(PROMPT).await,
            Some(SimEvent::Outcome { .. })
        ));
    }
}

#[actix_rt::test]
async fn keep_alive_holds_live_terminals_and_drops_silent_ones() {
    let env = start(settings(LONG_ACK_MS, 100)).await;
    let key = env.dedicated("trm_box").await;
    let mut live = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    // Several keep-alive rounds pass; the terminal answers each and stays connected.
    for _ in 0..5 {
        assert_eq!(
            live.next_event(PROMPT).await,
            Some(SimEvent::Ping { answered: true })
        );
    }
    assert!(env.channels.switch.registry.is_online("trm_box"));
    env.send_code("trm_box", "666666").await.unwrap();
    live.stop();
    env.wait_online("trm_box", false).await;

    let mut mute = spawn(SimConfig {
        client: env.client_options("trm_box", &key),
        behaviour: DeliveryBehaviour::Acknowledge,
        answer_pings: false,
        answer: None,
    })
    .await
    .unwrap();
    let closed = loop {
        match mute.next_event(PROMPT).await {
            Some(SimEvent::Ping { answered: false }) => continue,
            other => break other,
        }
    };
    match closed {
        Some(SimEvent::Closed { reason }) => {
            assert!(reason.contains("no keep-alive answer"), "{reason}")
        }
        other => panic!("expected the switch to close the silent terminal, got {other:?}"),
    }
    env.wait_online("trm_box", false).await;
}

/// A fake switch over plain TCP: it takes HELLO, sends a CHALLENGE, takes the PROOF, answers
/// `answer`, and then says nothing more, keeping the connection open.
async fn scripted_switch(answer: Frame) -> String {
    use futures::{SinkExt, StreamExt};
    use payhub::channels::terminal::frame::FrameCodec;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            let mut framed = tokio_util::codec::Framed::new(socket, FrameCodec);
            let _hello = framed.next().await;
            let _ = framed.send(Frame::Challenge { nonce: [7; 32] }).await;
            let _proof = framed.next().await;
            let _ = framed.send(answer.clone()).await;
            held.push(framed);
        }
    });
    addr.to_string()
}

/// docs/terminal-protocol.md: a terminal "should reconnect when the switch has been silent for
/// more than two keep-alive intervals". The simulator ends such a connection, instead of waiting
/// on it for ever.
#[actix_rt::test]
async fn the_simulator_leaves_a_switch_silent_for_two_keep_alive_intervals() {
    let switch = scripted_switch(Frame::Welcome {
        keepalive_interval_ms: 200,
        ack_timeout_ms: 1_000,
    })
    .await;
    let mut sim = spawn(SimConfig {
        client: ClientOptions {
            switch,
            server_name: None,
            terminal_id: "trm_silent_switch".into(),
            key: SharedKey::new([1; 32]).into(),
            tls: ClientTls::Off,
        },
        behaviour: DeliveryBehaviour::Acknowledge,
        answer_pings: true,
        answer: None,
    })
    .await
    .unwrap();
    match sim.next_event(PROMPT).await {
        Some(SimEvent::Closed { reason }) => assert!(reason.contains("silent"), "{reason}"),
        other => panic!("expected the simulator to leave the silent switch, got {other:?}"),
    }
}

#[actix_rt::test]
async fn other_kinds_route_by_kind_and_fail_fast_without_their_channel() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    insert_terminal(
        &env.db,
        &env.customer_id,
        "trm_phone",
        TerminalKind::Mobile,
        Some("8613800000001"),
    )
    .await;
    insert_terminal(
        &env.db,
        &env.customer_id,
        "trm_pager",
        TerminalKind::Pager,
        Some("8613800000002"),
    )
    .await;
    let other = insert_customer(&env.db, "cus_b").await;
    insert_terminal(&env.db, &other, "trm_theirs", TerminalKind::Dedicated, None).await;

    // No SMS channel was given: mobile and SMS deliveries are unavailable, at once.
    let sms = Destination::Sms(Msisdn::parse("8613800000001").unwrap());
    assert_eq!(
        env.deliver(sms, env.code_notice("1")).await,
        Err(DeliveryError::Unavailable)
    );
    let phone = Destination::Terminal("trm_phone".into());
    assert_eq!(
        env.deliver(phone, env.code_notice("1")).await,
        Err(DeliveryError::Unavailable)
    );
    // No pager provider runs here: no adapter, not offered.
    let pager = Destination::Terminal("trm_pager".into());
    assert_eq!(
        env.deliver(pager, env.code_notice("1")).await,
        Err(DeliveryError::Unavailable)
    );
    // A terminal of another customer, or none at all, is refused.
    let theirs = Destination::Terminal("trm_theirs".into());
    assert!(matches!(
        env.deliver(theirs, env.code_notice("1")).await,
        Err(DeliveryError::Rejected(_))
    ));
    let unknown = Destination::Terminal("trm_unknown".into());
    assert_eq!(
        env.deliver(unknown, env.code_notice("1")).await,
        Err(DeliveryError::Rejected("unknown terminal".into()))
    );

    let choices = env.choices().await;
    assert!(choices.iter().all(|c| !c.available), "{choices:?}");
}

/// A second authenticated connection of the same terminal replaces the first.
#[actix_rt::test]
async fn a_reconnecting_terminal_replaces_its_old_session() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let mut old = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    let mut new = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    match old.next_delivery(PROMPT).await {
        Some(SimEvent::Closed { reason }) => {
            assert!(reason.contains("another connection"), "{reason}")
        }
        other => panic!("expected the old session closed, got {other:?}"),
    }
    env.send_code("trm_box", "777777").await.unwrap();
    assert!(matches!(
        new.next_delivery(PROMPT).await,
        Some(SimEvent::Code { .. })
    ));
}

/// One address cannot hold every handshake slot: past its share, its connections are closed on
/// accept, while another address's still get their CHALLENGE, and so does the first address's
/// once its idle connections are gone.
#[actix_rt::test]
async fn one_address_holds_at_most_its_share_of_the_handshakes() {
    let mut plain = settings(LONG_ACK_MS, 60_000);
    plain.handshakes_per_peer_max = 2;
    let (_db, channels) = plain_switch(plain).await;
    let addr = channels.switch.addr;
    let mut idle = Vec::new();
    for _ in 0..2 {
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        // Taken in: a HELLO would be answered (the switch reads from it).
        idle.push(tcp);
    }
    eventually_challenged_or_closed(addr, None, false).await;
    if bound_from("127.0.0.2").is_some() {
        eventually_challenged_or_closed(addr, Some("127.0.0.2"), true).await;
    } else {
        eprintln!("skipped the second address: 127.0.0.2 cannot be bound here");
    }
    drop(idle);
    eventually_challenged_or_closed(addr, None, true).await;
    channels.shutdown();
}

/// Deliveries run on their own after their senders stop waiting (here, behind a locked table):
/// past `MAILBOX_MAX` under way, the router refuses more at once instead of taking each on.
#[actix_rt::test]
async fn the_router_takes_on_no_more_deliveries_than_its_bound() {
    const MORE: usize = 50;
    let (db, channels) = plain_switch(settings(LONG_ACK_MS, 60_000)).await;
    let mut blocker = db.pool.get().await.unwrap();
    let lock = blocker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE terminals IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let asked = (0..router::RouterSettings::MAILBOX_MAX + MORE).map(|_| {
        let sent = channels.router.send(Deliver {
            destination: Destination::Terminal("trm_x".into()),
            notice: code_notice("pay_x", "123456"),
            recorded: None,
            answer_within: PROMPT,
        });
        tokio::time::timeout(Duration::from_millis(500), sent)
    });

    let answers = futures::future::join_all(asked).await;

    let refused = answers
        .iter()
        .filter(|a| matches!(a, Ok(Ok(Err(DeliveryError::Unavailable)))))
        .count();
    assert_eq!(refused, MORE);
    lock.rollback().await.unwrap();
    channels.shutdown();
}

/// A switch over plain TCP (no TLS), to write raw bytes at.
async fn plain_switch(settings: SwitchSettings) -> (TestDb, Channels) {
    let db = fresh_database().await;
    let clock: SharedClock = Arc::new(SystemClock);
    let channels = router::start(db.pool.clone(), clock, settings, None, None)
        .await
        .unwrap();
    (db, channels)
}

fn bound_from(ip: &str) -> Option<tokio::net::TcpSocket> {
    let socket = tokio::net::TcpSocket::new_v4().ok()?;
    socket.bind(format!("{ip}:0").parse().ok()?).ok()?;
    Some(socket)
}

/// Connects (from `source`, when given) and says HELLO until the switch answers with a CHALLENGE
/// (`challenged`) or closes the connection without a word (not `challenged`).
async fn eventually_challenged_or_closed(
    addr: std::net::SocketAddr,
    source: Option<&str>,
    challenged: bool,
) {
    let deadline = tokio::time::Instant::now() + PROMPT;
    loop {
        let mut tcp = match source.and_then(bound_from) {
            Some(socket) => socket.connect(addr).await.unwrap(),
            None => tokio::net::TcpStream::connect(addr).await.unwrap(),
        };
        let hello = Frame::Hello {
            version: 1,
            terminal_id: "trm_x".into(),
        }
        .to_bytes()
        .unwrap();
        let _ = tcp.write_all(&hello).await;
        let mut head = [0u8; 3];
        let answered = tokio::time::timeout(PROMPT, tcp.read_exact(&mut head))
            .await
            .unwrap()
            .is_ok();
        if answered == challenged {
            if challenged {
                assert_eq!(head, [0x00, 0x21, 0x02], "a 33-byte CHALLENGE");
            }
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "expected challenged = {challenged}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Raw bytes, mini-redis style: garbage gets an ERROR frame and a closed connection, and the switch
/// keeps serving.
#[actix_rt::test]
async fn garbage_bytes_get_a_protocol_error_and_the_switch_keeps_serving() {
    let mut plain = settings(LONG_ACK_MS, 60_000);
    plain.handshake_timeout_ms = 500;
    let (db, channels) = plain_switch(plain).await;
    let addr = channels.switch.addr;

    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.write_all(&[0x00, 0x03, 0x42, 0x00, 0x00])
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PROMPT, tcp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let mut buf = bytes::BytesMut::from(&answer[..]);
    match Frame::decode(&mut buf).unwrap() {
        Some(Frame::Error { code, message }) => {
            assert_eq!(code, ErrorCode::Protocol as u16);
            assert!(message.contains("unknown frame type 0x42"), "{message}");
        }
        other => panic!("expected ERROR, got {other:?}"),
    }

    // Seeded random garbage, then a well-formed HELLO still gets its CHALLENGE.
    let mut seed: u64 = 0x5eed;
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let junk: Vec<u8> = (0..64)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        let _ = tcp.write_all(&junk).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(PROMPT, tcp.read_to_end(&mut sink))
            .await
            .unwrap();
    }
    // A HELLO of another version whose id is malformed (a control character in it) is refused for
    // its version, and the refusal names (in the log and the audit) no id.
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let bad_id = Frame::Hello {
        version: 2,
        terminal_id: "trm\u{1}x".into(),
    }
    .to_bytes()
    .unwrap();
    tcp.write_all(&bad_id).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PROMPT, tcp.read_to_end(&mut answer))
        .await
        .unwrap();
    let mut buf = bytes::BytesMut::from(&answer[..]);
    match Frame::decode(&mut buf).unwrap() {
        Some(Frame::Error { code, .. }) => {
            assert_eq!(code, ErrorCode::UnsupportedVersion as u16);
        }
        other => panic!("expected ERROR, got {other:?}"),
    }
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let hello = Frame::Hello {
        version: 1,
        terminal_id: "trm_x".into(),
    }
    .to_bytes()
    .unwrap();
    tcp.write_all(&hello).await.unwrap();
    let mut head = [0u8; 3];
    tokio::time::timeout(PROMPT, tcp.read_exact(&mut head))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head, [0x00, 0x21, 0x02], "a 33-byte CHALLENGE");
    channels.shutdown();
    // None of those connections named a terminal: none costs an audit row.
    let client = db.pool.get().await.unwrap();
    let audited: i64 = client
        .query_one(
            "SELECT count(*) FROM audit_log WHERE event = 'terminal_refused'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audited, 0);
}

#[actix_rt::test]
async fn shutdown_closes_sessions_and_later_deliveries_are_offline() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let mut sim = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    env.channels.shutdown();
    match sim.next_delivery(PROMPT).await {
        Some(SimEvent::Closed { reason }) => assert!(reason.contains("shutting down"), "{reason}"),
        other => panic!("expected closed, got {other:?}"),
    }
    env.wait_online("trm_box", false).await;
    let result = env.send_code("trm_box", "888888").await;
    assert_eq!(result, Err(DeliveryError::Offline));
}

/// The `payhub terminal-sim` command: one JSON line per code on stdout, reconnects after a loss;
/// a wrong key is one line on stderr and a failure exit.
#[actix_rt::test]
async fn terminal_sim_command_prints_codes_as_json_lines() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    env.dedicated("trm_box").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &env.ca_pem).unwrap();
    let key_hex = hex::encode(key_bytes(&env, "trm_box").await);

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhub"))
        .args([
            "terminal-sim",
            "--switch",
            &env.channels.switch.addr.to_string(),
            "--id",
            "trm_box",
        ])
        .args([
            "--key",
            &key_hex,
            "--ca",
            ca.to_str().unwrap(),
            "--reconnect",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    env.wait_online("trm_box", true).await;
    env.send_code("trm_box", "909090").await.unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout);
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt;
    tokio::time::timeout(PROMPT, lines.read_line(&mut line))
        .await
        .unwrap()
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(json["event"], "code");
    assert_eq!(json["code"], "909090");
    assert_eq!(json["amount"], 1234);
    assert_eq!(json["merchant"], "Book Shop");
    // Another connection of the terminal takes over: the simulator, replaced, does not take it
    // back (the two would knock each other off without end), even with --reconnect: it stops,
    // and says why.
    let key = SharedKey::from_hex(&key_hex).unwrap();
    let mut usurper = env
        .terminal("trm_box", &key, DeliveryBehaviour::Acknowledge)
        .await;
    let ended = tokio::time::timeout(PROMPT, child.wait_with_output())
        .await
        .expect("the replaced simulator stops")
        .unwrap();
    assert!(!ended.status.success());
    let said = String::from_utf8_lossy(&ended.stderr);
    assert!(said.contains("not reconnecting"), "{said}");
    assert_eq!(
        usurper.next_delivery(Duration::from_millis(500)).await,
        None
    );

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_payhub"))
        .args([
            "terminal-sim",
            "--switch",
            &env.channels.switch.addr.to_string(),
            "--id",
            "trm_box",
        ])
        .args(["--key", &"ab".repeat(32), "--ca", ca.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.contains("refused the terminal: authentication failed"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

async fn key_bytes(env: &Env, terminal_id: &str) -> Vec<u8> {
    let client = env.db.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT shared_key FROM terminals WHERE id = $1",
            &[&terminal_id],
        )
        .await
        .unwrap()
        .get(0)
}

/// A mock of the gateway's code page, named so, over real HTTP: it hands out a CSRF token to the
/// session cookie and accepts the code only with both, as the real page does. It checks the
/// simulator's own HTTP side (`AutoAnswer`) alone: with the real page, the session cookie comes
/// from the sign-in that sends the code, after the terminal must already be connected. The
/// terminal channel against the real gateway is `e2e_flow`'s
/// `a_code_by_dedicated_terminal_and_the_outcome_told_on_it`.
async fn code_page_stand_in() -> (String, tokio::sync::mpsc::Receiver<String>) {
    use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
    const COOKIE: &str = "payhub_session=s3ss10n";
    let (seen_tx, seen) = tokio::sync::mpsc::channel::<String>(4);
    let cookie_ok = |req: &HttpRequest| {
        req.headers().get("cookie").and_then(|v| v.to_str().ok()) == Some(COOKIE)
    };
    let server = HttpServer::new(move || {
        let seen_tx = seen_tx.clone();
        App::new()
            .route(
                "/pay/{id}/code",
                web::get().to(move |req: HttpRequest| async move {
                    if !cookie_ok(&req) {
                        return HttpResponse::Forbidden().finish();
                    }
                    HttpResponse::Ok().content_type("text/html").body(
                        "<form method=post><input type=\"hidden\" name=\"csrf_token\" value=\"tok&amp;1\">\
                         <input name=\"code\"></form>",
                    )
                }),
            )
            .route(
                "/pay/{id}/code",
                web::post().to(
                    move |req: HttpRequest, form: web::Form<std::collections::HashMap<String, String>>| {
                        let seen_tx = seen_tx.clone();
                        async move {
                            let csrf_ok = form.get("csrf_token").map(String::as_str) == Some("tok&1");
                            if !cookie_ok(&req) || !csrf_ok {
                                return HttpResponse::Forbidden().finish();
                            }
                            let _ = seen_tx.send(form.get("code").cloned().unwrap_or_default()).await;
                            HttpResponse::SeeOther()
                                .insert_header(("location", format!("/pay/{}/result", &req.match_info()["id"])))
                                .finish()
                        }
                    },
                ),
            )
    })
    .workers(1)
    .disable_signals()
    .bind("127.0.0.1:0")
    .unwrap();
    let addr = server.addrs()[0];
    actix_rt::spawn(server.run());
    (format!("http://{addr}/pay/{{payment_id}}/code"), seen)
}

#[actix_rt::test]
async fn the_simulator_can_enter_the_code_on_the_pay_page_itself() {
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let key = env.dedicated("trm_box").await;
    let (answer_url, mut seen) = code_page_stand_in().await;
    let mut sim = spawn(SimConfig {
        client: env.client_options("trm_box", &key),
        behaviour: DeliveryBehaviour::Acknowledge,
        answer_pings: true,
        answer: Some(payhub::sim::terminal::AutoAnswer {
            url: answer_url,
            cookie: "payhub_session=s3ss10n".into(),
            ca_pem: None,
            insecure: false,
        }),
    })
    .await
    .unwrap();
    env.wait_online("trm_box", true).await;
    env.send_code("trm_box", "135790").await.unwrap();
    assert!(matches!(
        sim.next_delivery(PROMPT).await,
        Some(SimEvent::Code { .. })
    ));
    match sim.next_delivery(PROMPT).await {
        Some(SimEvent::Answered {
            payment_id,
            status,
            location,
            error,
        }) => {
            assert_eq!(error, None);
            assert_eq!((payment_id.as_str(), status), ("pay_1", 303));
            assert_eq!(location.as_deref(), Some("/pay/pay_1/result"));
        }
        other => panic!("expected the code answered, got {other:?}"),
    }
    let seen = tokio::time::timeout(PROMPT, seen.recv()).await;
    assert_eq!(seen.ok().flatten().as_deref(), Some("135790"));
}

/// `payhub serve`'s way in: the `[terminal_switch]` section and the gateway's own certificate.
#[actix_rt::test]
async fn start_from_config_serves_tls_with_the_gateway_certificate() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (cert_pem, key_pem) =
        payhub::channels::terminal::tls::self_signed_pem("localhost").unwrap();
    std::fs::write(dir.path().join("server.crt"), &cert_pem).unwrap();
    std::fs::write(dir.path().join("server.key"), &key_pem).unwrap();
    let toml = |cert: &str| {
        format!(
            "[database]\nurl = \"{url}\"\n[http]\npublic_url = \"https://localhost:8443\"\n\
             tls_cert = \"{dir}/{cert}\"\ntls_key = \"{dir}/server.key\"\nmerchant_ca_cert = \"{dir}/ca.crt\"\n\
             [institution]\nid = \"99990001\"\n[terminal_switch]\nack_timeout_ms = 2000\n",
            url = db.url,
            dir = dir.path().display(),
        )
    };
    let config = payhub::config::Config::from_toml(&toml("server.crt"), &[]).unwrap();
    let clock: SharedClock = Arc::new(SystemClock);
    let channels = router::start_from_config(&config, db.pool.clone(), clock.clone(), None)
        .await
        .unwrap();
    let customer_id = insert_customer(&db, "cus_a").await;
    let key = insert_terminal(&db, &customer_id, "trm_box", TerminalKind::Dedicated, None).await;
    let options = ClientOptions {
        switch: channels.switch.addr.to_string(),
        server_name: Some("localhost".into()),
        terminal_id: "trm_box".into(),
        key: key.into(),
        tls: ClientTls::Ca(cert_pem),
    };
    let client = payhub::channels::terminal::client::TerminalClient::connect(&options)
        .await
        .unwrap();
    assert_eq!(client.ack_timeout_ms, 2000);
    assert_eq!(client.keepalive_interval_ms, 30_000);
    channels.shutdown();

    let missing = payhub::config::Config::from_toml(&toml("missing.crt"), &[]).unwrap();
    let error = router::start_from_config(&missing, db.pool.clone(), clock, None)
        .await
        .unwrap_err();
    assert!(format!("{error:#}").contains("missing.crt"), "{error:#}");
}

/// Benchmark (BENCHMARKS.md, "Terminal switch"): code deliveries through the router, the switch,
/// TLS and the simulator's ACK, each with its `customer_messages` row written and updated.
/// `cargo test --test terminal_switch bench_ -- --ignored --nocapture`
#[actix_rt::test]
#[ignore]
async fn bench_code_delivery_round_trip() {
    const SEQUENTIAL: usize = 500;
    const TERMINALS: usize = 8;
    const PER_TERMINAL: usize = 100;
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let mut sims = Vec::new();
    for i in 0..TERMINALS {
        let id = format!("trm_{i}");
        let key = env.dedicated(&id).await;
        sims.push(
            env.terminal(&id, &key, DeliveryBehaviour::Acknowledge)
                .await,
        );
    }

    let mut latencies = Vec::with_capacity(SEQUENTIAL);
    let started = std::time::Instant::now();
    for _ in 0..SEQUENTIAL {
        let one = std::time::Instant::now();
        env.send_code("trm_0", "123456").await.unwrap();
        latencies.push(one.elapsed());
    }
    let sequential_s = started.elapsed().as_secs_f64();
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];

    // Each terminal takes its deliveries one after another; the terminals run at once.
    let started = std::time::Instant::now();
    let mut all = Vec::new();
    for i in 0..TERMINALS {
        let router = env.channels.router.clone();
        let notice = env.code_notice("123456");
        all.push(async move {
            let mut results = Vec::new();
            for _ in 0..PER_TERMINAL {
                let destination = Destination::Terminal(format!("trm_{i}"));
                let notice = notice.clone();
                results.push(
                    router
                        .send(Deliver {
                            destination,
                            notice,
                            recorded: None,
                            answer_within: PROMPT,
                        })
                        .await,
                );
            }
            results
        });
    }
    let results: Vec<_> = futures::future::join_all(all)
        .await
        .into_iter()
        .flatten()
        .collect();
    let concurrent_s = started.elapsed().as_secs_f64();
    assert!(
        results.iter().all(|r| matches!(r, Ok(Ok(_)))),
        "{:?}",
        results.iter().find(|r| !matches!(r, Ok(Ok(_))))
    );
    println!(
        "sequential: {SEQUENTIAL} deliveries in {sequential_s:.2} s = {:.0}/s, p50 {:?}, p99 {:?}",
        SEQUENTIAL as f64 / sequential_s,
        pct(50),
        pct(99)
    );
    println!(
        "concurrent: {} deliveries to {TERMINALS} terminals in {concurrent_s:.2} s = {:.0}/s",
        TERMINALS * PER_TERMINAL,
        (TERMINALS * PER_TERMINAL) as f64 / concurrent_s
    );
    drop(sims);
}

/// Mobile and PDA terminals through the real SMPP session to the SMSC simulator, and the SMS
/// fallback when the dedicated terminal is offline.
#[actix_rt::test]
async fn mobile_terminals_and_pdas_go_to_their_numbers_over_sms() {
    use payhub::channels::smpp::{self, GetStatus, SmppSettings};
    use payhub::sim::smsc::{self, SmscSimOptions};
    let db = fresh_database().await;
    let smsc = smsc::start(SmscSimOptions::loopback("payhub", "secret"))
        .await
        .unwrap();
    let smpp_config = payhub::config::SmppConfig {
        addr: smsc.smpp_addr().to_string(),
        system_id: "payhub".into(),
        password: "secret".into(),
        ..Default::default()
    };
    let clock: SharedClock = Arc::new(SystemClock);
    let session = smpp::start(
        db.pool.clone(),
        clock.clone(),
        SmppSettings::from_config(&smpp_config),
    )
    .unwrap();
    tokio::time::timeout(PROMPT, async {
        while !session.send(GetStatus).await.unwrap().bound {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the SMPP session binds to the simulator");
    let sms = session.recipient();
    let channels = router::start(
        db.pool.clone(),
        clock,
        settings(LONG_ACK_MS, 60_000),
        None,
        Some(sms),
    )
    .await
    .unwrap();
    let customer_id = insert_customer(&db, "cus_a").await;
    insert_payment(&db, &customer_id).await;
    insert_terminal(
        &db,
        &customer_id,
        "trm_phone",
        TerminalKind::Mobile,
        Some("+8613800000001"),
    )
    .await;
    insert_terminal(
        &db,
        &customer_id,
        "trm_pda",
        TerminalKind::Pda,
        Some("8613800000002"),
    )
    .await;
    insert_terminal(
        &db,
        &customer_id,
        "trm_pager",
        TerminalKind::Pager,
        Some("8613800000003"),
    )
    .await;
    // The customer's dedicated terminal is off: a prompt Offline, then the code goes by SMS.
    insert_terminal(&db, &customer_id, "trm_box", TerminalKind::Dedicated, None).await;
    let to_box = Deliver {
        destination: Destination::Terminal("trm_box".into()),
        notice: code_notice("pay_1", "111111"),
        recorded: None,
        answer_within: PROMPT,
    };
    let offline = tokio::time::timeout(PROMPT, channels.router.send(to_box))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(offline, Err(DeliveryError::Offline));
    for (terminal, code) in [("trm_phone", "246810"), ("trm_pda", "135791")] {
        let deliver = Deliver {
            destination: Destination::Terminal(terminal.into()),
            notice: code_notice("pay_1", code),
            recorded: None,
            answer_within: PROMPT,
        };
        tokio::time::timeout(PROMPT, channels.router.send(deliver))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    let received: Vec<(String, bool)> = smsc
        .messages()
        .iter()
        .map(|m| (m.destination_addr.clone(), m.text.contains("Book Shop")))
        .collect();
    assert_eq!(
        received,
        [
            ("8613800000001".to_string(), true),
            ("8613800000002".to_string(), true)
        ]
    );
    assert!(smsc.messages()[0].text.contains("code 246810"));
    assert!(smsc.messages()[1].text.contains("code 135791"));
    // The SMS channel writes its own rows; the router adds none of its own for these.
    let client = db.pool.get().await.unwrap();
    let channels_used: Vec<String> = client
        .query("SELECT channel FROM customer_messages ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(channels_used, ["terminal", "sms", "sms"]);

    let choices = channels
        .router
        .send(ListTerminals { customer_id })
        .await
        .unwrap()
        .unwrap();
    let available: Vec<(&str, bool)> = choices
        .iter()
        .map(|c| (c.id.as_str(), c.available))
        .collect();
    assert_eq!(
        available,
        [
            ("trm_phone", true),
            ("trm_pda", true),
            ("trm_pager", false),
            ("trm_box", false)
        ]
    );
}

/// A terminal registered with its public key proves itself with a signature (the issue's
/// "HMAC or signature"); a wrong private key, a signature where a shared key is registered, or
/// a shared key's proof where a public key is (registration stored both until 1 Dec), is
/// refused.
#[actix_rt::test]
async fn a_terminal_registered_with_a_public_key_signs_the_challenge() {
    use payhub::channels::terminal::auth::TerminalKey;
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let device = openssl::pkey::PKey::generate_ed25519().unwrap();
    let public_pem = String::from_utf8(device.public_key_to_pem().unwrap()).unwrap();
    let printed_key = SharedKey::new([7; 32]);
    let client = env.db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO terminals (id, customer_id, kind, label, serial, public_key, shared_key)
             VALUES ('trm_signer', $1, 'dedicated', 'set-top box card', 'STB-1', $2, $3)",
            &[&env.customer_id, &public_pem, &vec![7u8; 32]],
        )
        .await
        .unwrap();
    let with_printed_key = spawn(SimConfig {
        client: env.client_options("trm_signer", &printed_key),
        behaviour: DeliveryBehaviour::Acknowledge,
        answer_pings: true,
        answer: None,
    })
    .await;
    assert!(
        matches!(with_printed_key, Err(ClientError::Refused { code: 2, .. })),
        "{:?}",
        with_printed_key.err()
    );
    let private = |key: &openssl::pkey::PKey<openssl::pkey::Private>| {
        TerminalKey::private_from_pem(&key.private_key_to_pem_pkcs8().unwrap()).unwrap()
    };
    let connect = |key: TerminalKey, id: &str| {
        let mut options = env.client_options(id, &SharedKey::new([0; 32]));
        options.key = key;
        spawn(SimConfig {
            client: options,
            behaviour: DeliveryBehaviour::Acknowledge,
            answer_pings: true,
            answer: None,
        })
    };

    let mut sim = connect(private(&device), "trm_signer").await.unwrap();
    env.send_code("trm_signer", "864213").await.unwrap();
    assert!(
        matches!(sim.next_delivery(PROMPT).await, Some(SimEvent::Code { code, .. }) if code == "864213")
    );
    sim.stop();

    let stranger = openssl::pkey::PKey::generate_ed25519().unwrap();
    let refused = connect(private(&stranger), "trm_signer").await;
    assert!(
        matches!(refused, Err(ClientError::Refused { code: 2, .. })),
        "{:?}",
        refused.err()
    );
    env.dedicated("trm_box").await;
    let refused = connect(private(&device), "trm_box").await;
    assert!(
        matches!(refused, Err(ClientError::Refused { code: 2, .. })),
        "{:?}",
        refused.err()
    );
}

/// A sender that gave up waiting marks its notice failed, unless the switch holds it for the
/// terminal or is sending it (the answer that it is held may have come after the sender's wait).
#[actix_rt::test]
async fn a_notice_held_or_being_sent_is_not_failed_by_a_sender_that_gave_up() {
    use payhub::channels::smpp::store::insert_queued;
    use payhub::channels::terminal::held_outcomes::{HELD_NOTICE, held_notice_sending};
    use payhub_actors::store::messages::mark_failed;
    let env = start(settings(LONG_ACK_MS, 60_000)).await;
    let now = chrono::Utc::now();
    let mut rows = Vec::new();
    for error in [
        Some(HELD_NOTICE.to_owned()),
        Some(held_notice_sending("sw_1")),
        None,
    ] {
        let row = insert_queued(&env.db.pool, now, &env.payment_id, NoticeKind::Outcome, "t")
            .await
            .unwrap();
        let client = env.db.pool.get().await.unwrap();
        client
            .execute(
                "UPDATE customer_messages SET error = $2 WHERE id = $1",
                &[&row, &error],
            )
            .await
            .unwrap();
        mark_failed(&env.db.pool, now, row, "no answer from the channel")
            .await
            .unwrap();
        rows.push(row);
    }
    let client = env.db.pool.get().await.unwrap();
    let statuses: Vec<String> = client
        .query(
            "SELECT status FROM customer_messages WHERE id = ANY($1) ORDER BY id",
            &[&rows],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, ["queued", "queued", "failed"]);
}
