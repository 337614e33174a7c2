//! Host bindings generated from `sdk/wit`, the one contract with guests.

wasmtime::component::bindgen!({
    path: "../sdk/wit",
    world: "processor",
    // Timers are kept in ordered sets keyed by these types.
    additional_derives: [PartialEq, Eq, PartialOrd, Ord, Hash],
});
