//! Pages in a real browser: headless Chromium (Debian's `chromium`), driven over its DevTools
//! protocol, renders the operator page on a desktop and the customer pay page of a real gateway
//! at phone width, and saves screenshots. Skipped, with a message saying so, where no Chromium is
//! installed.

mod e2e_support;

use base64::Engine;
use e2e_support::Stage;
use futures::future::BoxFuture;
use payhub::http::operator::{self, LinkStatusSource, LinkView, OperatorState};
use payhub_actors::store::testing::fresh_database;
use serde_json::{Value, json};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tungstenite::stream::MaybeTlsStream;

/// How long Chromium may take to start, and a page to load.
const BROWSER_START_TIMEOUT_MS: u64 = 30_000;
const PAGE_LOAD_TIMEOUT_MS: u64 = 30_000;
const POLL_INTERVAL_MS: u64 = 50;
/// A DevTools answer (a screenshot is the largest) must come within this.
const ANSWER_TIMEOUT_MS: u64 = 30_000;

fn chromium() -> Option<PathBuf> {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}

fn skip_message() {
    eprintln!(
        "skipped: no Chromium installed (apt-get install -y chromium) — browser test not run"
    );
}

/// The screen a page is shown on.
#[derive(Clone, Copy)]
struct Screen {
    width: u32,
    height: u32,
    /// A phone: the page's `<meta name="viewport">` is honoured, as on a handset.
    mobile: bool,
}

const DESKTOP: Screen = Screen {
    width: 1280,
    height: 900,
    mobile: false,
};
const PHONE: Screen = Screen {
    width: 390,
    height: 844,
    mobile: true,
};

/// What the browser made of a page.
struct Rendered {
    html: String,
    /// The width of the laid-out page; wider than `viewport_width` means sideways scrolling.
    scroll_width: u64,
    viewport_width: u64,
}

/// Headless Chromium with a profile of its own, killed when dropped. It trusts any server
/// certificate: the gateway's test CA is not in its store.
struct Chromium {
    child: Child,
    socket: tungstenite::WebSocket<MaybeTlsStream<TcpStream>>,
    session: String,
    next_id: u64,
    _profile: tempfile::TempDir,
}

impl Chromium {
    fn launch(binary: &Path) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--ignore-certificate-errors",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let endpoint = wait_for_endpoint(profile.path());
        let (socket, _) = tungstenite::connect(endpoint).expect("DevTools socket");
        if let MaybeTlsStream::Plain(tcp) = socket.get_ref() {
            // A browser that stops answering fails the test instead of hanging it.
            let wait = Duration::from_millis(ANSWER_TIMEOUT_MS);
            tcp.set_read_timeout(Some(wait)).unwrap();
        }
        let mut browser = Chromium {
            child,
            socket,
            session: String::new(),
            next_id: 0,
            _profile: profile,
        };
        browser.session = browser.open_tab();
        browser
    }

    /// A new tab, attached: its session id.
    fn open_tab(&mut self) -> String {
        let target = self.browser_call("Target.createTarget", json!({"url": "about:blank"}));
        let attach = json!({"targetId": target["targetId"], "flatten": true});
        let attached = self.browser_call("Target.attachToTarget", attach);
        attached["sessionId"].as_str().unwrap().to_string()
    }

    fn browser_call(&mut self, method: &str, params: Value) -> Value {
        self.send(json!({"method": method, "params": params}))
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(json!({"method": method, "params": params, "sessionId": session}))
    }

    /// Sends one command and waits for its answer (events in between are skipped).
    fn send(&mut self, mut command: Value) -> Value {
        self.next_id += 1;
        command["id"] = json!(self.next_id);
        self.socket
            .send(tungstenite::Message::text(command.to_string()))
            .unwrap();
        let deadline = Instant::now() + Duration::from_millis(ANSWER_TIMEOUT_MS);
        while Instant::now() < deadline {
            let message = self.socket.read().expect("DevTools answer");
            let Ok(text) = message.to_text() else {
                continue;
            };
            let answer: Value = serde_json::from_str(text).unwrap();
            if answer["id"] == json!(self.next_id) {
                assert!(answer["error"].is_null(), "{command}: {answer}");
                return answer["result"].clone();
            }
        }
        panic!("no answer to {command}");
    }

    fn eval(&mut self, expression: &str) -> Value {
        let params = json!({"expression": expression, "returnByValue": true});
        self.call("Runtime.evaluate", params)["result"]["value"].clone()
    }

    /// Shows `url` on `screen`, saves a screenshot to `png`, and measures the page.
    fn render(&mut self, url: &str, screen: Screen, png: &Path) -> Rendered {
        let metrics = json!({"width": screen.width, "height": screen.height,
                             "deviceScaleFactor": 1, "mobile": screen.mobile});
        self.call("Emulation.setDeviceMetricsOverride", metrics);
        self.call("Page.navigate", json!({"url": url}));
        self.wait_loaded(url);
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        std::fs::write(png, bytes).unwrap();
        let measured = self.eval(
            "JSON.stringify({html: document.documentElement.outerHTML, \
              scroll: document.documentElement.scrollWidth, viewport: window.innerWidth})",
        );
        let measured: Value = serde_json::from_str(measured.as_str().unwrap()).unwrap();
        Rendered {
            html: measured["html"].as_str().unwrap().to_string(),
            scroll_width: measured["scroll"].as_u64().unwrap(),
            viewport_width: measured["viewport"].as_u64().unwrap(),
        }
    }

    fn wait_loaded(&mut self, url: &str) {
        let check = format!(
            "location.href === {} && document.readyState === 'complete'",
            json!(url)
        );
        let deadline = Instant::now() + Duration::from_millis(PAGE_LOAD_TIMEOUT_MS);
        while self.eval(&check) != json!(true) {
            assert!(Instant::now() < deadline, "{url} did not load");
            std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Chromium writes the DevTools port and browser path to `DevToolsActivePort` once it listens.
fn wait_for_endpoint(profile: &Path) -> String {
    let file = profile.join("DevToolsActivePort");
    let deadline = Instant::now() + Duration::from_millis(BROWSER_START_TIMEOUT_MS);
    loop {
        let text = std::fs::read_to_string(&file).unwrap_or_default();
        if let [port, path] = text.lines().collect::<Vec<_>>()[..] {
            return format!("ws://127.0.0.1:{port}{path}");
        }
        assert!(Instant::now() < deadline, "Chromium did not start");
        std::thread::sleep(Duration::from_millis(POLL_INTERVAL_MS));
    }
}

/// Renders `url` in a fresh Chromium on `screen`, off the async runtime.
async fn render(browser: PathBuf, url: String, screen: Screen, png: PathBuf) -> Rendered {
    tokio::task::spawn_blocking(move || Chromium::launch(&browser).render(&url, screen, &png))
        .await
        .unwrap()
}

fn screenshot_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(name)
}

fn assert_not_blank(png: &Path, bytes_min: u64) {
    let size = std::fs::metadata(png).unwrap().len();
    assert!(size > bytes_min, "a blank screenshot: {size} bytes");
}

/// Two links as the operator page shows them (a test double: the page test is about rendering;
/// tests/operator.rs drives a real bank router).
struct TwoLinks;

impl LinkStatusSource for TwoLinks {
    fn links(&self) -> BoxFuture<'static, Vec<LinkView>> {
        Box::pin(async {
            ["bips-third-party", "bips-payer-bank"]
                .iter()
                .enumerate()
                .map(|(i, name)| LinkView {
                    name: name.to_string(),
                    owner: ["third_party", "payer_bank"][i].into(),
                    state: "signed_on".into(),
                    signed_on: true,
                    in_flight: i,
                    last_echo_age_s: Some(4),
                    latency_ms: Some(0.8),
                    reversals_pending: 0,
                })
                .collect()
        })
    }
}

#[actix_rt::test]
async fn operator_page_renders_in_headless_chromium() {
    let Some(browser) = chromium() else {
        return skip_message();
    };
    let db = fresh_database().await;
    let (addr, server) = operator::start(
        "127.0.0.1:0".parse().unwrap(),
        OperatorState {
            pool: db.pool.clone(),
            links: Arc::new(TwoLinks),
            token: None,
        },
    )
    .unwrap();
    actix_rt::spawn(server);
    let png = screenshot_path("operator-page.png");
    let page = render(browser, format!("http://{addr}/"), DESKTOP, png.clone()).await;
    let dom = &page.html;
    assert!(dom.contains("payhub operator"), "{dom}");
    assert!(
        dom.contains("bips-payer-bank") && dom.contains("payer_bank"),
        "{dom}"
    );
    assert!(dom.contains("0.8 ms"), "link latency shown: {dom}");
    assert!(dom.contains("Payments per minute"), "{dom}");
    assert_not_blank(&png, 10_000);
}

#[actix_rt::test]
async fn pay_page_fits_a_phone_screen_in_headless_chromium() {
    let Some(browser) = chromium() else {
        return skip_message();
    };
    let stage = Stage::start().await;
    let pay = stage.payment().await;
    // A description without a break, as some shops send order references.
    let long_word = format!("ORDER{}", "0123456789".repeat(6));
    let db = stage.db.pool.get().await.unwrap();
    db.execute(
        "UPDATE payments SET description = $2 WHERE id = $1",
        &[&pay, &long_word],
    )
    .await
    .unwrap();
    let png = screenshot_path("pay-page-phone.png");
    let url = format!("{}/pay/{pay}", stage.gateway.base);
    let page = render(browser, url, PHONE, png.clone()).await;
    let dom = &page.html;
    assert!(
        dom.contains("Book Shop") && dom.contains("12.34 CNY"),
        "{dom}"
    );
    assert!(dom.contains(&long_word), "{dom}");
    assert!(dom.contains("name=\"password\""), "the sign-in form: {dom}");
    // Too wide a page is zoomed out (a wider layout viewport) or scrolls sideways.
    let phone = u64::from(PHONE.width);
    assert!(
        page.viewport_width == phone && page.scroll_width <= phone,
        "the pay page is wider than a {phone} px phone: laid out {} px wide, content {} px",
        page.viewport_width,
        page.scroll_width
    );
    assert_not_blank(&png, 5_000);
}
