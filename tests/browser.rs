//! Pages in a real browser: headless Chromium (Debian's `chromium`) renders the operator page and
//! saves a screenshot. Skipped, with a message saying so, where no Chromium is installed.

use futures::future::BoxFuture;
use payhub::http::operator::{self, LinkStatusSource, LinkView, OperatorState};
use payhub_actors::store::testing::fresh_database;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

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

/// Runs headless Chromium on `url` at `width`x`height`, saving a screenshot to `png` and
/// returning the rendered DOM.
fn render(browser: &Path, url: &str, width: u32, height: u32, png: &Path) -> String {
    let profile = tempfile::tempdir().unwrap();
    let common = |cmd: &mut Command| {
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("--window-size={width},{height}"));
    };
    let mut shot = Command::new(browser);
    common(&mut shot);
    let out = shot
        .arg(format!("--screenshot={}", png.display()))
        .arg(url)
        .output()
        .unwrap();
    assert!(
        png.is_file(),
        "no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut dom = Command::new(browser);
    common(&mut dom);
    let out = dom.arg("--dump-dom").arg(url).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

struct Links;

impl LinkStatusSource for Links {
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
        eprintln!(
            "skipped: no Chromium installed (apt-get install -y chromium) — browser test not run"
        );
        return;
    };
    let db = fresh_database().await;
    let (addr, server) = operator::start(
        "127.0.0.1:0".parse().unwrap(),
        OperatorState {
            pool: db.pool.clone(),
            links: Arc::new(Links),
            token: None,
        },
    )
    .unwrap();
    actix_rt::spawn(server);
    let png = Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator-page.png");
    let url = format!("http://{addr}/");
    let dom = tokio::task::spawn_blocking(move || render(&browser, &url, 1280, 900, &png))
        .await
        .unwrap();
    assert!(dom.contains("payhub operator"), "{dom}");
    assert!(
        dom.contains("bips-payer-bank") && dom.contains("payer_bank"),
        "{dom}"
    );
    assert!(dom.contains("Payments per minute"), "{dom}");
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("operator-page.png");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a blank screenshot"
    );
}
