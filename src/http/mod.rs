//! HTTP: the merchant API, the customer pages and the operator endpoints.
pub mod operator;
pub mod pages;
