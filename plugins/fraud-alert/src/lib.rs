//! Raises an alert when a card's spending within 60 seconds (event time)
//! exceeds a threshold.
//!
//! Input values are JSON payments: `{"card": "…", "amount": 12.5}` (the
//! record key is used when `card` is missing). Configuration: `threshold`,
//! the amount a card may spend within any 60 s (default 1000).
//!
//! When a payment takes a card's 60-second total above the threshold, one
//! alert is emitted, keyed by card: `{"card":"…","total":…,"payments":n,
//! "window_start":ms,"window_end":ms}`. The card alerts again only after its
//! total has dropped back to the threshold or below. Payments that are not
//! JSON with a numeric amount are skipped and counted as `malformed-payments`.

use eddy_sdk::prelude::*;
use serde::{Deserialize, Serialize};

const WINDOW_MS: i64 = 60_000;

/// See the crate docs.
#[derive(Default)]
pub struct FraudAlert {
    threshold: f64,
}

/// What state keeps per card.
#[derive(Default, Serialize, Deserialize)]
struct Spending {
    /// (timestamp, amount) of the payments of the last 60 s.
    payments: Vec<(i64, f64)>,
    alerted: bool,
}

#[derive(Deserialize)]
struct Payment {
    card: Option<String>,
    amount: f64,
}

impl Processor for FraudAlert {
    fn init(&mut self, _task: &Task) -> Result<()> {
        self.threshold = config::parse("threshold")?.unwrap_or(1000.0);
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        let parsed = record
            .value()
            .and_then(|v| serde_json::from_slice::<Payment>(v).ok());
        let card = parsed
            .as_ref()
            .and_then(|p| p.card.clone())
            .or_else(|| record.key_str().map(str::to_owned));
        let (Some(payment), Some(card)) = (parsed, card) else {
            metrics::increment("malformed-payments", 1);
            return Ok(());
        };
        let now = record.timestamp();
        let mut spending: Spending = state::get_typed(&card)?.unwrap_or_default();
        spending.payments.push((now, payment.amount));
        // The 60 s ending at this payment.
        spending.payments.retain(|(t, _)| *t > now - WINDOW_MS);
        let in_window: Vec<_> = spending
            .payments
            .iter()
            .filter(|(t, _)| *t <= now)
            .collect();
        let total: f64 = in_window.iter().map(|(_, a)| a).sum();
        if total > self.threshold && !spending.alerted {
            spending.alerted = true;
            let alert = serde_json::json!({
                "card": card,
                "total": total,
                "payments": in_window.len(),
                "window_start": now - WINDOW_MS + 1,
                "window_end": now,
            });
            out.emit(OutputRecord::new(alert.to_string()).with_key(card.clone()));
        } else if total <= self.threshold {
            spending.alerted = false;
        }
        state::put_typed(&card, &spending)?;
        // Forget the card once its last payment leaves the window.
        timers::set(TimeDomain::EventTime, now + WINDOW_MS, &card);
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, _out: &mut Emitter) -> Result<()> {
        let Some(mut spending) = state::get_typed::<Spending>(&timer.key)? else {
            return Ok(());
        };
        spending.payments.retain(|(t, _)| *t > timer.at - WINDOW_MS);
        if spending.payments.is_empty() {
            state::delete(&timer.key)?;
        } else {
            let total: f64 = spending.payments.iter().map(|(_, a)| a).sum();
            if total <= self.threshold {
                spending.alerted = false;
            }
            state::put_typed(&timer.key, &spending)?;
        }
        Ok(())
    }
}

eddy_sdk::export!(FraudAlert);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    fn pay(card: &str, amount: f64, t: i64) -> Record {
        Record::new(format!(r#"{{"card":"{card}","amount":{amount}}}"#)).with_timestamp(t)
    }

    #[test]
    fn alerts_once_when_a_card_exceeds_the_threshold_within_60_seconds() {
        let mut h = TestHarness::<FraudAlert>::new().config("threshold", "100");
        let out = h
            .process([
                pay("c1", 60.0, 0),
                pay("c2", 90.0, 1_000),
                pay("c1", 30.0, 10_000),
                pay("c1", 20.0, 20_000), // 110 within 60 s: alert
                pay("c1", 5.0, 30_000),  // still above: no second alert
            ])
            .expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].key_str(), Some("c1"));
        assert!(
            out[0]
                .value_str()
                .is_some_and(|v| v.contains(r#""total":110.0"#))
        );
        // 61 s after the first payment it has left the window: 55 + 50 = 105.
        let out = h.process([pay("c1", 50.0, 61_000)]).expect("ok");
        assert_eq!(out.len(), 0, "still alerted, no repeat");
        // Spread out over more than 60 s, a card never alerts.
        let out = h
            .process([pay("c3", 99.0, 100_000), pay("c3", 99.0, 170_000)])
            .expect("ok");
        assert!(out.is_empty());
        let out = h.process([Record::new("not json")]).expect("ok");
        assert!(out.is_empty());
        assert_eq!(h.counter("malformed-payments"), 1);
    }
}
