//! Host bindings generated from `sdk/wit`, the one contract with guests.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "processor",
    // Timers are kept in ordered sets keyed by these types.
    additional_derives: [PartialEq, Eq, PartialOrd, Ord, Hash],
});

/// The `packed-processor` world: its imports are `processor`'s, so one host
/// implementation and one linker serve both; only the exports differ.
pub(super) mod packed {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "packed-processor",
        with: {
            "eddy:processor/types": super::eddy::processor::types,
            "eddy:processor/log": super::eddy::processor::log,
            "eddy:processor/config": super::eddy::processor::config,
            "eddy:processor/state": super::eddy::processor::state,
            "eddy:processor/timers": super::eddy::processor::timers,
            "eddy:processor/metrics": super::eddy::processor::metrics,
        },
    });
}
