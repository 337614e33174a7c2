//! How a task's entries are keyed, in the store and in its changelog alike:
//! one namespace byte, then the rest. A changelog record is a store entry,
//! so restoring is replaying entries.

use super::timers::{TimeDomain, Timer};

const DATA: u8 = b'd';
const TIMER: u8 = b't';

/// The batch checkpoint: the input offset and stream time the state reflects.
/// Written to the changelog after each batch's mutations, and locally with them.
pub const CHECKPOINT_KEY: &[u8] = b"c";

/// Local only: the changelog offset just past the last checkpoint applied,
/// where a restore resumes reading.
pub const POSITION_KEY: &[u8] = b"p";

/// The store key of a guest's `key`.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key);
    k
}

/// The guest key inside a store key, if it is one.
pub(crate) fn user_key(key: &[u8]) -> Option<&[u8]> {
    key.split_first()
        .and_then(|(ns, rest)| (*ns == DATA).then_some(rest))
}

/// The bounds of the data namespace.
pub(crate) fn data_range() -> (Vec<u8>, Vec<u8>) {
    (vec![DATA], vec![DATA + 1])
}

/// The bounds of the timer namespace.
pub(crate) fn timer_range() -> (Vec<u8>, Vec<u8>) {
    (vec![TIMER], vec![TIMER + 1])
}

/// The store key of a timer: sorted by domain, then time, then key.
pub fn timer_key(timer: &Timer) -> Vec<u8> {
    let Timer { at, domain, key } = timer;
    let mut k = Vec::with_capacity(key.len() + 10);
    k.push(TIMER);
    k.push(match domain {
        TimeDomain::EventTime => 0,
        TimeDomain::WallClock => 1,
    });
    // Flipping the sign bit makes signed times sort bytewise.
    k.extend_from_slice(&((*at as u64) ^ (1 << 63)).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The timer a store key names, if it names one.
pub fn timer_from_key(k: &[u8]) -> Option<Timer> {
    let (&ns, rest) = k.split_first()?;
    if ns != TIMER || rest.len() < 9 {
        return None;
    }
    let domain = match rest[0] {
        0 => TimeDomain::EventTime,
        1 => TimeDomain::WallClock,
        _ => return None,
    };
    let at = u64::from_be_bytes(rest[1..9].try_into().ok()?) ^ (1 << 63);
    Some(Timer {
        at: at as i64,
        domain,
        key: rest[9..].to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timer_keys_round_trip_and_sort_by_time() {
        let timer = |at, key: &[u8]| Timer {
            at,
            domain: TimeDomain::EventTime,
            key: key.to_vec(),
        };
        let (early, late) = (timer(-5, b"k"), timer(70_000, b"a"));
        assert!(timer_key(&early) < timer_key(&late));
        assert_eq!(timer_from_key(&timer_key(&early)), Some(early));
        assert_eq!(timer_from_key(&data_key(b"x")), None);
        assert_eq!(user_key(&data_key(b"x")), Some(&b"x"[..]));
    }
}
