//! WASI calls that block, under the call's deadline.
//!
//! Epoch interruption stops a guest only while it runs WebAssembly; a
//! guest blocked inside a host call (`std::thread::sleep`, which is
//! `wasi:io/poll` on a monotonic-clock pollable) would hold its task, its
//! batch and whoever waits to pause it for as long as it asked. Every
//! blocking WASI entry point eddy links (`poll` and `pollable.block`; the
//! streams a guest has never block: stdin is empty, stdout and stderr are
//! buffers) is replaced here by one that waits at most until the call's
//! wall-clock limit and then interrupts the call as the epoch would.
//! WASI stays linked whole, so components made by componentize-py or
//! componentize-js, which import it all, still link.

use super::host_api::GuestCtx;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime::{Result, Trap};
use wasmtime_wasi::p2::DynPollable;
use wasmtime_wasi::p2::bindings::sync::io::poll as sync_poll;
use wasmtime_wasi::runtime::in_tokio;
use wasmtime_wasi_io::bindings::wasi::io::poll as async_poll;

/// The resource table of a guest, and when its current call must stop.
struct DeadlinedIo<'a> {
    table: &'a mut ResourceTable,
    until: std::time::Instant,
}

struct HasDeadlinedIo;

impl HasData for HasDeadlinedIo {
    type Data<'a> = DeadlinedIo<'a>;
}

/// Links `wasi:io/poll` over the one `wasmtime_wasi` linked, so that no
/// wait outlasts the call.
pub(super) fn shadow_blocking_calls<S: Send + 'static>(
    linker: &mut Linker<GuestCtx<S>>,
) -> Result<()> {
    linker.allow_shadowing(true);
    let linked = sync_poll::add_to_linker::<GuestCtx<S>, HasDeadlinedIo>(linker, |ctx| {
        let until = ctx.blocking_until();
        DeadlinedIo {
            table: ctx.table_mut(),
            until,
        }
    });
    linker.allow_shadowing(false);
    linked
}

impl DeadlinedIo<'_> {
    /// Runs `wait` until it finishes or the call's time is up; then the
    /// call ends as an interrupted one (a timeout under the pipeline's
    /// error policy).
    fn within<T>(&mut self, wait: impl AsyncFnOnce(&mut ResourceTable) -> Result<T>) -> Result<T> {
        let until = tokio::time::Instant::from_std(self.until);
        let table = &mut *self.table;
        in_tokio(async move {
            match tokio::time::timeout_at(until, wait(table)).await {
                Ok(result) => result,
                Err(_) => Err(Trap::Interrupt.into()),
            }
        })
    }
}

impl sync_poll::Host for DeadlinedIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> Result<Vec<u32>> {
        self.within(async move |table| async_poll::Host::poll(table, pollables).await)
    }
}

impl sync_poll::HostPollable for DeadlinedIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> Result<bool> {
        // Ready never waits: it polls the pollable once.
        in_tokio(async_poll::HostPollable::ready(&mut *self.table, pollable))
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        self.within(async move |table| async_poll::HostPollable::block(table, pollable).await)
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> Result<()> {
        async_poll::HostPollable::drop(&mut *self.table, pollable)
    }
}
