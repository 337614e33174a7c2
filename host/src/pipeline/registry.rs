//! The registry: which pipelines exist, shared by every daemon pointed at
//! the same Kafka cluster (and group prefix), kept in a compacted topic of
//! one partition, `<prefix>registry`.
//!
//! Deploying is publishing: a create, pause, resume or delete writes the
//! pipeline's record (a tombstone for a delete), and every daemon, the one
//! that took the request included, applies the records in log order on a
//! registry thread. The daemon that took the request waits until it has
//! applied its own record, so its answer already shows the change. The
//! modules a pipeline runs travel the same way, ahead of the pipeline's
//! record, in chunks (`module/<hex>/<i>`) closed by their metadata
//! (`module/<hex>`), so a daemon that never saw an upload can run the
//! pipeline. A daemon that starts reads the registry to its end before it
//! serves, so it resumes exactly the pipelines that exist.
//!
//! Each daemon also lists itself (`daemon/<id>`: its control-plane URL), so
//! a state query reaching any daemon can be answered by the key's owner.
//!
//! One partition keeps one order for everyone; compaction keeps one record
//! per key. Tombstones are kept for the topic's `delete.retention.ms`
//! (a day by default): a daemon down for longer than that when a pipeline
//! was deleted republishes its local copy of the spec when it starts.

use super::lock;
use super::signing::{ClusterSecret, MAC_HEADER, SECRET_ENV};
use crate::kafka::{
    self, Acks, InternalTopic, KafkaMetadata, KafkaSettings, Outgoing, OutgoingHeaders, Producer,
    Topic, TopicError, Unanswered,
};
pub(super) use eddy_registry::Event;
use eddy_registry::MODULE_CHUNK_BYTES;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Headers as _, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a daemon waits to see its own registry write applied.
const APPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why the registry could not be read or written.
#[derive(Debug, thiserror::Error)]
pub(super) enum RegistryError {
    /// Kafka failed.
    #[error("the pipeline registry (topic {topic}): {error}")]
    Kafka {
        /// The registry topic.
        topic: String,
        /// What went wrong.
        error: String,
    },
    /// The registry topic could not be created or has the wrong shape.
    #[error(transparent)]
    Topic(#[from] TopicError),
}

/// Whether `consumer` read `topic` up to `end` (compaction can leave the
/// last offsets without records).
fn reached(consumer: &BaseConsumer, topic: &str, end: i64) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    positions
        .find_partition(topic, 0)
        .is_some_and(|p| matches!(p.offset(), Offset::Offset(o) if o >= end))
}

/// The registry topic, a producer for it, and how far this daemon applied it.
pub(super) struct Registry {
    topic: String,
    kafka: KafkaSettings,
    producer: Producer,
    /// `topic`, looked up in the producer at the first write: a lookup before
    /// [`follow`](Self::follow) created the topic would have the broker
    /// auto-create it, with its default partition count.
    records: OnceLock<Topic>,
    /// The next offset this daemon will apply.
    applied: Mutex<i64>,
    progressed: Condvar,
    stop: AtomicBool,
    /// Signs the records this daemon writes and checks those it reads;
    /// without it neither happens.
    secret: Option<ClusterSecret>,
}

impl Registry {
    /// The registry in `topic`; nothing is read or written until
    /// [`follow`](Self::follow), so a daemon starts without Kafka.
    pub(super) fn new(
        kafka: &KafkaSettings,
        topic: String,
        secret: Option<ClusterSecret>,
    ) -> Result<Self, RegistryError> {
        let producer = Producer::create(&kafka.producer()).map_err(|e| RegistryError::Kafka {
            topic: topic.clone(),
            error: e.to_string(),
        })?;
        if secret.is_none() {
            tracing::warn!(
                registry = %topic,
                "registry records are not signed: whoever can write to the registry topic can \
                 create and delete pipelines on every daemon; give every daemon the same \
                 cluster-secret-file (or {SECRET_ENV}), or restrict the topic with Kafka ACLs"
            );
        }
        Ok(Self {
            topic,
            kafka: kafka.clone(),
            producer,
            records: OnceLock::new(),
            applied: Mutex::new(0),
            progressed: Condvar::new(),
            stop: AtomicBool::new(false),
            secret,
        })
    }

    fn error(&self, error: impl std::fmt::Display) -> RegistryError {
        RegistryError::Kafka {
            topic: self.topic.clone(),
            error: error.to_string(),
        }
    }

    /// Writes `key` and waits until this daemon applied it.
    fn publish(&self, key: &str, value: Option<&[u8]>) -> Result<(), RegistryError> {
        let offset = self.send(key, value)?;
        self.wait_applied(offset)
    }

    /// Writes `key` and waits for the broker; the offset it got.
    fn send(&self, key: &str, value: Option<&[u8]>) -> Result<i64, RegistryError> {
        self.enqueue(key, value)?
            .wait()
            .map_err(|e| self.error(format!("{e}{}", kafka::advice(&e))))
    }

    /// Hands `key` to the producer; its acks settle once the broker
    /// acknowledged it, or once the producer's message timeout passed.
    fn enqueue(&self, key: &str, value: Option<&[u8]>) -> Result<Acks, RegistryError> {
        let records = match self.records.get() {
            Some(records) => records,
            None => {
                let looked_up = self
                    .producer
                    .topic(&self.topic)
                    .map_err(|e| self.error(e))?;
                self.records.get_or_init(|| looked_up)
            }
        };
        let acks = Acks::default();
        let mac = self
            .secret
            .as_ref()
            .map(|secret| secret.sign(key.as_bytes(), value));
        let mut record = Outgoing::to(records);
        record.partition = Some(0);
        record.key = Some(key.as_bytes());
        record.value = value;
        record.headers = OutgoingHeaders::new(mac.as_deref().map(|mac| (MAC_HEADER, Some(mac))));
        self.producer
            .send(record, &acks)
            .map_err(|e| self.error(e))?;
        Ok(acks)
    }

    fn wait_applied(&self, offset: i64) -> Result<(), RegistryError> {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        let mut applied = lock(&self.applied);
        while *applied <= offset {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.error(format!(
                    "this daemon has not applied its own write (offset {offset}) after {}s",
                    APPLY_TIMEOUT.as_secs()
                )));
            }
            applied = self
                .progressed
                .wait_timeout(applied, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        Ok(())
    }

    /// Publishes that daemon `id` stopped, waiting at most `within` for the
    /// broker to take it (not for this daemon to read it back): a stopping
    /// daemon's courtesy to the others, which must not hold its shutdown for
    /// the producer's whole message timeout (a minute) when Kafka is away.
    pub(super) fn withdraw_daemon(&self, id: &str, within: Duration) -> Result<(), RegistryError> {
        let acks = self.enqueue(&format!("daemon/{id}"), None)?;
        match kafka::call_within("eddy-withdraw", within, move || acks.wait()) {
            Ok(outcome) => outcome.map(drop).map_err(|e| self.error(e)),
            Err(Unanswered::Spawn(e)) => Err(self.error(e)),
            Err(Unanswered::TimedOut) => Err(self.error(format!(
                "the broker did not take it within {within:?} (is Kafka reachable?)"
            ))),
        }
    }

    /// Publishes a pipeline's record (`None`: it was deleted).
    pub(super) fn publish_pipeline(
        &self,
        name: &str,
        stored: Option<&[u8]>,
    ) -> Result<(), RegistryError> {
        self.publish(&format!("pipeline/{name}"), stored)
    }

    /// Publishes where daemon `id` serves (`None`: it stopped).
    /// Records that eddy created dead-letter `topic` for `pipeline`.
    pub(super) fn publish_dead_letter(
        &self,
        topic: &str,
        pipeline: &str,
    ) -> Result<(), RegistryError> {
        self.publish(&format!("dead-letter/{topic}"), Some(pipeline.as_bytes()))
    }

    pub(super) fn publish_daemon(&self, id: &str, url: Option<&str>) -> Result<(), RegistryError> {
        self.publish(&format!("daemon/{id}"), url.map(str::as_bytes))
    }

    /// Publishes a module's bytes and then its metadata.
    pub(super) fn publish_module(
        &self,
        digest: &str,
        bytes: &[u8],
        info: &[u8],
    ) -> Result<(), RegistryError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        let mut chunks = 0u32;
        for (index, chunk) in bytes.chunks(MODULE_CHUNK_BYTES).enumerate() {
            self.send(&format!("module/{hex}/{index}"), Some(chunk))?;
            chunks += 1;
        }
        let mut value = format!("{chunks}\n").into_bytes();
        value.extend_from_slice(info);
        self.publish(&format!("module/{hex}"), Some(&value))
    }

    /// Publishes that module `digest` of `size` bytes was deleted: its
    /// metadata first (daemons drop the module on it), then its chunks'
    /// tombstones, so compaction takes the bytes out of the topic too.
    pub(super) fn withdraw_module(&self, digest: &str, size: u64) -> Result<(), RegistryError> {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.publish(&format!("module/{hex}"), None)?;
        let chunks = usize::try_from(size)
            .unwrap_or(usize::MAX)
            .div_ceil(MODULE_CHUNK_BYTES);
        for index in 0..chunks {
            self.send(&format!("module/{hex}/{index}"), None)?;
        }
        Ok(())
    }

    /// Creates the registry topic if needed, applies every record up to its
    /// current end, then keeps applying new ones on a thread until
    /// [`stop`](Self::stop).
    pub(super) fn follow(
        self: &Arc<Self>,
        metadata: &KafkaMetadata,
        mut apply: impl FnMut(Event) + Send + 'static,
    ) -> Result<JoinHandle<()>, RegistryError> {
        kafka::ensure_topic(&self.kafka, metadata, &InternalTopic::registry(&self.topic))?;
        let consumer: BaseConsumer = self
            .kafka
            .restore_consumer()
            .set("enable.partition.eof", "false")
            .create()
            .map_err(|e| self.error(e))?;
        let (_, end) = consumer
            .fetch_watermarks(&self.topic, 0, Duration::from_secs(30))
            .map_err(|e| self.error(e))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Beginning)
            .map_err(|e| self.error(e))?;
        consumer.assign(&tpl).map_err(|e| self.error(e))?;
        let caught_up = Instant::now() + APPLY_TIMEOUT;
        while self.next() < end && !reached(&consumer, &self.topic, end) {
            if Instant::now() > caught_up {
                return Err(self.error(format!(
                    "could not read the registry to its end (offset {end}) in {}s",
                    APPLY_TIMEOUT.as_secs()
                )));
            }
            self.poll_once(&consumer, &mut apply)?;
        }
        let this = self.clone();
        std::thread::Builder::new()
            .name("eddy-registry".into())
            .spawn(move || {
                while !this.stop.load(Ordering::Relaxed) {
                    if let Err(e) = this.poll_once(&consumer, &mut apply) {
                        tracing::warn!(error = %e, "reading the pipeline registry");
                    }
                }
            })
            .map_err(|e| self.error(e))
    }

    fn next(&self) -> i64 {
        *lock(&self.applied)
    }

    fn poll_once(
        &self,
        consumer: &BaseConsumer,
        apply: &mut impl FnMut(Event),
    ) -> Result<(), RegistryError> {
        match consumer.poll(Duration::from_millis(200)) {
            None => Ok(()),
            Some(Err(e)) => Err(self.error(e)),
            Some(Ok(message)) => {
                let event = self
                    .check_signed(&message)
                    .and_then(|()| {
                        message
                            .key()
                            .and_then(|k| std::str::from_utf8(k).ok())
                            .ok_or_else(|| "a key that is not UTF-8".to_owned())
                    })
                    .and_then(|k| Event::parse(k, message.payload()));
                match event {
                    Ok(event) => apply(event),
                    Err(why) => tracing::error!(
                        offset = message.offset(),
                        key = ?message.key().map(String::from_utf8_lossy),
                        why,
                        "ignoring a registry record"
                    ),
                }
                *lock(&self.applied) = message.offset() + 1;
                self.progressed.notify_all();
                Ok(())
            }
        }
    }

    /// With a secret: that `message` carries the MAC a daemon of this
    /// cluster would have given it.
    fn check_signed(&self, message: &BorrowedMessage<'_>) -> Result<(), String> {
        let Some(secret) = &self.secret else {
            return Ok(());
        };
        let mac = message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key == MAC_HEADER)
                .and_then(|h| h.value)
        });
        match mac {
            Some(mac)
                if secret.verify(message.key().unwrap_or_default(), message.payload(), mac) =>
            {
                Ok(())
            }
            Some(_) => {
                Err("its signature is not this cluster's (another secret, or forged)".into())
            }
            None => Err(format!(
                "it is not signed (no {MAC_HEADER} header): a daemon without the cluster \
                 secret, or not a daemon, wrote it"
            )),
        }
    }

    /// Stops following the registry.
    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Whether [`stop`](Self::stop) was called.
    pub(super) fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}
