//! The descriptors of weft's TCP types (`AsFd`, `AsRawFd`), for socket
//! options weft does not wrap.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};

use super::{TcpListener, TcpStream};

/// The socket's descriptor, for socket options weft does not wrap
/// (`socket2::SockRef::from(&stream)`). I/O done on it directly bypasses
/// the readiness cache (see [`Async::get_ref`](crate::net::Async::get_ref)).
///
/// # Examples
///
/// ```
/// use std::os::fd::{AsFd, AsRawFd};
/// let reactor = weft::Reactor::new().unwrap();
/// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
/// let fd = s.as_raw_fd();
/// assert_eq!(s.as_fd().as_raw_fd(), fd);
/// let peer = socket2::SockRef::from(&s).peer_addr().unwrap();
/// assert_eq!(peer.as_socket(), Some(l.local_addr().unwrap()));
/// ```
impl AsFd for TcpStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// See [`AsFd for TcpStream`](#impl-AsFd-for-TcpStream).
///
/// # Examples
///
/// ```
/// use std::os::fd::AsRawFd;
/// let reactor = weft::Reactor::new().unwrap();
/// let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
/// let s = weft::net::TcpStream::from_std(std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap()).unwrap();
/// assert!(s.as_raw_fd() >= 0);
/// ```
impl AsRawFd for TcpStream {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}

/// The listening socket's descriptor, for socket options weft does not
/// wrap.
///
/// # Examples
///
/// ```
/// use std::os::fd::AsFd;
/// let reactor = weft::Reactor::new().unwrap();
/// let l = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// let local = socket2::SockRef::from(&l.as_fd()).local_addr().unwrap();
/// assert_eq!(local.as_socket(), Some(l.local_addr().unwrap()));
/// ```
impl AsFd for TcpListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.io.get_ref().as_fd()
    }
}

/// See [`AsFd for TcpListener`](#impl-AsFd-for-TcpListener).
///
/// # Examples
///
/// ```
/// use std::os::fd::AsRawFd;
/// let reactor = weft::Reactor::new().unwrap();
/// let l = weft::net::TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
/// assert!(l.as_raw_fd() >= 0);
/// ```
impl AsRawFd for TcpListener {
    fn as_raw_fd(&self) -> RawFd {
        self.io.get_ref().as_raw_fd()
    }
}
