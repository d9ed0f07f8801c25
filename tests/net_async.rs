//! `Async<T>` on arbitrary descriptors: any non-blocking fd works, readiness
//! is re-armed only by `WouldBlock`, several waiters are all woken, and a
//! reactor that is gone gives an error instead of a hang.

use std::cell::Cell;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use weft::Reactor;
use weft::net::Async;

/// A non-blocking pipe as plain `File`s (no mio type involved).
fn pipe_files() -> (File, File) {
    let (tx, rx) = mio::unix::pipe::new().unwrap();
    (File::from(OwnedFd::from(tx)), File::from(OwnedFd::from(rx)))
}

#[test]
fn any_nonblocking_fd_can_be_wrapped() {
    let reactor = Reactor::new().unwrap();
    let (mut tx, rx) = pipe_files();
    let rx = Async::new(rx).unwrap();
    let got = Rc::new(Cell::new(0usize));
    let g = got.clone();
    let reader = reactor.spawn_local(async move {
        let mut buf = [0u8; 3];
        let mut all = Vec::new();
        loop {
            let n = rx.read_with(|mut f| f.read(&mut buf)).await.unwrap();
            if n == 0 {
                return all;
            }
            all.extend_from_slice(&buf[..n]);
            g.set(all.len());
        }
    });
    // Nothing to read: the reader waits (no spin, no busy turns needed).
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(got.get(), 0);
    tx.write_all(b"hello, fd").unwrap();
    drop(tx);
    let all = reactor.run_until_complete(reader).unwrap().unwrap();
    assert_eq!(all, b"hello, fd");
}

#[test]
fn every_waiting_task_is_woken_by_one_event() {
    let reactor = Reactor::new().unwrap();
    let (mut tx, rx) = pipe_files();
    let rx = Rc::new(Async::new(rx).unwrap());
    // Drain the optimistic initial readiness so the waiters really wait.
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        rx.poll_read_with(&mut cx, |mut f| f.read(&mut [0u8; 1]))
            .is_pending()
    );
    let woken = Rc::new(Cell::new(0));
    for _ in 0..3 {
        let (rx, woken) = (rx.clone(), woken.clone());
        reactor
            .spawn_local(async move {
                rx.readable().await.unwrap();
                woken.set(woken.get() + 1);
            })
            .detach();
    }
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(woken.get(), 0);
    tx.write_all(b"x").unwrap();
    for _ in 0..100 {
        if woken.get() == 3 {
            break;
        }
        reactor.iterate(Some(Duration::from_millis(50)));
    }
    assert_eq!(woken.get(), 3);
}

#[test]
fn readiness_is_kept_until_an_operation_would_block() {
    let reactor = Reactor::new().unwrap();
    let (mut tx, rx) = pipe_files();
    let rx = Async::new(rx).unwrap();
    tx.write_all(&[9u8; 10]).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    // Read part of it: the rest is served with no new event.
    let r = rx.poll_read_with(&mut cx, |mut f| f.read(&mut [0u8; 4]));
    assert!(matches!(r, Poll::Ready(Ok(4))));
    assert!(rx.poll_readable(&mut cx).is_ready());
    let r = rx.poll_read_with(&mut cx, |mut f| f.read(&mut [0u8; 16]));
    assert!(matches!(r, Poll::Ready(Ok(6))));
    // Now the pipe is empty: WouldBlock clears the bit.
    assert!(
        rx.poll_read_with(&mut cx, |mut f| f.read(&mut [0u8; 16]))
            .is_pending()
    );
    assert!(rx.poll_readable(&mut cx).is_pending());
    drop(reactor);
}

#[test]
fn waiting_after_the_reactor_is_gone_is_an_error_not_a_hang() {
    let reactor = Reactor::new().unwrap();
    let (_tx, rx) = pipe_files();
    let rx = Async::new(rx).unwrap();
    let mut cx = Context::from_waker(Waker::noop());
    assert!(
        rx.poll_read_with(&mut cx, |mut f| f.read(&mut [0u8; 1]))
            .is_pending()
    );
    drop(reactor);
    match rx.poll_readable(&mut cx) {
        Poll::Ready(Err(e)) => assert!(e.to_string().contains("reactor"), "{e}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // Dropping it afterwards is fine too.
    drop(rx);
}

#[test]
fn into_inner_deregisters_and_the_fd_can_be_wrapped_again() {
    let reactor = Reactor::new().unwrap();
    let (mut tx, rx) = pipe_files();
    let rx = Async::new(rx).unwrap();
    let rx = rx.into_inner().unwrap();
    // Registering the same fd again would fail (EEXIST) had it stayed.
    let rx = Async::new(rx).unwrap();
    tx.write_all(b"again").unwrap();
    let n = reactor
        .run_until_complete(async move { rx.read_with(|mut f| f.read(&mut [0u8; 8])).await })
        .unwrap()
        .unwrap();
    assert_eq!(n, 5);
}
