//! Customer channels: the SMPP client (SMS through an SMS center) and the terminal switch.

pub mod adapters;
pub mod router;
pub mod terminal;
