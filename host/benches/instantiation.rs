//! Where a task's instantiation time goes. The `instantiate` microbenchmark
//! reinstantiates into one warm memory slot on one hot thread; a task in
//! the daemon starts on a new thread, usually in a slot the pool has not
//! used for its module, after its restore has filled the caches with other
//! work. This instantiates the same compiled module under each of those
//! conditions and prints, per condition, the instantiating thread's CPU
//! time, the page faults it took and the CPU time of `init`.
//!
//! Run: `just bench-instantiation` (builds the plugins first).

mod fixture;

use eddy::runtime::{Tier, thread_cpu_time};
use eddy::task::{TaskGuest, TaskModule, TaskRuntime};
use fixture::{LIMITS, WASM, services, task};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

// The daemon's allocator: most of a new thread's page faults are its heap.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Instantiations per condition.
const SAMPLES: usize = 40;

/// What a task's restore leaves in the caches, roughly: this much memory
/// read just before instantiating (more than this machine's caches).
const CACHE_SWEEP_BYTES: usize = 16 << 20;

/// Read to evict the caches; allocated once, so sweeping it leaves the
/// sweeping thread's heap as it was.
static SWEPT: std::sync::LazyLock<Vec<u8>> =
    std::sync::LazyLock::new(|| vec![1u8; CACHE_SWEEP_BYTES]);

/// One instantiation, as the thread that made it saw it.
#[derive(Clone, Copy)]
struct Sample {
    instantiate: Duration,
    faults: u64,
    init: Duration,
}

/// The minor page faults the calling thread has taken.
fn thread_faults() -> u64 {
    // SAFETY: rusage is plain data; getrusage fills the one it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_THREAD asks about the calling thread only.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut usage) };
    assert_eq!(rc, 0, "getrusage(RUSAGE_THREAD) failed");
    usage.ru_minflt.unsigned_abs()
}

/// The calling thread's CPU time (user + system).
fn thread_cpu() -> Duration {
    thread_cpu_time().expect("this platform reports a thread's CPU time")
}

/// Instantiates `module` and runs `init` on the calling thread.
fn instantiate(runtime: &TaskRuntime, module: &TaskModule) -> (Sample, TaskGuest) {
    let services = services();
    let faults_before = thread_faults();
    let started = thread_cpu();
    let mut guest = runtime
        .instantiate(module, services, LIMITS, Tier::Fast)
        .expect("uppercase instantiates");
    let instantiated = thread_cpu();
    let faults_after = thread_faults();
    guest.init(&task()).expect("uppercase initializes");
    let sample = Sample {
        instantiate: instantiated - started,
        faults: faults_after - faults_before,
        init: thread_cpu() - instantiated,
    };
    (sample, guest)
}

/// Reads a cache line of every 64 bytes of [`SWEPT`].
fn sweep_caches() {
    let sum = SWEPT
        .iter()
        .step_by(64)
        .fold(0u8, |sum, byte| sum.wrapping_add(*byte));
    std::hint::black_box(sum);
}

/// How a sample's thread and slot are chosen.
#[derive(Clone, Copy)]
enum Thread {
    /// The benchmark's main thread, which has instantiated before.
    Warm,
    /// A thread of its own, started for this one instantiation.
    New,
    /// A new thread that first reads 16 MiB, as a task's restore would.
    NewAfterOtherWork,
}

/// The threads the benchmark started, alive until [`Self::end`], as task
/// threads are until their task ends: a thread that exits leaves its
/// heap's pages (touched, so no longer faulting) to the next one.
struct TaskThreads {
    end: mpsc::Sender<()>,
    ended: Arc<Mutex<mpsc::Receiver<()>>>,
    threads: Vec<JoinHandle<()>>,
}

impl TaskThreads {
    fn new() -> Self {
        let (end, ended) = mpsc::channel();
        Self {
            end,
            ended: Arc::new(Mutex::new(ended)),
            threads: Vec::new(),
        }
    }

    /// Runs `work` on a new thread, which then waits for [`Self::end`].
    fn run<T: Send + 'static>(&mut self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (send, receive) = mpsc::channel();
        let ended = self.ended.clone();
        self.threads.push(std::thread::spawn(move || {
            let _ = send.send(work());
            // Returns when the sender is dropped.
            let _ = ended.lock().map(|ended| ended.recv());
        }));
        receive.recv().expect("the thread does not panic")
    }

    /// Lets every thread started so far exit, and joins them.
    fn end(&mut self) {
        let ending = std::mem::replace(self, Self::new());
        drop(ending.end);
        for thread in ending.threads {
            thread.join().expect("the thread does not panic");
        }
    }
}

/// The module, the guests kept alive (holding their slots) and the
/// threads still running.
struct Bench {
    runtime: Arc<TaskRuntime>,
    module: TaskModule,
    kept: Vec<TaskGuest>,
    threads: TaskThreads,
}

impl Bench {
    /// Prints the medians of `SAMPLES` instantiations on `thread`; with
    /// `keep`, each guest is kept, so the next takes a slot the pool has
    /// not used yet.
    fn row(&mut self, what: &str, thread: Thread, keep: bool) {
        let samples: Vec<Sample> = (0..SAMPLES)
            .map(|_| {
                let (sample, guest) = match thread {
                    Thread::Warm => instantiate(&self.runtime, &self.module),
                    Thread::New | Thread::NewAfterOtherWork => {
                        let (runtime, module) = (self.runtime.clone(), self.module.clone());
                        self.threads.run(move || {
                            if matches!(thread, Thread::NewAfterOtherWork) {
                                sweep_caches();
                            }
                            instantiate(&runtime, &module)
                        })
                    }
                };
                if keep {
                    self.kept.push(guest);
                }
                sample
            })
            .collect();
        print_row(what, &samples);
    }
}

fn median<T: Copy + Ord>(values: impl Iterator<Item = T>) -> T {
    let mut values: Vec<T> = values.collect();
    values.sort_unstable();
    values[values.len() / 2]
}

fn print_row(what: &str, samples: &[Sample]) {
    let micros = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{what:<48} {:>9.1} {:>7} {:>9.1}",
        micros(median(samples.iter().map(|s| s.instantiate))),
        median(samples.iter().map(|s| s.faults)),
        micros(median(samples.iter().map(|s| s.init))),
    );
}

fn main() {
    let runtime = fixture::runtime();
    let module = fixture::module(&runtime, WASM);
    println!(
        "{:<48} {:>9} {:>7} {:>9}",
        "condition (median of 40; µs of the thread's CPU)", "instance", "faults", "init"
    );
    std::sync::LazyLock::force(&SWEPT);
    // The module's first instance makes its memory image, once per process.
    let (first, guest) = instantiate(&runtime, &module);
    print_row("first instance of the module in the process", &[first]);
    let mut bench = Bench {
        runtime,
        module,
        kept: vec![guest],
        threads: TaskThreads::new(),
    };
    bench.row("warm thread, slot not used before", Thread::Warm, true);
    bench.row(
        "new thread, slot not used before (a task start)",
        Thread::New,
        true,
    );
    bench.row(
        "new thread after reading 16 MiB, new slot",
        Thread::NewAfterOtherWork,
        true,
    );
    // The task threads end, as when a pipeline is deleted or paused.
    bench.threads.end();
    bench.row(
        "new thread after 80 others exited, new slot",
        Thread::New,
        true,
    );
    bench.threads.end();
    // Freed, the slots keep this module's image: the next take one warm.
    bench.kept.clear();
    bench.row("new thread, slot this module used", Thread::New, false);
    bench.row(
        "warm thread, slot this module used (microbench)",
        Thread::Warm,
        false,
    );
    bench.threads.end();
}
