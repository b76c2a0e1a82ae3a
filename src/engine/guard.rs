//! The automation guard (issue 11): how far `clawback watch` goes on its own.
//!
//! Per cycle and per intel indicator, Post Delivery Response acts on at most
//! `[watch] max_copies_per_cycle` copies and at most `[watch] max_trace_share` of the messages
//! traced in the look-back window (counted from `trace_share_min_messages` matches). An
//! indicator over either limit is *held*: no verdict is written and nothing is retracted; the
//! match is stored as `needs_confirmation` (one hold per indicator, grown rather than repeated
//! on later cycles), audited, logged by `watch` and listed by `clawback policy holds` and the
//! console's Policy and Jobs panes. `clawback policy confirm ID` (admin) confirms it, and the
//! next `watch` cycle writes the verdicts and retracts per the policy matrix.
//!
//! Verdicts written from an indicator remember it; when a reload of the intel directory no
//! longer has the indicator, its verdicts expire (the messages get back the disposition they
//! had before; copies already retracted stay retracted) and its open holds expire too.

use super::core::{Engine, EngineError};
use super::roles::Capability;
use crate::config::WatchConfig;
use crate::store::automation::{HeldMatch, HeldMessage, HoldState};
use std::collections::BTreeMap;

/// Why an indicator's match is over the guard's limits (`None`: within them). `copies` and
/// `messages` are what the indicator would act on this cycle; `trace_messages` the messages
/// traced in the look-back window.
pub fn over_limits(
    copies: u64,
    messages: u64,
    trace_messages: u64,
    limits: &WatchConfig,
) -> Option<String> {
    if copies > limits.max_copies_per_cycle {
        return Some(format!(
            "{copies} copies in {messages} messages is more than [watch] max_copies_per_cycle = {}",
            limits.max_copies_per_cycle
        ));
    }
    if messages >= limits.trace_share_min_messages
        && trace_messages > 0
        && messages as f64 > limits.max_trace_share * trace_messages as f64
    {
        return Some(format!(
            "{messages} of the {trace_messages} traced messages ({:.1}%) is more than [watch] max_trace_share = {} ({:.1}%)",
            messages as f64 * 100.0 / trace_messages as f64,
            limits.max_trace_share,
            limits.max_trace_share * 100.0
        ));
    }
    None
}

impl Engine {
    /// Matches held by the guard, newest first: the open ones (waiting for confirmation or
    /// release), or every one.
    pub fn automation_holds(&self, all: bool) -> Result<Vec<HeldMatch>, EngineError> {
        Ok(self.store().holds(!all)?)
    }

    /// The messages of a held match.
    pub fn automation_hold_messages(&self, id: i64) -> Result<Vec<HeldMessage>, EngineError> {
        Ok(self.store().hold_messages(id)?)
    }

    /// `clawback policy confirm ID` (admin): releases a held match; the next `watch` cycle
    /// writes its verdicts and retracts per the policy. Audited.
    pub fn confirm_hold(&self, id: i64) -> Result<HeldMatch, EngineError> {
        self.authorize(Capability::EditPolicy)?;
        let unknown = || {
            EngineError::Invalid(format!(
                "no held match {id}; `clawback policy holds --all` lists them"
            ))
        };
        let hold = self.store().hold(id)?.ok_or_else(unknown)?;
        if hold.state != HoldState::NeedsConfirmation {
            return Err(EngineError::Invalid(format!(
                "held match {id} is {}, not needs_confirmation: nothing to confirm",
                hold.state
            )));
        }
        let moved = self.store().hold_transition(
            id,
            HoldState::NeedsConfirmation,
            HoldState::Confirmed,
            Some(&self.operator.name),
        )?;
        let hold = self.store().hold(id)?.ok_or_else(unknown)?;
        if !moved {
            return Err(EngineError::Invalid(format!(
                "held match {id} changed meanwhile (now {}); nothing confirmed",
                hold.state
            )));
        }
        self.audit(
            "automation",
            "hold_confirmed",
            None,
            None,
            BTreeMap::from([
                ("copies".to_string(), hold.copies),
                ("messages".to_string(), hold.messages),
            ]),
            serde_json::json!({
                "hold": hold.id,
                "indicator": hold.indicator,
                "reason": hold.reason,
            }),
        )?;
        tracing::info!(hold = id, indicator = %hold.indicator, "held match confirmed");
        Ok(hold)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        let l = WatchConfig::default();
        assert_eq!(over_limits(500, 3, 300, &l), None);
        let r = over_limits(501, 1, 10_000, &l).unwrap_or_default();
        assert!(r.contains("501 copies in 1 messages"), "{r}");
        assert!(r.contains("max_copies_per_cycle = 500"), "{r}");
        // 5% of 1,000 is 50: 51 messages are over, 50 are not.
        assert_eq!(over_limits(100, 50, 1000, &l), None);
        let r = over_limits(100, 51, 1000, &l).unwrap_or_default();
        assert!(r.contains("51 of the 1000 traced messages (5.1%)"), "{r}");
        // A quiet window: 19 of 20 messages is under the share rule's floor of 20.
        assert_eq!(over_limits(40, 19, 20, &l), None);
        assert!(over_limits(40, 20, 20, &l).is_some());
        assert_eq!(over_limits(0, 0, 0, &l), None);
    }
}
