//! TEST DOUBLES of the channel router and the bank router, for the tests that run before (or
//! without) the real SMSC, terminal and bank simulators. They stand at the `Recipient<Deliver>` /
//! `Recipient<Debit>` / `Recipient<Reverse>` boundary only, record what they were asked, and answer
//! what the test scripted.

use actix::prelude::*;
use payhub_actors::messages::{
    BankError, Debit, DebitResponse, Deliver, DeliveryError, DeliveryReceipt, Destination,
    NoticeKind, Reverse,
};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub struct Sent {
    pub payment_id: String,
    pub destination: Destination,
    pub kind: NoticeKind,
    pub text: String,
}

/// Channel router double: records every notice; terminals listed as offline fail at once.
#[derive(Default, Clone)]
pub struct ChannelDouble {
    pub sent: Arc<Mutex<Vec<Sent>>>,
    pub offline: Arc<Mutex<HashSet<String>>>,
}

impl ChannelDouble {
    pub fn codes_for(&self, payment: &str) -> Vec<String> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.payment_id == payment && s.kind == NoticeKind::Code)
            .map(|s| super::code_in(&s.text))
            .collect()
    }

    pub fn last_code(&self, payment: &str) -> String {
        self.codes_for(payment).pop().expect("a code was sent")
    }

    pub fn outcomes_for(&self, payment: &str) -> Vec<Sent> {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.payment_id == payment && s.kind == NoticeKind::Outcome)
            .cloned()
            .collect()
    }
}

impl Actor for ChannelDouble {
    type Context = Context<Self>;
}

impl Handler<Deliver> for ChannelDouble {
    type Result = Result<DeliveryReceipt, DeliveryError>;

    fn handle(&mut self, msg: Deliver, _: &mut Context<Self>) -> Self::Result {
        if let Destination::Terminal(id) = &msg.destination
            && self.offline.lock().unwrap().contains(id)
        {
            return Err(DeliveryError::Offline);
        }
        let mut sent = self.sent.lock().unwrap();
        sent.push(Sent {
            payment_id: msg.notice.payment_id.clone(),
            destination: msg.destination.clone(),
            kind: msg.notice.kind,
            text: msg.notice.text(),
        });
        Ok(DeliveryReceipt {
            message_ref: format!("double-{}", sent.len()),
        })
    }
}

/// What the bank double answers for one payer account.
#[derive(Debug, Clone)]
pub enum BankScript {
    Answer(&'static str),
    Timeout,
    /// Never answers (the gateway's own bound applies).
    Hang,
}

/// Bank router double: answers by payer account (approved by default), records debits and
/// reversals.
#[derive(Default, Clone)]
pub struct BankDouble {
    pub script: Arc<Mutex<HashMap<String, BankScript>>>,
    pub debits: Arc<Mutex<Vec<String>>>,
    pub reversals: Arc<Mutex<Vec<String>>>,
}

impl Actor for BankDouble {
    type Context = Context<Self>;
}

impl Handler<Debit> for BankDouble {
    type Result = ResponseFuture<Result<DebitResponse, BankError>>;

    fn handle(&mut self, msg: Debit, _: &mut Context<Self>) -> Self::Result {
        let account = msg.0.payer_account.expose().to_string();
        self.debits.lock().unwrap().push(msg.0.rrn.clone());
        let script = self.script.lock().unwrap().get(&account).cloned();
        Box::pin(async move {
            match script.unwrap_or(BankScript::Answer("00")) {
                BankScript::Answer(code) => Ok(DebitResponse {
                    response_code: code.to_string(),
                    approval_code: (code == "00").then(|| "A1B2C3".to_string()),
                    link: "double".into(),
                }),
                BankScript::Timeout => Err(BankError::Timeout),
                BankScript::Hang => {
                    futures::future::pending::<()>().await;
                    Err(BankError::Timeout)
                }
            }
        })
    }
}

impl Handler<Reverse> for BankDouble {
    type Result = Result<(), BankError>;

    fn handle(&mut self, msg: Reverse, _: &mut Context<Self>) -> Self::Result {
        self.reversals.lock().unwrap().push(msg.0.rrn);
        Ok(())
    }
}
