//! Drops records whose id was already seen within a time-to-live, in event
//! time: the first record of each id passes, repeats within the TTL do not.
//!
//! Configuration:
//! - `ttl`: how long an id is remembered, e.g. `10m` (default `1h`);
//! - `id-field`: take the id from this top-level field of a JSON value;
//!   without it, the record key is the id.
//!
//! Records without an id pass through, counted as `records-without-id`;
//! dropped repeats are counted as `duplicates-dropped`. Each id's entry is
//! removed by an event-time timer once its TTL has passed, so state holds
//! only the ids of the last TTL.

use eddy_sdk::prelude::*;
use std::time::Duration;

/// See the crate docs.
#[derive(Default)]
pub struct Dedup {
    ttl: i64,
    id_field: Option<String>,
}

impl Dedup {
    fn id(&self, record: &Record) -> Option<Vec<u8>> {
        match &self.id_field {
            None => record.key().map(<[u8]>::to_vec),
            Some(field) => {
                let value: serde_json::Value = serde_json::from_slice(record.value()?).ok()?;
                match value.get(field)? {
                    serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
                    serde_json::Value::Null => None,
                    other => Some(other.to_string().into_bytes()),
                }
            }
        }
    }
}

impl Processor for Dedup {
    fn init(&mut self, _task: &Task) -> Result<()> {
        let ttl = config::duration("ttl")?.unwrap_or(Duration::from_secs(3600));
        self.ttl = i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX);
        self.id_field = config::get("id-field");
        Ok(())
    }

    fn process(&mut self, record: Record, out: &mut Emitter) -> Result<()> {
        let Some(id) = self.id(&record) else {
            metrics::increment("records-without-id", 1);
            out.emit(record);
            return Ok(());
        };
        let now = record.timestamp();
        if let Some(seen) = state::get_typed::<i64>(&id)?
            && now.saturating_sub(seen) < self.ttl
            && now >= seen
        {
            metrics::increment("duplicates-dropped", 1);
            return Ok(());
        }
        state::put_typed(&id, &now)?;
        timers::set(TimeDomain::EventTime, now.saturating_add(self.ttl), &id);
        out.emit(record);
        Ok(())
    }

    fn on_timer(&mut self, timer: Timer, _out: &mut Emitter) -> Result<()> {
        // A later sighting re-armed the id with a later timer: keep it.
        if let Some(seen) = state::get_typed::<i64>(&timer.key)?
            && seen.saturating_add(self.ttl) <= timer.at
        {
            state::delete(&timer.key)?;
        }
        Ok(())
    }
}

eddy_sdk::export!(Dedup);

#[cfg(test)]
mod tests {
    use super::*;
    use eddy_sdk::testing::TestHarness;

    fn payment(id: &str, t: i64) -> Record {
        Record::new(format!(r#"{{"id":"{id}","amount":1}}"#)).with_timestamp(t)
    }

    #[test]
    fn repeats_within_the_ttl_are_dropped_and_forgotten_after_it() {
        let mut h = TestHarness::<Dedup>::new()
            .config("ttl", "10s")
            .config("id-field", "id");
        let out = h
            .process([payment("a", 0), payment("b", 1_000), payment("a", 5_000)])
            .expect("ok");
        assert_eq!(out.len(), 2);
        assert_eq!(h.counter("duplicates-dropped"), 1);
        // Past a's TTL its entry is gone and it passes again.
        let out = h
            .process([payment("c", 30_000), payment("a", 31_000)])
            .expect("ok");
        assert_eq!(out.len(), 2);
        assert!(h.state_value("b").is_none(), "b expired");
    }

    #[test]
    fn keys_are_ids_by_default_and_records_without_one_pass() {
        let mut h = TestHarness::<Dedup>::new();
        let out = h
            .process([
                Record::new("1").with_key("k"),
                Record::new("2").with_key("k"),
                Record::new("3"),
            ])
            .expect("ok");
        let values: Vec<_> = out.iter().filter_map(OutputRecord::value_str).collect();
        assert_eq!(values, ["1", "3"]);
    }
}
