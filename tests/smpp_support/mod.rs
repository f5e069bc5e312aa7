//! What the SMPP tests share: a fast session configuration, the simulator, a payment to hang
//! message rows on, and a code message.
#![allow(dead_code)] // each test file uses a part

use payhub::channels::smpp::SmppSettings;
use payhub::sim::smsc::{self, SmscSim, SmscSimOptions};
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::{Amount, Currency, Msisdn};
use payhub_actors::messages::{Deliver, Destination, Notice, NoticeKind};
use payhub_actors::store::testing::TestDb;
use payhub_actors::{Secret, SystemClock};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SYSTEM_ID: &str = "payhub";
pub const PASSWORD: &str = "secret";
pub const MSISDN: &str = "+8613800138000";
pub const CODE: &str = "493817";

pub fn settings(sim: &SmscSim) -> SmppSettings {
    settings_for(sim.smpp_addr().to_string())
}

/// A fast session configuration for the SMSC at `addr`.
pub fn settings_for(addr: String) -> SmppSettings {
    let config = payhub::config::SmppConfig {
        addr,
        system_id: SYSTEM_ID.into(),
        password: PASSWORD.into(),
        response_timeout_ms: 1_000,
        ..Default::default()
    };
    let mut settings = SmppSettings::from_config(&config);
    settings.rebind_backoff_min_ms = 50;
    settings.rebind_backoff_max_ms = 200;
    settings.throttle_backoff_min_ms = 20;
    settings.throttle_backoff_max_ms = 100;
    settings
}

pub async fn simulator() -> SmscSim {
    smsc::start(SmscSimOptions::loopback(SYSTEM_ID, PASSWORD))
        .await
        .expect("simulator starts")
}

pub fn clock() -> SharedClock {
    Arc::new(SystemClock)
}

/// A merchant and a payment for the message rows to belong to.
pub async fn payment(db: &TestDb) -> String {
    let client = db.pool.get().await.unwrap();
    let suffix = hex::encode(payhub_actors::ids::os_random::<4>());
    let merchant = format!("mer_{suffix}");
    let payment = format!("pay_{suffix}");
    client
        .execute(
            "INSERT INTO merchants (id, name, cert_fingerprint, cert_serial, webhook_secret, \
               bank_id, account, terminal_id, card_acceptor_id) \
             VALUES ($1, 'Book Shop', $1, '01', 'whsec', '0001', '6222000011112222', 'T0000001', 'M00000000000001')",
            &[&merchant],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO payments (id, merchant_id, order_id, amount_minor, currency, return_url, \
               notify_url, created_at, expires_at, updated_at) \
             VALUES ($1, $2, 'A-1', 1234, 'CNY', 'https://shop/r', 'https://shop/n', now(), now() + interval '15 minutes', now())",
            &[&payment, &merchant],
        )
        .await
        .unwrap();
    payment
}

pub fn code_message(payment_id: &str) -> Deliver {
    Deliver {
        destination: Destination::Sms(Msisdn::parse(MSISDN).unwrap()),
        notice: Notice {
            payment_id: payment_id.into(),
            kind: NoticeKind::Code,
            merchant_name: "Book Shop".into(),
            amount: Amount::parse(1234).unwrap(),
            currency: Currency::Cny,
            code: Some(Secret::new(CODE.into())),
            validity_s: 300,
            outcome: None,
            unregistered_receiver: false,
        },
        recorded: None,
        // The payment's wait for a channel, by default.
        answer_within: std::time::Duration::from_millis(
            payhub_actors::transaction::PaymentSettings::default().delivery_timeout_ms,
        ),
    }
}

pub async fn wait_until<F: AsyncFnMut() -> bool>(what: &str, mut done: F) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
