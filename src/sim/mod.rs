//! Simulators of the outside world, for operators, tests and the demo.

pub mod bank;
pub mod smsc;
pub mod terminal;
