//! glibc's heap: where the C and C++ libraries linked into eddy allocate
//! (RocksDB, librdkafka), since Rust code allocates with mimalloc.
//!
//! glibc keeps memory those libraries free for reuse instead of returning
//! it to the kernel: a freed chunk in the middle of a heap stays resident
//! until something asks for its pages back. Under a growing state store
//! (write buffers filled and flushed, compaction's buffers) that kept memory
//! grew the daemon by 10-20 MiB over half an hour of `just soak`, none of it
//! in use. A [`Trimmer`] asks for it back every few seconds with
//! `malloc_trim`, which releases the pages of free chunks in every arena.

use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

/// glibc's heap at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NativeHeapUsage {
    /// Bytes allocated and not yet freed, in every arena and in chunks
    /// mapped on their own.
    pub used: u64,
    /// Bytes freed and kept for reuse. Pages a trim returned to the kernel
    /// are still counted here (they stay free chunks), so this is an upper
    /// bound on what the heap holds resident beyond `used`.
    pub free: u64,
}

/// The heap's figures from `mallinfo2`; zeros where the C library is not
/// glibc.
pub fn usage() -> NativeHeapUsage {
    imp::usage()
}

/// Returns the pages of free chunks to the kernel now. Takes each arena's
/// lock in turn, so a thread allocating meanwhile waits for at most one
/// arena's walk.
fn trim() {
    imp::trim();
}

/// Whether this build can trim (glibc only).
const CAN_TRIM: bool = imp::CAN_TRIM;

/// A thread that trims the heap at an interval, until dropped.
pub struct Trimmer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Trimmer {
    /// Starts trimming every `interval`; `None` when the interval is zero
    /// or the C library cannot trim.
    pub fn start(interval: Duration) -> std::io::Result<Option<Self>> {
        if interval.is_zero() || !CAN_TRIM {
            return Ok(None);
        }
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("eddy-heap-trim".into())
            .spawn(move || {
                while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(interval) {
                    trim();
                }
            })?;
        Ok(Some(Self {
            stop: Some(stop),
            thread: Some(thread),
        }))
    }
}

impl Drop for Trimmer {
    fn drop(&mut self) {
        // Dropping the sender wakes the thread at once.
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    use super::NativeHeapUsage;

    pub(super) const CAN_TRIM: bool = true;

    pub(super) fn usage() -> NativeHeapUsage {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let info = unsafe { libc::mallinfo2() };
        NativeHeapUsage {
            used: info.uordblks as u64 + info.hblkhd as u64,
            free: info.fordblks as u64,
        }
    }

    pub(super) fn trim() {
        // SAFETY: malloc_trim takes the allocator's own locks and only
        // releases pages of chunks that are free.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    use super::NativeHeapUsage;

    pub(super) const CAN_TRIM: bool = false;

    pub(super) fn usage() -> NativeHeapUsage {
        NativeHeapUsage::default()
    }

    pub(super) fn trim() {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trimmer_stops_when_dropped_and_zero_means_off() {
        assert!(Trimmer::start(Duration::ZERO).expect("start").is_none());
        let trimmer = Trimmer::start(Duration::from_millis(1)).expect("start");
        assert_eq!(trimmer.is_some(), CAN_TRIM);
        // Joins the thread: a trimmer that did not stop would hang here.
        drop(trimmer);
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_counts_what_c_code_allocates_and_frees() {
        // Large enough that other tests' C allocations meanwhile (RocksDB's)
        // cannot hide it.
        const SIZE: u64 = 64 << 20;
        let before = usage();
        // SAFETY: a plain malloc/free pair through the C allocator.
        let block = unsafe { libc::malloc(SIZE as usize) };
        assert!(!block.is_null());
        let during = usage();
        assert!(
            during.used >= before.used + SIZE / 2,
            "{before:?} -> {during:?}"
        );
        // SAFETY: `block` came from malloc above and is freed once.
        unsafe { libc::free(block) };
        trim();
        let after = usage();
        assert!(
            after.used + SIZE / 2 <= during.used,
            "{during:?} -> {after:?}"
        );
    }
}
