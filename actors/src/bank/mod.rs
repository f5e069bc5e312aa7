//! Bank links (issue 4): one `BankLinkActor` per configured link to a bank information processing
//! system, the `BankRouter` that picks a link for the payer's bank, and the durable reversal queue.

pub mod reversals;
pub mod settings;
pub mod stan;

pub use settings::{LinkOwner, LinkSettings};
