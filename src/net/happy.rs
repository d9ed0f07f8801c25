//! `connect_host`: resolve a name, then race connects as RFC 8305 ("Happy
//! Eyeballs v2") describes, with the fixes spec/net.md §6 asks for.
//!
//! # Algorithm
//!
//! 1. Resolve (literal addresses skip the pool).
//! 2. Order the addresses by interleaving the families, starting with the
//!    family of the first address returned.
//! 3. Start the first attempt. Start the next one when the stagger delay
//!    (250 ms) has passed since the last start **or as soon as an attempt
//!    fails**, whichever comes first (Twisted waits out the delay even after
//!    a fast failure, twisted#9345).
//! 4. Each attempt has its own timeout (10 s); a timed-out attempt counts as
//!    a failure.
//! 5. The first attempt to connect wins; the others are dropped, which
//!    closes their sockets, including any that connected in the same turn.
//! 6. When every attempt failed, the error lists each `(address, error)`
//!    ([`ConnectErrors`]).
//!
//! Dropping the future at any point (during the lookup or the connects)
//! cancels the lookup and every attempt and their timers.

use std::fmt;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::deferred::Deferred;
use crate::error::Cancelled;
use crate::reactor::{self, Handle};

use super::async_io::not_on_loop;
use super::resolve::DnsResolver;
use super::tcp::TcpStream;

/// The delay between starting two connection attempts (RFC 8305 §8).
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);
/// How long one connection attempt may take.
pub const CONNECT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Every failed attempt of a [`TcpStream::connect_host`], in the order they
/// were started. It is the inner error of the `io::Error` returned (get it
/// with `get_ref()` and `downcast_ref`).
///
/// # Examples
///
/// ```
/// use weft::net::{ConnectErrors, TcpStream};
///
/// let reactor = weft::Reactor::new().unwrap();
/// let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
/// let err = reactor
///     .run_until_complete(TcpStream::connect_host("127.0.0.1", closed.port()))
///     .unwrap()
///     .unwrap_err();
/// let all = err.get_ref().unwrap().downcast_ref::<ConnectErrors>().unwrap();
/// assert_eq!(all.attempts()[0].0, closed);
/// ```
#[derive(Debug)]
pub struct ConnectErrors(Vec<(SocketAddr, io::Error)>);

impl ConnectErrors {
    /// The attempts, each with the address tried and its error.
    ///
    /// # Examples
    ///
    /// See [`ConnectErrors`].
    ///
    /// ```
    /// # let e: Option<weft::net::ConnectErrors> = None;
    /// # if let Some(e) = e { let _ = e.attempts().len(); }
    /// ```
    pub fn attempts(&self) -> &[(SocketAddr, io::Error)] {
        &self.0
    }
}

impl fmt::Display for ConnectErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every connection attempt failed")?;
        for (i, (addr, e)) in self.0.iter().enumerate() {
            write!(f, "{} {addr}: {e}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

impl std::error::Error for ConnectErrors {}

/// Interleaves the address families, starting with the first one returned.
pub(crate) fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let Some(first) = addrs.first() else {
        return addrs;
    };
    let first_v6 = first.is_ipv6();
    let (a, b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter(), b.into_iter());
    loop {
        match (a.next(), b.next()) {
            (None, None) => return out,
            (x, y) => out.extend(x.into_iter().chain(y)),
        }
    }
}

/// Cancels a `Deferred` (a timer, a lookup) when dropped.
struct CancelOnDrop<T: 'static, E: From<Cancelled> + 'static>(Deferred<T, E>);

impl<T: 'static, E: From<Cancelled> + 'static> Drop for CancelOnDrop<T, E> {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

type Attempt = Pin<Box<dyn Future<Output = io::Result<TcpStream>>>>;

/// One connect with its own timeout.
fn attempt(handle: &Handle, addr: SocketAddr, timeout: Duration) -> Attempt {
    let mut timer = CancelOnDrop(handle.sleep(timeout));
    let mut connect = Box::pin(TcpStream::connect(addr));
    Box::pin(poll_fn(move |cx| {
        if let Poll::Ready(r) = connect.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        match Pin::new(&mut timer.0).poll(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "connection attempt timed out",
            ))),
            // Cancelled only by our own drop.
            _ => Poll::Pending,
        }
    }))
}

/// Races connects to `addrs` (already ordered); see the module notes.
pub(crate) async fn race(
    handle: &Handle,
    addrs: Vec<SocketAddr>,
    stagger: Duration,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let mut next = 0;
    let mut in_flight: Vec<(SocketAddr, Attempt)> = Vec::new();
    let mut errors: Vec<(SocketAddr, io::Error)> = Vec::new();
    let mut delay: Option<CancelOnDrop<(), Cancelled>> = None;
    let mut failed = false;
    poll_fn(|cx| {
        loop {
            // Polling the delay also registers the waker for it.
            let due = delay
                .as_mut()
                .is_some_and(|d| Pin::new(&mut d.0).poll(cx).is_ready());
            if due {
                delay = None;
            }
            // Start the next attempt: the first one, after the delay, or at
            // once after a failure (early start).
            if next < addrs.len() && (in_flight.is_empty() || due || failed) {
                let addr = addrs[next];
                next += 1;
                in_flight.push((addr, attempt(handle, addr, timeout)));
                delay = (next < addrs.len()).then(|| CancelOnDrop(handle.sleep(stagger)));
                failed = false;
                continue;
            }
            failed = false;
            let mut i = 0;
            while i < in_flight.len() {
                match in_flight[i].1.as_mut().poll(cx) {
                    // The losers and the delay drop with this future.
                    Poll::Ready(Ok(stream)) => return Poll::Ready(Ok(stream)),
                    Poll::Ready(Err(e)) => {
                        let (addr, _) = in_flight.remove(i);
                        errors.push((addr, e));
                        failed = true;
                    }
                    Poll::Pending => i += 1,
                }
            }
            if in_flight.is_empty() && next >= addrs.len() {
                let kind = errors
                    .first()
                    .map_or(io::ErrorKind::NotFound, |(_, e)| e.kind());
                return Poll::Ready(Err(io::Error::new(
                    kind,
                    ConnectErrors(std::mem::take(&mut errors)),
                )));
            }
            if !failed {
                return Poll::Pending;
            }
        }
    })
    .await
}

impl TcpStream {
    /// Connects to `host` (a name or a literal address) on `port`: resolves
    /// it with the system resolver, then races the addresses as RFC 8305
    /// describes (families interleaved, a new attempt every 250 ms or at
    /// once when one fails, the first to connect wins).
    ///
    /// # Errors
    ///
    /// The lookup's error (see [`ResolveError`](super::ResolveError), as an
    /// `io::Error`), or, when every attempt failed, an `io::Error` whose
    /// inner error is a [`ConnectErrors`] listing them.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the lookup and closes every attempt.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{TcpListener, TcpStream};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let port = listener.local_addr().unwrap().port();
    /// let s = reactor.run_until_complete(TcpStream::connect_host("127.0.0.1", port)).unwrap().unwrap();
    /// assert_eq!(s.peer_addr().unwrap().port(), port);
    /// ```
    pub async fn connect_host(host: &str, port: u16) -> io::Result<TcpStream> {
        TcpStream::connect_host_with(&DnsResolver::new(), host, port).await
    }

    /// [`connect_host`](TcpStream::connect_host) with a resolver of your own
    /// (a stub in tests, another timeout).
    ///
    /// # Errors
    ///
    /// As [`connect_host`](TcpStream::connect_host).
    ///
    /// # Cancel safety
    ///
    /// As [`connect_host`](TcpStream::connect_host).
    ///
    /// # Examples
    ///
    /// ```
    /// use weft::net::{DnsResolver, TcpListener, TcpStream};
    ///
    /// let reactor = weft::Reactor::new().unwrap();
    /// let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let resolver = DnsResolver::new().with_lookup(move |_, _| Ok(vec![addr]));
    /// reactor.thread_pool().start();
    /// let s = reactor
    ///     .run_until_complete(async move {
    ///         TcpStream::connect_host_with(&resolver, "service.test", addr.port()).await
    ///     })
    ///     .unwrap()
    ///     .unwrap();
    /// assert_eq!(s.peer_addr().unwrap(), addr);
    /// ```
    pub async fn connect_host_with(
        resolver: &DnsResolver,
        host: &str,
        port: u16,
    ) -> io::Result<TcpStream> {
        let handle = reactor::current().ok_or_else(not_on_loop)?;
        let mut lookup = CancelOnDrop(resolver.resolve(host, port));
        let addrs = poll_fn(|cx| Pin::new(&mut lookup.0).poll(cx)).await?;
        drop(lookup);
        race(
            &handle,
            interleave(addrs),
            CONNECTION_ATTEMPT_DELAY,
            CONNECT_ATTEMPT_TIMEOUT,
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn families_interleave_starting_with_the_first() {
        let got = interleave(vec![
            a("[::1]:1"),
            a("[::2]:1"),
            a("[::3]:1"),
            a("10.0.0.1:1"),
        ]);
        assert_eq!(
            got,
            vec![a("[::1]:1"), a("10.0.0.1:1"), a("[::2]:1"), a("[::3]:1")]
        );
        let got = interleave(vec![a("10.0.0.1:1"), a("10.0.0.2:1"), a("[::1]:1")]);
        assert_eq!(got, vec![a("10.0.0.1:1"), a("[::1]:1"), a("10.0.0.2:1")]);
        assert!(interleave(vec![]).is_empty());
    }
}
