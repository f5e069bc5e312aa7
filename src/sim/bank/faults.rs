//! Fault switches of the bank simulator, settable at start (flags) and at run time (the control
//! port or the in-process handle). Faults draw from a seeded generator so a run can be replayed.

use serde::{Deserialize, Serialize};
use std::sync::RwLock;

/// What goes wrong, on purpose. All off by default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::Args)]
pub struct Faults {
    /// Percent of responses not sent (the request is still applied).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub drop_pct: u8,
    /// Each response waits a random 0..=N ms before it is sent.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub delay_ms: u64,
    /// Percent of responses sent twice.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub duplicate_pct: u8,
    /// Close the connection on every Nth message received (0: never), unanswered.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub close_every: u32,
    /// Percent of 0200s answered 91 (not applied) or 96 (applied, then "malfunction").
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub fail_pct: u8,
    /// Percent of 0420/0421 answered 96 (not processed, nothing undone).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub reversal_fail_pct: u8,
    /// Applied 0200s are answered with this field 39 instead of 00 (0: 00), as a BIPS that uses
    /// an approval code the profile does not list (08 honour with identification, 11 approved
    /// VIP) would.
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub approved_as: u8,
}

/// The longest delay a switch may ask for, in ms.
pub const DELAY_MS_MAX: u64 = 60_000;

impl Faults {
    /// Sets one switch by name, from the control port.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        let pct = |v: &str| -> Result<u8, String> {
            v.parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("{key} must be a percentage 0..=100"))
        };
        match key {
            "drop_pct" => self.drop_pct = pct(value)?,
            "duplicate_pct" => self.duplicate_pct = pct(value)?,
            "fail_pct" => self.fail_pct = pct(value)?,
            "reversal_fail_pct" => self.reversal_fail_pct = pct(value)?,
            "delay_ms" => {
                self.delay_ms = value
                    .parse()
                    .ok()
                    .filter(|d| *d <= DELAY_MS_MAX)
                    .ok_or_else(|| format!("delay_ms must be 0..={DELAY_MS_MAX}"))?
            }
            "approved_as" => {
                self.approved_as = value
                    .parse()
                    .ok()
                    .filter(|c| *c <= 99)
                    .ok_or_else(|| "approved_as must be a code 0..=99".to_string())?
            }
            "close_every" => {
                self.close_every = value
                    .parse()
                    .map_err(|_| "close_every must be a whole number".to_string())?
            }
            _ => {
                return Err(format!(
                    "unknown switch {key} (drop_pct, delay_ms, duplicate_pct, close_every, fail_pct, \
                     reversal_fail_pct, approved_as)"
                ));
            }
        }
        Ok(())
    }

    pub fn check(&self) -> Result<(), String> {
        let mut copy = Faults::default();
        copy.set("drop_pct", &self.drop_pct.to_string())?;
        copy.set("duplicate_pct", &self.duplicate_pct.to_string())?;
        copy.set("fail_pct", &self.fail_pct.to_string())?;
        copy.set("reversal_fail_pct", &self.reversal_fail_pct.to_string())?;
        copy.set("delay_ms", &self.delay_ms.to_string())?;
        copy.set("approved_as", &self.approved_as.to_string())?;
        Ok(())
    }

    pub fn any(&self) -> bool {
        *self != Faults::default()
    }
}

/// The switches as the connections read them.
#[derive(Debug, Default)]
pub struct FaultSwitches(RwLock<Faults>);

impl FaultSwitches {
    pub fn new(faults: Faults) -> Self {
        Self(RwLock::new(faults))
    }

    pub fn get(&self) -> Faults {
        *self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn replace(&self, faults: Faults) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = faults;
    }

    pub fn set(&self, key: &str, value: &str) -> Result<Faults, String> {
        let mut guard = self.0.write().unwrap_or_else(|e| e.into_inner());
        guard.set(key, value)?;
        Ok(*guard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switches_are_checked() {
        let s = FaultSwitches::default();
        assert_eq!(s.set("drop_pct", "10").unwrap().drop_pct, 10);
        assert!(s.set("drop_pct", "101").is_err());
        assert!(
            s.set("nonsense", "1")
                .unwrap_err()
                .contains("unknown switch")
        );
        assert!(s.get().any());
    }
}
