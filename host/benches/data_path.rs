//! Microbenchmarks of the data path's pieces, so a regression shows before
//! it reaches `just bench`: the guest call per batch size (WebAssembly and
//! the builtin doing the same work: their difference is what crossing the
//! boundary costs, records lowered in and outputs lifted out), instantiating
//! a task's guest from a compiled module, and the state store.
//!
//! Run: `just microbench` (builds the plugins first; the guest benchmarks
//! load `target/plugins/wasm32-wasip2/release/uppercase.wasm`).

mod fixture;

use divan::Bencher;
use divan::counter::ItemsCount;
use eddy::runtime::{InputBatch, Tier};
use eddy::state::{PipelineDb, StateLimits, StateMemory, TaskState};
use eddy::task::{TaskModule, TaskRuntime};
use fixture::{LIMITS, WASM, services, task};
use std::sync::{Arc, LazyLock};

// The daemon's allocator, so the figures are the daemon's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    divan::main();
}

const BATCH_SIZES: [usize; 5] = [1, 16, 128, 1024, 4096];

/// How the benchmarks name the builtin `uppercase`.
const BUILTIN: &str = "builtin:uppercase";

static RUNTIME: LazyLock<Arc<TaskRuntime>> = LazyLock::new(fixture::runtime);

/// `uppercase` compiled, or the builtin.
fn module(reference: &str) -> TaskModule {
    fixture::module(&RUNTIME, reference)
}

/// A batch of `n` records shaped like `just bench`'s input: a key and a
/// 100-200 byte value; with `header`, one header too.
fn batch(n: usize, header: bool) -> InputBatch {
    let pad = "abcdefghijklmnopqrstuvwxyz0123456789 ".repeat(6);
    let trace = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut batch = InputBatch::new("in", 0);
    for i in 0..n {
        let key = format!("k{i}");
        let value = format!("record-{i:08} {}", &pad[..85 + (i * 37) % 100]);
        let headers = if header {
            vec![("traceparent", Some(&trace[..]))]
        } else {
            Vec::new()
        };
        batch.push(
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            headers.into_iter(),
            1_700_000_000_000 + i as i64,
            i as i64,
        );
    }
    batch
}

fn guest_call(bencher: Bencher<'_, '_>, reference: &str, batch: InputBatch) {
    let mut guest = RUNTIME
        .instantiate(&module(reference), services(), LIMITS, Tier::Fast)
        .expect("instantiates");
    guest.init(&task()).expect("init");
    bencher
        .counter(ItemsCount::new(batch.len()))
        .bench_local(|| guest.process(&batch).expect("uppercase never fails"));
}

/// One `process` call of the `uppercase` module with a batch of N records.
#[divan::bench(args = BATCH_SIZES)]
fn process_wasm(bencher: Bencher<'_, '_>, records: usize) {
    guest_call(bencher, WASM, batch(records, false));
}

/// The same batch through the builtin `uppercase`: the work without the
/// WebAssembly boundary.
#[divan::bench(args = BATCH_SIZES)]
fn process_builtin(bencher: Bencher<'_, '_>, records: usize) {
    guest_call(bencher, BUILTIN, batch(records, false));
}

/// 1,024 records with a header each (trace context, as many producers add
/// one), through the module and the builtin: what headers cost each way.
#[divan::bench(args = [WASM, BUILTIN])]
fn process_with_header(bencher: Bencher<'_, '_>, reference: &str) {
    guest_call(bencher, reference, batch(1024, true));
}

/// A task's guest from a compiled module: instance, then `init`.
#[divan::bench]
fn instantiate(bencher: Bencher<'_, '_>) {
    let module = module(WASM);
    bencher
        .with_inputs(services)
        .bench_local_values(|services| {
            let mut guest = RUNTIME
                .instantiate(&module, services, LIMITS, Tier::Fast)
                .expect("instantiates");
            guest.init(&task()).expect("init");
            guest
        });
}

/// A batch of N state writes (a count per key, as `count` makes them)
/// applied to RocksDB, as a commit does.
#[divan::bench(args = [16, 1024])]
fn state_commit(bencher: Bencher<'_, '_>, writes: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = PipelineDb::open(dir.path(), &StateMemory::default()).expect("opens");
    let mut state = TaskState::new(Box::new(db.task_store(0, 0)), StateLimits::default());
    let mut round = 0u64;
    bencher.counter(ItemsCount::new(writes)).bench_local(|| {
        round += 1;
        for i in 0..writes {
            state
                .put(
                    format!("word-{i}").into_bytes(),
                    round.to_string().into_bytes(),
                )
                .expect("put");
        }
        let pending = state.take_pending();
        state.apply(pending).expect("apply");
    });
}

/// One state read of a key that is in RocksDB (and its block cache).
#[divan::bench]
fn state_get(bencher: Bencher<'_, '_>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = PipelineDb::open(dir.path(), &StateMemory::default()).expect("opens");
    let mut state = TaskState::new(Box::new(db.task_store(0, 0)), StateLimits::default());
    for i in 0..10_000 {
        state
            .put(format!("word-{i}").into_bytes(), b"1".to_vec())
            .expect("put");
    }
    let pending = state.take_pending();
    state.apply(pending).expect("apply");
    let mut i = 0;
    bencher.bench_local(|| {
        i = (i + 7919) % 10_000;
        state.get(format!("word-{i}").as_bytes()).expect("get")
    });
}
