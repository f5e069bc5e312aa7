//! The bank simulator's account logic, shared by both stores: what a debit order is, and whether
//! it is approved. The stores only add persistence and locking around [`decide`].

use payhub_actors::secret::mask_account;

/// A parsed 0200: debit `amount_minor` from the payer's account and credit the payee's. `Debug`
/// masks the accounts.
#[derive(Clone, PartialEq, Eq)]
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
    /// Fields 11, 7 and 32, for matching its reversal.
    pub wire: WireIdentity,
}

impl std::fmt::Debug for DebitOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebitOrder")
            .field("rrn", &self.rrn)
            .field("payer_bank", &self.payer_bank)
            .field("payer_account", &mask_account(&self.payer_account))
            .field("payee_account", &mask_account(&self.payee_account))
            .field("amount_minor", &self.amount_minor)
            .field("currency_numeric", &self.currency_numeric)
            .field("wire", &self.wire)
            .finish()
    }
}

/// How a 0200 was identified on the wire (fields 11, 7 and 32): what field 90 of its reversal must
/// repeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WireIdentity {
    pub stan: String,
    pub transmission_time: String,
    pub acquirer_id: String,
}

/// Field 90 of a 0420/0421: original MTI(4) STAN(6) field 7(10) field 32 zero-filled(11) zeros(11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OriginalElements {
    pub mti: String,
    pub stan: String,
    pub transmission_time: String,
    /// Right-justified, zero-filled to 11 digits.
    pub acquirer_id: String,
}

/// The length of field 90.
pub const FIELD_90_LEN: usize = 42;

impl OriginalElements {
    /// Splits field 90; `None` when it is not 42 digits ending in the profile's 11 zeros.
    pub fn parse(field_90: &str) -> Option<Self> {
        let ok = field_90.len() == FIELD_90_LEN
            && field_90.bytes().all(|b| b.is_ascii_digit())
            && field_90[31..].bytes().all(|b| b == b'0');
        ok.then(|| Self {
            mti: field_90[0..4].to_owned(),
            stan: field_90[4..10].to_owned(),
            transmission_time: field_90[10..20].to_owned(),
            acquirer_id: field_90[20..31].to_owned(),
        })
    }

    /// Whether these are the elements of the 0200 recorded as `original` (the profile's "the
    /// debit identified by field 37 and field 90").
    pub fn identify(&self, original: &WireIdentity) -> bool {
        self.mti == "0200"
            && self.stan == original.stan
            && self.transmission_time == original.transmission_time
            && self.acquirer_id == format!("{:0>11}", original.acquirer_id)
    }
}

/// A parsed 0420/0421: undo the debit with field 37 `rrn`, if field 90 names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReversalOrder {
    pub rrn: String,
    pub original: OriginalElements,
}

/// What a reversal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReversalOutcome {
    /// An approved debit was undone.
    Reversed,
    /// Nothing to undo: declined, already reversed, or never seen (then remembered as reversed).
    NothingToUndo,
    /// Field 37 found a debit, but field 90 does not identify it: nothing undone.
    Mismatch,
}

/// The outcome of a reversal of a debit recorded as `state_approved`, with its wire identity
/// (`None` for a row recorded before identities were kept: field 37 alone decides).
pub fn reversal_outcome(
    approved: bool,
    recorded: Option<&WireIdentity>,
    order: &ReversalOrder,
) -> ReversalOutcome {
    match recorded {
        Some(original) if !order.original.identify(original) => ReversalOutcome::Mismatch,
        _ if approved => ReversalOutcome::Reversed,
        _ => ReversalOutcome::NothingToUndo,
    }
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
    /// On a repeat, the recorded debit's amount: the answer is the original 0210, whose field 4
    /// says what was debited, whatever amount the repeat asked for.
    pub original_amount_minor: Option<i64>,
}

impl Answer {
    /// This answer as repeated for a later 0200 with the same field 37.
    pub fn repeated(mut self, amount_minor: i64) -> Self {
        self.original_amount_minor = Some(amount_minor);
        self
    }

    /// This answer, its approval said with `code` (two digits) instead of 00; 0 leaves it.
    pub fn approved_as(mut self, code: u8) -> Self {
        if code != 0 && self.response_code == APPROVED {
            self.response_code = format!("{code:02}");
        }
        self
    }

    pub fn declined(code: &str) -> Self {
        Self {
            response_code: code.to_owned(),
            approval_code: None,
            original_amount_minor: None,
        }
    }

    pub fn approved(approval_code: String) -> Self {
        Self {
            response_code: APPROVED.to_owned(),
            approval_code: Some(approval_code),
            original_amount_minor: None,
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

/// One line of the seed file. `Debug` masks the account.
#[derive(Clone, PartialEq, Eq)]
pub struct SeedAccount {
    pub bank_id: String,
    pub account: String,
    pub balance_minor: i64,
    pub currency_numeric: String,
}

impl std::fmt::Debug for SeedAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedAccount")
            .field("bank_id", &self.bank_id)
            .field("account", &mask_account(&self.account))
            .field("balance_minor", &self.balance_minor)
            .field("currency_numeric", &self.currency_numeric)
            .finish()
    }
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
            wire: wire(),
        }
    }

    fn wire() -> WireIdentity {
        WireIdentity {
            stan: "000042".into(),
            transmission_time: "1128110000".into(),
            acquirer_id: "99990001".into(),
        }
    }

    #[test]
    fn debug_output_masks_the_accounts() {
        let seed = SeedAccount {
            bank_id: "0001".into(),
            account: "6222000033334444".into(),
            balance_minor: 1,
            currency_numeric: "156".into(),
        };
        let shown = format!("{:?} {seed:?}", order(1));
        for account in ["00001111", "00009999", "00003333"] {
            assert!(!shown.contains(account), "{shown}");
        }
    }

    #[test]
    fn field_90_identifies_the_original() {
        let f90 = "0200000042112811000000099990001".to_owned() + "00000000000";
        let order = |f90: &str| ReversalOrder {
            rrn: "r".into(),
            original: OriginalElements::parse(f90).unwrap(),
        };
        let good = order(&f90);
        assert_eq!(good.original.acquirer_id, "00099990001");
        assert_eq!(
            reversal_outcome(true, Some(&wire()), &good),
            ReversalOutcome::Reversed
        );
        assert_eq!(
            reversal_outcome(false, Some(&wire()), &good),
            ReversalOutcome::NothingToUndo
        );
        assert_eq!(
            reversal_outcome(true, None, &good),
            ReversalOutcome::Reversed
        );
        let other_stan = order(&f90.replacen("000042", "000043", 1));
        assert_eq!(
            reversal_outcome(true, Some(&wire()), &other_stan),
            ReversalOutcome::Mismatch
        );
        let other_time = order(&f90.replacen("1128110000", "1128110001", 1));
        assert_eq!(
            reversal_outcome(true, Some(&wire()), &other_time),
            ReversalOutcome::Mismatch
        );
        assert_eq!(OriginalElements::parse("0200"), None);
        assert_eq!(OriginalElements::parse(&f90.replace('0', "x")), None);
        let not_zeros = format!("{}12345678901", &f90[..31]);
        assert_eq!(OriginalElements::parse(&not_zeros), None);
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
