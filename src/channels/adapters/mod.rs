//! Channel adapters for non-dedicated terminal kinds (telephone, pager, PDA). A real voice or
//! paging provider is added by implementing [`ChannelAdapter`] and putting it in the
//! [`AdapterSet`] given to the router. Only adapters that can run here are shipped; a kind without
//! an available adapter is reported as unavailable, so the pay page does not offer it.

pub mod sms_text;

use crate::channels::router::TerminalKind;
use futures::future::BoxFuture;
use payhub_actors::domain::Msisdn;
use payhub_actors::messages::{DeliveryError, DeliveryReceipt, Notice};
use std::sync::Arc;
use std::time::Duration;

/// Delivers notices to one kind of non-dedicated terminal through an outside provider.
pub trait ChannelAdapter: Send + Sync + 'static {
    /// The terminal kind it serves (telephone, pager or pda).
    fn kind(&self) -> TerminalKind;

    /// The channel name recorded in `customer_messages.channel` and in metrics.
    fn channel(&self) -> &'static str;

    /// Whether it can deliver right now; an unavailable adapter is not offered to customers.
    fn available(&self) -> bool;

    /// True when the provider records its own `customer_messages` rows (an adapter that goes
    /// through the SMPP channel), so the router does not write a second one.
    fn records_messages(&self) -> bool {
        false
    }

    /// Sends `notice` to the terminal's registered number, answering within `answer_within`
    /// (as `Deliver::answer_within` says); the router also bounds the wait. `recorded`: the
    /// notice's `customer_messages` row, when one is written already (an outcome's, with the
    /// final status); an adapter that records its own rows ends that one.
    fn deliver(
        &self,
        number: Msisdn,
        notice: Notice,
        recorded: Option<i64>,
        answer_within: Duration,
    ) -> BoxFuture<'static, Result<DeliveryReceipt, DeliveryError>>;
}

/// The adapters the router may use, at most one per kind.
#[derive(Clone, Default)]
pub struct AdapterSet {
    adapters: Vec<Arc<dyn ChannelAdapter>>,
}

impl std::fmt::Debug for AdapterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.adapters
                    .iter()
                    .map(|a| (a.kind().as_str(), a.channel())),
            )
            .finish()
    }
}

impl AdapterSet {
    /// Adds `adapter`, replacing an earlier one of the same kind.
    pub fn with(mut self, adapter: Arc<dyn ChannelAdapter>) -> Self {
        self.adapters.retain(|a| a.kind() != adapter.kind());
        self.adapters.push(adapter);
        self
    }

    /// The adapter for `kind`, when one is configured and available now.
    pub fn for_kind(&self, kind: TerminalKind) -> Option<Arc<dyn ChannelAdapter>> {
        self.adapters
            .iter()
            .find(|a| a.kind() == kind && a.available())
            .cloned()
    }
}
