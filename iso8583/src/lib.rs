//! payhub-iso8583: ISO 8583:1987 ASCII codec for the bank link profile
//! (`shared/spec/iso8583-profile.md`).
//!
//! - [`Message`]: MTI plus fields 2..=128, every value checked against the field table
//!   ([`spec`]) when set or unpacked; `pack`/`unpack` to and from the wire form.
//! - [`frame`]: the 2-byte big-endian length header (max 8192); with the `tokio-codec` feature,
//!   [`codec::MessageCodec`] for `tokio_util::codec::Framed` (and [`codec::VerifyingCodec`] to
//!   check each message's MAC over its bytes as received).
//! - [`typed`]: the messages the gateway exchanges (0200/0210, 0420/0421/0430, 0800/0810), built
//!   only through constructors that check them, and the response codes.
//! - [`mac`]: the ANSI X9.19 retail MAC, sent in field 128, checked in 128 or 64.
//!
//! Nothing here panics on peer input: no `unwrap`, `expect`, unchecked indexing or `unsafe` on
//! those paths (enforced by the lints below outside tests).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::indexing_slicing,
        clippy::panic
    )
)]

#[cfg(feature = "tokio-codec")]
pub mod codec;
pub mod error;
pub mod frame;
pub mod mac;
pub mod mask;
pub mod message;
pub mod spec;
pub mod typed;

pub use error::Error;
pub use message::{Fields, Message};
pub use spec::{Charset, FieldSpec, Length, field_name, spec};
