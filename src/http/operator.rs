//! The operator listener, bound apart from the merchant API (loopback by default): `/metrics`,
//! `/healthz`, `/readyz` and an HTML page with bank links, throughput, recent payments and
//! backlogs. Protected by `operator.token` when one is set (a Bearer header, or `?token=`, which
//! the page trades for a session cookie), otherwise loopback peers whose `Host` names loopback
//! or localhost.

use actix_web::{HttpRequest, HttpResponse, web};
use deadpool_postgres::Pool;
use futures::future::BoxFuture;
use payhub_actors::store::prepared::Prepared;
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long a readiness or page query may take before it is answered as failed.
pub const QUERY_TIMEOUT_MS: u64 = 2_000;
/// Connections the operator listener serves at once (its one worker); more wait in the backlog.
pub const CONNECTIONS_MAX: usize = 64;
/// How long a client may take to send a request's head.
pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// Recent payments shown on the page.
pub const RECENT_PAYMENTS_MAX: i64 = 20;

/// One bank link as the operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkView {
    pub name: String,
    pub owner: String,
    pub state: String,
    pub signed_on: bool,
    pub in_flight: usize,
    pub last_echo_age_s: Option<u64>,
    pub latency_ms: Option<f64>,
    pub reversals_pending: u64,
}

/// Where the operator page reads the bank links from (the bank router, wired by serve.rs).
pub trait LinkStatusSource: Send + Sync + 'static {
    fn links(&self) -> BoxFuture<'static, Vec<LinkView>>;

    /// How many links are signed on, of how many (`/readyz`); a source that can tell without
    /// reading the database should.
    fn signed_on(&self) -> BoxFuture<'static, (usize, usize)> {
        let links = self.links();
        Box::pin(async move {
            let links = links.await;
            (links.iter().filter(|l| l.signed_on).count(), links.len())
        })
    }
}

/// No bank links configured.
pub struct NoLinks;

impl LinkStatusSource for NoLinks {
    fn links(&self) -> BoxFuture<'static, Vec<LinkView>> {
        Box::pin(async { Vec::new() })
    }
}

#[derive(Clone)]
pub struct OperatorState {
    pub pool: Pool,
    pub links: Arc<dyn LinkStatusSource>,
    pub token: Option<payhub_actors::Secret<String>>,
}

pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.route("/healthz", web::get().to(healthz))
        .route("/readyz", web::get().to(readyz))
        .route("/metrics", web::get().to(metrics))
        .route("/", web::get().to(page))
        .route("/api/links", web::get().to(links_json));
}

/// Starts the operator listener; returns the bound address and the server handle.
pub fn start(
    listen: SocketAddr,
    state: OperatorState,
) -> std::io::Result<(SocketAddr, actix_web::dev::Server)> {
    let data = web::Data::new(state);
    let server = actix_web::HttpServer::new(move || {
        actix_web::App::new()
            .app_data(data.clone())
            .configure(routes)
    })
    .workers(1)
    .max_connections(CONNECTIONS_MAX)
    .client_request_timeout(Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS))
    .disable_signals()
    .shutdown_timeout(5)
    .bind(listen)?;
    let addr = server.addrs().first().copied().unwrap_or(listen);
    Ok((addr, server.run()))
}

/// The cookie that stands for the token once the page was opened with `?token=`, so that the
/// token leaves the address bar, the page's refreshes and the history.
const SESSION_COOKIE: &str = "payhub_operator";

/// The cookie's value for `token`: keyed with this process's own random key, so a restart ends
/// every such session and the cookie never holds the token.
fn session_value(token: &str) -> String {
    static KEY: std::sync::OnceLock<payhub_actors::keyed_hash::HashKey> =
        std::sync::OnceLock::new();
    let key = KEY.get_or_init(payhub_actors::keyed_hash::HashKey::random);
    hex::encode(key.hash("operator page session", token.as_bytes()))
}

/// The token as presented in an `Authorization: Bearer` header or a `?token=` parameter.
fn presented_token(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned)
        .or_else(|| query_token(req))
}

fn query_token(req: &HttpRequest) -> Option<String> {
    web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
        .ok()
        .and_then(|q| q.get("token").cloned())
}

fn allowed(req: &HttpRequest, state: &OperatorState) -> bool {
    match &state.token {
        // An empty token (refused by the configuration's check as well) opens nothing.
        Some(token) if token.expose().is_empty() => false,
        Some(token) => {
            let token = token.expose();
            let by_token = presented_token(req)
                .is_some_and(|p| constant_time_eq(p.as_bytes(), token.as_bytes()));
            let by_cookie = req.cookie(SESSION_COOKIE).is_some_and(|c| {
                constant_time_eq(c.value().as_bytes(), session_value(token).as_bytes())
            });
            by_token || by_cookie
        }
        // Loopback alone is not enough: a page of another site that re-resolved its name to
        // 127.0.0.1 (DNS rebinding) is loopback too, but names its own host.
        None => req.peer_addr().is_some_and(|a| a.ip().is_loopback()) && names_loopback(req),
    }
}

/// Whether the request's `Host` names this machine: a loopback address, `localhost` (or a name
/// under it), or the unspecified address a listener on all interfaces prints. A name another
/// site's page could be served under is none of these.
fn names_loopback(req: &HttpRequest) -> bool {
    let Some(host) = req.headers().get("host").and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let name = match host.rsplit_once(':') {
        // `[::1]:port`, `127.0.0.1:port`, `localhost:port`; a bare IPv6 address has colons too.
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !name.ends_with(':') => {
            name
        }
        _ => host,
    };
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn forbidden() -> HttpResponse {
    HttpResponse::Forbidden()
        .json(serde_json::json!({"error":{"code":"forbidden","message":"operator token required"}}))
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status":"up"}))
}

async fn database_ok(pool: &Pool) -> bool {
    let check = async {
        let client = pool.get().await.ok()?;
        client.query_one_cached("SELECT 1", &[]).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(QUERY_TIMEOUT_MS), check).await,
        Ok(Some(_))
    )
}

async fn readyz(state: web::Data<OperatorState>) -> HttpResponse {
    let database = database_ok(&state.pool).await;
    let (signed_on, links) = state.links.signed_on().await;
    let body = serde_json::json!({
        "database": database,
        "bank_links_signed_on": signed_on,
        "bank_links": links,
    });
    if database && signed_on > 0 {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn metrics(req: HttpRequest, state: web::Data<OperatorState>) -> HttpResponse {
    if !allowed(&req, &state) {
        return forbidden();
    }
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(payhub_actors::metrics::global().render())
}

async fn links_json(req: HttpRequest, state: web::Data<OperatorState>) -> HttpResponse {
    if !allowed(&req, &state) {
        return forbidden();
    }
    HttpResponse::Ok().json(state.links.links().await)
}

#[derive(Debug, Serialize)]
struct RecentPayment {
    id: String,
    merchant: String,
    amount: String,
    status: String,
    failure_code: Option<String>,
    account: String,
    created_at: String,
}

#[derive(Debug, Serialize, Default)]
struct Backlogs {
    reversals_pending: i64,
    reversal_oldest_age_s: Option<i64>,
    webhooks_pending: i64,
    webhook_oldest_age_s: Option<i64>,
}

#[derive(Debug, Serialize)]
struct MinuteBar {
    x: usize,
    height: i64,
    count: i64,
    label: String,
}

async fn page(req: HttpRequest, state: web::Data<OperatorState>) -> HttpResponse {
    if !allowed(&req, &state) {
        return forbidden();
    }
    if let (Some(token), Some(_)) = (&state.token, query_token(&req)) {
        // Opened with `?token=`: the same page again without it, the cookie standing for it.
        // `Lax`, not `Strict`: the page is opened from links on other sites (a runbook, a chat),
        // and a Strict cookie would not follow the redirect; the page only reads.
        let cookie =
            actix_web::cookie::Cookie::build(SESSION_COOKIE, session_value(token.expose()))
                .path("/")
                .http_only(true)
                .same_site(actix_web::cookie::SameSite::Lax)
                .finish();
        return HttpResponse::SeeOther()
            .insert_header(("location", "/"))
            .insert_header(("referrer-policy", "no-referrer"))
            .cookie(cookie)
            .finish();
    }
    let links = state.links.links().await;
    let data = tokio::time::timeout(
        Duration::from_millis(QUERY_TIMEOUT_MS),
        page_data(&state.pool),
    )
    .await
    .ok()
    .and_then(Result::ok);
    let (recent, backlogs, bars, database) = match data {
        Some((r, b, m)) => (r, b, m, true),
        None => (Vec::new(), Backlogs::default(), Vec::new(), false),
    };
    let ctx = minijinja::context! { links, recent, backlogs, bars, database };
    match templates()
        .get_template("operator.html")
        .and_then(|t| t.render(ctx))
    {
        Ok(html) => HttpResponse::Ok()
            .content_type("text/html; charset=utf-8")
            .insert_header(("cache-control", "no-store"))
            .insert_header(("referrer-policy", "no-referrer"))
            .body(html),
        Err(e) => {
            tracing::error!(error = %e, "operator page template");
            HttpResponse::ServiceUnavailable().body("operator page unavailable")
        }
    }
}

fn templates() -> &'static minijinja::Environment<'static> {
    static ENV: std::sync::OnceLock<minijinja::Environment<'static>> = std::sync::OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = minijinja::Environment::new();
        env.add_template(
            "operator.html",
            include_str!("../../templates/operator/operator.html"),
        )
        .expect("the operator template parses");
        env
    })
}

type PageData = (Vec<RecentPayment>, Backlogs, Vec<MinuteBar>);

async fn page_data(pool: &Pool) -> anyhow::Result<PageData> {
    let client = pool.get().await?;
    let rows = client
        .query_cached(
            "SELECT p.id, m.name, p.amount_minor, p.currency, p.status, p.failure_code, \
                    c.account, to_char(p.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') \
             FROM payments p JOIN merchants m ON m.id = p.merchant_id \
             LEFT JOIN customers c ON c.id = p.customer_id \
             ORDER BY p.created_at DESC LIMIT $1",
            &[&RECENT_PAYMENTS_MAX],
        )
        .await?;
    let recent = rows
        .iter()
        .map(|r| {
            let minor: i64 = r.get(2);
            let currency: String = r.get(3);
            RecentPayment {
                id: r.get(0),
                merchant: r.get(1),
                amount: format!("{}.{:02} {currency}", minor / 100, minor % 100),
                status: r.get(4),
                failure_code: r.get(5),
                account: r
                    .get::<_, Option<String>>(6)
                    .map(|a| payhub_actors::secret::mask_account(&a))
                    .unwrap_or_default(),
                created_at: r.get(7),
            }
        })
        .collect();
    let b = client
        .query_one_cached(
            "SELECT (SELECT count(*) FROM reversals WHERE completed_at IS NULL), \
                    (SELECT extract(epoch FROM now() - min(created_at))::bigint FROM reversals WHERE completed_at IS NULL), \
                    (SELECT count(*) FROM webhook_events WHERE delivered_at IS NULL AND given_up_at IS NULL), \
                    (SELECT extract(epoch FROM now() - min(created_at))::bigint FROM webhook_events WHERE delivered_at IS NULL AND given_up_at IS NULL)",
            &[],
        )
        .await?;
    let backlogs = Backlogs {
        reversals_pending: b.get(0),
        reversal_oldest_age_s: b.get(1),
        webhooks_pending: b.get(2),
        webhook_oldest_age_s: b.get(3),
    };
    let minutes = client
        .query_cached(
            "SELECT (extract(epoch FROM date_trunc('minute', now()) - date_trunc('minute', created_at)) / 60)::int AS ago, count(*) \
             FROM payments WHERE created_at > now() - interval '60 minutes' GROUP BY ago",
            &[],
        )
        .await?;
    let mut counts = [0i64; 60];
    for row in minutes {
        let ago: i32 = row.get(0);
        if let Some(slot) = usize::try_from(59 - ago)
            .ok()
            .and_then(|i| counts.get_mut(i))
        {
            *slot = row.get(1);
        }
    }
    Ok((recent, backlogs, minute_bars(&counts)))
}

/// Bars of a 60-minute chart, scaled to 100 px.
fn minute_bars(counts: &[i64; 60]) -> Vec<MinuteBar> {
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    counts
        .iter()
        .enumerate()
        .map(|(i, &count)| MinuteBar {
            x: i * 10,
            height: count * 100 / max,
            count,
            label: format!("{} min ago: {count}", 59 - i),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_to_the_busiest_minute() {
        let mut counts = [0i64; 60];
        counts[59] = 10;
        counts[0] = 5;
        let bars = minute_bars(&counts);
        assert_eq!(bars.len(), 60);
        assert_eq!(bars[59].height, 100);
        assert_eq!(bars[0].height, 50);
        assert_eq!(bars[0].label, "59 min ago: 5");
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
