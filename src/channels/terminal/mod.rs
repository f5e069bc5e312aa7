//! The terminal switch: dedicated customer terminals connect over TLS, prove their registered key
//! and receive authorization codes and outcome notices (docs/terminal-protocol.md).

pub mod frame;
pub mod auth;
