//! Bank links end to end: the real `BankRouter`/`BankLinkActor` over TCP on port 0 to the real bank
//! simulator, both on a fresh PostgreSQL database.

use actix::Addr;
use payhub::sim::bank::testing::{seed_accounts, spawn_on_own_thread};
use payhub::sim::bank::{Faults, SimHandle, SimOptions, SimStoreChoice, SimTls};
use payhub_actors::bank::{
    self, BankRouter, LinkOwner, LinkSettings, LinkStatuses, OriginalDebit, PrepareDebit,
    PreparedDebit, ReverseDebit, SendPrepared, Shutdown,
};
use payhub_actors::clock::SharedClock;
use payhub_actors::domain::{AccountNumber, Amount, BankId, Currency};
use payhub_actors::messages::{BankError, Debit, DebitRequest, DebitResponse};
use payhub_actors::store::testing::{TestDb, fresh_database};
use payhub_iso8583::Message;
use payhub_iso8583::mac::{MacKey, retail_mac};
use std::sync::Arc;
use std::time::Duration;

const BANK: &str = "0001";
const SHOP: &str = "shop-settlement";
const INSTITUTION: &str = "99990001";

fn clock() -> SharedClock {
    Arc::new(payhub_actors::SystemClock)
}

fn account(n: usize) -> String {
    format!("acct{n:06}")
}

/// Accounts `acct000000..` with `balance(n)` each, plus the shop's settlement account.
async fn start_sim(db: &TestDb, accounts: usize, balance: impl Fn(usize) -> i64) -> SimHandle {
    start_sim_with(db, accounts, balance, |_| {}).await
}

async fn start_sim_with(
    db: &TestDb,
    accounts: usize,
    balance: impl Fn(usize) -> i64,
    configure: impl FnOnce(&mut SimOptions),
) -> SimHandle {
    let pool = payhub_actors::store::pool(&db.url, 16).unwrap();
    let mut options = SimOptions::new(SimStoreChoice::Postgres(pool), &[BANK, "0002"]);
    let rows = (0..accounts).map(|n| (account(n), balance(n)));
    options.seed = seed_accounts(BANK, rows.chain([(SHOP.to_owned(), 0)]));
    configure(&mut options);
    spawn_on_own_thread(options).await
}

fn settings(name: &str, addr: &str) -> LinkSettings {
    let mut s = LinkSettings::new(
        name,
        addr,
        LinkOwner::ThirdParty,
        vec![BankId::parse(BANK).unwrap()],
    );
    s.response_timeout_ms = 500;
    s.echo_interval_ms = 60_000;
    s.reversal_interval_ms = 100;
    s.reconnect_backoff_min_ms = 20;
    s.reconnect_backoff_max_ms = 200;
    s
}

fn start_router(db: &TestDb, links: Vec<LinkSettings>) -> Addr<BankRouter> {
    bank::start(db.pool.clone(), clock(), links, INSTITUTION).unwrap()
}

fn request(rrn: u64, payer: usize, amount_minor: i64) -> DebitRequest {
    DebitRequest {
        payment_id: format!("pay_{rrn}"),
        rrn: format!("{rrn:012}"),
        amount: Amount::parse(amount_minor).unwrap(),
        currency: Currency::Cny,
        payer_bank: BankId::parse(BANK).unwrap(),
        payer_account: AccountNumber::parse(&account(payer)).unwrap(),
        payee_account: AccountNumber::parse(SHOP).unwrap(),
        terminal_id: "TERM0001".into(),
        card_acceptor_id: "MERCHANT0000001".into(),
        merchant_name_location: "Book Shop, Beijing".into(),
    }
}

/// Waits (bounded: 500 looks, 10 ms apart) until `check` holds.
async fn eventually<F, Fut>(what: &str, check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually_in(what, 500, check).await;
}

/// Waits until `check` holds, for at most `looks` looks 10 ms apart.
async fn eventually_in<F, Fut>(what: &str, looks: u32, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..looks {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn wait_signed_on(router: &Addr<BankRouter>, links: usize) {
    eventually("the links are signed on", || async {
        let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
        statuses.iter().filter(|s| s.state == "signed_on").count() == links
    })
    .await;
}

/// A fresh database, the simulator with account 0 holding `opening`, and a router whose one link
/// to it is signed on.
async fn one_link(opening: i64) -> (TestDb, SimHandle, Addr<BankRouter>) {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| opening).await;
    let router = start_router(&db, vec![settings("bips-a", &sim.addr().to_string())]);
    wait_signed_on(&router, 1).await;
    (db, sim, router)
}

/// A debit the bank applies but never answers: the router says `Timeout` (and queues its
/// reversal). The bank's answers stay lost until the test changes its faults.
async fn debit_left_unanswered(sim: &SimHandle, router: &Addr<BankRouter>, request: DebitRequest) {
    sim.set_faults(Faults {
        drop_pct: 100,
        ..Faults::default()
    });
    let err = router.send(Debit(request)).await.unwrap().unwrap_err();
    assert_eq!(err, BankError::Timeout);
}

/// A debit the router must answer (approved or declined).
async fn debit(router: &Addr<BankRouter>, request: DebitRequest) -> DebitResponse {
    router.send(Debit(request)).await.unwrap().unwrap()
}

async fn prepare(router: &Addr<BankRouter>, request: DebitRequest) -> PreparedDebit {
    router.send(PrepareDebit(request)).await.unwrap().unwrap()
}

async fn pending_reversals(db: &TestDb) -> i64 {
    let client = db.pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM reversals WHERE completed_at IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn balance(sim: &SimHandle, n: usize) -> i64 {
    sim.balance(BANK, &account(n)).await.unwrap().unwrap()
}

#[actix_rt::test]
async fn signs_on_before_any_debit_and_debits_once() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 2, |_| 10_000).await;
    let router = start_router(&db, vec![settings("bips-a", &sim.addr().to_string())]);
    wait_signed_on(&router, 1).await;
    let answer = debit(&router, request(1, 0, 2_500)).await;
    assert_eq!(answer.response_code, "00");
    assert_eq!(answer.link, "bips-a");
    assert_eq!(answer.approval_code.as_deref().map(str::len), Some(6));
    let stats = sim.stats();
    assert_eq!(stats.sign_ons, 1);
    assert_eq!(stats.before_sign_on, 0, "a 0200 went out before the 0810");
    // The same RRN again: the original answer, no second debit.
    let again = debit(&router, request(1, 0, 2_500)).await;
    assert_eq!(again, answer);
    assert_eq!(balance(&sim, 0).await, 7_500);
    assert_eq!(sim.balance(BANK, SHOP).await.unwrap(), Some(2_500));
    // Declines: insufficient funds, unknown account.
    let poor = debit(&router, request(2, 1, 10_001)).await;
    assert_eq!(poor.response_code, "51");
    assert_eq!(poor.approval_code, None);
    let stranger = debit(&router, request(3, 99, 1)).await;
    assert_eq!(stranger.response_code, "14");
    router.send(Shutdown).await.unwrap();
    eventually("the link signed off", || async {
        sim.stats().sign_offs == 1
    })
    .await;
}

#[actix_rt::test]
async fn no_route_fails_at_once_and_no_link_after_the_sign_on_wait() {
    let db = fresh_database().await;
    // Nothing listens on this port: the link never signs on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = closed.local_addr().unwrap().to_string();
    drop(closed);
    let router = start_router(&db, vec![settings("bips-a", &addr)]);
    let mut unknown = request(1, 0, 100);
    unknown.payer_bank = BankId::parse("7777").unwrap();
    let err = router.send(Debit(unknown)).await.unwrap().unwrap_err();
    assert_eq!(err, BankError::NoRoute(BankId::parse("7777").unwrap()));
    let started = tokio::time::Instant::now();
    let err = router
        .send(Debit(request(2, 0, 100)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, BankError::Unavailable);
    // The wait is bounded (a check that it ends, not a measure of speed).
    assert!(started.elapsed() >= Duration::from_millis(bank::SIGN_ON_WAIT_MS_MAX));
    assert!(started.elapsed() < Duration::from_millis(5 * bank::SIGN_ON_WAIT_MS_MAX));
    let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
    assert_eq!(statuses[0].state, "down");
    assert_eq!(statuses[0].owner, "third_party");
}

#[actix_rt::test]
async fn echoes_when_idle() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 100).await;
    let mut s = settings("bips-a", &sim.addr().to_string());
    s.echo_interval_ms = 50;
    let router = start_router(&db, vec![s]);
    wait_signed_on(&router, 1).await;
    eventually("two echoes", || async { sim.stats().echoes >= 2 }).await;
    let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
    assert!(statuses[0].last_echo_at.is_some());
}

#[actix_rt::test]
async fn thousand_concurrent_debits_are_matched_to_their_answers() {
    let db = fresh_database().await;
    // Even accounts can pay their debit, odd ones are short by one minor unit.
    let amount = |n: usize| 100 + n as i64;
    let sim = start_sim(&db, 1_000, |n| amount(n) - (n % 2) as i64).await;
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.response_timeout_ms = 20_000;
    let router = start_router(&db, vec![link]);
    wait_signed_on(&router, 1).await;
    let answers = futures::future::join_all(
        (0..1_000).map(|n| router.send(Debit(request(n as u64 + 1, n, amount(n))))),
    )
    .await;
    for (n, answer) in answers.into_iter().enumerate() {
        let answer = answer.unwrap().unwrap();
        let expected = if n % 2 == 0 { "00" } else { "51" };
        assert_eq!(answer.response_code, expected, "debit {n}");
    }
    assert_eq!(balance(&sim, 0).await, 0);
    assert_eq!(balance(&sim, 1).await, 100);
    let paid: i64 = (0..1_000).filter(|n| n % 2 == 0).map(amount).sum();
    assert_eq!(sim.balance(BANK, SHOP).await.unwrap(), Some(paid));
}

#[actix_rt::test]
async fn timeout_queues_a_reversal_that_is_repeated_until_0430() {
    let (db, sim, router) = one_link(1_000).await;
    debit_left_unanswered(&sim, &router, request(1, 0, 300)).await;
    // The debit was applied; its reversal is stored and repeated while the answers are lost.
    // The first 0420 may already have undone it (only its 0430 is lost), so either is right here.
    let balance_now = balance(&sim, 0).await;
    assert!(
        balance_now == 700 || balance_now == 1_000,
        "balance {balance_now}"
    );
    assert_eq!(pending_reversals(&db).await, 1);
    eventually("the reversal was repeated", || async {
        sim.stats().reversals >= 2
    })
    .await;
    let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
    assert_eq!(statuses[0].reversals_pending, 1);
    assert!(statuses[0].oldest_pending_reversal_age_s.is_some());
    sim.set_faults(Faults::default());
    eventually("the 0430 closed the reversal", || async {
        pending_reversals(&db).await == 0
    })
    .await;
    assert_eq!(balance(&sim, 0).await, 1_000);
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one("SELECT attempts, response_code, reason FROM reversals", &[])
        .await
        .unwrap();
    assert!(row.get::<_, i32>(0) >= 2);
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("00"));
    assert_eq!(row.get::<_, String>(2), "timeout");
}

/// A 0430 answering 96 (or 91) says the BIPS could not process the reversal: nothing was
/// undone, so the reversal stays pending and is sent again until a 0430 that processed it.
#[actix_rt::test]
async fn a_reversal_the_bips_could_not_process_is_sent_again() {
    let (db, sim, router) = one_link(1_000).await;
    debit_left_unanswered(&sim, &router, request(1, 0, 300)).await;
    sim.set_faults(Faults {
        reversal_fail_pct: 100,
        ..Faults::default()
    });
    let before = sim.stats().reversals;
    eventually("the reversal was answered 96 twice", || async {
        sim.stats().reversals >= before + 2
    })
    .await;
    assert_eq!(pending_reversals(&db).await, 1, "still pending");
    assert_eq!(balance(&sim, 0).await, 700, "nothing undone yet");
    eventually("the refusal noted on the pending row", || async {
        let client = db.pool.get().await.unwrap();
        let row = client
            .query_one(
                "SELECT response_code, completed_at IS NULL FROM reversals",
                &[],
            )
            .await
            .unwrap();
        (row.get::<_, Option<String>>(0).as_deref(), row.get(1)) == (Some("96"), true)
    })
    .await;
    sim.set_faults(Faults::default());
    eventually("a processed 0430 closed the reversal", || async {
        pending_reversals(&db).await == 0
    })
    .await;
    assert_eq!(balance(&sim, 0).await, 1_000);
}

/// A BIPS that keeps answering 96 to a reversal: the reversal is never closed (the customer may
/// be debited until the BIPS processes it), and its repeats come further apart with each
/// refusal: the link's 100 ms interval, doubled for each.
#[actix_rt::test]
async fn a_reversal_the_bips_keeps_refusing_stays_pending_and_is_repeated_less_often() {
    let (db, sim, router) = one_link(1_000).await;
    debit_left_unanswered(&sim, &router, request(1, 0, 300)).await;
    sim.set_faults(Faults {
        reversal_fail_pct: 100,
        ..Faults::default()
    });
    let spacing_ms = || async {
        let client = db.pool.get().await.unwrap();
        let row = client
            .query_one(
                "SELECT (extract(epoch FROM next_attempt_at - last_sent_at) * 1000)::float8,
                        completed_at IS NULL
                   FROM reversals",
                &[],
            )
            .await
            .unwrap();
        assert!(row.get::<_, bool>(1), "the reversal was closed");
        row.get::<_, Option<f64>>(0).unwrap_or(0.0)
    };
    // After four refusals, the next repeat is 1.6 s after its send.
    eventually("repeats spaced out", || async {
        spacing_ms().await >= 1_599.0
    })
    .await;
    assert_eq!(pending_reversals(&db).await, 1, "still pending");
    assert_eq!(balance(&sim, 0).await, 700, "nothing undone yet");
    sim.set_faults(Faults::default());
}

#[actix_rt::test]
async fn reversal_survives_a_gateway_restart() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let link = settings("bips-a", &sim.addr().to_string());
    let first = start_router(&db, vec![link.clone()]);
    wait_signed_on(&first, 1).await;
    debit_left_unanswered(&sim, &first, request(1, 0, 400)).await;
    first.send(Shutdown).await.unwrap();
    // The 0420 may have reached the bank, but no 0430 came back: still pending.
    assert_eq!(pending_reversals(&db).await, 1);
    let reversals_seen = sim.stats().reversals;
    // A new gateway process: only the database remembers the reversal.
    sim.set_faults(Faults::default());
    let second = start_router(&db, vec![link]);
    eventually("the reloaded reversal completed", || async {
        pending_reversals(&db).await == 0
    })
    .await;
    assert!(sim.stats().reversals > reversals_seen);
    assert_eq!(balance(&sim, 0).await, 1_000);
    let answer = debit(&second, request(2, 0, 50)).await;
    assert_eq!(answer.response_code, "00");
}

/// A link renamed in the configuration (same address, the same BIPS): the reversals still pending
/// on its old name follow it, and are sent. One of a BIPS no longer configured stays, and is
/// counted: sent to another BIPS, it would be answered `00` there and the debit would stand.
#[actix_rt::test]
async fn reversals_of_a_renamed_link_follow_it_and_those_of_a_removed_one_wait() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let old = start_router(&db, vec![settings("bips-a", &sim.addr().to_string())]);
    wait_signed_on(&old, 1).await;
    debit_left_unanswered(&sim, &old, request(1, 0, 400)).await;
    old.send(Shutdown).await.unwrap();
    sim.set_faults(Faults::default());
    let removed = bank::reversals::ReversalRecord {
        link_name: "bips-gone".into(),
        link_addr: Some("192.0.2.1:8583".into()),
        rrn: "000000000099".into(),
        ..bank::reversals::pending(&db.pool, "bips-a", 1)
            .await
            .unwrap()[0]
            .record
            .clone()
    };
    let reason = bank::reversals::ReversalReason::Timeout;
    bank::reversals::queue(
        &db.pool,
        &removed,
        reason,
        chrono::Utc::now(),
        Duration::ZERO,
    )
    .await
    .unwrap();

    // The link is now called bips-b; bips-gone is no longer configured.
    let renamed = settings("bips-b", &sim.addr().to_string());
    let adopted = bank::reversals::adopt_orphans(&db.pool, std::slice::from_ref(&renamed))
        .await
        .unwrap();
    assert_eq!(
        adopted,
        bank::reversals::Adopted {
            moved: 1,
            stranded: 1,
            stranded_links: vec!["bips-gone".into()],
            readdressed: 0,
            readdressed_links: vec![],
        }
    );
    // Its name now at another address, its address under another name: it follows its address.
    let elsewhere = settings("bips-b", "192.0.2.9:8583");
    let same_bips = settings("bips-c", &sim.addr().to_string());
    let both = [elsewhere.clone(), same_bips];
    let adopted = bank::reversals::adopt_orphans(&db.pool, &both)
        .await
        .unwrap();
    assert_eq!((adopted.moved, adopted.readdressed), (1, 0));
    // Its name at another address, and no link at its address: counted for the operator.
    let moved = settings("bips-c", "192.0.2.9:8583");
    let adopted = bank::reversals::adopt_orphans(&db.pool, std::slice::from_ref(&moved))
        .await
        .unwrap();
    assert_eq!(
        (adopted.readdressed, adopted.readdressed_links),
        (1, vec!["bips-c".to_owned()])
    );
    let adopted = bank::reversals::adopt_orphans(&db.pool, std::slice::from_ref(&renamed))
        .await
        .unwrap();
    assert_eq!(adopted.moved, 1, "back under bips-b, at its address");
    let _new = start_router(&db, vec![renamed]);
    eventually("the renamed link's reversal completed", || async {
        pending_reversals(&db).await == 1
    })
    .await;
    assert_eq!(balance(&sim, 0).await, 1_000, "the debit is undone");
}

/// A payment's debit went over a link that is no longer configured (the gateway restarted with
/// another configuration while the payment was `processing`). Its reversal is not routed to
/// another BIPS serving the payer's bank, which never saw the debit: it waits under the old name,
/// with the link's address, and is sent once a link of that name is configured again.
#[actix_rt::test]
async fn a_reversal_whose_link_was_removed_waits_for_it_and_goes_nowhere_else() {
    let (db, sim, first) = one_link(1_000).await;
    let committed = approved_then_stopped(&first).await;

    let mut options = SimOptions::new(SimStoreChoice::Memory, &[BANK]);
    options.seed = seed_accounts(BANK, [(account(0), 1_000), (SHOP.to_owned(), 0)]);
    let other_bips = spawn_on_own_thread(options).await;
    let other = settings("bips-other", &other_bips.addr().to_string());
    let second = start_router(&db, vec![other]);
    wait_signed_on(&second, 1).await;
    let reverse = ReverseDebit {
        request: request(1, 0, 300),
        original: Some(committed),
    };
    second.send(reverse).await.unwrap().unwrap();
    let client = db.pool.get().await.unwrap();
    let waiting = client
        .query_one(
            "SELECT link_name, link_addr FROM reversals WHERE completed_at IS NULL",
            &[],
        )
        .await
        .unwrap();
    let (name, addr): (String, Option<String>) = (waiting.get(0), waiting.get(1));
    assert_eq!(
        (name, addr),
        ("bips-a".into(), Some(sim.addr().to_string()))
    );
    let statuses = second.send(LinkStatuses).await.unwrap().unwrap();
    assert_eq!(statuses[0].reversals_pending, 0);
    second.send(Shutdown).await.unwrap();
    assert_eq!(other_bips.stats().reversals, 0);

    let _third = start_router(&db, vec![settings("bips-a", &sim.addr().to_string())]);
    eventually("the waiting reversal completed", || async {
        pending_reversals(&db).await == 0
    })
    .await;
    assert_eq!(balance(&sim, 0).await, 1_000, "the debit is undone");
}

/// Debits 300 of account 0 (`request(1, 0, 300)`) through a prepared 0200, approved, then stops
/// `router` as a restart would: the wire identity the payment committed.
async fn approved_then_stopped(router: &Addr<BankRouter>) -> OriginalDebit {
    let prepared = prepare(router, request(1, 0, 300)).await;
    let committed = prepared.original();
    let answer = router.send(SendPrepared(prepared)).await.unwrap().unwrap();
    assert_eq!(answer.response_code, "00");
    router.send(Shutdown).await.unwrap();
    committed
}

/// A BIPS that accepts the sign-on and then drops the connection at once (here, at the first echo)
/// is reconnected to with a growing delay, not at the minimum each time: a sign-on alone does not
/// reset the backoff, only a connection that stays signed on does.
#[actix_rt::test]
async fn a_bank_that_drops_each_connection_after_its_sign_on_is_backed_off() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    sim.set_faults(Faults {
        close_every: 2,
        ..Faults::default()
    });
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.echo_interval_ms = 20;
    link.reconnect_backoff_min_ms = 50;
    link.reconnect_backoff_max_ms = 5_000;
    let _router = start_router(&db, vec![link]);
    eventually("a second connection", || async {
        sim.stats().connections >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Reset at each sign-on, the backoff allowed a connection every 50 ms and a little: about 20
    // here. Doubling, 50 + 100 + 200 + 400 + 800 ms allow at most 6.
    let connections = sim.stats().connections;
    assert!(connections <= 7, "{connections} connections");
    assert!(sim.stats().sign_ons >= 2);
}

/// The debit's link was renamed while its payment was `processing` (same address, the same BIPS):
/// the reversal goes over the renamed link, found by the address the payment committed.
#[actix_rt::test]
async fn a_reversal_whose_link_was_renamed_goes_over_it() {
    let (db, sim, first) = one_link(1_000).await;
    let committed = approved_then_stopped(&first).await;
    assert_eq!(committed.link_addr, Some(sim.addr().to_string()));
    let renamed = start_router(&db, vec![settings("bips-b", &sim.addr().to_string())]);
    wait_signed_on(&renamed, 1).await;
    reverse_until_0430(&renamed, &db, request(1, 0, 300), committed).await;
    assert_eq!(balance(&sim, 0).await, 1_000, "the debit is undone");
    assert_eq!(reversal_counts(&sim), (1, 0));
}

/// The debit's link name now belongs to another BIPS, and the debit's BIPS is configured under
/// another name: the reversal goes by the address the payment committed, not by the name (the
/// other BIPS would answer 00 to a debit it never saw, and the debit would stand).
#[actix_rt::test]
async fn a_reversal_follows_its_address_when_its_links_name_went_to_another_bips() {
    let (db, sim, first) = one_link(1_000).await;
    let committed = approved_then_stopped(&first).await;
    let mut options = SimOptions::new(SimStoreChoice::Memory, &[BANK]);
    options.seed = seed_accounts(BANK, [(account(0), 1_000), (SHOP.to_owned(), 0)]);
    let other_bips = spawn_on_own_thread(options).await;
    let links = vec![
        settings("bips-a", &other_bips.addr().to_string()),
        settings("bips-b", &sim.addr().to_string()),
    ];
    let second = start_router(&db, links);
    wait_signed_on(&second, 2).await;
    reverse_until_0430(&second, &db, request(1, 0, 300), committed).await;
    assert_eq!(balance(&sim, 0).await, 1_000, "undone where it was made");
    assert_eq!(other_bips.stats().reversals, 0);
}

/// The gateway's institution id changed while a payment was `processing`: its reversal names the
/// acquirer that sent the debit (fields 32 and 90), which the BIPS matches, not the new one.
#[actix_rt::test]
async fn a_reversal_after_the_institution_id_changed_names_the_debits_acquirer() {
    let (db, sim, first) = one_link(1_000).await;
    let committed = approved_then_stopped(&first).await;
    assert_eq!(committed.acquirer_id.as_deref(), Some(INSTITUTION));
    let links = vec![settings("bips-a", &sim.addr().to_string())];
    let renumbered = bank::start(db.pool.clone(), clock(), links, "77770002").unwrap();
    wait_signed_on(&renumbered, 1).await;
    reverse_until_0430(&renumbered, &db, request(1, 0, 300), committed).await;
    assert_eq!(balance(&sim, 0).await, 1_000, "the debit is undone");
    assert_eq!(reversal_counts(&sim), (1, 0));
}

/// A debit whose connection drops before its 0210 may still be in the works at the bank: its
/// reversal waits one response timeout before it goes, even though the link is back at once.
/// (Sent first, it would find nothing to undo, be answered 00, and leave the debit standing.)
#[actix_rt::test]
async fn a_reversal_after_a_drop_waits_for_the_debit_to_be_surely_done() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.response_timeout_ms = 3_000;
    let router = start_router(&db, vec![link]);
    wait_signed_on(&router, 1).await;
    // The connection's second message (the 0200, after the sign-on) closes it, unapplied.
    sim.set_faults(Faults {
        close_every: 2,
        ..Faults::default()
    });
    let err = router.send(Debit(request(1, 0, 300))).await.unwrap();
    assert_eq!(err, Err(BankError::Timeout));
    sim.set_faults(Faults::default());
    wait_signed_on(&router, 1).await;
    assert_eq!(pending_reversals(&db).await, 1);
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert_eq!(sim.stats().reversals, 0, "not before the response timeout");
    eventually_in("the reversal was sent and answered", 1_000, || async {
        pending_reversals(&db).await == 0
    })
    .await;
    assert_eq!(sim.stats().reversals, 1);
}

#[actix_rt::test]
async fn link_drop_and_reconnect() {
    let (db, sim, router) = one_link(1_000_000).await;
    // Every 4th message closes the connection: sign-on, two debits, then a drop.
    sim.set_faults(Faults {
        close_every: 4,
        ..Faults::default()
    });
    let mut approved = 0;
    for n in 0..12u64 {
        match router.send(Debit(request(n + 1, 0, 10))).await.unwrap() {
            Ok(a) if a.response_code == "00" => approved += 1,
            Ok(a) => panic!("unexpected answer {a:?}"),
            Err(BankError::Timeout | BankError::Unavailable) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert!(approved >= 4, "only {approved} debits approved");
    assert!(sim.stats().connections >= 3);
    assert!(sim.stats().sign_ons >= 3);
    sim.set_faults(Faults::default());
    wait_signed_on(&router, 1).await;
    eventually("reversals completed", || async {
        pending_reversals(&db).await == 0
    })
    .await;
    assert_eq!(balance(&sim, 0).await, 1_000_000 - 10 * approved);
}

#[actix_rt::test]
async fn second_link_takes_over_and_busy_at_the_limit() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000_000).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().to_string();
    drop(closed);
    let mut live = settings("bips-b", &sim.addr().to_string());
    live.in_flight_max = 2;
    let router = start_router(&db, vec![settings("bips-a", &dead), live]);
    wait_signed_on(&router, 1).await;
    let answer = debit(&router, request(1, 0, 10)).await;
    assert_eq!(answer.link, "bips-b");
    sim.set_faults(Faults {
        delay_ms: 100,
        ..Faults::default()
    });
    let answers =
        futures::future::join_all((0..6u64).map(|n| router.send(Debit(request(n + 10, 0, 10)))))
            .await;
    let busy = answers
        .iter()
        .filter(|a| matches!(a, Ok(Err(BankError::Busy))))
        .count();
    assert!(busy >= 1, "{answers:?}");
}

#[actix_rt::test]
async fn gateway_reversal_of_an_approved_debit() {
    let (db, sim, router) = one_link(1_000).await;
    let prepared = prepare(&router, request(1, 0, 250)).await;
    let original = prepared.original();
    let answer = router.send(SendPrepared(prepared)).await.unwrap().unwrap();
    assert_eq!(answer.response_code, "00");
    assert_eq!(balance(&sim, 0).await, 750);
    router
        .send(ReverseDebit {
            request: request(1, 0, 250),
            original: Some(original),
        })
        .await
        .unwrap()
        .unwrap();
    eventually("reversed", || async { pending_reversals(&db).await == 0 }).await;
    assert_eq!(balance(&sim, 0).await, 1_000);
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one("SELECT reason, original_stan FROM reversals", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "gateway_incomplete");
    assert_ne!(row.get::<_, String>(1), "000000");
    assert_eq!(sim.stats().reversal_mismatches, 0);
}

/// 2,000 debits with every fault switch on (seeded): whatever was lost, duplicated, delayed, cut
/// or failed, each account ends at its opening balance minus the debits the gateway saw approved.
#[actix_rt::test]
async fn seeded_faults_keep_every_balance_exact() {
    const ACCOUNTS: usize = 50;
    const DEBITS: usize = 2_000;
    const OPENING: i64 = 20_000;
    let db = fresh_database().await;
    let sim = start_sim(&db, ACCOUNTS, |_| OPENING).await;
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.response_timeout_ms = 600;
    link.reversal_interval_ms = 300;
    link.reconnect_backoff_min_ms = 5;
    link.reconnect_backoff_max_ms = 40;
    let router = start_router(&db, vec![link]);
    wait_signed_on(&router, 1).await;
    sim.set_faults(Faults {
        drop_pct: 5,
        delay_ms: 700,
        duplicate_pct: 10,
        close_every: 2_000,
        fail_pct: 5,
        reversal_fail_pct: 5,
        approved_as: 0,
    });
    let mut rng_state: u64 = 0x5eed;
    let mut next = move || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let plan: Vec<(usize, i64)> = (0..DEBITS)
        .map(|_| {
            (
                (next() % ACCOUNTS as u64) as usize,
                1 + (next() % 900) as i64,
            )
        })
        .collect();
    let mut approved = vec![0i64; ACCOUNTS];
    let mut outcomes = std::collections::BTreeMap::<String, usize>::new();
    let started = std::time::Instant::now();
    let debit = |rrn: usize, payer: usize, amount: i64| Debit(request(rrn as u64, payer, amount));
    for (chunk_no, chunk) in plan.chunks(100).enumerate() {
        // A debit refused before it left (link down or full) is sent again, same RRN.
        let mut todo: Vec<usize> = (0..chunk.len()).collect();
        for _round in 0..300 {
            if todo.is_empty() {
                break;
            }
            let answers = futures::future::join_all(todo.iter().map(|&i| {
                let (payer, amount) = chunk[i];
                router.send(debit(chunk_no * 100 + i + 1, payer, amount))
            }))
            .await;
            let mut again = Vec::new();
            for (answer, &i) in answers.into_iter().zip(&todo) {
                let outcome = match answer.unwrap() {
                    Ok(a) => {
                        if a.response_code == "00" {
                            approved[chunk[i].0] += chunk[i].1;
                        }
                        a.response_code
                    }
                    Err(BankError::Unavailable | BankError::Busy) => {
                        again.push(i);
                        continue;
                    }
                    Err(e) => format!("{e:?}"),
                };
                *outcomes.entry(outcome).or_insert(0) += 1;
            }
            todo = again;
            if !todo.is_empty() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        assert!(todo.is_empty(), "debits never sent: {todo:?}");
    }
    eprintln!("debits done in {:?}: {outcomes:?}", started.elapsed());
    sim.set_faults(Faults::default());
    for _ in 0..1_000 {
        if pending_reversals(&db).await == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pending_reversals(&db).await, 0, "reversals still pending");
    eprintln!("reversals done at {:?}", started.elapsed());
    let mut total_approved = 0;
    for (n, paid) in approved.iter().enumerate() {
        assert_eq!(balance(&sim, n).await, OPENING - paid, "account {n}");
        total_approved += paid;
    }
    assert_eq!(sim.balance(BANK, SHOP).await.unwrap(), Some(total_approved));
    // How many get through in time depends on the machine's load; the balances are the test.
    assert!(outcomes.get("00").copied().unwrap_or(0) > 0, "{outcomes:?}");
    assert!(
        outcomes.get("Timeout").copied().unwrap_or(0) > 0,
        "{outcomes:?}"
    );
    assert!(total_approved > 0);
    let stats = sim.stats();
    assert!(
        stats.answers_dropped > 0 && stats.connections > 1,
        "{stats:?}"
    );
}

#[actix_rt::test]
async fn mac_is_sent_and_checked() {
    let db = fresh_database().await;
    let key = [7u8; 16];
    let sim = start_sim_with(&db, 1, |_| 1_000, |o| o.mac_key = Some(key)).await;
    let mut good = settings("bips-a", &sim.addr().to_string());
    good.mac_key = Some(payhub_actors::Secret::new(key));
    let mut wrong = settings("bips-b", &sim.addr().to_string());
    wrong.banks = vec![BankId::parse("0002").unwrap()];
    wrong.mac_key = Some(payhub_actors::Secret::new([9u8; 16]));
    let router = start_router(&db, vec![good, wrong]);
    wait_signed_on(&router, 1).await;
    let answer = debit(&router, request(1, 0, 100)).await;
    assert_eq!(answer.response_code, "00");
    // The link with the wrong key never gets a sign-on the bank accepts.
    eventually("the wrong key's sign-on refused", || async {
        sim.stats().malformed >= 1
    })
    .await;
}

// ----- two-phase debits: the 0200's identity is known (and committed) before it leaves -----

/// A gateway process of its own: the bank router on an actix system in a thread, which can die at
/// once, as a crash would (no actor finishes its work, nothing more is stored).
struct Process {
    router: Addr<BankRouter>,
    system: actix::System,
    thread: std::thread::JoinHandle<()>,
}

impl Process {
    fn start(db: &TestDb, links: Vec<LinkSettings>) -> Process {
        let pool = payhub_actors::store::pool(&db.url, 4).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let system = actix::System::new();
            system.block_on(async move {
                let router = bank::start(pool, clock(), links, INSTITUTION).unwrap();
                tx.send((router, actix::System::current())).unwrap();
            });
            let _ = system.run();
        });
        let (router, system) = rx.recv().unwrap();
        Process {
            router,
            system,
            thread,
        }
    }

    async fn crash(self) {
        self.system.stop();
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join().unwrap())
            .await
            .unwrap();
    }
}

/// Reverses with a committed original and waits until the bank's 0430 closed the reversal.
async fn reverse_until_0430(
    router: &Addr<BankRouter>,
    db: &TestDb,
    request: DebitRequest,
    original: OriginalDebit,
) {
    let reverse = ReverseDebit {
        request,
        original: Some(original),
    };
    router.send(reverse).await.unwrap().unwrap();
    eventually("the 0430 closed the reversal", || async {
        pending_reversals(db).await == 0
    })
    .await;
}

/// `(reversals applied, reversals whose field 90 named another debit)` at the bank.
fn reversal_counts(sim: &SimHandle) -> (u64, u64) {
    let stats = sim.stats();
    (stats.reversals_applied, stats.reversal_mismatches)
}

fn original(link: &str, stan: &str, f7: &str) -> OriginalDebit {
    OriginalDebit {
        link: link.into(),
        link_addr: None,
        stan: stan.into(),
        transmission_time: f7.into(),
        acquirer_id: None,
    }
}

#[actix_rt::test]
async fn a_prepared_debit_goes_out_with_its_reserved_stan_and_field_7() {
    let (db, sim, router) = one_link(1_000).await;
    let prepared = prepare(&router, request(1, 0, 300)).await;
    assert_eq!(prepared.link, "bips-a");
    assert!(prepared.stan.len() == 6 && prepared.stan.bytes().all(|b| b.is_ascii_digit()));
    assert!(prepared.transmission_time.len() == 10);
    assert_eq!(prepared.rrn(), "000000000001");
    let shown = format!("{prepared:?}");
    assert!(!shown.contains(&account(0)), "{shown}");
    assert_eq!(sim.stats().debits, 0, "nothing leaves before SendPrepared");
    let committed = prepared.original();
    let answer = router.send(SendPrepared(prepared)).await.unwrap().unwrap();
    assert_eq!(answer.response_code, "00");
    assert_eq!(answer.link, "bips-a");
    assert_eq!(balance(&sim, 0).await, 700);
    // The bank recorded that STAN and field 7: a reversal naming them undoes the debit.
    reverse_until_0430(&router, &db, request(1, 0, 300), committed).await;
    assert_eq!(balance(&sim, 0).await, 1_000);
    assert_eq!(reversal_counts(&sim), (1, 0));
}

#[actix_rt::test]
async fn after_a_crash_the_committed_original_reverses_the_debit() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.response_timeout_ms = 30_000;
    let first = Process::start(&db, vec![link.clone()]);
    wait_signed_on(&first.router, 1).await;
    sim.set_faults(Faults {
        drop_pct: 100,
        ..Faults::default()
    });
    let prepared = prepare(&first.router, request(1, 0, 400)).await;
    // What the payment commits with `processing`, before the 0200 leaves.
    let committed = prepared.original();
    let waiting = first.router.send(SendPrepared(prepared));
    let waiting = actix_rt::spawn(waiting);
    eventually("the bank applied the debit", || async {
        balance(&sim, 0).await == 600
    })
    .await;
    // The gateway dies while it waits for the lost 0210: no reversal was stored.
    first.crash().await;
    waiting.abort();
    assert_eq!(pending_reversals(&db).await, 0);
    sim.set_faults(Faults::default());
    // The reversal waits one response timeout (the 0200 may still be at the bank): a short one.
    link.response_timeout_ms = 500;
    let second = start_router(&db, vec![link]);
    wait_signed_on(&second, 1).await;
    reverse_until_0430(&second, &db, request(1, 0, 400), committed).await;
    assert_eq!(
        balance(&sim, 0).await,
        1_000,
        "the customer's money is back"
    );
    assert_eq!(reversal_counts(&sim), (1, 0));
}

#[actix_rt::test]
async fn a_reversal_naming_another_stan_undoes_nothing_and_is_counted() {
    let (db, sim, router) = one_link(1_000).await;
    let prepared = prepare(&router, request(1, 0, 250)).await;
    let real = prepared.original();
    let answer = router.send(SendPrepared(prepared)).await.unwrap().unwrap();
    assert_eq!(answer.response_code, "00");
    let other_stan = if real.stan == "000001" {
        "000002"
    } else {
        "000001"
    };
    let wrong = original("bips-a", other_stan, &real.transmission_time);
    reverse_until_0430(&router, &db, request(1, 0, 250), wrong).await;
    // ...but it undid nothing, and says so.
    assert_eq!(balance(&sim, 0).await, 750);
    assert_eq!(reversal_counts(&sim), (0, 1));
    // A committed value that cannot be field 90 is refused before anything is stored.
    let bad = ReverseDebit {
        request: request(2, 0, 1),
        original: Some(original("bips-a", "12", &real.transmission_time)),
    };
    let err = router.send(bad).await.unwrap().unwrap_err();
    assert!(
        matches!(err, BankError::Protocol(ref m) if m.contains("STAN")),
        "{err:?}"
    );
}

#[actix_rt::test]
async fn a_reservation_never_sent_lapses_after_the_response_timeout() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.in_flight_max = 1;
    link.response_timeout_ms = 200;
    link.reservation_hold_min_ms = 0;
    let router = start_router(&db, vec![link]);
    wait_signed_on(&router, 1).await;
    let abandoned = prepare(&router, request(1, 0, 10)).await;
    // The reservation holds the link's only slot.
    let refused = router.send(PrepareDebit(request(2, 0, 10))).await.unwrap();
    assert_eq!(refused.unwrap_err(), BankError::Busy);
    // Free again once the reservation lapsed (the link's housekeeping releases it).
    let mut next = None;
    for _ in 0..200 {
        if let Ok(prepared) = router.send(PrepareDebit(request(2, 0, 10))).await.unwrap() {
            next = Some(prepared);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let next = next.expect("the lapsed reservation was released");
    // The lapsed one cannot be sent any more: nothing leaves for it.
    let late = router.send(SendPrepared(abandoned)).await.unwrap();
    assert_eq!(late.unwrap_err(), BankError::Unavailable);
    assert_eq!(sim.stats().debits, 0);
    let answer = router.send(SendPrepared(next)).await.unwrap().unwrap();
    assert_eq!(answer.response_code, "00");
    assert_eq!(balance(&sim, 0).await, 990);
}

// ----- TLS on the link -----

/// A server certificate for 127.0.0.1 and localhost from a fresh CA: (CA PEM file, simulator TLS).
fn tls_files(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, SimTls) {
    let ca = payhub::pki::new_ca(&format!("{name} CA")).unwrap();
    let hosts = ["127.0.0.1".to_string(), "localhost".to_string()];
    let server = payhub::pki::issue_server(&ca, &hosts).unwrap();
    let write = |file: &str, pem: Vec<u8>| {
        let path = dir.join(format!("{name}-{file}"));
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca_file = write("ca.pem", ca.cert_pem());
    let cert = write("server.pem", server.cert_pem());
    let key = write("server.key", server.key_pem());
    (ca_file, SimTls::from_files(&cert, &key).unwrap())
}

#[actix_rt::test]
async fn a_link_signs_on_and_debits_over_tls() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, tls) = tls_files(dir.path(), "bips");
    let sim = start_sim_with(&db, 1, |_| 1_000, |o| o.tls = Some(tls)).await;
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.tls_ca_cert = Some(ca);
    let router = start_router(&db, vec![link]);
    wait_signed_on(&router, 1).await;
    let answer = debit(&router, request(1, 0, 100)).await;
    assert_eq!(answer.response_code, "00");
    assert_eq!(balance(&sim, 0).await, 900);
    assert_eq!(sim.stats().sign_ons, 1);
}

/// Log lines written while the test runs on this thread.
#[derive(Clone, Default)]
struct CapturedLog(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for CapturedLog {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLog {
    /// Captures this thread's log lines until the guard is dropped.
    fn install() -> (Self, tracing::subscriber::DefaultGuard) {
        let log = CapturedLog::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        (log, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[actix_rt::test]
async fn a_bank_certificate_from_another_ca_keeps_the_link_down_with_a_clear_error() {
    let (log, _guard) = CapturedLog::install();
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (_, tls) = tls_files(dir.path(), "bips");
    let (other_ca, _) = tls_files(dir.path(), "stranger");
    let sim = start_sim_with(&db, 1, |_| 1_000, |o| o.tls = Some(tls)).await;
    let mut link = settings("bips-a", &sim.addr().to_string());
    link.tls_ca_cert = Some(other_ca);
    let router = start_router(&db, vec![link]);
    eventually("a refused handshake was logged", || async {
        log.text().contains("certificate verify failed")
    })
    .await;
    let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
    assert_eq!(statuses[0].state, "down");
    assert_eq!(sim.stats().sign_ons, 0);
    let err = router
        .send(Debit(request(1, 0, 100)))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err, BankError::Unavailable);
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("certificate verify failed"))
        .unwrap();
    assert!(
        line.contains("bips-a") && line.contains("TLS to 127.0.0.1"),
        "{line}"
    );
    assert_eq!(balance(&sim, 0).await, 1_000);
}

// ----- a bank written in the test from the profile alone: raw frames over TCP -----

/// One connection of a bank written here from the profile, reading and writing raw frames.
struct Peer {
    stream: tokio::net::TcpStream,
}

/// A listening socket on port 0 and its address.
async fn peer_listener() -> (tokio::net::TcpListener, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

impl Peer {
    async fn accept(listener: &tokio::net::TcpListener) -> Peer {
        let (stream, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept())
            .await
            .expect("the link connects")
            .unwrap();
        Peer { stream }
    }

    /// The next message's bytes as received (without the 2-byte length header), or `None` once
    /// the link closed the connection.
    async fn next_raw(&mut self) -> Option<Vec<u8>> {
        use tokio::io::AsyncReadExt;
        let len = self.stream.read_u16().await.ok()?;
        let mut body = vec![0; usize::from(len)];
        self.stream.read_exact(&mut body).await.ok()?;
        Some(body)
    }

    /// The next message's bytes as received; the link must send one within 5 s.
    async fn read_raw(&mut self) -> Vec<u8> {
        tokio::time::timeout(Duration::from_secs(5), self.next_raw())
            .await
            .expect("the link sends a message")
            .expect("the link keeps the connection")
    }

    async fn read(&mut self) -> Message {
        Message::unpack(&self.read_raw().await).unwrap()
    }

    async fn write_raw(&mut self, body: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(&framed(body)).await.unwrap();
    }

    async fn write(&mut self, message: &Message) {
        self.write_raw(&message.pack().unwrap()).await;
    }

    /// Accepts the link's connection and its sign-on, and waits until the router sees it.
    async fn signed_on(listener: &tokio::net::TcpListener, router: &Addr<BankRouter>) -> Peer {
        let mut peer = Peer::accept(listener).await;
        peer.sign_on().await;
        wait_signed_on(router, 1).await;
        peer
    }

    /// Reads the next message, a 0200, and approves it.
    async fn approve_next_debit(&mut self) {
        let request = self.read().await;
        assert_eq!(request.mti(), "0200");
        self.write(&answer(&request, "0210", &[(38, "A00001"), (39, "00")]))
            .await;
    }

    /// Reads the 0800/001 and accepts it.
    async fn sign_on(&mut self) {
        let request = self.read().await;
        assert_eq!((request.mti(), request.get(70)), ("0800", Some("001")));
        self.write(&answer(&request, "0810", &[(39, "00")])).await;
    }
}

/// `body` with its 2-byte length header, as it goes on the wire.
fn framed(body: &[u8]) -> Vec<u8> {
    let mut frame = u16::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    frame.extend(body);
    frame
}

/// The answer `mti` to `request`: its fields 4, 7, 11, 37 and 70 echoed, plus `fields`.
fn answer(request: &Message, mti: &str, fields: &[(u8, &str)]) -> Message {
    let echoed = [4u8, 7, 11, 37, 70]
        .into_iter()
        .filter_map(|f| request.get(f).map(|v| (f, v)));
    let mut all: Vec<(u8, &str)> = echoed.chain(fields.iter().copied()).collect();
    all.sort_by_key(|(f, _)| *f);
    all.into_iter()
        .fold(Message::new(mti), |m, (f, v)| m.and_then(|m| m.with(f, v)))
        .unwrap()
}

fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// `wire` with its last 16 bytes (the MAC field) set to the X9.19 MAC of the bytes before them.
fn put_mac(mut wire: Vec<u8>, key: &MacKey) -> Vec<u8> {
    let at = wire.len() - 16;
    let mac = hex_upper(&retail_mac(key, &wire[..at]));
    wire[at..].copy_from_slice(mac.as_bytes());
    wire
}

/// `message` with its MAC in `field` (64 or 128), packed and signed as the bank does it.
fn peer_signed(message: &Message, field: u8, key: &MacKey) -> Vec<u8> {
    let with_field = message.clone().with(field, "0000000000000000").unwrap();
    put_mac(with_field.pack().unwrap(), key)
}

/// `wire` (a message without secondary fields) with an empty secondary bitmap announced and
/// written after the primary one, as some banks send it.
fn with_empty_secondary_bitmap(wire: &[u8]) -> Vec<u8> {
    let first = u8::from_str_radix(std::str::from_utf8(&wire[4..5]).unwrap(), 16).unwrap();
    let mut out = wire[..4].to_vec();
    out.extend(format!("{:X}", first | 8).bytes());
    out.extend(&wire[5..20]);
    out.extend(b"0000000000000000");
    out.extend(&wire[20..]);
    out
}

/// A link to `addr` that MACs under `key`, and the router over it.
fn mac_link(db: &TestDb, addr: &str, key: [u8; 16]) -> Addr<BankRouter> {
    let mut link = settings("bips-a", addr);
    link.mac_key = Some(payhub_actors::Secret::new(key));
    start_router(db, vec![link])
}

#[actix_rt::test]
async fn a_bank_that_macs_in_field_128_as_the_profile_says_is_understood() {
    let db = fresh_database().await;
    let key_bytes = [7u8; 16];
    let key = MacKey::new(key_bytes);
    let (listener, addr) = peer_listener().await;
    let router = mac_link(&db, &addr, key_bytes);
    let mut bank = Peer::accept(&listener).await;
    // The gateway signs in field 128, the only MAC field of the profile's table.
    let sign_on = bank.read_raw().await;
    let sign_on_0800 = Message::unpack(&sign_on).unwrap();
    assert!(
        sign_on_0800.has(128) && !sign_on_0800.has(64),
        "{sign_on_0800:?}"
    );
    assert_eq!(put_mac(sign_on.clone(), &key), sign_on, "the gateway's MAC");
    let accepted = answer(&sign_on_0800, "0810", &[(39, "00")]);
    bank.write_raw(&peer_signed(&accepted, 128, &key)).await;
    wait_signed_on(&router, 1).await;
    let waiting = actix_rt::spawn(router.send(Debit(request(1, 0, 100))));
    let debit_0200 = bank.read().await;
    // A 0210 whose only secondary field is its MAC in 128.
    let approved = answer(&debit_0200, "0210", &[(38, "A00001"), (39, "00")]);
    assert!((65..=128).all(|f| !approved.has(f)));
    bank.write_raw(&peer_signed(&approved, 128, &key)).await;
    let answer_1 = waiting.await.unwrap().unwrap().unwrap();
    assert_eq!(answer_1.approval_code.as_deref(), Some("A00001"));
    // A bank on the ISO convention: MAC in 64, here after an empty secondary bitmap. Checked over
    // the bytes as received (re-packed, the message would lose that bitmap and its MAC).
    let waiting = actix_rt::spawn(router.send(Debit(request(2, 0, 100))));
    let debit_0200 = bank.read().await;
    let approved = answer(&debit_0200, "0210", &[(38, "A00002"), (39, "00")]);
    let unsigned = approved.clone().with(64, "0000000000000000").unwrap();
    let wire = put_mac(with_empty_secondary_bitmap(&unsigned.pack().unwrap()), &key);
    bank.write_raw(&wire).await;
    let answer_2 = waiting.await.unwrap().unwrap().unwrap();
    assert_eq!(answer_2.approval_code.as_deref(), Some("A00002"));
}

#[actix_rt::test]
async fn a_tls_handshake_the_bank_never_answers_times_out_and_the_link_retries() {
    let (log, _guard) = CapturedLog::install();
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = tls_files(dir.path(), "bips");
    // Plain TCP where the gateway expects TLS: accepts, reads nothing, answers nothing.
    let (listener, addr) = peer_listener().await;
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    actix_rt::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            held.push(stream);
        }
    });
    let mut link = settings("bips-a", &addr);
    link.tls_ca_cert = Some(ca);
    link.response_timeout_ms = 200;
    let router = start_router(&db, vec![link]);
    eventually(
        "the link gave up a handshake and connected again",
        || async { accepted.load(std::sync::atomic::Ordering::SeqCst) >= 2 },
    )
    .await;
    let text = log.text();
    let line = text
        .lines()
        .find(|l| l.contains("TLS handshake not done within 200 ms"))
        .unwrap_or_else(|| panic!("no line for the handshake timeout in {text}"));
    assert!(line.contains("bips-a"), "{line}");
    let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
    assert_eq!(statuses[0].state, "down");
}

#[actix_rt::test]
async fn a_duplicate_answer_keeps_its_approval_code() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let router = start_router(&db, vec![settings("bips-a", &addr)]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    // 94 with the original's approval code: the original was approved.
    let waiting = actix_rt::spawn(router.send(Debit(request(1, 0, 100))));
    let debit_0200 = bank.read().await;
    let duplicate = answer(&debit_0200, "0210", &[(38, "A00001"), (39, "94")]);
    bank.write(&duplicate).await;
    let approved = waiting.await.unwrap().unwrap().unwrap();
    assert_eq!(approved.response_code, "94");
    assert_eq!(approved.approval_code.as_deref(), Some("A00001"));
    // 94 alone: the original's outcome is not told, and none is made up.
    let waiting = actix_rt::spawn(router.send(Debit(request(2, 0, 100))));
    let debit_0200 = bank.read().await;
    bank.write(&answer(&debit_0200, "0210", &[(39, "94")]))
        .await;
    let untold = waiting.await.unwrap().unwrap().unwrap();
    assert_eq!(
        (untold.response_code.as_str(), untold.approval_code),
        ("94", None)
    );
}

/// Makes the database refuse (or take again) every `event` (`INSERT`: a new reversal; `UPDATE`:
/// the record of a send) on reversals.
async fn refuse_on_reversals(db: &TestDb, event: &str, refuse: bool) {
    let client = db.pool.get().await.unwrap();
    let name = format!("refuse_{}", event.to_lowercase());
    let sql = if refuse {
        format!(
            "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS
                 $$ BEGIN RAISE EXCEPTION '{event} on reversals refused by the test'; END $$;
             CREATE TRIGGER {name} BEFORE {event} ON reversals
                 FOR EACH ROW EXECUTE FUNCTION {name}();"
        )
    } else {
        format!("DROP TRIGGER {name} ON reversals; DROP FUNCTION {name}();")
    };
    client.batch_execute(&sql).await.unwrap();
}

#[actix_rt::test]
async fn a_reversal_the_database_refuses_is_reported_and_asked_for_again() {
    let (db, sim, router) = one_link(1_000).await;
    refuse_on_reversals(&db, "INSERT", true).await;
    // The bank applies the debit but its 0210 is lost: the outcome is unknown.
    sim.set_faults(Faults {
        drop_pct: 100,
        ..Faults::default()
    });
    let prepared = prepare(&router, request(1, 0, 100)).await;
    let committed = prepared.original();
    let lost = router.send(SendPrepared(prepared)).await.unwrap();
    assert_eq!(lost.unwrap_err(), BankError::ReversalNotStored);
    assert_eq!(balance(&sim, 0).await, 900);
    // What the payment asks for next is refused the same way, not assumed done.
    let reverse = ReverseDebit {
        request: request(1, 0, 100),
        original: Some(committed.clone()),
    };
    let refused = router.send(reverse).await.unwrap();
    assert_eq!(refused.unwrap_err(), BankError::ReversalNotStored);
    assert_eq!(pending_reversals(&db).await, 0);
    // Asked again once the database takes it: stored, sent, and the money is back.
    refuse_on_reversals(&db, "INSERT", false).await;
    sim.set_faults(Faults::default());
    reverse_until_0430(&router, &db, request(1, 0, 100), committed).await;
    assert_eq!(balance(&sim, 0).await, 1_000);
}

#[actix_rt::test]
async fn a_bank_that_reads_but_never_answers_is_dropped_while_debits_flow() {
    const ECHO_INTERVAL_MS: u64 = 300;
    const RESPONSE_TIMEOUT_MS: u64 = 200;
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let mut link = settings("bips-a", &addr);
    link.echo_interval_ms = ECHO_INTERVAL_MS;
    link.response_timeout_ms = RESPONSE_TIMEOUT_MS;
    // The echo alone finds the silence here (the unanswered debits have a test of their own).
    link.debit_timeouts_in_a_row_max = u32::MAX;
    let router = start_router(&db, vec![link]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    // From now on the bank reads everything and answers nothing.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    actix_rt::spawn(async move {
        while let Some(body) = bank.next_raw().await {
            let Ok(m) = Message::unpack(&body) else {
                continue;
            };
            log.lock()
                .unwrap()
                .push((m.mti().to_owned(), m.get(70).map(str::to_owned)));
        }
    });
    // A debit every 50 ms: the gateway writes far more often than the echo interval. Before, each
    // write counted as activity, so no echo went out and the link stayed signed on for good.
    let sender = router.clone();
    let debits = actix_rt::spawn(async move {
        for rrn in 1.. {
            actix_rt::spawn(sender.send(Debit(request(rrn, 0, 1))));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    eventually("the silent bank's link left signed_on", || async {
        let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
        statuses[0].state != "signed_on"
    })
    .await;
    debits.abort();
    let echo = ("0800".to_owned(), Some("301".to_owned()));
    assert!(seen.lock().unwrap().contains(&echo), "no echo was sent");
    // ...and it connects again.
    let _again = Peer::signed_on(&listener, &router).await;
}

/// A BIPS whose financial side stopped while its network side goes on: it sends its own echoes
/// and answers the link's, but no debit. Three debits unanswered in a row make the link
/// reconnect (and the router send over another link meanwhile); before, the bank's traffic kept
/// it signed on for good.
#[actix_rt::test]
async fn a_bank_that_answers_echoes_but_no_debits_is_reconnected() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let mut link = settings("bips-a", &addr);
    link.echo_interval_ms = 300;
    link.response_timeout_ms = 200;
    let router = start_router(&db, vec![link]);
    let bank = Peer::signed_on(&listener, &router).await;
    let (mut reading, mut writing) = bank.stream.into_split();
    actix_rt::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut n = 0;
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            n += 1;
            let mine = bank_0800("301", &format!("{n:06}")).pack().unwrap();
            use tokio::io::AsyncWriteExt;
            if writing.write_all(&framed(&mine)).await.is_err() {
                return;
            }
            // Whatever the link sent meanwhile: its echoes are answered, its 0200s are not.
            let mut len = [0u8; 2];
            while let Ok(Ok(())) =
                tokio::time::timeout(Duration::from_millis(1), reading.read_exact(&mut len))
                    .await
                    .map(|r| r.map(|_| ()))
            {
                let mut body = vec![0; usize::from(u16::from_be_bytes(len))];
                if reading.read_exact(&mut body).await.is_err() {
                    return;
                }
                let Ok(m) = Message::unpack(&body) else {
                    continue;
                };
                if m.mti() == "0800" {
                    let echo = answer(&m, "0810", &[(39, "00")]).pack().unwrap();
                    if writing.write_all(&framed(&echo)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    for rrn in 1..=3 {
        let answer = router.send(Debit(request(rrn, 0, 1))).await.unwrap();
        assert_eq!(answer.unwrap_err(), BankError::Timeout);
    }
    eventually("the link reconnects", || async {
        let statuses = router.send(LinkStatuses).await.unwrap().unwrap();
        statuses[0].state != "signed_on"
    })
    .await;
    let _again = Peer::signed_on(&listener, &router).await;
}

/// A 0210 that matches a debit's STAN and field 37 but is not its answer: of another MTI (0230)
/// it is dropped, and the debit times out; with another amount in field 4, or approving without
/// field 38, it is a protocol error and the debit is reversed. None of them is an approval.
#[actix_rt::test]
async fn an_answer_that_is_not_the_debits_is_not_taken_as_an_approval() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let mut link = settings("bips-a", &addr);
    link.response_timeout_ms = 500;
    let router = start_router(&db, vec![link]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    let waiting = actix_rt::spawn(router.send(Debit(request(1, 0, 100))));
    let debit = bank.read().await;
    bank.write(&answer(&debit, "0230", &[(38, "A00001"), (39, "00")]))
        .await;
    assert_eq!(
        waiting.await.unwrap().unwrap().unwrap_err(),
        BankError::Timeout
    );
    for (rrn, wrong) in [(2, vec![(38, "A00001"), (39, "00")]), (3, vec![(39, "00")])] {
        let waiting = actix_rt::spawn(router.send(Debit(request(rrn, 0, 100))));
        let mut debit = bank.read().await;
        if wrong.len() == 2 {
            debit = debit.with(4, "000000000001").unwrap();
        }
        bank.write(&answer(&debit, "0210", &wrong)).await;
        let answered = waiting.await.unwrap().unwrap();
        assert!(
            matches!(answered, Err(BankError::Protocol(_))),
            "rrn {rrn}: {answered:?}"
        );
    }
    let client = db.pool.get().await.unwrap();
    let reversals: i64 = client
        .query_one("SELECT count(*) FROM reversals", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reversals, 3, "each debit reversed");
}

/// A listening socket on port 0 whose connections have a small receive buffer, so that what the
/// link sends and the bank does not read piles up on the link's side soon.
fn small_buffer_listener() -> (tokio::net::TcpListener, String) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(8).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (listener, addr)
}

#[actix_rt::test]
async fn a_bank_that_sends_requests_and_never_reads_is_dropped() {
    use tokio::io::AsyncWriteExt;
    let db = fresh_database().await;
    let (listener, addr) = small_buffer_listener();
    let router = start_router(&db, vec![settings("bips-a", &addr)]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    // From now on the bank sends echo requests as fast as it can and reads nothing. Each is
    // answered with an 0810 that the bank never takes.
    let echo = Message::new("0800")
        .and_then(|m| m.with(7, "1129120000"))
        .and_then(|m| m.with(11, "000001"))
        .and_then(|m| m.with(70, "301"))
        .unwrap()
        .pack()
        .unwrap();
    let frame = framed(&echo);
    let frames = frame.repeat(64);
    let flood = actix_rt::spawn(async move {
        let mut sent: u64 = 0;
        while bank.stream.write_all(&frames).await.is_ok() {
            sent += 64;
        }
        sent
    });
    let sent = tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the link drops a bank that does not read")
        .unwrap();
    // Over a mebibyte of answers was owed before the link gave up (an 0810 is about as long
    // as its 0800), and no more than the kernel's buffers besides.
    let owed_bytes = sent * frame.len() as u64;
    assert!(owed_bytes > 1 << 20, "dropped after {owed_bytes} bytes");
    // ...and it connects again.
    let _again = Peer::signed_on(&listener, &router).await;
}

/// iso8583-profile.md: sign-on "before any financial message". The simulator undoes nothing for
/// a reversal that comes before it: it answers 91 and counts it, as it does a 0200.
#[actix_rt::test]
async fn the_bank_simulator_refuses_a_reversal_before_sign_on() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let mut client = Peer { stream };
    let reversal = Message::new("0420")
        .and_then(|m| m.with(4, "000000000100"))
        .and_then(|m| m.with(7, "1129120000"))
        .and_then(|m| m.with(11, "000001"))
        .and_then(|m| m.with(37, "000000000001"))
        .unwrap();
    client.write(&reversal).await;
    let answer = client.read().await;
    assert_eq!((answer.mti(), answer.get(39)), ("0430", Some("91")));
    let stats = sim.stats();
    assert_eq!((stats.before_sign_on, stats.reversals_applied), (1, 0));
}

/// iso8583-profile.md: "A repeated 0200 with the same field 37 is answered with the original 0210
/// and never debits twice." A repeat that asks for another amount is told the amount the original
/// took, not approved for its own. Both ledgers, the database's and the memory one.
#[actix_rt::test]
async fn the_bank_simulator_answers_a_repeated_0200_with_the_original_amount() {
    let db = fresh_database().await;
    repeat_a_debit_with_another_amount(start_sim(&db, 1, |_| 1_000).await).await;
    let in_memory = start_sim_with(&db, 1, |_| 1_000, |o| o.store = SimStoreChoice::Memory).await;
    repeat_a_debit_with_another_amount(in_memory).await;
}

async fn repeat_a_debit_with_another_amount(sim: SimHandle) {
    use payhub_actors::bank::wire::{NetworkCode, debit_request, network_request};
    let stream = tokio::net::TcpStream::connect(sim.addr()).await.unwrap();
    let mut client = Peer { stream };
    let now = chrono::Utc::now();
    client
        .write(&network_request(NetworkCode::SignOn, "000001", now).unwrap())
        .await;
    assert_eq!(client.read().await.get(39), Some("00"));
    let mut answers = Vec::new();
    for (stan, amount) in [("000002", 300), ("000003", 500)] {
        let debit = debit_request(&request(1, 0, amount), stan, now, INSTITUTION).unwrap();
        client.write(&debit).await;
        let answer = client.read().await;
        assert_eq!(answer.get(11), Some(stan));
        answers.push((
            answer.get(39).map(str::to_owned),
            answer.get(4).map(str::to_owned),
        ));
    }
    let approved_300 = (Some("00".to_owned()), Some("000000000300".to_owned()));
    assert_eq!(answers, vec![approved_300.clone(), approved_300]);
    assert_eq!(balance(&sim, 0).await, 700, "debited once");
}

/// The simulator's control port serves a bounded number of connections: past it a connection is
/// closed at once, while those it holds keep answering.
#[actix_rt::test]
async fn the_bank_simulators_control_port_bounds_its_connections() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let db = fresh_database().await;
    let sim = start_sim_with(
        &db,
        1,
        |_| 1_000,
        |o| {
            o.control = Some("127.0.0.1:0".parse().unwrap());
        },
    )
    .await;
    let control = sim.control_addr().unwrap();
    let mut held = Vec::new();
    for _ in 0..payhub::sim::bank::control::CONNECTIONS_MAX {
        held.push(tokio::net::TcpStream::connect(control).await.unwrap());
    }
    let mut refused = tokio::net::TcpStream::connect(control).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), async {
        use tokio::io::AsyncReadExt;
        refused.read(&mut byte).await
    });
    assert!(
        matches!(read.await, Ok(Ok(0)) | Ok(Err(_))),
        "closed at once"
    );
    let mut first = BufReader::new(held.swap_remove(0));
    first.get_mut().write_all(b"stats\n").await.unwrap();
    let mut answer = String::new();
    first.read_line(&mut answer).await.unwrap();
    assert!(answer.starts_with('{'), "{answer}");
}

/// The simulator's side of the same rule: a client that sends echoes and reads nothing is
/// dropped once its answers cannot be written in time, and its connection slot freed. It held
/// the connection for ever before.
#[actix_rt::test]
async fn the_bank_simulator_drops_a_client_that_does_not_read() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4_096).unwrap();
    let mut stream = socket.connect(sim.addr()).await.unwrap();
    let frames = framed(&bank_0800("301", "000001").pack().unwrap()).repeat(64);
    let flood = actix_rt::spawn(async move {
        use tokio::io::AsyncWriteExt;
        while stream.write_all(&frames).await.is_ok() {}
    });
    tokio::time::timeout(Duration::from_secs(60), flood)
        .await
        .expect("the simulator drops a client that does not read")
        .unwrap();
}

/// A network management request from the bank, with field 70 `code`.
fn bank_0800(code: &str, stan: &str) -> Message {
    Message::new("0800")
        .and_then(|m| m.with(7, "1129120000"))
        .and_then(|m| m.with(11, stan))
        .and_then(|m| m.with(70, code))
        .unwrap()
}

/// A bank that signs off (for maintenance, say) gets no financial message until the link has
/// signed on again, after the backoff's delay; a code the profile does not name is refused.
#[actix_rt::test]
async fn a_bank_that_signs_off_gets_no_debit_until_the_link_signs_on_again() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let mut s = settings("bips-a", &addr);
    (s.reconnect_backoff_min_ms, s.reconnect_backoff_max_ms) = (1_000, 2_000);
    let router = start_router(&db, vec![s]);
    let mut bank = Peer::signed_on(&listener, &router).await;

    bank.write(&bank_0800("999", "000001")).await;
    let refused = bank.read().await;
    let seen = |m: &Message| {
        (
            m.mti().to_owned(),
            m.get(11).map(str::to_owned),
            m.get(39).map(str::to_owned),
        )
    };
    assert_eq!(
        seen(&refused),
        ("0810".into(), Some("000001".into()), Some("12".into()))
    );
    assert_eq!(
        router.send(LinkStatuses).await.unwrap().unwrap()[0].state,
        "signed_on"
    );

    bank.write(&bank_0800("002", "000002")).await;
    let accepted = bank.read().await;
    assert_eq!(
        seen(&accepted),
        ("0810".into(), Some("000002".into()), Some("00".into()))
    );
    assert_eq!(accepted.get(70), Some("002"));
    eventually("the link is out of service", || async {
        router.send(LinkStatuses).await.unwrap().unwrap()[0].state == "connected"
    })
    .await;
    let refused = router.send(Debit(request(1, 0, 100))).await.unwrap();
    assert_eq!(refused.unwrap_err(), BankError::Unavailable);

    // The same connection signs on again, and carries debits.
    bank.sign_on().await;
    wait_signed_on(&router, 1).await;
    let debit = actix_rt::spawn(async move { router.send(Debit(request(2, 0, 100))).await });
    bank.approve_next_debit().await;
    let answered = debit.await.unwrap().unwrap().unwrap();
    assert_eq!(answered.response_code, "00");
}

/// A router whose one link has connected to a bank written here and sent its sign-on, not yet
/// answered: the router, the bank's listener and its side of the connection, and the 0800.
async fn a_link_signing_on(
    db: &TestDb,
) -> (Addr<BankRouter>, tokio::net::TcpListener, Peer, Message) {
    let (listener, addr) = peer_listener().await;
    let router = start_router(db, vec![settings("bips-a", &addr)]);
    let mut bank = Peer::accept(&listener).await;
    let sign_on = bank.read().await;
    assert_eq!(sign_on.get(70), Some("001"));
    (router, listener, bank, sign_on)
}

/// A debit that arrives while its link is signing on (after a drop, say) waits for the sign-on and
/// goes out then, instead of failing the payment for a reconnect.
#[actix_rt::test]
async fn a_debit_waits_for_its_link_to_sign_on() {
    let db = fresh_database().await;
    let (router, _listener, mut bank, sign_on) = a_link_signing_on(&db).await;
    let asked = router.clone();
    let debit = actix_rt::spawn(async move { asked.send(Debit(request(1, 0, 100))).await });
    // The debit is with the router, the link not yet signed on.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!debit.is_finished());
    bank.write(&answer(&sign_on, "0810", &[(39, "00")])).await;
    bank.approve_next_debit().await;
    let answered = debit.await.unwrap().unwrap().unwrap();
    assert_eq!(answered.response_code, "00");
}

/// A sign-on answered other than 00 leaves the link without service: it drops the connection and
/// connects again after its backoff.
#[actix_rt::test]
async fn a_refused_sign_on_drops_the_connection_and_the_link_tries_again() {
    let db = fresh_database().await;
    let (router, listener, mut bank, sign_on) = a_link_signing_on(&db).await;
    bank.write(&answer(&sign_on, "0810", &[(39, "91")])).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), bank.next_raw()).await;
    assert_eq!(closed.expect("the link closes the connection"), None);
    assert_ne!(
        router.send(LinkStatuses).await.unwrap().unwrap()[0].state,
        "signed_on"
    );
    let _again = Peer::signed_on(&listener, &router).await;
}

/// A length header past the profile's 8,192 bytes is a broken stream: the link drops it and
/// connects again, rather than reading on.
#[actix_rt::test]
async fn a_frame_longer_than_the_profile_allows_drops_the_connection() {
    use tokio::io::AsyncWriteExt;
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let router = start_router(&db, vec![settings("bips-a", &addr)]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    bank.stream
        .write_all(&9_000u16.to_be_bytes())
        .await
        .unwrap();
    bank.stream.write_all(&[b'0'; 64]).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), bank.next_raw()).await;
    assert_eq!(closed.expect("the link closes the connection"), None);
    let _again = Peer::signed_on(&listener, &router).await;
}

async fn reversal_sends(db: &TestDb) -> i32 {
    let client = db.pool.get().await.unwrap();
    let row = client
        .query_one("SELECT attempts FROM reversals", &[])
        .await
        .unwrap();
    row.get(0)
}

#[actix_rt::test]
async fn a_reversal_leaves_only_once_its_send_is_recorded() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let router = start_router(&db, vec![settings("bips-a", &addr)]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    refuse_on_reversals(&db, "UPDATE", true).await;
    let reverse = ReverseDebit {
        request: request(1, 0, 100),
        original: Some(original("bips-a", "000042", "1129120000")),
    };
    router.send(reverse).await.unwrap().unwrap();
    // Several repeat intervals go by: the send cannot be recorded, so nothing leaves.
    let early = tokio::time::timeout(Duration::from_millis(600), bank.next_raw()).await;
    assert!(
        early.is_err(),
        "a reversal left before its send was recorded"
    );
    assert_eq!(reversal_sends(&db).await, 0);
    refuse_on_reversals(&db, "UPDATE", false).await;
    // Each advice is on record when it arrives: after a crash, the next is a repeat.
    let advice = bank.read().await;
    assert_eq!(
        (advice.mti(), advice.get(37)),
        ("0420", Some("000000000001"))
    );
    assert_eq!(reversal_sends(&db).await, 1);
    let repeat = bank.read().await;
    assert_eq!(repeat.mti(), "0421");
    assert_eq!(reversal_sends(&db).await, 2);
    bank.write(&answer(&repeat, "0430", &[(39, "00")])).await;
    eventually("the 0430 closed the reversal", || async {
        pending_reversals(&db).await == 0
    })
    .await;
}

#[actix_rt::test]
async fn a_bank_that_answers_but_never_reads_is_dropped() {
    // More debits than the kernel's send buffer (at most 4 MiB here) takes at about 250 bytes each.
    const DEBITS: u64 = 20_000;
    let db = fresh_database().await;
    let (listener, addr) = small_buffer_listener();
    let mut link = settings("bips-a", &addr);
    link.response_timeout_ms = 1_000;
    link.in_flight_max = DEBITS as usize;
    let router = start_router(&db, vec![link]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    // From now on the bank reads nothing, and every 50 ms sends an answer to nothing: never
    // silent, so the echo never finds it out.
    let stray = Message::new("0810")
        .and_then(|m| m.with(11, "999999"))
        .and_then(|m| m.with(39, "00"))
        .and_then(|m| m.with(70, "301"))
        .and_then(|m| m.pack())
        .unwrap();
    let frame = framed(&stray);
    let strays = actix_rt::spawn(async move {
        use tokio::io::AsyncWriteExt;
        // Until the link drops the connection.
        while bank.stream.write_all(&frame).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    // Debits that the bank never takes fill the socket's buffers.
    for rrn in 1..=DEBITS {
        actix_rt::spawn(router.send(Debit(request(rrn, 0, 1))));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        // The status reads the reversal backlog, which may wait for a connection behind the
        // timed-out debits' reversals: a refusal then is not an answer yet.
        let statuses = router.send(LinkStatuses).await.unwrap();
        if statuses.is_ok_and(|s| s[0].state != "signed_on") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the link stayed signed on"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The link closed that connection: the bank's next write fails. (It reconnects as after any
    // drop; the debits still queued keep this debug build too busy to sign on in time here.)
    tokio::time::timeout(Duration::from_secs(5), strays)
        .await
        .expect("the link closed the connection")
        .unwrap();
}

/// An echo the bank answers with a refusal is a link that cannot serve: the connection is
/// dropped, as after an unanswered echo, and the link signs on again.
#[actix_rt::test]
async fn a_refused_echo_drops_the_connection_and_the_link_signs_on_again() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let mut s = settings("bips-a", &addr);
    s.echo_interval_ms = 100;
    let router = start_router(&db, vec![s]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    let echo = bank.read().await;
    assert_eq!((echo.mti(), echo.get(70)), ("0800", Some("301")));
    bank.write(&answer(&echo, "0810", &[(39, "91")])).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), bank.next_raw()).await;
    assert_eq!(
        closed,
        Ok(None),
        "the link keeps a connection whose echo was refused"
    );
    Peer::signed_on(&listener, &router).await;
}

/// A 0430 is matched by STAN, and must also name the reversal's RRN: an answer for another
/// reversal that once held the STAN must not close this one, or its debit would stand.
#[actix_rt::test]
async fn a_0430_with_another_rrn_does_not_close_the_reversal() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let router = start_router(&db, vec![settings("bips-a", &addr)]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    let reverse = ReverseDebit {
        request: request(1, 0, 100),
        original: Some(original("bips-a", "000042", "1129120000")),
    };
    router.send(reverse).await.unwrap().unwrap();
    let advice = bank.read().await;
    assert_eq!(advice.mti(), "0420");
    let stray = answer(&advice, "0430", &[(39, "00")])
        .with(37, "OTHER0000001")
        .unwrap();
    bank.write(&stray).await;
    let repeat = bank.read().await;
    assert_eq!((repeat.mti(), repeat.get(37)), ("0421", advice.get(37)));
    assert_eq!(pending_reversals(&db).await, 1);
    bank.write(&answer(&repeat, "0430", &[(39, "00")])).await;
    eventually("the right 0430 closed the reversal", || async {
        pending_reversals(&db).await == 0
    })
    .await;
}

/// A graceful shutdown signs off even with a debit the bank never answers and a response timeout
/// longer than the router's wait: the debit is given up and reversed, and the 0800/002 leaves.
#[actix_rt::test]
async fn shutdown_signs_off_despite_a_debit_the_bank_never_answers() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let mut s = settings("bips-a", &addr);
    s.response_timeout_ms = 20_000;
    let router = start_router(&db, vec![s]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    let asked = router.clone();
    let _debit = actix_rt::spawn(async move { asked.send(Debit(request(1, 0, 100))).await });
    assert_eq!(bank.read().await.mti(), "0200");
    let stopping = router.clone();
    let shutdown = actix_rt::spawn(async move { stopping.send(Shutdown).await });
    let waited = Duration::from_millis(payhub_actors::bank::router::SHUTDOWN_WAIT_MS_MAX);
    let sign_off = tokio::time::timeout(waited, bank.next_raw())
        .await
        .expect("the sign-off left within the router's shutdown wait")
        .expect("the connection stays open for the sign-off");
    let sign_off = Message::unpack(&sign_off).unwrap();
    assert_eq!((sign_off.mti(), sign_off.get(70)), ("0800", Some("002")));
    bank.write(&answer(&sign_off, "0810", &[(39, "00")])).await;
    shutdown.await.unwrap().unwrap();
    eventually("the unanswered debit's reversal is stored", || async {
        pending_reversals(&db).await == 1
    })
    .await;
}

/// More pending reversals than a link holds in memory: the rest are loaded as the first are
/// answered, so every one is repeated until its 0430 (they waited for the next reconnect).
#[actix_rt::test]
async fn reversals_beyond_those_loaded_are_sent_as_the_first_are_answered() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let now = chrono::Utc::now();
    for i in 0..10u32 {
        let record = bank::reversals::ReversalRecord {
            payment_id: None,
            link_name: "bips-a".into(),
            link_addr: None,
            rrn: format!("RV{i:010}"),
            amount_minor: 100,
            currency_numeric: "156".into(),
            original_stan: format!("{:06}", i + 1),
            original_f7: "1128101010".into(),
            acquirer_id: INSTITUTION.into(),
        };
        let reason = bank::reversals::ReversalReason::Timeout;
        bank::reversals::queue(&db.pool, &record, reason, now, Duration::ZERO)
            .await
            .unwrap();
    }
    let mut s = settings("bips-a", &sim.addr().to_string());
    s.reversals_loaded_max = 4;
    let _router = start_router(&db, vec![s]);
    eventually("all ten reversals were answered", || async {
        pending_reversals(&db).await == 0
    })
    .await;
    // Each reached the bank; on a busy machine a 0430 may come after the repeat (0421) left.
    assert!(sim.stats().reversals >= 10, "{:?}", sim.stats());
}

/// A reversal in the table whose loads at start and at sign-on both failed (the database was
/// unsettled) is loaded again while the link stays up: its payment is final, so nothing else
/// brings it back.
#[actix_rt::test]
async fn pending_reversals_whose_load_failed_are_loaded_again() {
    let db = fresh_database().await;
    let sim = start_sim(&db, 1, |_| 1_000).await;
    let record = bank::reversals::ReversalRecord {
        payment_id: None,
        link_name: "bips-a".into(),
        link_addr: None,
        rrn: "RV0000000001".into(),
        amount_minor: 100,
        currency_numeric: "156".into(),
        original_stan: "000001".into(),
        original_f7: "1128101010".into(),
        acquirer_id: INSTITUTION.into(),
    };
    let reason = bank::reversals::ReversalReason::Timeout;
    bank::reversals::queue(
        &db.pool,
        &record,
        reason,
        chrono::Utc::now(),
        Duration::ZERO,
    )
    .await
    .unwrap();
    let rename = async |from: &str, to: &str| {
        let client = db.pool.get().await.unwrap();
        let sql = format!("ALTER TABLE {from} RENAME TO {to}");
        client.batch_execute(&sql).await.unwrap();
    };
    let failed_statements = async || {
        let client = db.pool.get().await.unwrap();
        let sql = "SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database()";
        client.query_one(sql, &[]).await.unwrap().get::<_, i64>(0)
    };
    rename("reversals", "reversals_hidden").await;
    let failed_before = failed_statements().await;
    let _router = start_router(&db, vec![settings("bips-a", &sim.addr().to_string())]);
    eventually("signed on", || async { sim.stats().sign_ons >= 1 }).await;
    // The loads at the link's start and sign-on fail at once: the table is shown again only once
    // the database counted a failure. A backend's statistics may reach the view 10 s late
    // (PostgreSQL 15's idle flush), longer than `eventually` waits.
    let counted = async || failed_statements().await > failed_before;
    eventually_in("a failed load of the hidden table", 3_000, counted).await;
    rename("reversals_hidden", "reversals").await;
    eventually("the reversal was answered", || async {
        pending_reversals(&db).await == 0
    })
    .await;
    assert_eq!(sim.stats().reversals, 1, "{:?}", sim.stats());
}

/// A bank that never answers a 0420 cannot grow the reversals a link holds: past
/// `reversals_loaded_max` they wait in the table, and follow once those held are answered.
#[actix_rt::test]
async fn reversals_queued_past_the_bound_wait_in_the_table() {
    let db = fresh_database().await;
    let (listener, addr) = peer_listener().await;
    let mut s = settings("bips-a", &addr);
    s.reversals_loaded_max = 2;
    let router = start_router(&db, vec![s]);
    let mut bank = Peer::signed_on(&listener, &router).await;
    for i in 1..=5 {
        let reverse = ReverseDebit {
            request: request(i, 0, 100),
            original: Some(original("bips-a", &format!("{i:06}"), "1129120000")),
        };
        router.send(reverse).await.unwrap().unwrap();
    }
    // Unanswered, only the two held go out, and are repeated.
    let mut sent = std::collections::HashSet::new();
    for _ in 0..8 {
        sent.insert(bank.read().await.get(37).unwrap().to_owned());
    }
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(pending_reversals(&db).await, 5);
    // Answered, the others follow, until every one is closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while pending_reversals(&db).await > 0 {
        assert!(tokio::time::Instant::now() < deadline, "reversals left");
        let next = tokio::time::timeout(Duration::from_millis(500), bank.next_raw()).await;
        if let Ok(Some(raw)) = next {
            let advice = Message::unpack(&raw).unwrap();
            sent.insert(advice.get(37).unwrap().to_owned());
            bank.write(&answer(&advice, "0430", &[(39, "00")])).await;
        }
    }
    assert_eq!(sent.len(), 5);
}
