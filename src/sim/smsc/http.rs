//! The simulator's HTTP side: `GET /messages` (`?destination=` to filter), `GET /stats`,
//! `GET /switches`, and
//! `POST /switches` with a JSON object of the switches to change (the others keep their values).

use super::state::{SimState, Switches};
use actix_web::{App, HttpResponse, HttpServer, web};
use std::net::SocketAddr;
use std::sync::Arc;

/// Largest `POST /switches` body, in bytes.
const SWITCHES_BODY_MAX_BYTES: usize = 4_096;

/// Binds and starts serving; returns the bound address and a handle to stop the server.
pub fn start(
    listen: SocketAddr,
    state: Arc<SimState>,
) -> std::io::Result<(SocketAddr, actix_web::dev::ServerHandle)> {
    let data = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(SWITCHES_BODY_MAX_BYTES))
            .route("/messages", web::get().to(messages))
            .route("/stats", web::get().to(stats))
            .route("/switches", web::get().to(switches))
            .route("/switches", web::post().to(set_switches))
    })
    .workers(1)
    .disable_signals()
    .bind(listen)?;
    let addr = server
        .addrs()
        .first()
        .copied()
        .ok_or_else(|| std::io::Error::other("the HTTP listener has no address"))?;
    let server = server.run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok((addr, handle))
}

#[derive(Debug, serde::Deserialize)]
struct MessagesQuery {
    /// Only messages to this number (digits, with or without `+`).
    destination: Option<String>,
}

async fn messages(state: web::Data<SimState>, query: web::Query<MessagesQuery>) -> HttpResponse {
    let mut messages = state.messages();
    if let Some(wanted) = &query.destination {
        let wanted = wanted.trim_start_matches('+');
        messages.retain(|m| m.destination_addr == wanted);
    }
    HttpResponse::Ok().json(messages)
}

async fn stats(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(state.stats())
}

async fn switches(state: web::Data<SimState>) -> HttpResponse {
    HttpResponse::Ok().json(state.switches())
}

async fn set_switches(state: web::Data<SimState>, body: web::Bytes) -> HttpResponse {
    match patched(&state.switches(), &body) {
        Ok(switches) => {
            state.set_switches(switches.clone());
            HttpResponse::Ok().json(switches)
        }
        Err(message) => HttpResponse::BadRequest().json(serde_json::json!({
            "error": {"code": "invalid_request", "message": message}
        })),
    }
}

/// `current` with the fields of the JSON object `patch` replaced.
pub fn patched(current: &Switches, patch: &[u8]) -> Result<Switches, String> {
    let patch: serde_json::Value =
        serde_json::from_slice(patch).map_err(|e| format!("body: {e}"))?;
    let serde_json::Value::Object(fields) = patch else {
        return Err("body: expected a JSON object of switches".into());
    };
    let mut merged = serde_json::to_value(current).map_err(|e| e.to_string())?;
    if let serde_json::Value::Object(target) = &mut merged {
        target.extend(fields);
    }
    serde_json::from_value(merged).map_err(|e| format!("switches: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patch_changes_only_its_fields() {
        let current = Switches {
            delay_ms: 50,
            ..Switches::default()
        };
        let next = patched(&current, br#"{"throttle_next": 2}"#).unwrap();
        assert_eq!(next.throttle_next, 2);
        assert_eq!(next.delay_ms, 50);
        assert!(
            patched(&current, br#"{"nope": 1}"#)
                .unwrap_err()
                .contains("nope")
        );
        assert!(patched(&current, b"[1]").is_err());
        assert!(patched(&current, br#"{"delay_ms": "x"}"#).is_err());
    }
}
