//! Name resolution: `getaddrinfo` on the reactor's thread pool, with a
//! timeout on the reactor's clock and real cancellation.
//!
//! # Design
//!
//! A literal address (`127.0.0.1`, `::1`, `[::1]`) is answered at once: the
//! returned `Deferred` is already resolved, no thread is involved. Anything
//! else goes to [`Handle::defer_to_thread`](crate::reactor::Handle) (the
//! reactor's pool). The result `Deferred` is resolved by whichever comes
//! first:
//!
//! - the lookup's answer;
//! - the timeout (a `call_later` on the reactor's clock, measured from the
//!   submission): [`ResolveError::TimedOut`];
//! - a cancel of the `Deferred`: [`ResolveError::Cancelled`].
//!
//! The timeout and cancel withdraw the pool job if it has not started; a
//! lookup already running cannot be interrupted (`getaddrinfo` has no
//! cancel), so it finishes detached and its answer is dropped. The pool
//! thread is not lost: it returns to the pool when the call returns.
//!
//! # Invariants
//!
//! - The result is resolved exactly once; the other two paths find it
//!   resolved and do nothing.
//! - The timer is cancelled when the answer or a cancel comes first, so a
//!   finished lookup leaves nothing scheduled.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use crate::deferred::Deferred;
use crate::error::{Cancelled, ThreadError};
use crate::reactor::{self, Handle};
use crate::time::DelayedCall;

/// The default lookup timeout.
pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a name was not resolved.
///
/// # Examples
///
/// ```
/// use weft::net::ResolveError;
/// let e = ResolveError::TimedOut;
/// assert_eq!(e.to_string(), "name resolution timed out");
/// ```
#[derive(Debug)]
#[non_exhaustive]
pub enum ResolveError {
    /// The lookup failed or found no address.
    NotFound(io::Error),
    /// The timeout passed first.
    TimedOut,
    /// The lookup was cancelled.
    Cancelled,
    /// The lookup could not run (the pool is stopped, the lookup panicked).
    Thread(ThreadError),
    /// Called off a reactor's loop thread.
    NoReactor,
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::NotFound(e) => write!(f, "name not resolved: {e}"),
            ResolveError::TimedOut => f.write_str("name resolution timed out"),
            ResolveError::Cancelled => f.write_str("name resolution cancelled"),
            ResolveError::Thread(e) => write!(f, "name resolution did not run: {e}"),
            ResolveError::NoReactor => f.write_str("name resolution needs a reactor's loop thread"),
        }
    }
}

impl std::error::Error for ResolveError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ResolveError::NotFound(e) => Some(e),
            ResolveError::Thread(e) => Some(e),
            _ => None,
        }
    }
}

impl From<Cancelled> for ResolveError {
    fn from(_: Cancelled) -> Self {
        ResolveError::Cancelled
    }
}

impl From<ResolveError> for io::Error {
    fn from(e: ResolveError) -> io::Error {
        let kind = match &e {
            ResolveError::NotFound(inner) => return io::Error::new(inner.kind(), e),
            ResolveError::TimedOut => io::ErrorKind::TimedOut,
            ResolveError::Cancelled => io::ErrorKind::Interrupted,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, e)
    }
}

type LookupFn = dyn Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync;

/// A configured resolver: the lookup function (the system's `getaddrinfo`
/// by default, or a stub for tests) and the timeout.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use weft::net::DnsResolver;
///
/// let reactor = weft::Reactor::new().unwrap();
/// let resolver = DnsResolver::new()
///     .timeout(Duration::from_secs(2))
///     .with_lookup(|host, port| {
///         assert_eq!(host, "example.test");
///         Ok(vec![std::net::SocketAddr::from(([192, 0, 2, 1], port))])
///     });
/// let addrs = reactor.run_until_complete(resolver.resolve("example.test", 80)).unwrap().unwrap();
/// assert_eq!(addrs[0].to_string(), "192.0.2.1:80");
/// ```
#[derive(Clone)]
pub struct DnsResolver {
    timeout: Duration,
    lookup: Arc<LookupFn>,
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsResolver")
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Default for DnsResolver {
    fn default() -> Self {
        DnsResolver::new()
    }
}

fn system_lookup(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// `host` as a literal IP address, if it is one (`[..]` brackets allowed).
fn literal(host: &str) -> Option<IpAddr> {
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    bare.parse().ok()
}

impl DnsResolver {
    /// The system resolver with the default timeout (10 s).
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = weft::net::DnsResolver::new().resolve("127.0.0.1", 7);
    /// assert!(d.is_resolved()); // literal: answered at once
    /// ```
    pub fn new() -> DnsResolver {
        DnsResolver {
            timeout: DEFAULT_RESOLVE_TIMEOUT,
            lookup: Arc::new(system_lookup),
        }
    }

    /// Replaces the lookup function (for tests, or another resolver
    /// library). It runs on a pool thread and may block.
    ///
    /// # Examples
    ///
    /// See [`DnsResolver`].
    ///
    /// ```
    /// let r = weft::net::DnsResolver::new()
    ///     .with_lookup(|_, _| Err(std::io::ErrorKind::NotFound.into()));
    /// # drop(r);
    /// ```
    pub fn with_lookup(
        mut self,
        lookup: impl Fn(&str, u16) -> io::Result<Vec<SocketAddr>> + Send + Sync + 'static,
    ) -> DnsResolver {
        self.lookup = Arc::new(lookup);
        self
    }

    /// Sets the timeout, measured from submission.
    ///
    /// # Examples
    ///
    /// ```
    /// let r = weft::net::DnsResolver::new().timeout(std::time::Duration::from_secs(1));
    /// # drop(r);
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> DnsResolver {
        self.timeout = timeout;
        self
    }

    /// Resolves `host` to socket addresses with `port`, on the current
    /// reactor.
    ///
    /// # Errors
    ///
    /// The `Deferred` holds a [`ResolveError`]: the lookup's failure (or no
    /// address), the timeout, a cancel, a pool that cannot run it, or no
    /// reactor on this thread.
    ///
    /// # Examples
    ///
    /// ```
    /// let reactor = weft::Reactor::new().unwrap();
    /// let d = weft::net::DnsResolver::new().resolve("localhost", 80);
    /// let addrs = reactor.run_until_complete(d).unwrap().unwrap();
    /// assert!(addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 80));
    /// ```
    pub fn resolve(&self, host: &str, port: u16) -> Deferred<Vec<SocketAddr>, ResolveError> {
        if let Some(ip) = literal(host) {
            return Deferred::succeed(vec![SocketAddr::new(ip, port)]);
        }
        match reactor::current() {
            Some(handle) => self.resolve_on(&handle, host, port),
            None => Deferred::fail(ResolveError::NoReactor),
        }
    }

    fn resolve_on(
        &self,
        handle: &Handle,
        host: &str,
        port: u16,
    ) -> Deferred<Vec<SocketAddr>, ResolveError> {
        let lookup = self.lookup.clone();
        let owned = host.to_owned();
        let work = handle.defer_to_thread(move || lookup(&owned, port));
        let work_ctl = work.resolver();
        let timer: Rc<RefCell<Option<DelayedCall>>> = Rc::default();

        let out = {
            let (work_ctl, timer) = (work_ctl.clone(), timer.clone());
            Deferred::with_canceller(move || {
                if let Some(t) = timer.borrow_mut().take() {
                    let _ = t.cancel();
                }
                // Withdraws the job if not started; else it runs detached.
                work_ctl.cancel();
            })
        };
        let result = out.resolver();

        {
            let (result, timer) = (result.clone(), timer.clone());
            let host = host.to_owned();
            work.add_both(move |outcome| {
                if let Some(t) = timer.borrow_mut().take() {
                    let _ = t.cancel();
                }
                let answer = match outcome {
                    Ok(Ok(addrs)) if addrs.is_empty() => Err(ResolveError::NotFound(
                        io::Error::new(io::ErrorKind::NotFound, format!("no address for {host}")),
                    )),
                    Ok(Ok(addrs)) => Ok(addrs),
                    Ok(Err(e)) => Err(ResolveError::NotFound(e)),
                    // We cancelled it: the result already holds why.
                    Err(ThreadError::Cancelled) => return,
                    Err(e) => Err(ResolveError::Thread(e)),
                };
                let _ = result.resolve(answer);
            });
        }

        if !result.is_resolved() {
            let timeout = self.timeout;
            let call = handle.call_later(timeout, move || {
                // Resolve first: the cancelled job's outcome is then ignored.
                let _ = result.errback(ResolveError::TimedOut);
                work_ctl.cancel();
            });
            *timer.borrow_mut() = Some(call);
        }
        out
    }
}

/// Resolves `host` with the system resolver and the default timeout; see
/// [`DnsResolver::resolve`]. Literal addresses are answered at once, with
/// no thread involved.
///
/// # Examples
///
/// ```
/// let reactor = weft::Reactor::new().unwrap();
/// let d = weft::net::resolve("::1", 443);
/// assert!(d.is_resolved());
/// let addrs = reactor.run_until_complete(d).unwrap().unwrap();
/// assert_eq!(addrs, vec!["[::1]:443".parse().unwrap()]);
/// ```
pub fn resolve(host: &str, port: u16) -> Deferred<Vec<SocketAddr>, ResolveError> {
    DnsResolver::new().resolve(host, port)
}
