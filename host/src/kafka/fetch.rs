//! One input partition's fetched records, split off the consumer's queue so
//! its task takes them at its own pace, a batch per call into librdkafka.
//!
//! The rdkafka crate's partition queue hands out one message per poll, and
//! each poll read the clock twice, wrapped the message in an event and
//! allocated a reference count for it: about a tenth of the daemon's CPU
//! per record in `just bench`'s profile. [`FetchQueue::take`] pops up to a
//! batch in one `rd_kafka_consume_batch_queue` call, which reads the clock
//! once and hands out the messages themselves; librdkafka advances the
//! application position past them as for any consumed message.

use rdkafka::Offset;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer as _, ConsumerContext};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::types::RDKafkaErrorCode;
use std::borrow::Cow;
use std::collections::VecDeque;
use std::ffi::{CStr, CString, c_void};
use std::ptr::{self, NonNull};
use std::sync::Arc;
use std::time::Duration;

/// A fetched record, borrowed from librdkafka until the call that handed it
/// out returns.
pub struct Fetched<'a> {
    /// The record's key.
    pub key: Option<&'a [u8]>,
    /// The record's value.
    pub value: Option<&'a [u8]>,
    /// Milliseconds since the epoch; -1 when the record has none.
    pub timestamp: i64,
    /// The record's offset in its partition.
    pub offset: i64,
    message: &'a Message,
}

impl<'a> Fetched<'a> {
    /// The record's headers, in order. A name that is not UTF-8 is read
    /// lossily (Kafka clients write UTF-8 names).
    pub fn headers(&self) -> impl Iterator<Item = (Cow<'a, str>, Option<&'a [u8]>)> + 'a {
        let mut list: *mut rdsys::rd_kafka_headers_t = ptr::null_mut();
        // SAFETY: the message is live for 'a; the list it returns is owned
        // by the message.
        let found = unsafe { rdsys::rd_kafka_message_headers(self.message.0.as_ptr(), &mut list) };
        let list = if found == rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            NonNull::new(list)
        } else {
            None
        };
        (0..).map_while(move |index| {
            let list = list?;
            let mut name = ptr::null();
            let mut value: *const c_void = ptr::null();
            let mut size = 0usize;
            // SAFETY: the list lives as long as the message ('a); the
            // pointers it writes point into it.
            let err = unsafe {
                rdsys::rd_kafka_header_get_all(
                    list.as_ptr(),
                    index,
                    &mut name,
                    &mut value,
                    &mut size,
                )
            };
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: librdkafka's header names are NUL-terminated, and the
            // value spans `size` bytes; both live as long as the message.
            let name = unsafe { CStr::from_ptr(name) }.to_string_lossy();
            let value = (!value.is_null())
                .then(|| unsafe { std::slice::from_raw_parts(value.cast::<u8>(), size) });
            Some((name, value))
        })
    }
}

/// A message librdkafka handed out, destroyed when dropped.
struct Message(NonNull<rdsys::rd_kafka_message_t>);

// SAFETY: a consumed message is a heap object librdkafka lets any thread
// read and destroy.
unsafe impl Send for Message {}

impl Message {
    fn error(&self) -> Option<KafkaError> {
        // SAFETY: the message is live.
        let err = unsafe { self.0.as_ref() }.err;
        (err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
            .then(|| KafkaError::MessageConsumption(RDKafkaErrorCode::from(err)))
    }

    fn fetched(&self) -> Fetched<'_> {
        // SAFETY: the message is live while borrowed; its key and payload
        // span the lengths it gives.
        let raw = unsafe { self.0.as_ref() };
        let bytes = |data: *mut c_void, len: usize| {
            (!data.is_null()).then(|| unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) })
        };
        let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
        // SAFETY: the message is live.
        let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(self.0.as_ptr(), &mut kind) };
        Fetched {
            key: bytes(raw.key, raw.key_len),
            value: bytes(raw.payload, raw.len),
            timestamp,
            offset: raw.offset,
            message: self,
        }
    }
}

impl Drop for Message {
    fn drop(&mut self) {
        // SAFETY: librdkafka handed the message out once; it is destroyed
        // once, here.
        unsafe { rdsys::rd_kafka_message_destroy(self.0.as_ptr()) }
    }
}

/// One partition's queue of fetched records, split off its consumer.
pub struct FetchQueue<C: ConsumerContext + 'static> {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    consumer: Arc<BaseConsumer<C>>,
    topic: String,
    partition: i32,
    /// Messages popped but not yet handed out: those after an error in one
    /// pop, handed out by the next [`take`](Self::take).
    held: VecDeque<Message>,
    /// The array librdkafka fills, reused from call to call.
    popped: Vec<*mut rdsys::rd_kafka_message_t>,
}

// SAFETY: a librdkafka queue handle may be used from any thread; the queue
// is only ever used by its one owner at a time (`&mut self`).
unsafe impl<C: ConsumerContext + 'static> Send for FetchQueue<C> {}

impl<C: ConsumerContext + 'static> FetchQueue<C> {
    /// Splits `topic`/`partition`'s messages off `consumer`'s queue: from now
    /// on only this queue hands them out. `None` when librdkafka refuses
    /// (a topic name with a NUL in it).
    pub fn split(consumer: &Arc<BaseConsumer<C>>, topic: &str, partition: i32) -> Option<Self> {
        let name = CString::new(topic).ok()?;
        // SAFETY: the client is live; the queue handle it returns is ours to
        // destroy, which Drop does.
        let queue = unsafe {
            rdsys::rd_kafka_queue_get_partition(
                consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            )
        };
        let queue = NonNull::new(queue)?;
        // SAFETY: `queue` is live; forwarding to nothing keeps its messages
        // here instead of on the consumer's queue.
        unsafe { rdsys::rd_kafka_queue_forward(queue.as_ptr(), ptr::null_mut()) };
        Some(Self {
            queue,
            consumer: consumer.clone(),
            topic: topic.to_owned(),
            partition,
            held: VecDeque::new(),
            popped: Vec::new(),
        })
    }

    /// Hands up to `max` records to `each`, in offset order, waiting up to
    /// `wait` until `max` arrived (`Duration::ZERO`: only what is here
    /// already); how many it handed. It stops at a consume error, which
    /// [`next_error`](Self::next_error) then returns.
    pub fn take(&mut self, max: usize, wait: Duration, mut each: impl FnMut(Fetched<'_>)) -> usize {
        if self.held.is_empty() && max > 0 {
            self.pop(max, wait);
        }
        let mut handed = 0;
        while handed < max {
            match self.held.front() {
                Some(message) if message.error().is_none() => each(message.fetched()),
                _ => break,
            }
            self.held.pop_front();
            handed += 1;
        }
        handed
    }

    /// The consume error the next record would be, taking it off the queue.
    pub fn next_error(&mut self) -> Option<KafkaError> {
        let error = self.held.front()?.error()?;
        self.held.pop_front();
        Some(error)
    }

    /// Pops up to `max` messages from librdkafka into `held`.
    fn pop(&mut self, max: usize, wait: Duration) {
        // Whole milliseconds, rounded up: a wait of 0.4 ms still waits.
        let wait_ms = i32::try_from(wait.as_micros().div_ceil(1000)).unwrap_or(i32::MAX);
        self.popped.clear();
        self.popped.reserve(max);
        // SAFETY: the queue is live and the array has room for `max`
        // pointers; librdkafka writes at most that many and says how many.
        let count = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.queue.as_ptr(),
                wait_ms,
                self.popped.as_mut_ptr(),
                max,
            )
        };
        let count = usize::try_from(count).unwrap_or(0).min(max);
        // SAFETY: librdkafka initialised the first `count` entries.
        unsafe { self.popped.set_len(count) };
        self.held
            .extend(self.popped.drain(..).filter_map(NonNull::new).map(Message));
    }

    /// Drops what was popped but not handed out, for a queue passed on to
    /// the partition's next task: that one starts from the committed
    /// position, and librdkafka drops what it fetched for an assignment
    /// that ended, which these would outlive.
    pub fn drop_popped(&mut self) {
        self.held.clear();
    }

    /// Moves the partition's next record to `offset`. Records popped before
    /// the seek are dropped: they belong to the old position.
    pub fn seek(&mut self, offset: Offset, timeout: Duration) -> KafkaResult<()> {
        self.held.clear();
        self.consumer
            .seek(&self.topic, self.partition, offset, timeout)
    }
}

impl<C: ConsumerContext + 'static> Drop for FetchQueue<C> {
    fn drop(&mut self) {
        // Held messages go before their queue and client.
        self.held.clear();
        // SAFETY: the handle was ours (see `split`) and is destroyed once;
        // the consumer it belongs to outlives this call (`self.consumer`).
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}
