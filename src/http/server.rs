//! The gateway's HTTPS listener: one TLS socket (actix-web over OpenSSL) for the merchant API and
//! the customer pages. Other parts add their routes as configurators; tests and `serve` start it
//! in-process, on port 0 if they like, and get the bound address back.
//!
//! ```ignore
//! let server = server::start(settings, &tls, pool, clock, vec![Arc::new(pages::configure)])?;
//! println!("listening on {}", server.addr);
//! ```

use crate::http::stuck_connections::{self, BodyUnderWay, ConnectionWatch};
use crate::http::{error, listener, merchant, mtls};
use actix_web::dev::{ServerHandle, Service};
use actix_web::{App, HttpServer, web};
use futures::FutureExt;
use payhub_actors::clock::SharedClock;
use payhub_actors::store::create_batch::CreateBatcher;
use std::net::SocketAddr;
use std::sync::Arc;

/// Routes another part adds to the listener (PAY's customer pages).
pub type Configurator = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;

/// How long a graceful stop waits for requests in progress: beyond the code page's wait for the
/// bank, so that a customer who has just typed the code is answered with the outcome rather than
/// a dropped connection. Requests are answered in time (`request_deadline_ms` bounds the rest),
/// and idle connections do not hold the stop.
pub const SHUTDOWN_TIMEOUT_S: u64 = crate::http::pages::CODE_STEP_WAIT_MAX_MS / 1_000 + 5;
/// How long a client may take to send a request's head.
pub const CLIENT_REQUEST_TIMEOUT_MS: u64 = 5_000;
/// How long an idle keep-alive connection is kept.
pub const KEEP_ALIVE_S: u64 = 30;
/// A connection that has served no request for this long is stuck in a request's head (an idle
/// one was closed at `KEEP_ALIVE_S`), and is closed (`stuck_connections`).
pub const STUCK_CONNECTION_AFTER_MS: u64 = KEEP_ALIVE_S * 1_000 + CLIENT_REQUEST_TIMEOUT_MS;

/// What the listener needs besides TLS material, the pool and the clock.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub workers: usize,
    /// Largest request body accepted, in bytes.
    pub body_max_bytes: usize,
    /// The gateway's address as customers see it (`pay_url` starts with it).
    pub public_url: url::Url,
    /// How long a payment waits for its customer before it expires.
    pub payment_lifetime_s: u64,
    /// The longest a request may take, its body included; past it the answer is
    /// `408 request_timeout`.
    pub request_deadline_ms: u64,
    /// Connections open at once, all workers together (actix's own bound is 25,000 per worker):
    /// each holds a file descriptor, which the whole process shares.
    pub connections_max: usize,
    /// `webhooks.allow_private_destinations`: whether a `notify_url` may name a loopback or
    /// private address.
    pub allow_private_notify_urls: bool,
    /// [`STUCK_CONNECTION_AFTER_MS`], shorter in tests.
    pub stuck_connection_after_ms: u64,
}

impl ServerSettings {
    /// On 127.0.0.1, any free port, with the configuration's defaults (tests and benchmarks).
    pub fn loopback(workers: usize, public_url: url::Url) -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            workers,
            body_max_bytes: crate::config::defaults::body_max_bytes(),
            public_url,
            payment_lifetime_s: crate::config::defaults::payment_lifetime_s(),
            request_deadline_ms: crate::config::defaults::request_deadline_ms(),
            connections_max: crate::config::defaults::connections_max(),
            allow_private_notify_urls: true,
            stuck_connection_after_ms: STUCK_CONNECTION_AFTER_MS,
        }
    }

    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            listen: config.http.listen,
            workers: config.http.workers.max(1),
            body_max_bytes: config.http.body_max_bytes,
            public_url: config.http.public_url.clone(),
            payment_lifetime_s: config.payments.lifetime_s,
            request_deadline_ms: config.http.request_deadline_ms,
            connections_max: config.http.connections_max,
            allow_private_notify_urls: config.webhooks.allow_private_destinations,
            stuck_connection_after_ms: STUCK_CONNECTION_AFTER_MS,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS set-up: {0}")]
    Tls(#[from] openssl::error::ErrorStack),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A started listener. Dropping it leaves the server running; call [`RunningServer::stop`].
#[derive(Debug)]
pub struct RunningServer {
    /// The bound address (the real port when the settings said 0).
    pub addr: SocketAddr,
    pub handle: ServerHandle,
    /// The payment create writer (its counts show how creates were batched).
    pub creates: CreateBatcher,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningServer {
    /// Stops accepting, lets requests in progress finish (up to `SHUTDOWN_TIMEOUT_S`).
    pub async fn stop(self) {
        self.handle.stop(true).await;
        let _ = self.task.await;
    }

    /// Waits until the server stops (for `serve`).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task
            .await
            .unwrap_or_else(|e| Err(std::io::Error::other(e)))
    }
}

/// Binds and starts the listener on the current tokio runtime. The server does not handle
/// signals itself: its owner stops it.
pub fn start(
    settings: ServerSettings,
    tls: &mtls::ServerTls,
    pool: deadpool_postgres::Pool,
    clock: SharedClock,
    extra: Vec<Configurator>,
) -> Result<RunningServer, ServerError> {
    let acceptor = tls.acceptor(clock.clone())?;
    let merchant_cas = std::sync::Arc::new(tls.merchant_cas()?);
    let bind_failed = |source| ServerError::Bind {
        addr: settings.listen,
        source,
    };
    let socket = listener::bind(settings.listen).map_err(bind_failed)?;
    let cache = web::Data::new(mtls::MerchantCache::new(
        clock.clone(),
        mtls::MERCHANT_CACHE_TTL_MS,
    ));
    let api = merchant::MerchantApi {
        public_url: settings.public_url.clone(),
        payment_lifetime_s: settings.payment_lifetime_s,
        body_max_bytes: settings.body_max_bytes,
        allow_private_notify_urls: settings.allow_private_notify_urls,
        clock,
    };
    let creates = CreateBatcher::start(pool.clone());
    let batcher = web::Data::new(creates.clone());
    let pool = web::Data::new(pool);
    let api = web::Data::new(api);
    let extra = Arc::new(extra);
    let body_max_bytes = settings.body_max_bytes;
    let deadline = std::time::Duration::from_millis(settings.request_deadline_ms);
    let hsts = !names_this_machine(&settings.public_url);
    let stuck = stuck_connections::Limits {
        idle_max: std::time::Duration::from_millis(settings.stuck_connection_after_ms),
        // A request may run until its deadline before its answer's first chunk.
        busy_max: std::time::Duration::from_millis(
            settings
                .stuck_connection_after_ms
                .max(settings.request_deadline_ms + CLIENT_REQUEST_TIMEOUT_MS),
        ),
    };
    let server = HttpServer::new(move || {
        let extra = Arc::clone(&extra);
        App::new()
            .app_data(pool.clone())
            .app_data(batcher.clone())
            .app_data(api.clone())
            .app_data(cache.clone())
            .app_data(web::PayloadConfig::new(body_max_bytes))
            .app_data(web::FormConfig::default().limit(body_max_bytes))
            .app_data(web::JsonConfig::default().limit(body_max_bytes))
            .wrap_fn(move |req, srv| {
                let started = std::time::Instant::now();
                // The customer pages answer with a page, the API with its error shape.
                let page_path = req
                    .path()
                    .starts_with("/pay/")
                    .then(|| req.path().to_owned());
                let under_way =
                    (req.conn_data::<ConnectionWatch>()).map(ConnectionWatch::request_started);
                // The deadline covers the extractors, so a body held back is cut off too.
                tokio::time::timeout(deadline, srv.call(req)).map(move |res| {
                    let res =
                        res.unwrap_or_else(|_| Err(deadline_passed(page_path.as_deref(), hsts)));
                    if let Ok(res) = &res {
                        observe(res, started);
                    }
                    // Under way until its body is written.
                    res.map(|res| match under_way {
                        Some(request) => res.map_body(|_, body| BodyUnderWay::boxed(body, request)),
                        None => res,
                    })
                })
            })
            // On every answer the routes make, pages and API alike: the listener speaks TLS
            // only, and no answer is to be read as another type than it is sent as.
            .wrap(security_middleware(hsts))
            .configure(merchant::configure)
            .configure(move |cfg| {
                for add in extra.iter() {
                    add(cfg);
                }
            })
            .default_service(web::to(merchant::no_route))
    })
    .workers(settings.workers.max(1))
    .max_connections(connections_per_worker(&settings))
    .on_connect(move |conn, data| {
        mtls::on_connect(conn, data, &merchant_cas);
        stuck_connections::on_connect(conn, data, stuck);
    })
    // Again after the handshake, where the socket did not inherit it (`http::listener`).
    .tcp_nodelay(true)
    .keep_alive(std::time::Duration::from_secs(KEEP_ALIVE_S))
    .client_request_timeout(std::time::Duration::from_millis(CLIENT_REQUEST_TIMEOUT_MS))
    .shutdown_timeout(SHUTDOWN_TIMEOUT_S)
    .disable_signals()
    .listen_openssl(socket, acceptor)
    .map_err(bind_failed)?;
    let addr = server.addrs().first().copied().unwrap_or(settings.listen);
    let server = server.run();
    let handle = server.handle();
    let task = tokio::spawn(server);
    tracing::info!(%addr, "gateway HTTPS listener started");
    Ok(RunningServer {
        addr,
        handle,
        creates,
        task,
    })
}

/// A year, and not the operator's other hosts (`includeSubDomains` is theirs to choose).
const HSTS: &str = "max-age=31536000";

/// `nosniff` on every answer, and HSTS unless the gateway is reached as this machine: a browser
/// would keep HTTPS-only for `localhost` on every port for a year, the demo's operator page
/// (plain HTTP) and any other local service included.
fn security_headers(hsts: bool) -> Vec<(&'static str, &'static str)> {
    // Lower case: `HeaderName::from_static` takes no other.
    let mut headers = vec![("x-content-type-options", "nosniff")];
    if hsts {
        headers.push(("strict-transport-security", HSTS));
    }
    headers
}

/// The security headers on every answer the routes make.
fn security_middleware(hsts: bool) -> actix_web::middleware::DefaultHeaders {
    security_headers(hsts).into_iter().fold(
        actix_web::middleware::DefaultHeaders::new(),
        |all, header| all.add(header),
    )
}

/// Whether `url` names this machine: `localhost` (or a name under it) or a loopback address.
fn names_this_machine(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            name == "localhost" || name.ends_with(".localhost")
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Request latency by route pattern (never the raw path: it holds payment ids).
fn observe<B>(res: &actix_web::dev::ServiceResponse<B>, started: std::time::Instant) {
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    let status = res.status().as_u16().to_string();
    payhub_actors::metrics::global()
        .http_request_seconds
        .get_or_create(&payhub_actors::metrics::labels(&[
            ("listener", "gateway"),
            ("route", &route),
            ("status", &status),
        ]))
        .observe(started.elapsed().as_secs_f64());
}

/// The answer past the request deadline: a page under `/pay`, the API's error shape elsewhere.
/// It leaves as an error, which passes the middleware by, so it takes its security headers here.
fn deadline_passed(page_path: Option<&str>, hsts: bool) -> actix_web::Error {
    let mut answer = match page_path {
        Some(path) => super::pages::deadline_passed(path),
        None => actix_web::ResponseError::error_response(&error::ApiError::request_timeout()),
    };
    for (name, value) in security_headers(hsts) {
        answer.headers_mut().insert(
            actix_web::http::header::HeaderName::from_static(name),
            actix_web::http::header::HeaderValue::from_static(value),
        );
    }
    actix_web::error::InternalError::from_response("request deadline passed", answer).into()
}

/// actix bounds connections per worker: the configured total, shared out.
fn connections_per_worker(settings: &ServerSettings) -> usize {
    settings
        .connections_max
        .div_ceil(settings.workers.max(1))
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::names_this_machine;

    #[test]
    fn hsts_is_left_out_only_for_this_machine() {
        for (url, local) in [
            ("https://localhost:8443", true),
            ("https://LOCALHOST.:8443", true),
            ("https://demo.localhost", true),
            ("https://127.0.0.1:8443", true),
            ("https://[::1]:8443", true),
            ("https://pay.example.com", false),
            ("https://10.0.0.5", false),
        ] {
            let url = url::Url::parse(url).unwrap();
            assert_eq!(names_this_machine(&url), local, "{url}");
        }
    }
}
