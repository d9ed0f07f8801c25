//! Threads → loop, blocking: [`Remote::blocking_call`] and friends
//! (Twisted's `blockingCallFromThread`).
//!
//! The call is queued with `call_from_thread`; its outcome comes back
//! through a one-shot cell (`oneshot.rs`) that reports `LoopStopped` if the
//! loop drops the call unrun, so a waiter never hangs. The `_timeout`
//! variants stop *waiting*; the call itself is not withdrawn and may still
//! run on the loop later, which their error, [`CallError::TimedOut`], says.
//!
//! Spin, then park: a loop that is awake (or spinning before it sleeps)
//! answers in a microsecond or two, far less than the futex wake of a
//! parked caller (and, on another core, the wake-up of its idle CPU, 30-45
//! µs on a VM). So the caller first spins on the reply for at most
//! [`REPLY_SPIN`], and parks only if it has not come. A caught reply lets
//! the caller queue its next call at once, while the loop still spins
//! before sleeping (`reactor/inbox/wake.rs`), so a sequence of blocking
//! calls pays no sleep on either side. The spin is gated per calling
//! thread (`crate::loom::SpinGate`): where replies do not come within the
//! bound (the loop shares the caller's only core and cannot run while it
//! spins, or the loop is busy), misses pause spinning for a doubling
//! number of calls, so such a thread spins about once per 1000 calls. The
//! spin reads one atomic (no lock, no `sched_yield`: crossbeam #821).
//! A caller on the CPU the loop last woke on does not spin at all (and
//! leaves its gate as it is): there the loop cannot answer until the
//! caller parks, so even the rare probing spins only burn the loop's time
//! slice (`Inbox::shares_loop_cpu`).

use std::future::Future;
use std::panic::{AssertUnwindSafe, Location, catch_unwind};
use std::time::{Duration, Instant};

use super::coroutine::spawn_from_thread;
use super::oneshot;
use crate::error::CallError;
use crate::reactor::Remote;

impl Remote {
    /// Runs `f` on the loop thread and blocks the calling thread until it
    /// returns; gives its value back (Twisted's `blockingCallFromThread`).
    ///
    /// Called before the loop runs, it waits for it. For a closure that returns
    /// a future or [`Deferred`](crate::Deferred) whose outcome you want, use
    /// [`blocking_await`](Remote::blocking_await).
    ///
    /// # Errors
    ///
    /// - [`CallError::OnLoopThread`] at once on the loop thread (Twisted deadlocks);
    /// - `CallError::Failed(ThreadError::Stopped)` at once if the loop has stopped or is
    ///   stopping, or if it shuts down before `f` ran;
    /// - `CallError::Failed(ThreadError::Panicked { .. })` if `f` panicked.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// let worker = std::thread::spawn(move || {
    ///     let v = remote.blocking_call(|| 40 + 2);
    ///     remote.stop();
    ///     v
    /// });
    /// reactor.run().unwrap();
    /// assert_eq!(worker.join().unwrap(), Ok(42));
    /// ```
    #[track_caller]
    pub fn blocking_call<T, F>(&self, f: F) -> Result<T, CallError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let rx = start_call(self, f)?;
        wait_watched(self, Location::caller(), "blocking_call", &rx)
    }

    /// [`blocking_call`](Remote::blocking_call) that gives up waiting after `timeout`. The
    /// call itself is not cancelled: it may still run on the loop later.
    ///
    /// # Errors
    ///
    /// As [`blocking_call`](Remote::blocking_call), plus [`CallError::TimedOut`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap(); // never run
    /// let remote = reactor.remote();
    /// let r = std::thread::spawn(move || {
    ///     remote.blocking_call_timeout(Duration::from_millis(10), || 1)
    /// })
    /// .join()
    /// .unwrap();
    /// assert_eq!(r, Err(weft::CallError::TimedOut));
    /// ```
    #[track_caller]
    pub fn blocking_call_timeout<T, F>(&self, timeout: Duration, f: F) -> Result<T, CallError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let rx = start_call(self, f)?;
        let began = Instant::now();
        spin_on_reply(self, &rx, timeout);
        rx.wait_timeout(timeout.saturating_sub(began.elapsed()))
    }

    /// Like [`blocking_call`](Remote::blocking_call), for a closure that returns a future (a
    /// [`Deferred`](crate::Deferred) is one): the future is built and driven on the loop, so it may
    /// be `!Send`, and the call blocks until it completes.
    ///
    /// # Errors
    ///
    /// As [`blocking_call`](Remote::blocking_call); a future dropped unfinished at shutdown
    /// gives `CallError::Failed(ThreadError::Stopped)`.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use weft::{Cancelled, Deferred};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// let worker = std::thread::spawn(move || {
    ///     let v = remote.blocking_await(|| {
    ///         let d: Deferred<&str, Cancelled> = Deferred::new();
    ///         let r = d.resolver();
    ///         weft::reactor::current()
    ///             .unwrap()
    ///             .call_later(Duration::from_millis(1), move || r.callback("egg").unwrap());
    ///         d
    ///     });
    ///     remote.stop();
    ///     v
    /// });
    /// reactor.run().unwrap();
    /// assert_eq!(worker.join().unwrap(), Ok(Ok("egg")));
    /// ```
    #[track_caller]
    pub fn blocking_await<Fut, F>(&self, f: F) -> Result<Fut::Output, CallError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        check_caller(self)?;
        let call = spawn_from_thread(self, f)?;
        wait_watched(self, Location::caller(), "blocking_await", call.receiver())
    }

    /// [`blocking_await`](Remote::blocking_await) that gives up waiting after `timeout`
    /// (the future keeps running on the loop).
    ///
    /// # Errors
    ///
    /// As [`blocking_await`](Remote::blocking_await), plus [`CallError::TimedOut`].
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let remote = reactor.remote();
    /// let worker = std::thread::spawn(move || {
    ///     let r = remote.blocking_await_timeout(Duration::from_millis(5), || {
    ///         std::future::pending::<()>()
    ///     });
    ///     remote.stop();
    ///     r
    /// });
    /// reactor.run().unwrap();
    /// assert_eq!(worker.join().unwrap(), Err(weft::CallError::TimedOut));
    /// ```
    #[track_caller]
    pub fn blocking_await_timeout<Fut, F>(
        &self,
        timeout: Duration,
        f: F,
    ) -> Result<Fut::Output, CallError>
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + 'static,
        Fut::Output: Send + 'static,
    {
        check_caller(self)?;
        let call = spawn_from_thread(self, f)?;
        let began = Instant::now();
        spin_on_reply(self, call.receiver(), timeout);
        call.receiver()
            .wait_timeout(timeout.saturating_sub(began.elapsed()))
    }
}

#[track_caller]
fn start_call<T, F>(remote: &Remote, f: F) -> Result<oneshot::Receiver<T>, CallError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    check_caller(remote)?;
    let (tx, rx) = oneshot::channel();
    remote
        .call_from_thread(move || {
            let result = catch_unwind(AssertUnwindSafe(f)).map_err(CallError::panicked);
            tx.send(result);
        })
        .map_err(|_| CallError::LOOP_STOPPED)?;
    Ok(rx)
}

/// The longest a blocking caller spins on its reply before it parks: long
/// enough to cover the loop's own wake-up from sleep on another core (an
/// idle vCPU, 30-45 µs), so that a sequence of calls into an idle loop gets
/// past its first sleep and on to the spinning steady state; a miss then
/// pauses the thread's spins (module notes).
pub(crate) const REPLY_SPIN: Duration = Duration::from_micros(50);

/// The most calls a run of missed reply spins pauses a thread's spins for:
/// where the loop shares the caller's core every spin misses, and a miss
/// costs the whole [`REPLY_SPIN`], so misses must stay well under 1% of
/// calls (about 1 in 1000 here).
const REPLY_MAX_PAUSE: u32 = 1024;

crate::loom::thread_local! {
    /// The calling thread's record of whether its reply spins pay off.
    // loom's `thread_local!` takes no `const { .. }` initialiser.
    #[allow(clippy::missing_const_for_thread_local)]
    static REPLY_GATE: crate::loom::SpinGate = crate::loom::SpinGate::new(REPLY_MAX_PAUSE);
}

/// Spins on `rx` for at most `limit` (capped by [`REPLY_SPIN`]) when this
/// thread's gate lets it and the loop did not last wake on this thread's
/// CPU; the wait that follows then finds the reply without blocking if it
/// came.
fn spin_on_reply<T>(remote: &Remote, rx: &oneshot::Receiver<T>, limit: Duration) {
    let limit = limit.min(REPLY_SPIN);
    if limit.is_zero() {
        return;
    }
    // A reply already there (the loop ran first, on this thread's core or
    // another) says nothing about whether spinning pays: no spin, and the
    // gate is left as it is. So where the loop shares this thread's core,
    // only the spins that miss count, and they soon pause.
    if rx.has_outcome() {
        return;
    }
    // `try_with`: a blocking call made while this thread's locals are torn
    // down (from another local's destructor) just parks.
    let _ = REPLY_GATE.try_with(|gate| {
        // Asked only when the gate would spin: a paused gate costs no CPU
        // lookup.
        if gate.try_spin() && !remote.shares_loop_cpu() {
            gate.spun(rx.spin_for(limit));
        }
    });
}

/// Waits for `rx`; past `Builder::blocking_call_threshold` the wait is
/// logged with its caller's location, and again with the total when it
/// ends (a thread waiting on a loop that waits on it never ends).
fn wait_watched<T>(
    remote: &Remote,
    location: &'static Location<'static>,
    what: &'static str,
    rx: &oneshot::Receiver<T>,
) -> Result<T, CallError> {
    let Some(threshold) = remote.blocking_call_threshold() else {
        spin_on_reply(remote, rx, REPLY_SPIN);
        return rx.wait();
    };
    let began = Instant::now();
    spin_on_reply(remote, rx, threshold);
    match rx.wait_timeout(threshold.saturating_sub(began.elapsed())) {
        Err(CallError::TimedOut) => {}
        done => return done,
    }
    let thread = std::thread::current();
    let thread = thread.name().unwrap_or("<unnamed>");
    tracing::warn!(
        target: "weft::diagnostics",
        what,
        %location,
        thread,
        "weft: {what} at {location} (thread {thread:?}) has waited {threshold:?} for the loop; \
         if the loop is waiting for this thread's pool, they wait for each other forever"
    );
    let outcome = rx.wait();
    let waited = began.elapsed();
    tracing::warn!(
        target: "weft::diagnostics",
        what,
        %location,
        waited_ms = waited.as_secs_f64() * 1e3,
        "weft: {what} at {location} returned after waiting {waited:?} for the loop"
    );
    outcome
}

fn check_caller(remote: &Remote) -> Result<(), CallError> {
    if remote.is_loop_thread() {
        return Err(CallError::OnLoopThread);
    }
    // A stopping loop still answers: calls queued before its inbox closes
    // run in the final drain (and the pool join at shutdown serves them), so
    // a pool job flushed by a `Before` trigger may still call back. Once the
    // inbox is closed, queuing fails with `LoopStopped`.
    Ok(())
}

/// [`Remote::blocking_call`] as a free function (Twisted's spelling,
/// `blockingCallFromThread(reactor, f)`); prefer the method.
///
/// # Errors
///
/// As [`Remote::blocking_call`].
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let err = weft::blocking_call_from_thread(&reactor.remote(), || 1).unwrap_err();
/// assert_eq!(err, weft::CallError::OnLoopThread);
/// ```
#[track_caller]
pub fn blocking_call_from_thread<T, F>(remote: &Remote, f: F) -> Result<T, CallError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    remote.blocking_call(f)
}

/// [`Remote::blocking_call_timeout`] as a free function; prefer the method.
/// A timed-out call may still run on the loop later.
///
/// # Errors
///
/// As [`Remote::blocking_call_timeout`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// let err = weft::blocking_call_from_thread_timeout(&remote, Duration::ZERO, || 1).unwrap_err();
/// assert_eq!(err, weft::CallError::OnLoopThread);
/// ```
#[track_caller]
pub fn blocking_call_from_thread_timeout<T, F>(
    remote: &Remote,
    timeout: Duration,
    f: F,
) -> Result<T, CallError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    remote.blocking_call_timeout(timeout, f)
}

/// [`Remote::blocking_await`] as a free function; prefer the method.
///
/// # Errors
///
/// As [`Remote::blocking_await`].
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let err = weft::blocking_call_from_thread_future(&reactor.remote(), || async { 1 }).unwrap_err();
/// assert_eq!(err, weft::CallError::OnLoopThread);
/// ```
#[track_caller]
pub fn blocking_call_from_thread_future<Fut, F>(
    remote: &Remote,
    f: F,
) -> Result<Fut::Output, CallError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    remote.blocking_await(f)
}

/// [`Remote::blocking_await_timeout`] as a free function; prefer the
/// method. A timed-out future keeps running on the loop.
///
/// # Errors
///
/// As [`Remote::blocking_await_timeout`].
///
/// # Examples
///
/// ```
/// use std::time::Duration;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let remote = reactor.remote();
/// let err = weft::blocking_call_from_thread_future_timeout(&remote, Duration::ZERO, || async { 1 })
///     .unwrap_err();
/// assert_eq!(err, weft::CallError::OnLoopThread);
/// ```
#[track_caller]
pub fn blocking_call_from_thread_future_timeout<Fut, F>(
    remote: &Remote,
    timeout: Duration,
    f: F,
) -> Result<Fut::Output, CallError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future + 'static,
    Fut::Output: Send + 'static,
{
    remote.blocking_await_timeout(timeout, f)
}
