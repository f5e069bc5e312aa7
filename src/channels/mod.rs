//! Customer channels: the SMPP client (SMS through an SMS center), the terminal switch, the
//! channel adapters and the router that picks one for each notice.

pub mod adapters;
pub mod router;
pub mod smpp;
pub mod terminal;
