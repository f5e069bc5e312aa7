//! SMS through an SMS center: one SMPP v3.4 session actor per SMSC, on `rusmppc`.
//!
//! [`start`] binds as a transceiver and keeps the bind (enquire_link, re-bind with backoff); the
//! actor handles [`Deliver`](payhub_actors::messages::Deliver) for `Destination::Sms`, records
//! each message in `customer_messages` (never its text) before it is submitted, keeps at most
//! `window_max` `submit_sm` outstanding, retries throttling, and keeps delivery receipts on the
//! message row. [`Shutdown`] unbinds.

mod ids_in_writing;
pub mod pdu;
pub mod receipt;
mod session;
pub mod settings;
pub mod store;
mod submit;

pub use session::{BIND_WAIT_MS_MAX, GetStatus, Shutdown, SmppSession, SmppStatus, start};
pub use settings::{SmppSettings, SmppSettingsError};
