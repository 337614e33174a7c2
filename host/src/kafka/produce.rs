//! Producing records whose acknowledgements are counted, not awaited one by
//! one.
//!
//! A task waits for everything one commit produced at once, so a message
//! needs no future of its own: each carries a reference to its commit's
//! [`Acks`], which counts the deliveries still outstanding, keeps the first
//! failure and the highest offset acknowledged. rdkafka's `FutureProducer`
//! allocated a channel and a box per message, and a waiter polled each
//! future; its `send` also copied the topic name into a `CString` per
//! message, which librdkafka then looked up under the client's write lock.
//! Here a task looks a topic up once ([`Producer::topic`]) and sends with
//! the handle. Together that was about a tenth of the daemon's CPU per
//! record in `just bench`'s profile.
//!
//! Delivery reports are served by a thread that sleeps until librdkafka
//! queues one ([`DeliveryThread`]), not by rdkafka's `ThreadedProducer`,
//! which spins for a millisecond in every 100.

use super::delivery_thread::DeliveryThread;
use rdkafka::ClientConfig;
use rdkafka::bindings as rdsys;
use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message as _;
use rdkafka::producer::{
    BaseProducer, DeliveryResult, NoCustomPartitioner, Producer as _, ProducerContext,
};
use rdkafka::types::RDKafkaErrorCode;
use std::ffi::{CString, c_void};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// How long a send waits before trying again when the producer's queue is
/// full (backpressure).
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(2);

/// A producer with its own thread serving delivery reports; cheap to clone.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Served>,
}

/// The rdkafka producer and the thread serving its delivery reports, which
/// stops (and is waited for) before the producer is destroyed.
struct Served {
    /// Held for its Drop, which stops the thread; declared first, so it
    /// goes before the producer.
    _deliveries: DeliveryThread,
    producer: Arc<BaseProducer<Deliveries>>,
}

impl Producer {
    /// A producer with `config` (see [`super::KafkaSettings::producer`]).
    pub fn create(config: &ClientConfig) -> KafkaResult<Self> {
        let producer = Arc::new(config.create_with_context(Deliveries)?);
        let deliveries = DeliveryThread::start(&producer).map_err(|e| {
            KafkaError::ClientCreation(format!("could not start the delivery thread: {e}"))
        })?;
        Ok(Self {
            inner: Arc::new(Served {
                _deliveries: deliveries,
                producer,
            }),
        })
    }

    /// The rdkafka producer underneath, for transactions and flushing.
    pub fn rdkafka(&self) -> &BaseProducer<Deliveries> {
        &self.inner.producer
    }

    /// A handle on `topic` to send with.
    pub fn topic(&self, topic: &str) -> KafkaResult<Topic> {
        let name = CString::new(topic)
            .map_err(|_| KafkaError::MessageProduction(RDKafkaErrorCode::InvalidTopic))?;
        // SAFETY: the client is live; the handle it returns holds a
        // reference that Topic's Drop gives back.
        let raw = unsafe {
            rdsys::rd_kafka_topic_new(
                self.inner.producer.client().native_ptr(),
                name.as_ptr(),
                ptr::null_mut(),
            )
        };
        let handle = NonNull::new(raw).ok_or(KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidTopic,
        ))?;
        Ok(Topic {
            handle,
            name: topic.to_owned(),
            _producer: self.clone(),
        })
    }

    /// Queues `record`; its delivery is counted in `acks`. While the
    /// producer's queue is full this waits (backpressure); any other
    /// refusal is returned, and nothing was queued.
    pub fn send(&self, record: Outgoing<'_>, acks: &Acks) -> KafkaResult<()> {
        let Outgoing {
            topic,
            partition,
            key,
            value,
            timestamp,
            mut headers,
        } = record;
        debug_assert!(Arc::ptr_eq(&topic._producer.inner, &self.inner));
        // The first field is the opaque, set for each attempt below.
        let mut fields: [rdsys::rd_kafka_vu_t; 8] = [vu_end(); 8];
        let mut count = 1;
        let mut push = |vu| {
            fields[count] = vu;
            count += 1;
        };
        push(vu(rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_RKT, |u| {
            u.rkt = topic.handle.as_ptr();
        }));
        // librdkafka copies key and value, so they need not outlive the call.
        push(vu(rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_MSGFLAGS, |u| {
            u.i = rdsys::RD_KAFKA_MSG_F_COPY;
        }));
        if let Some(partition) = partition {
            push(vu(rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_PARTITION, |u| {
                u.i32_ = partition;
            }));
        }
        if let Some(key) = key {
            push(bytes_vu(rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_KEY, key));
        }
        if let Some(value) = value {
            push(bytes_vu(
                rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_VALUE,
                value,
            ));
        }
        if let Some(timestamp) = timestamp {
            push(vu(rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_TIMESTAMP, |u| {
                u.i64_ = timestamp;
            }));
        }
        if let Some(list) = headers.0 {
            push(vu(rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_HEADERS, |u| {
                u.headers = list.as_ptr();
            }));
        }
        loop {
            // Counted before it is queued: its delivery may come at once.
            acks.0.outstanding.fetch_add(1, Ordering::AcqRel);
            let opaque = Arc::into_raw(acks.0.clone()).cast_mut().cast::<c_void>();
            fields[0] = vu(rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_OPAQUE, |u| {
                u.ptr = opaque;
            });
            // SAFETY: every field points at memory live for the call (key
            // and value are copied, the topic handle and the headers list
            // are live); the opaque is a reference librdkafka hands back in
            // the delivery report, or that we take back below on refusal.
            let refused = unsafe {
                rdsys::rd_kafka_produceva(
                    self.inner.producer.client().native_ptr(),
                    fields.as_ptr(),
                    count,
                )
            };
            let Some(refused) = NonNull::new(refused) else {
                // The headers list belongs to the message now.
                headers.0 = None;
                return Ok(());
            };
            // SAFETY: refused, so librdkafka let go of the opaque, and the
            // error is ours to read and destroy once.
            let code = unsafe {
                drop(Arc::from_raw(opaque.cast::<AckState>()));
                let code = rdsys::rd_kafka_error_code(refused.as_ptr());
                rdsys::rd_kafka_error_destroy(refused.as_ptr());
                code
            };
            acks.0.settle();
            match RDKafkaErrorCode::from(code) {
                RDKafkaErrorCode::QueueFull => std::thread::sleep(QUEUE_FULL_WAIT),
                code => return Err(KafkaError::MessageProduction(code)),
            }
        }
    }
}

fn vu_end() -> rdsys::rd_kafka_vu_t {
    rdsys::rd_kafka_vu_t {
        vtype: rdsys::rd_kafka_vtype_t::RD_KAFKA_VTYPE_END,
        u: rdsys::rd_kafka_vu_s__bindgen_ty_1 { _pad: [0; 64] },
    }
}

fn vu(
    vtype: rdsys::rd_kafka_vtype_t,
    set: impl FnOnce(&mut rdsys::rd_kafka_vu_s__bindgen_ty_1),
) -> rdsys::rd_kafka_vu_t {
    let mut field = vu_end();
    field.vtype = vtype;
    set(&mut field.u);
    field
}

fn bytes_vu(vtype: rdsys::rd_kafka_vtype_t, bytes: &[u8]) -> rdsys::rd_kafka_vu_t {
    vu(vtype, |u| {
        u.mem = rdsys::rd_kafka_vu_s__bindgen_ty_1__bindgen_ty_1 {
            ptr: bytes.as_ptr().cast_mut().cast::<c_void>(),
            size: bytes.len(),
        };
    })
}

/// A topic to send to, looked up once.
pub struct Topic {
    handle: NonNull<rdsys::rd_kafka_topic_t>,
    name: String,
    /// The client the handle belongs to, kept alive until it is destroyed.
    _producer: Producer,
}

// SAFETY: librdkafka's topic handles are reference counted and may be used
// from any thread.
unsafe impl Send for Topic {}
// SAFETY: as above; sending through a handle only reads it.
unsafe impl Sync for Topic {}

impl Topic {
    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for Topic {
    fn drop(&mut self) {
        // SAFETY: the handle holds one reference, given back once; the
        // client outlives it (`_producer` is dropped after this).
        unsafe { rdsys::rd_kafka_topic_destroy(self.handle.as_ptr()) }
    }
}

/// A record to send.
pub struct Outgoing<'a> {
    /// Where it goes.
    pub topic: &'a Topic,
    /// Its partition; `None` partitions by key (murmur2, as Java clients).
    pub partition: Option<i32>,
    /// Its key.
    pub key: Option<&'a [u8]>,
    /// Its value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    /// Milliseconds since the epoch; `None` stamps it with the time it is queued.
    pub timestamp: Option<i64>,
    /// Its headers.
    pub headers: OutgoingHeaders,
}

impl<'a> Outgoing<'a> {
    /// A record to `topic` with no headers and no fixed partition.
    pub fn to(topic: &'a Topic) -> Self {
        Self {
            topic,
            partition: None,
            key: None,
            value: None,
            timestamp: None,
            headers: OutgoingHeaders::default(),
        }
    }
}

/// A record's headers, built for librdkafka, which takes them when the
/// record is queued.
#[derive(Default)]
pub struct OutgoingHeaders(Option<NonNull<rdsys::rd_kafka_headers_t>>);

// SAFETY: a headers list no one else refers to may move between threads.
unsafe impl Send for OutgoingHeaders {}

impl OutgoingHeaders {
    /// A list of `headers`, in order; none is no list at all.
    pub fn new<'h>(headers: impl IntoIterator<Item = (&'h str, Option<&'h [u8]>)>) -> Self {
        let mut list: Option<NonNull<rdsys::rd_kafka_headers_t>> = None;
        for (name, value) in headers {
            let list = match list {
                Some(list) => list,
                // SAFETY: creates a list owned by this value until it is
                // queued or dropped.
                None => match NonNull::new(unsafe { rdsys::rd_kafka_headers_new(4) }) {
                    Some(new) => *list.insert(new),
                    None => break,
                },
            };
            let (value, size) = match value {
                Some(v) => (v.as_ptr().cast::<c_void>(), v.len().cast_signed()),
                None => (ptr::null(), 0),
            };
            // SAFETY: the list is live; name and value are copied, with
            // their lengths given, so neither needs a NUL.
            unsafe {
                rdsys::rd_kafka_header_add(
                    list.as_ptr(),
                    name.as_ptr().cast(),
                    name.len().cast_signed(),
                    value,
                    size,
                );
            }
        }
        Self(list)
    }
}

impl Drop for OutgoingHeaders {
    fn drop(&mut self) {
        if let Some(list) = self.0.take() {
            // SAFETY: the list was never queued, so it is still ours.
            unsafe { rdsys::rd_kafka_headers_destroy(list.as_ptr()) }
        }
    }
}

/// The deliveries of one commit: how many are outstanding, the first that
/// failed and the highest offset acknowledged.
#[derive(Clone, Default)]
pub struct Acks(Arc<AckState>);

/// What [`Acks`] shares with the delivery reports of its records.
pub struct AckState {
    outstanding: AtomicU64,
    /// The highest offset acknowledged, -1 before any.
    highest: AtomicI64,
    failed: Mutex<Option<KafkaError>>,
    settled: Condvar,
}

impl Default for AckState {
    fn default() -> Self {
        Self {
            outstanding: AtomicU64::new(0),
            highest: AtomicI64::new(-1),
            failed: Mutex::new(None),
            settled: Condvar::new(),
        }
    }
}

impl AckState {
    /// One delivery settled: wakes the waiter when it was the last.
    fn settle(&self) {
        if self.outstanding.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Taken so a waiter between its check and its wait is not missed.
            let _guard = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
            self.settled.notify_all();
        }
    }
}

impl Acks {
    /// Waits until every record sent with these acks was acknowledged or
    /// failed; the highest offset acknowledged (-1 for none), or the first
    /// failure. Each record settles within the producer's message timeout.
    pub fn wait(&self) -> KafkaResult<i64> {
        self.wait_until(None);
        let state = &self.0;
        match state
            .failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            Some(error) => Err(error),
            None => Ok(state.highest.load(Ordering::Acquire)),
        }
    }

    /// Waits until every record sent with any of `all` was acknowledged,
    /// or until one failed: the first failure ends the wait at once, with
    /// the index of its acks. (A transaction with a failed record can
    /// never commit, and librdkafka sends none of its other records, which
    /// would otherwise be waited on for their whole message timeout.)
    /// Calls `on_stall` once if records are still unacknowledged after
    /// `stall_after`: a producer retries a refused write silently, and the
    /// caller can find out why meanwhile. The highest offset acknowledged
    /// per acks (-1 for none).
    pub fn wait_all(
        all: &[&Acks],
        stall_after: Duration,
        on_stall: impl FnOnce(),
    ) -> Result<Vec<i64>, (usize, KafkaError)> {
        /// How soon a failure of one acks is noticed while waiting on another.
        const LOOK: Duration = Duration::from_millis(100);
        let started = Instant::now();
        let mut on_stall = Some(on_stall);
        loop {
            for (index, acks) in all.iter().enumerate() {
                let failed = acks
                    .0
                    .failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take();
                if let Some(error) = failed {
                    return Err((index, error));
                }
            }
            let Some(unsettled) = all
                .iter()
                .find(|acks| acks.0.outstanding.load(Ordering::Acquire) > 0)
            else {
                return Ok(all
                    .iter()
                    .map(|acks| acks.0.highest.load(Ordering::Acquire))
                    .collect());
            };
            if started.elapsed() >= stall_after
                && let Some(on_stall) = on_stall.take()
            {
                on_stall();
            }
            unsettled.wait_until(Instant::now().checked_add(LOOK));
        }
    }

    /// Waits until every delivery settled, or until `deadline`; whether
    /// they all settled.
    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        let state = &self.0;
        let mut failed = state.failed.lock().unwrap_or_else(PoisonError::into_inner);
        while state.outstanding.load(Ordering::Acquire) > 0 {
            failed = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                None => state
                    .settled
                    .wait(failed)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(left) if left.is_zero() => return false,
                Some(left) => {
                    state
                        .settled
                        .wait_timeout(failed, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        }
        true
    }
}

/// The producer's context: settles each delivery report in its record's
/// [`Acks`].
pub struct Deliveries;

impl ClientContext for Deliveries {}

impl ProducerContext<NoCustomPartitioner> for Deliveries {
    type DeliveryOpaque = Arc<AckState>;

    fn delivery(&self, result: &DeliveryResult<'_>, acks: Arc<AckState>) {
        match result {
            Ok(message) => {
                acks.highest.fetch_max(message.offset(), Ordering::AcqRel);
            }
            Err((error, _)) => {
                let mut failed = acks.failed.lock().unwrap_or_else(PoisonError::into_inner);
                failed.get_or_insert_with(|| error.clone());
            }
        }
        acks.settle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_wait_is_noted_and_still_waits_for_the_deliveries() {
        let acks = Acks::default();
        acks.0.outstanding.fetch_add(1, Ordering::AcqRel);
        // The delivery settles only once the stall was noted.
        let (noted_tx, noted_rx) = std::sync::mpsc::channel();
        let settler = {
            let state = Arc::clone(&acks.0);
            std::thread::spawn(move || {
                noted_rx.recv().expect("the stall was never noted");
                state.highest.fetch_max(41, Ordering::AcqRel);
                state.settle();
            })
        };
        let highest = Acks::wait_all(&[&acks], Duration::from_millis(20), || {
            noted_tx.send(()).expect("the settling thread is gone");
        });
        settler.join().expect("the settling thread panicked");
        assert_eq!(highest.ok(), Some(vec![41]));
    }

    #[test]
    fn a_prompt_delivery_is_not_noted() {
        let acks = Acks::default();
        let mut noted = false;
        assert_eq!(
            Acks::wait_all(&[&acks], Duration::from_secs(10), || noted = true).ok(),
            Some(vec![-1])
        );
        assert!(!noted);
    }

    #[test]
    fn a_failure_ends_the_wait_while_other_records_are_outstanding() {
        let stuck = Acks::default();
        stuck.0.outstanding.fetch_add(1, Ordering::AcqRel);
        let failed = Acks::default();
        failed.0.outstanding.fetch_add(1, Ordering::AcqRel);
        *failed.0.failed.lock().expect("poisoned") = Some(KafkaError::MessageProduction(
            RDKafkaErrorCode::InvalidTimestamp,
        ));
        failed.0.settle();
        match Acks::wait_all(&[&stuck, &failed], Duration::from_secs(10), || {}) {
            Err((1, e)) => assert_eq!(
                e.rdkafka_error_code(),
                Some(RDKafkaErrorCode::InvalidTimestamp)
            ),
            other => panic!("expected the second acks' failure, got {other:?}"),
        }
    }
}
