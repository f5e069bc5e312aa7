//! One gateway per database: the claim refuses a second gateway, a claim whose connection is
//! lost is taken again, and a new claim waits for an earlier gateway's statements to end.

use payhub::single_gateway::DatabaseClaim;
use payhub_actors::store::testing::fresh_database;
use payhub_actors::store::{PoolOptions, pool_with};
use std::time::Duration;

/// This test process's name for its gateway sessions.
const OWN: &str = "payhub serve this";

/// The backend that holds an advisory lock on this test's database.
async fn holder_pid(pool: &deadpool_postgres::Pool) -> Option<i32> {
    let client = pool.get().await.unwrap();
    client
        .query_opt(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted
               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            &[],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Whether a backend other than `first_pid` holds the lock within 10 s.
async fn held_again(pool: &deadpool_postgres::Pool, first_pid: i32) -> bool {
    for _ in 0..200 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if holder_pid(pool).await.is_some_and(|pid| pid != first_pid) {
            return true;
        }
    }
    false
}

#[actix_rt::test]
async fn a_claim_whose_connection_is_lost_is_taken_again() {
    let db = fresh_database().await;
    let interval = Duration::from_millis(1_000);
    let claim = DatabaseClaim::take_checking_every(&db.pool, &db.url, OWN, interval)
        .await
        .unwrap();
    let second = DatabaseClaim::take(&db.pool, &db.url, OWN).await;
    let refused = second.err().expect("a second claim is refused").to_string();
    assert!(refused.contains("another payhub serve"), "{refused}");

    let first_pid = holder_pid(&db.pool).await.expect("held");
    let client = db.pool.get().await.unwrap();
    client
        .execute("SELECT pg_terminate_backend($1)", &[&first_pid])
        .await
        .unwrap();
    assert!(
        held_again(&db.pool, first_pid).await,
        "the lock is held again"
    );
    assert!(DatabaseClaim::take(&db.pool, &db.url, OWN).await.is_err());

    drop(claim);
    let mut free = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if holder_pid(&db.pool).await.is_none() {
            free = true;
            break;
        }
    }
    assert!(free, "dropped, the claim lets the database go");
}

/// A TCP relay to the database whose connections can each be frozen: held open, nothing more
/// passed either way, as when a database host vanishes without a reset.
struct FreezingRelay {
    url: String,
    freezers: std::sync::Arc<std::sync::Mutex<Vec<Option<tokio::sync::oneshot::Sender<()>>>>>,
}

impl FreezingRelay {
    async fn to(url: &str) -> Self {
        let config: tokio_postgres::Config = url.parse().unwrap();
        let upstream = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => format!("{host}:{}", config.get_ports()[0]),
            other => panic!("a TCP database, not {other:?}"),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay_url = url.replace(&upstream, &listener.local_addr().unwrap().to_string());
        let freezers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let shared = freezers.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let (freeze, frozen) = tokio::sync::oneshot::channel::<()>();
                shared.lock().unwrap().push(Some(freeze));
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let mut outbound = tokio::net::TcpStream::connect(upstream).await.unwrap();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = frozen => std::future::pending::<()>().await,
                    }
                });
            }
        });
        Self {
            url: relay_url,
            freezers,
        }
    }

    /// Freezes the `nth` connection made through the relay (from 0).
    fn freeze(&self, nth: usize) {
        let freeze = self.freezers.lock().unwrap()[nth]
            .take()
            .expect("not frozen yet");
        freeze.send(()).unwrap();
    }
}

/// The claim's connection stops answering while the server still holds it (the relay froze it):
/// the check gives up on it within one interval, ends that stale session of its own (known by
/// its backend's pid and start), and claims the database again. Before, the check waited on it
/// for as long as TCP would. (Intervals of a second: a gateway that cannot claim again within one
/// stops the process, here the test binary.)
#[actix_rt::test]
async fn a_claim_whose_connection_stops_answering_is_taken_again() {
    let db = fresh_database().await;
    let relay = FreezingRelay::to(&db.url).await;
    let options = PoolOptions {
        application_name: Some(OWN.into()),
        ..PoolOptions::of_size(1)
    };
    let pool = pool_with(&relay.url, &options).unwrap();
    let interval = Duration::from_millis(1_000);
    let _claim = DatabaseClaim::take_checking_every(&pool, &relay.url, OWN, interval)
        .await
        .unwrap();
    let first_pid = holder_pid(&db.pool).await.expect("held");

    relay.freeze(0);
    assert!(
        held_again(&db.pool, first_pid).await,
        "the lock is held again, by a new session"
    );
}

/// A session of an earlier gateway (named as `serve` names them), on its own connection.
fn earlier_gateway(url: &str) -> deadpool_postgres::Pool {
    let options = PoolOptions {
        application_name: Some("payhub serve earlier".into()),
        ..PoolOptions::of_size(1)
    };
    pool_with(url, &options).unwrap()
}

/// Whether that session is running a statement now (other tests' databases have theirs).
async fn earlier_is_running(pool: &deadpool_postgres::Pool) -> bool {
    let client = pool.get().await.unwrap();
    client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE application_name = 'payhub serve earlier' AND state = 'active'
                AND datname = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 1
}

/// An earlier gateway's statement still running (a commit waiting for its disk, say) holds the
/// new claim until it ends: the payments it moves on are read after it.
#[actix_rt::test]
async fn a_claim_waits_for_an_earlier_gateways_running_statement() {
    let db = fresh_database().await;
    let earlier = earlier_gateway(&db.url);
    // One simple query: a prepared one would show the session idle between its two steps.
    let _statement = tokio::spawn(async move {
        let client = earlier.get().await.unwrap();
        client.simple_query("SELECT pg_sleep(2)").await.unwrap();
    });
    let pool = db.pool.clone();
    for _ in 0..100 {
        if earlier_is_running(&pool).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(earlier_is_running(&db.pool).await);
    let interval = Duration::from_millis(500);
    let _claim = DatabaseClaim::take_checking_every(&db.pool, &db.url, OWN, interval)
        .await
        .unwrap();
    assert!(
        !earlier_is_running(&db.pool).await,
        "claimed while the statement ran"
    );
}

/// One that runs past the claim's patience fails the start, naming the backend to end.
#[actix_rt::test]
async fn a_claim_gives_up_on_an_earlier_statement_that_does_not_end() {
    let db = fresh_database().await;
    let earlier = earlier_gateway(&db.url);
    let _statement = tokio::spawn(async move {
        let client = earlier.get().await.unwrap();
        let _ = client.simple_query("SELECT pg_sleep(30)").await;
    });
    for _ in 0..100 {
        if earlier_is_running(&db.pool).await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let interval = Duration::from_millis(500);
    let refused = DatabaseClaim::take_checking_every(&db.pool, &db.url, OWN, interval)
        .await
        .err()
        .expect("the start fails")
        .to_string();
    assert!(refused.contains("pg_terminate_backend"), "{refused}");
    assert_eq!(refused.lines().count(), 1, "{refused}");
    // And the database is not left claimed.
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE application_name = 'payhub serve earlier' AND datname = current_database()",
            &[],
        )
        .await
        .unwrap();
    drop(client);
    let interval = Duration::from_millis(500);
    assert!(
        DatabaseClaim::take_checking_every(&db.pool, &db.url, OWN, interval)
            .await
            .is_ok()
    );
}

/// An earlier gateway's idle sessions (its host gone, say) hold the claim only until that
/// gateway would have seen its claim lost and stopped.
#[actix_rt::test]
async fn an_earlier_gateways_idle_session_holds_the_claim_three_intervals_at_most() {
    let db = fresh_database().await;
    let earlier = earlier_gateway(&db.url);
    let _idle = earlier.get().await.unwrap();
    let interval = Duration::from_millis(500);
    let started = std::time::Instant::now();
    let _claim = DatabaseClaim::take_checking_every(&db.pool, &db.url, OWN, interval)
        .await
        .unwrap();
    assert!(started.elapsed() >= 3 * interval, "{:?}", started.elapsed());
}

/// After a failover (or a restart of the database server) no session of the earlier gateway is
/// left to see, but it writes on until its own check finds its claim lost: a new claim waits until
/// three of the earlier holder's intervals have passed since its last heartbeat. A claim released
/// as its gateway stopped is not waited for.
#[actix_rt::test]
async fn a_new_claim_waits_out_the_earlier_holders_heartbeat_unless_released() {
    let db = fresh_database().await;
    let client = db.pool.get().await.unwrap();
    client
        .execute(
            "INSERT INTO gateway_claim (holder, checked_at, check_interval_ms)
             VALUES ('payhub serve gone', now(), 1000)",
            &[],
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let interval = Duration::from_millis(2_000);
    let claim = DatabaseClaim::take_checking_every(&db.pool, &db.url, OWN, interval)
        .await
        .unwrap();
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(2_500), "{waited:?}");
    let holder: String = client
        .query_one("SELECT holder FROM gateway_claim", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(holder, OWN);

    claim.release().await;
    let mut taken = None;
    let started = std::time::Instant::now();
    for _ in 0..100 {
        // The released claim's lock goes with its connection, a moment after.
        match DatabaseClaim::take_checking_every(&db.pool, &db.url, "payhub serve next", interval)
            .await
        {
            Ok(claim) => {
                taken = Some(claim);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert!(taken.is_some(), "the next gateway claims the database");
    let waited = started.elapsed();
    // Not released, this heartbeat would have held the next claim for 6 s.
    assert!(waited < Duration::from_millis(3_000), "{waited:?}");
}
