//! Customer channels: the SMPP client (SMS through an SMS center) and the terminal switch.

pub mod terminal;
