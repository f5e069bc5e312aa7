//! Where a code goes: the customer's choice of SMS or terminal, resolved against the terminals
//! registered for them.

use super::PaymentCore;
use crate::domain::Msisdn;
use crate::messages::Destination;
use crate::transaction::store::{self, TerminalRow};
use crate::transaction::{ChannelChoice, PaymentError};

/// Where a code goes, once the customer's choice is resolved against the registered terminals.
#[derive(Debug, Clone)]
pub(super) struct Route {
    pub(super) channel: &'static str,
    pub(super) terminal_id: Option<String>,
    pub(super) msisdn: Option<Msisdn>,
    pub(super) destination: Destination,
    /// What the customer is shown (masked number or terminal label).
    pub(super) label: String,
    pub(super) unregistered: bool,
}

impl PaymentCore {
    /// Resolves the customer's channel choice; `Ok(Err(reason))` when it cannot be served. The
    /// customer's terminals are read unless the caller `just_read` them.
    pub(super) async fn route(
        &mut self,
        customer_id: &str,
        typed_msisdn: Option<&str>,
        choice: &ChannelChoice,
        just_read: Option<Vec<TerminalRow>>,
    ) -> Result<Result<Route, String>, PaymentError> {
        let terminals = match just_read {
            Some(terminals) => terminals,
            None => {
                let client = self.deps.pool.get().await?;
                store::customer_terminals(&client, customer_id).await?
            }
        };
        let route = match choice {
            ChannelChoice::Sms { receiver, mobile } => {
                let preferred = match mobile {
                    Some(id) => Preferred::Mobile(id),
                    None => Preferred::Typed(typed_msisdn),
                };
                self.sms_route(&terminals, preferred, receiver)
            }
            ChannelChoice::Terminal { terminal } => terminal_route(&terminals, terminal.as_deref()),
        };
        self.terminals = Some(terminals);
        Ok(route)
    }

    fn sms_route(
        &self,
        terminals: &[TerminalRow],
        preferred: Preferred,
        receiver: &Option<Msisdn>,
    ) -> Result<Route, String> {
        let registered: Vec<(&TerminalRow, Msisdn)> = terminals
            .iter()
            .filter(|t| t.kind == "mobile")
            .filter_map(|t| Some((t, Msisdn::parse(t.msisdn.as_deref()?).ok()?)))
            .collect();
        let registered_number = |wanted: &Msisdn| registered.iter().any(|(_, m)| m == wanted);
        let (msisdn, unregistered) = match receiver {
            Some(r) if registered_number(r) => (r.clone(), false),
            Some(r) if self.settings().allow_unregistered_receiver => (r.clone(), true),
            Some(_) => {
                return Err("That mobile number is not registered for your account. \
                            Leave the number empty to use your registered mobile."
                    .into());
            }
            None => match preferred {
                Preferred::Mobile(wanted) => match registered.iter().find(|(t, _)| t.named(wanted))
                {
                    Some((_, m)) => (m.clone(), false),
                    None => {
                        return Err("That mobile number is not (or no longer) registered for \
                                    your account. Choose another way to receive the code."
                            .into());
                    }
                },
                Preferred::Typed(typed) => {
                    let typed = typed.and_then(|m| Msisdn::parse(m).ok());
                    match typed.or_else(|| registered.first().map(|(_, m)| m.clone())) {
                        Some(m) => (m, false),
                        None => {
                            return Err("No mobile number is registered for SMS. \
                                        Choose your terminal instead."
                                .into());
                        }
                    }
                }
            },
        };
        Ok(Route {
            channel: "sms",
            terminal_id: None,
            label: format!("SMS to {}", msisdn.masked()),
            destination: Destination::Sms(msisdn.clone()),
            msisdn: Some(msisdn),
            unregistered,
        })
    }

    /// The channel the last code went to.
    pub(super) fn current_choice(&self) -> ChannelChoice {
        match self.row.channel.as_deref() {
            Some("terminal") => ChannelChoice::Terminal {
                terminal: self.row.terminal_id.clone(),
            },
            _ => ChannelChoice::Sms {
                mobile: None,
                receiver: self
                    .row
                    .receiver_msisdn
                    .as_deref()
                    .and_then(|m| Msisdn::parse(m).ok()),
            },
        }
    }
}

/// Which registered number an SMS goes to when no other receiver is given.
enum Preferred<'a> {
    /// The mobile terminal the customer picked on the code page (by id) or named at sign-in (by
    /// id or label).
    Mobile(&'a str),
    /// The number the customer signed in with, if they did; else the first registered.
    Typed(Option<&'a str>),
}

fn terminal_route(terminals: &[TerminalRow], wanted: Option<&str>) -> Result<Route, String> {
    let chosen = match wanted.map(str::trim).filter(|w| !w.is_empty()) {
        Some(w) => terminals
            .iter()
            .find(|t| t.named(w))
            .ok_or("None of your registered terminals has that name.")?,
        None => terminals
            .iter()
            .find(|t| t.kind == "dedicated")
            .or_else(|| terminals.iter().find(|t| t.kind != "mobile"))
            .or_else(|| terminals.first())
            .ok_or("No terminal is registered for your account. Choose SMS instead.")?,
    };
    let label = if chosen.label.is_empty() {
        format!("your {} terminal", chosen.kind)
    } else {
        chosen.label.clone()
    };
    Ok(Route {
        channel: "terminal",
        terminal_id: Some(chosen.id.clone()),
        msisdn: None,
        destination: Destination::Terminal(chosen.id.clone()),
        label,
        unregistered: false,
    })
}
