//! The caller's `tracing` span, carried with work that crosses threads.
//!
//! Work handed to a pool thread (`defer_to_thread`, `defer_to_worker`,
//! `call_in_thread`) runs inside the span that was current where it was
//! submitted, and so do calls that arrive on the loop from other threads
//! (`Remote::call_from_thread`) and the `Deferred` callbacks a job's
//! completion runs: asyncio's `to_thread` carrying context variables.
//!
//! Cost: while no `tracing` dispatcher was ever set, [`current`] is one
//! atomic load. With a subscriber but no span entered, it asks
//! `tracing`'s dispatcher for the current span and returns `None`, so the
//! crossing stores nothing and enters nothing: about 70 instructions per
//! `defer_to_thread` job, 4% of the ~1,700 a job then cost in all threads
//! (callgrind, 1000 jobs in flight). With a span recorded by
//! `tracing_subscriber::registry()` it costs one span clone (a
//! reference-count increment in the subscriber),
//! one enter and exit on the worker (and one on the loop around a
//! callback), and one drop: about 660 more instructions per awaited job
//! (+39%). `benches/bridge.rs` measures
//! both (`bridge_span` in criterion; `BRIDGE_PROFILE=in_flight:N` against
//! `span_in_flight:N` for instruction counts).

use tracing::Span;

/// The calling thread's current span, if a subscriber takes an interest in
/// it; `None` (nothing to carry) otherwise.
#[inline]
pub(crate) fn current() -> Option<Span> {
    // One atomic load while no subscriber was ever installed (no scoped or
    // global default): nothing to carry, and `Span::current` would still
    // visit the thread-local dispatcher state on every call. Inlined, so
    // that load is all a job pays (no call).
    if !tracing::dispatcher::has_been_set() {
        return None;
    }
    current_slow()
}

#[inline(never)]
fn current_slow() -> Option<Span> {
    let span = Span::current();
    (!span.is_disabled()).then_some(span)
}

/// Runs `f` inside `span` when there is one. Inlined: on a worker it wraps
/// every job, and without a span it is just the call.
#[inline]
pub(crate) fn in_span<R>(span: Option<&Span>, f: impl FnOnce() -> R) -> R {
    match span {
        Some(span) => span.in_scope(f),
        None => f(),
    }
}
