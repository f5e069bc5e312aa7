//! payhub's actors, domain types and PostgreSQL store.
//!
//! Dependencies point one way: the `payhub` binary uses this crate, and this crate uses
//! `payhub-iso8583`. Nothing here knows about HTTP.

pub mod bank;
pub mod clock;
pub mod domain;
pub mod ids;
pub mod keyed_hash;
pub mod messages;
pub mod metrics;
pub mod password;
pub mod secret;
pub mod spelling;
pub mod store;
pub mod tls_trust;
pub mod transaction;

pub use clock::{Clock, ManualClock, SystemClock};
pub use secret::Secret;
