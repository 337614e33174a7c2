//! Standby replicas: warm copies of the state of partitions this daemon
//! does not own, kept by following their changelogs, so that a partition
//! moving here after its owner died restores only what the copy lacks.
//!
//! Kafka's group assignment cannot prefer a daemon with a warm copy
//! (librdkafka has no pluggable assignor), so where the copies live is
//! decided without it: each changelog partition's copies go to the
//! `standby_replicas + 1` daemons ranking first for it by rendezvous
//! hashing over the daemons the registry lists, less the owner. Every
//! daemon computes the same ranking from the same list, the ranking of a
//! partition changes only when a daemon that ranked first for it comes or
//! goes, and with `standby_replicas` at least the number of daemons less
//! one every daemon keeps a copy of every partition it does not own, so a
//! partition lands on a warm copy wherever the group moves it.
//!
//! A copy lives where the owner's state would: the task's slice of the
//! pipeline's store, with the changelog position it reaches. It is applied
//! as a restore applies the changelog (a batch only once the checkpoint that
//! closes it arrives, committed records only), so when the partition is
//! assigned here its task restores from that position, which is the
//! changelog's end or close to it.

use super::changelog::Replay;
use super::plan::TaskPlan;
use crate::kafka::murmur2_hash;
use crate::state::{POSITION_KEY, StateLimits, TaskState};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The daemons the registry lists (their ids), this one included.
pub type DaemonList = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

/// How often the copies are checked against the daemons and assignment.
const PLACEMENT_INTERVAL: Duration = Duration::from_secs(1);

/// The standby copies of one pipeline step on this daemon.
pub struct Standbys {
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

/// What the runner and the follower thread share.
struct Shared {
    /// Changelog partitions whose task runs here (no copy is kept of
    /// them), and how many partitions the changelog has. The follower
    /// applies records holding this lock, so once [`Standbys::claim`]
    /// returns nothing more is applied to the claimed partition.
    assignment: Mutex<Assignment>,
}

#[derive(Default)]
struct Assignment {
    owned: BTreeSet<i32>,
    partitions: i32,
}

impl Standbys {
    /// Starts following the changelog partitions of `plan`'s step that are
    /// placed on `me` among `daemons`.
    pub fn start(plan: Arc<TaskPlan>, me: String, daemons: DaemonList) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            assignment: Mutex::new(Assignment::default()),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let shared = shared.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("standby-{}", plan.settings.pipeline))
                .spawn(move || Follower::new(plan, me, daemons, shared).run(&stop))?
        };
        Ok(Self {
            shared,
            stop,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The step's changelog has `partitions` partitions (one per input
    /// partition of the step).
    pub fn set_partitions(&self, partitions: i32) {
        self.shared.lock().partitions = partitions;
    }

    /// A task is about to own changelog `partition` here: no record is
    /// applied to its copy from now on.
    pub fn claim(&self, partition: i32) {
        self.shared.lock().owned.insert(partition);
    }

    /// The task of changelog `partition` stopped: the copy follows the
    /// changelog again from where the task's state reaches, if the
    /// partition is placed here.
    pub fn release(&self, partition: i32) {
        self.shared.lock().owned.remove(&partition);
    }
}

impl Standbys {
    /// Stops following (the copies stay in the store, where a restart or
    /// a later assignment finds them); returns once nothing more is applied.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the standby thread panicked");
        }
    }
}

impl Drop for Standbys {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Assignment> {
        self.assignment
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Whether `me` keeps a copy of changelog `partition` of `step`: `me` is
/// among the `replicas + 1` daemons ranking first for it (the owner may be
/// one of them). Ranks by a hash of daemon and partition, so every daemon
/// agrees without asking the others.
fn placed_here(me: &str, daemons: &[String], step: u32, partition: i32, replicas: u32) -> bool {
    let score = |daemon: &str| {
        let mut key = Vec::with_capacity(daemon.len() + 9);
        key.extend_from_slice(daemon.as_bytes());
        key.push(0);
        key.extend_from_slice(&step.to_be_bytes());
        key.extend_from_slice(&partition.to_be_bytes());
        (murmur2_hash(&key), daemon.to_owned())
    };
    let mut ranked: Vec<(u32, String)> = daemons.iter().map(|d| score(d)).collect();
    if !daemons.iter().any(|d| d == me) {
        ranked.push(score(me));
    }
    ranked.sort_unstable_by(|a, b| b.cmp(a));
    ranked
        .iter()
        .take(
            usize::try_from(replicas)
                .unwrap_or(usize::MAX)
                .saturating_add(1),
        )
        .any(|(_, daemon)| daemon == me)
}

/// The thread that keeps the copies.
struct Follower {
    plan: Arc<TaskPlan>,
    me: String,
    daemons: DaemonList,
    shared: Arc<Shared>,
    /// The partitions followed, each with its copy's store and the batch
    /// under way.
    copies: BTreeMap<i32, Replica>,
    consumer: Option<BaseConsumer>,
}

/// One followed changelog partition.
struct Replica {
    state: TaskState,
    replay: Replay,
    caught_up: bool,
}

impl Follower {
    fn new(plan: Arc<TaskPlan>, me: String, daemons: DaemonList, shared: Arc<Shared>) -> Self {
        Self {
            plan,
            me,
            daemons,
            shared,
            copies: BTreeMap::new(),
            consumer: None,
        }
    }

    fn run(mut self, stop: &AtomicBool) {
        let mut placed_at: Option<Instant> = None;
        while !stop.load(Ordering::Relaxed) {
            if placed_at.is_none_or(|at| at.elapsed() >= PLACEMENT_INTERVAL) {
                placed_at = Some(Instant::now());
                if let Err(e) = self.place() {
                    tracing::warn!(pipeline = %self.plan.settings.pipeline, error = %e, "standby copies could not follow their changelogs; retrying");
                    self.consumer = None;
                    self.copies.clear();
                    std::thread::sleep(PLACEMENT_INTERVAL);
                    continue;
                }
            }
            let Some(consumer) = &self.consumer else {
                std::thread::sleep(Duration::from_millis(200));
                continue;
            };
            match consumer.poll(Duration::from_millis(200)) {
                None => {}
                Some(Err(KafkaError::PartitionEOF(partition))) => {
                    if let Some(copy) = self.copies.get_mut(&partition)
                        && !copy.caught_up
                    {
                        copy.caught_up = true;
                        tracing::info!(pipeline = %self.plan.settings.pipeline, step = self.plan.settings.step, partition, "standby copy caught up with its changelog");
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(pipeline = %self.plan.settings.pipeline, error = %e, "standby copies: reading the changelog failed");
                }
                Some(Ok(message)) => {
                    let partition = message.partition();
                    // Under the lock, so a claim waits for this record.
                    let assignment = self.shared.lock();
                    if assignment.owned.contains(&partition) {
                        continue;
                    }
                    let Some(copy) = self.copies.get_mut(&partition) else {
                        continue;
                    };
                    let Some(key) = message.key() else { continue };
                    let value = message.payload().map(<[u8]>::to_vec);
                    if let Err(e) =
                        copy.replay
                            .record(&mut copy.state, key, value, message.offset() + 1)
                    {
                        tracing::warn!(pipeline = %self.plan.settings.pipeline, partition, error = %e, "a standby copy could not be written; it is rebuilt");
                        drop(assignment);
                        self.copies.remove(&partition);
                        placed_at = None;
                    }
                }
            }
        }
    }

    /// Follows the partitions placed here and not owned here, each from
    /// where its copy reaches; drops the others.
    fn place(&mut self) -> Result<(), String> {
        let daemons = (self.daemons)();
        let (owned, partitions) = {
            let assignment = self.shared.lock();
            (assignment.owned.clone(), assignment.partitions)
        };
        let settings = &self.plan.settings;
        let wanted: BTreeSet<i32> = (0..partitions)
            .filter(|p| !owned.contains(p))
            .filter(|p| {
                placed_here(
                    &self.me,
                    &daemons,
                    settings.step,
                    *p,
                    settings.standby_replicas,
                )
            })
            .collect();
        let followed: BTreeSet<i32> = self.copies.keys().copied().collect();
        if wanted == followed && self.consumer.is_some() {
            return Ok(());
        }
        self.copies.retain(|p, _| wanted.contains(p));
        let mut tpl = TopicPartitionList::new();
        for &partition in &wanted {
            let copy = match self.copies.remove(&partition) {
                Some(copy) => copy,
                None => {
                    let store = self
                        .plan
                        .db
                        .task_store(settings.step, u32::try_from(partition).unwrap_or(0));
                    Replica {
                        state: TaskState::new(Box::new(store), StateLimits::default()),
                        replay: Replay::default(),
                        caught_up: false,
                    }
                }
            };
            // A copy kept across a change resumes at its own position too:
            // its batch under way is dropped and read again.
            let position = copy
                .state
                .get_raw(POSITION_KEY)
                .map_err(|e| e.to_string())?
                .and_then(|v| v.try_into().ok().map(i64::from_be_bytes));
            let offset = position.map_or(Offset::Beginning, Offset::Offset);
            tpl.add_partition_offset(&self.plan.changelog, partition, offset)
                .map_err(|e| e.to_string())?;
            self.copies.insert(
                partition,
                Replica {
                    replay: Replay::default(),
                    ..copy
                },
            );
        }
        if self.consumer.is_none() {
            let mut config = self.plan.kafka.restore_consumer();
            // Long-lived, unlike a restore: what it prefetches stays small.
            config.set("queued.max.messages.kbytes", "8192");
            self.consumer = Some(config.create().map_err(|e| e.to_string())?);
        }
        if let Some(consumer) = &self.consumer {
            consumer.assign(&tpl).map_err(|e| e.to_string())?;
        }
        tracing::info!(
            pipeline = %settings.pipeline, step = settings.step,
            partitions = ?wanted, "standby copies follow their changelogs"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemons(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("daemon-{i}")).collect()
    }

    #[test]
    fn each_partition_has_replicas_plus_one_places_and_all_daemons_agree() {
        let all = daemons(5);
        for partition in 0..32 {
            let placed = all
                .iter()
                .filter(|me| placed_here(me, &all, 0, partition, 2))
                .count();
            assert_eq!(placed, 3, "partition {partition}");
        }
    }

    #[test]
    fn enough_replicas_place_every_partition_on_every_daemon() {
        let all = daemons(3);
        for partition in 0..8 {
            assert!(all.iter().all(|me| placed_here(me, &all, 1, partition, 2)));
        }
    }

    #[test]
    fn a_daemon_leaving_moves_only_the_copies_it_held() {
        let all = daemons(4);
        let fewer: Vec<String> = all[..3].to_vec();
        for partition in 0..32 {
            for me in &fewer {
                if placed_here(me, &all, 0, partition, 1) {
                    assert!(placed_here(me, &fewer, 0, partition, 1));
                }
            }
        }
    }
}
