//! The caller's `tracing` span, carried with work that crosses threads.
//!
//! Work handed to a pool thread (`defer_to_thread`, `defer_to_worker`,
//! `call_in_thread`) runs inside the span that was current where it was
//! submitted, and so do calls that arrive on the loop from other threads
//! (`Remote::call_from_thread`) and the `Deferred` callbacks a job's
//! completion runs: asyncio's `to_thread` carrying context variables.
//!
//! Cost: with no subscriber, or no span entered, [`current`] is one load of
//! `tracing`'s dispatcher state and returns `None`, so the crossing stores
//! nothing and enters nothing. With a span it costs one span clone (a
//! reference-count increment in the subscriber), one enter and exit where
//! the work runs, and one drop; `benches/bridge.rs` measures both cases
//! (`bridge_span`).

use tracing::Span;

/// The calling thread's current span, if a subscriber takes an interest in
/// it; `None` (nothing to carry) otherwise.
pub(crate) fn current() -> Option<Span> {
    let span = Span::current();
    (!span.is_disabled()).then_some(span)
}

/// Runs `f` inside `span` when there is one.
pub(crate) fn in_span<R>(span: Option<&Span>, f: impl FnOnce() -> R) -> R {
    match span {
        Some(span) => span.in_scope(f),
        None => f(),
    }
}
