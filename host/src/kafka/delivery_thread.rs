//! A thread that serves a producer's delivery reports as they arrive and
//! sleeps in between.
//!
//! rdkafka's `ThreadedProducer` (and the `FutureProducer` built on it) calls
//! `poll` in 100 ms windows; within a window it polls again with the time
//! left, truncated to whole milliseconds, so for the last millisecond of
//! every window it polls without waiting, in a loop. That is about 0.8 % of
//! a core per producer, all the time: an idle daemon with three pipelines
//! used 9 % of a core, nearly all of it there. Here librdkafka wakes the
//! thread through an eventfd when a report lands in an empty queue
//! (`rd_kafka_queue_io_event_enable`), and the thread takes what is queued
//! without waiting.

use rdkafka::bindings as rdsys;
use rdkafka::client::Client;
use rdkafka::producer::{BaseProducer, Producer as _, ProducerContext};
use std::fs::File;
use std::io::{self, Read as _, Write as _};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// What an eventfd is written: a count to add.
const WAKE: u64 = 1;

/// The thread serving one producer's delivery reports. Dropping it stops the
/// thread and waits for it; drop it before the producer (a report served
/// after would find nothing to serve it).
pub(super) struct DeliveryThread {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the thread and its owner share.
struct Shared {
    /// The producer's main queue, where its delivery reports are queued.
    queue: MainQueue,
    /// Written by librdkafka when the queue gets a report while empty, and
    /// by the owner to stop the thread.
    wake: File,
    stop: AtomicBool,
}

impl DeliveryThread {
    /// Starts serving `producer`'s delivery reports.
    pub(super) fn start<C>(producer: &Arc<BaseProducer<C>>) -> io::Result<Self>
    where
        C: ProducerContext + 'static,
    {
        // SAFETY: eventfd takes no pointers; its result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a new descriptor that nothing else owns.
        let wake = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let queue = MainQueue::of(producer.client())?;
        queue.wake_through(&wake);
        let shared = Arc::new(Shared {
            queue,
            wake,
            stop: AtomicBool::new(false),
        });
        let thread = {
            let shared = Arc::clone(&shared);
            let producer = Arc::clone(producer);
            std::thread::Builder::new()
                .name("eddy-deliveries".into())
                .spawn(move || serve(&producer, &shared))?
        };
        Ok(Self {
            shared,
            thread: Some(thread),
        })
    }
}

/// Takes every report queued, then sleeps until librdkafka queues another.
fn serve<C: ProducerContext>(producer: &BaseProducer<C>, shared: &Shared) {
    let mut count = [0; 8];
    loop {
        // A poll without waiting takes one event; a report lands while the
        // queue is empty only after the last poll here, so the wake-up it
        // writes is not lost.
        while shared.queue.len() > 0 {
            producer.poll(Duration::ZERO);
        }
        if shared.stop.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = (&shared.wake).read_exact(&mut count) {
            // An eventfd read fails only if the descriptor is broken; poll
            // in windows rather than leave reports unserved.
            tracing::warn!(error = %e, "delivery thread cannot sleep on its eventfd; polling instead");
            producer.poll(Duration::from_millis(100));
        }
    }
}

impl Drop for DeliveryThread {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Err(e) = (&self.shared.wake).write_all(&WAKE.to_ne_bytes()) {
            tracing::warn!(error = %e, "could not wake the delivery thread to stop it");
        }
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the delivery thread panicked");
        }
        // librdkafka writes to the eventfd no more once this returns; the
        // descriptor is closed when `shared` goes.
        self.shared.queue.stop_waking();
    }
}

/// A reference to a client's main queue, given back when dropped.
struct MainQueue(NonNull<rdsys::rd_kafka_queue_t>);

// SAFETY: librdkafka's queue handles are reference counted and locked
// internally; length and io-event calls may come from any thread.
unsafe impl Send for MainQueue {}
// SAFETY: as above.
unsafe impl Sync for MainQueue {}

impl MainQueue {
    fn of<C: rdkafka::ClientContext>(client: &Client<C>) -> io::Result<Self> {
        // SAFETY: the client is live; the new reference is given back in Drop.
        let raw = unsafe { rdsys::rd_kafka_queue_get_main(client.native_ptr()) };
        NonNull::new(raw)
            .map(Self)
            .ok_or_else(|| io::Error::other("librdkafka returned no main queue"))
    }

    /// How many events are queued.
    fn len(&self) -> usize {
        // SAFETY: the handle is live.
        unsafe { rdsys::rd_kafka_queue_length(self.0.as_ptr()) }
    }

    /// Has librdkafka write [`WAKE`] to `wake` when an event lands in the
    /// empty queue (once until the queue is next read).
    fn wake_through(&self, wake: &File) {
        let payload = WAKE.to_ne_bytes();
        // SAFETY: the handle is live; librdkafka copies the payload; the
        // descriptor stays open until `stop_waking` has returned.
        unsafe {
            rdsys::rd_kafka_queue_io_event_enable(
                self.0.as_ptr(),
                wake.as_raw_fd(),
                payload.as_ptr().cast(),
                payload.len(),
            );
        }
    }

    fn stop_waking(&self) {
        // SAFETY: the handle is live; -1 turns the io event off.
        unsafe { rdsys::rd_kafka_queue_io_event_enable(self.0.as_ptr(), -1, std::ptr::null(), 0) }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: the reference taken in `of`, given back once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}
