//! The bank simulator's account logic, shared by both stores: what a debit order is, and whether
//! it is approved. The stores only add persistence and locking around [`decide`].

/// A parsed 0200: debit `amount_minor` from the payer's account and credit the payee's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitOrder {
    /// Field 37, the idempotency key of the debit.
    pub rrn: String,
    /// Field 100.
    pub payer_bank: String,
    /// Field 102.
    pub payer_account: String,
    /// Field 103.
    pub payee_account: String,
    /// Field 4.
    pub amount_minor: i64,
    /// Field 49, ISO 4217 numeric.
    pub currency_numeric: String,
}

/// An account as the decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountView<'a> {
    pub balance_minor: i64,
    pub currency_numeric: &'a str,
}

/// The answer recorded for a debit and repeated for every later 0200 with the same field 37.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub response_code: String,
    pub approval_code: Option<String>,
}

impl Answer {
    pub fn declined(code: &str) -> Self {
        Self {
            response_code: code.to_owned(),
            approval_code: None,
        }
    }

    pub fn approved(approval_code: String) -> Self {
        Self {
            response_code: APPROVED.to_owned(),
            approval_code: Some(approval_code),
        }
    }

    pub fn is_approved(&self) -> bool {
        self.response_code == APPROVED
    }
}

pub const APPROVED: &str = "00";
pub const INVALID_TRANSACTION: &str = "12";
pub const INVALID_AMOUNT: &str = "13";
pub const UNKNOWN_ACCOUNT: &str = "14";
pub const FORMAT_ERROR: &str = "30";
pub const INSUFFICIENT_FUNDS: &str = "51";
pub const ISSUER_INOPERATIVE: &str = "91";
pub const SYSTEM_MALFUNCTION: &str = "96";

/// Approve (`None`) or the decline code.
pub fn decide(order: &DebitOrder, payer: Option<AccountView<'_>>) -> Option<&'static str> {
    let Some(payer) = payer else {
        return Some(UNKNOWN_ACCOUNT);
    };
    if order.amount_minor <= 0 || payer.currency_numeric != order.currency_numeric {
        return Some(INVALID_AMOUNT);
    }
    if payer.balance_minor < order.amount_minor {
        return Some(INSUFFICIENT_FUNDS);
    }
    None
}

/// A six-digit approval code (field 38).
pub fn approval_code() -> String {
    format!("{:06}", rand::random::<u32>() % 1_000_000)
}

/// One line of the seed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedAccount {
    pub bank_id: String,
    pub account: String,
    pub balance_minor: i64,
    pub currency_numeric: String,
}

pub const SEED_HEADER: &str = "bank_id,account,balance_minor,currency";

/// Parses the seed CSV (`bank_id,account,balance_minor,currency`, currency as `CNY` or `156`).
/// Errors name the line.
pub fn parse_seed(text: &str, banks: &[String]) -> Result<Vec<SeedAccount>, String> {
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim() == SEED_HEADER => {}
        _ => return Err(format!("seed file: the first line must be `{SEED_HEADER}`")),
    }
    let mut accounts = Vec::new();
    for (index, line) in lines {
        let line_no = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').map(str::trim).collect();
        let [bank_id, account, balance, currency] = cols[..] else {
            return Err(format!("seed file line {line_no}: expected 4 columns"));
        };
        if !banks.iter().any(|b| b == bank_id) {
            return Err(format!(
                "seed file line {line_no}: bank {bank_id} is not one of --bank"
            ));
        }
        payhub_actors::domain::AccountNumber::parse(account)
            .map_err(|e| format!("seed file line {line_no}: {e}"))?;
        let balance_minor: i64 = balance
            .parse()
            .ok()
            .filter(|b| *b >= 0)
            .ok_or_else(|| format!("seed file line {line_no}: balance_minor must be >= 0"))?;
        let currency = payhub_actors::domain::Currency::parse(currency)
            .ok()
            .or_else(|| payhub_actors::domain::Currency::from_numeric(currency))
            .ok_or_else(|| format!("seed file line {line_no}: unknown currency {currency}"))?;
        accounts.push(SeedAccount {
            bank_id: bank_id.to_owned(),
            account: account.to_owned(),
            balance_minor,
            currency_numeric: currency.numeric().to_owned(),
        });
    }
    Ok(accounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(amount_minor: i64) -> DebitOrder {
        DebitOrder {
            rrn: "000000000001".into(),
            payer_bank: "0001".into(),
            payer_account: "6222000011112222".into(),
            payee_account: "6222000099990000".into(),
            amount_minor,
            currency_numeric: "156".into(),
        }
    }

    #[test]
    fn decisions() {
        let rich = AccountView {
            balance_minor: 1_000,
            currency_numeric: "156",
        };
        assert_eq!(decide(&order(1_000), Some(rich)), None);
        assert_eq!(decide(&order(1_001), Some(rich)), Some("51"));
        assert_eq!(decide(&order(0), Some(rich)), Some("13"));
        assert_eq!(decide(&order(5), None), Some("14"));
        let dollars = AccountView {
            balance_minor: 1_000,
            currency_numeric: "840",
        };
        assert_eq!(decide(&order(5), Some(dollars)), Some("13"));
    }

    #[test]
    fn seed_parsing_names_the_line() {
        let banks = vec!["0001".to_string()];
        let ok = parse_seed(
            "bank_id,account,balance_minor,currency\n0001,acc1,500,CNY\n",
            &banks,
        )
        .unwrap();
        assert_eq!(ok[0].currency_numeric, "156");
        assert_eq!(ok[0].balance_minor, 500);
        let bad = parse_seed(
            "bank_id,account,balance_minor,currency\n0002,a,1,CNY\n",
            &banks,
        );
        assert!(bad.unwrap_err().contains("line 2"));
        assert!(parse_seed("account,bank\n", &banks).is_err());
        let neg = parse_seed(
            "bank_id,account,balance_minor,currency\n0001,a,-1,CNY",
            &banks,
        );
        assert!(neg.unwrap_err().contains("balance_minor"));
    }
}
