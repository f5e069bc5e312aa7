//! HTTP: the merchant API, the customer pages and the operator endpoints.

pub mod error;
pub mod listener;
pub mod merchant;
pub mod merchant_testing;
pub mod mtls;
pub mod openapi;
pub mod operator;
pub mod pages;
pub mod repeated_key;
pub mod server;
pub mod stuck_connections;
