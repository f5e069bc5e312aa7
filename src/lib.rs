//! payhub: an online payment gateway and bank switching hub.
//!
//! `src` wires the parts together: the command line, configuration, HTTP (merchant API, customer
//! pages, operator endpoints), the customer channels (SMPP, terminal switch) and the simulators.
//! Actors, domain types and the store live in `payhub-actors`; the ISO 8583 codec in
//! `payhub-iso8583`.

pub mod bank_links;
pub mod channels;
pub mod cli;
pub mod config;
pub mod demo;
pub mod enroll;
pub mod expiry;
pub mod host_cpu;
pub mod http;
pub mod iso_cli;
pub mod pki;
pub mod secret_key;
pub mod serve;
pub mod sim;
pub mod single_gateway;
pub mod telemetry;
pub mod webhooks;

/// The allocator of the `payhub` binary, and of benchmarks that run its parts in-process (so they
/// measure what the binary does): `#[global_allocator] static A: payhub::Allocator =
/// payhub::Allocator;`. mimalloc, because glibc's malloc spent about a fifth of the bank link's
/// time freeing memory allocated on another thread. Built without transparent huge pages
/// (`Cargo.toml`): they made the resident memory larger and less predictable.
pub use mimalloc::MiMalloc as Allocator;
