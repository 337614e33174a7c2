//! Host bindings generated from `sdk/wit`, the one contract with guests:
//! the `imports` world the host implements (see `host_api`), and the
//! exports of each processor world it runs. The worlds share the imports'
//! types and host traits (`with`), so one implementation and one linker
//! serve them all. Nothing generated leaves the runtime: the rest of the
//! host sees its own types.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "imports",
    // Every import may trap: a failing state store or a guest over a
    // host-side budget stops the call (`host_api::HostFault`).
    imports: { default: trappable },
});

/// Bindings of a processor world's exports, its imports being the ones above.
macro_rules! processor_world {
    ($world:tt) => {
        wasmtime::component::bindgen!({
            path: "../sdk/wit",
            world: $world,
            with: {
                "eddy:processor/types": super::eddy::processor::types,
                "eddy:processor/log": super::eddy::processor::log,
                "eddy:processor/config": super::eddy::processor::config,
                "eddy:processor/state": super::eddy::processor::state,
                "eddy:processor/timers": super::eddy::processor::timers,
                "eddy:processor/metrics": super::eddy::processor::metrics,
            },
        });
    };
}

/// The `processor` world: records cross as typed lists.
pub(super) mod typed {
    processor_world!("processor");
}

/// The `packed-processor` world: batches and outputs cross in columns.
pub(super) mod packed {
    processor_world!("packed-processor");
}

/// `packed-processor` as 0.1.1 shipped it (timers answered typed), which
/// plugins built with an earlier SDK implement.
pub(super) mod packed_0_1_1 {
    processor_world!("packed-processor-0-1-1");
}
