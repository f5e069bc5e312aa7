//! TEST DOUBLE of the bank router, for the tests that run before the real bank router and bank
//! simulator are merged. It stands at the `Recipient<Debit>` / `Recipient<Reverse>` boundary only,
//! records what it was asked, and answers what the test scripted.

use actix::prelude::*;
use payhub_actors::messages::{BankError, Debit, DebitResponse, Reverse};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

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
