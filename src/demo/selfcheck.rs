//! One payment end to end, driven as a merchant and a customer would: `POST /v1/payments` with
//! the client certificate, the pay page's forms with cookies and CSRF tokens, the code read from
//! the SMSC simulator, and the outcome read back from the merchant API.

use super::sample;
use crate::serve::Gateway;
use crate::sim::smsc::SmscSim;
use anyhow::Context;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long each wait of the self-check may take (a code to arrive, the outcome to be stored).
pub const STEP_TIMEOUT_MS: u64 = 30_000;

fn https_client(
    dir: &Path,
    identity: Option<reqwest::Identity>,
) -> anyhow::Result<reqwest::Client> {
    let ca = std::fs::read(dir.join("pki").join(crate::pki::SERVER_CA_CERT))?;
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca)?)
        .cookie_store(true)
        .timeout(Duration::from_millis(STEP_TIMEOUT_MS));
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    Ok(builder.build()?)
}

fn merchant_identity(dir: &Path) -> anyhow::Result<reqwest::Identity> {
    let merchant = dir.join("merchant");
    let cert = std::fs::read(merchant.join("merchant.crt"))?;
    let key = std::fs::read(merchant.join("merchant.key"))?;
    Ok(reqwest::Identity::from_pkcs8_pem(&cert, &key)?)
}

async fn page(
    response: reqwest::Response,
) -> anyhow::Result<(reqwest::StatusCode, String, String)> {
    let status = response.status();
    let url = response.url().path().to_string();
    Ok((status, url, response.text().await?))
}

fn csrf(html: &str) -> anyhow::Result<String> {
    crate::sim::terminal::hidden_field(html, "csrf_token").context("the page has no csrf_token")
}

/// Runs the payment; returns one line describing the outcome.
pub async fn run(gateway: &Gateway, dir: &Path, smsc: &SmscSim) -> anyhow::Result<String> {
    let base = format!("https://localhost:{}", gateway.https_addr.port());
    let merchant = https_client(dir, Some(merchant_identity(dir)?))?;
    let order = format!(
        "selfcheck-{}",
        hex::encode(payhub_actors::ids::os_random::<4>())
    );
    let created: serde_json::Value = merchant
        .post(format!("{base}/v1/payments"))
        .header("Idempotency-Key", &order)
        .json(&serde_json::json!({
            "order_id": order, "amount": 1234, "currency": "CNY", "description": "self-check",
            "return_url": "https://shop.example/return", "notify_url": "https://127.0.0.1:9/hooks"
        }))
        .send()
        .await
        .context("creating the payment")?
        .error_for_status()?
        .json()
        .await?;
    let id = created["id"].as_str().context("no payment id")?.to_string();

    let customer = &sample::CUSTOMERS[0];
    let browser = https_client(dir, None)?;
    let (_, _, html) = page(browser.get(format!("{base}/pay/{id}")).send().await?).await?;
    let sent_before = smsc.messages().len();
    let (status, at, html) = page(
        browser
            .post(format!("{base}/pay/{id}/login"))
            .form(&[
                ("identity", customer.online_id),
                ("password", customer.password),
                ("channel", "sms"),
                ("terminal", ""),
                ("csrf_token", &csrf(&html)?),
            ])
            .send()
            .await?,
    )
    .await?;
    anyhow::ensure!(
        at.ends_with("/code"),
        "sign-in did not lead to the code page ({status})"
    );
    let code = wait_for_code(smsc, sent_before, customer.mobile).await?;
    let (_, at, _) = page(
        browser
            .post(format!("{base}/pay/{id}/code"))
            .form(&[("code", code.as_str()), ("csrf_token", &csrf(&html)?)])
            .send()
            .await?,
    )
    .await?;
    anyhow::ensure!(
        at.ends_with("/result"),
        "the code was not accepted (at {at})"
    );
    let payment = wait_for_outcome(&merchant, &format!("{base}/v1/payments/{id}")).await?;
    let status = payment["status"].as_str().unwrap_or("unknown");
    anyhow::ensure!(
        status == "succeeded",
        "payment {id} ended {status}: {payment}"
    );
    Ok(format!(
        "payment {id} of 12.34 CNY from {} to {} succeeded (approval code {}).",
        customer.online_id,
        sample::MERCHANT_NAME,
        payment["approval_code"].as_str().unwrap_or("?")
    ))
}

async fn wait_for_code(smsc: &SmscSim, sent_before: usize, msisdn: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_millis(STEP_TIMEOUT_MS);
    while Instant::now() < deadline {
        let code = smsc
            .messages()
            .into_iter()
            .skip(sent_before)
            .filter(|m| m.destination_addr == msisdn)
            .find_map(|m| code_in(&m.text));
        if let Some(code) = code {
            return Ok(code);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("no SMS with a code reached the SMSC simulator")
}

/// The digits after `code ` in a message.
fn code_in(text: &str) -> Option<String> {
    let rest = &text[text.find("code ")? + 5..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    (digits.len() >= 6).then_some(digits)
}

async fn wait_for_outcome(
    merchant: &reqwest::Client,
    url: &str,
) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_millis(STEP_TIMEOUT_MS);
    loop {
        let payment: serde_json::Value = merchant.get(url).send().await?.json().await?;
        let status = payment["status"].as_str().unwrap_or_default().to_string();
        if matches!(status.as_str(), "succeeded" | "failed" | "expired")
            || Instant::now() > deadline
        {
            return Ok(payment);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn finds_the_code_in_a_message() {
        assert_eq!(
            super::code_in("payhub: code 123456 to pay 12.34 CNY").as_deref(),
            Some("123456")
        );
        assert_eq!(super::code_in("no digits here"), None);
    }
}
