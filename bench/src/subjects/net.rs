//! The network rows (issue 10): one TCP echo server per subject, driven by
//! one client that is the same for every subject.
//!
//! - **The server** runs on the measuring thread (the loop), written as each
//!   peer's docs write an echo server: accept in a loop, one task (thread,
//!   protocol) per connection, `TCP_NODELAY` on every accepted socket, read
//!   up to 16 KiB and write back what was read until EOF, then close. The
//!   same server serves all three rows.
//!   - `weft`: `weft::net::TcpListener::accept` in a `spawn_local` task, one
//!     `spawn_local` task per connection over `futures-io`
//!     (`AsyncReadExt::read` / `AsyncWriteExt::write_all` on `&TcpStream`);
//!   - `weft-proto`: `weft::net::listen_tcp` with an echo `Protocol` whose
//!     `data_received` writes the bytes back (netproto's `echo` example);
//!   - `tokio`: `current_thread` runtime with `enable_all()`, `tokio::spawn`
//!     per connection, `AsyncReadExt` / `AsyncWriteExt`;
//!   - `smol`: `Async<TcpListener>` under `async_io::block_on`, a
//!     `LocalExecutor` task per connection, `futures-lite` I/O;
//!   - `std`: blocking sockets, one thread per connection (the floor of that
//!     model; the accept loop has a thread of its own).
//! - **The client** runs on a thread of its own (so the server's loop is
//!   what is measured), marks the measured section, and stops the server at
//!   the end:
//!   - round trip: blocking `std::net::TcpStream`, write 64 B, read 64 B
//!     back, one sample per round trip (after 200 warm-up trips);
//!   - throughput: a tokio `current_thread` runtime with [`NET_CONNS`]
//!     connections, each keeping [`DEPTH`] 64 B messages in flight until it
//!     has sent and read back its share; from the moment every connection
//!     is open to the last byte back, per message;
//!   - accept: the same client runtime with [`CONNECTORS`] tasks, each in a
//!     loop connecting, sending one 64 B message, reading it back and
//!     closing with `SO_LINGER` 0: a reset while established, so neither
//!     side leaves a `TIME_WAIT` entry (tens of thousands would pile up over
//!     a run otherwise); per connection. The server sees the reset as the
//!     connection's end.
//! - The process CPU column therefore includes the client, which is the
//!   same for every subject.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::rc::Rc;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::model::{
    Ctx, NET_CONNS, Params, Scenario, mark_end, mark_start, per_op, pin_other, time_each,
};

/// Messages in flight per connection in the throughput row.
const DEPTH: usize = 8;
/// Concurrent connectors of the accept row.
const CONNECTORS: usize = 16;
/// The message size.
const MSG: usize = 64;
/// The server's read buffer.
const BUF: usize = 16 * 1024;

/// Whether `sc` is a network row.
pub(super) fn is_net(sc: Scenario) -> bool {
    matches!(
        sc,
        Scenario::NetEchoRtt | Scenario::NetEchoThroughput | Scenario::NetAccept
    )
}

/// Measures network row `sc` for the subject called `name`.
pub(super) fn measure(name: &str, sc: Scenario, p: &Params) -> Result<Vec<f64>, &'static str> {
    match name {
        "weft" => Ok(weft_async(sc, p)),
        "weft-proto" => Ok(weft_proto(sc, p)),
        "tokio" => Ok(tokio_server(sc, p)),
        "smol" => Ok(smol_server(sc, p)),
        "std" => Ok(std_server(sc, p)),
        _ => Err("network rows: weft, weft-proto, tokio, smol, std"),
    }
}

// ---------------------------------------------------------------------------
// The client, the same for every subject.

/// Starts the client of row `sc` against `addr` on a thread of its own; it
/// calls `stop` when done and returns the row's samples.
fn client(
    sc: Scenario,
    p: &Params,
    addr: SocketAddr,
    stop: impl FnOnce() + Send + 'static,
) -> thread::JoinHandle<Vec<f64>> {
    let p = p.clone();
    thread::Builder::new()
        .name("bench-net-client".into())
        .spawn(move || {
            pin_other();
            let v = match sc {
                Scenario::NetEchoRtt => rtt_client(addr, p.net_rtts),
                Scenario::NetEchoThroughput => throughput_client(addr, p.net_msgs_per_conn),
                _ => accept_client(addr, p.net_accepts),
            };
            stop();
            v
        })
        .expect("spawn client")
}

fn message(i: usize, ctx: &Ctx) -> [u8; MSG] {
    let mut m = [0u8; MSG];
    m[..8].copy_from_slice(&ctx.value(i).to_le_bytes());
    m
}

fn rtt_client(addr: SocketAddr, n: usize) -> Vec<f64> {
    let ctx = Ctx::new();
    let mut s = StdStream::connect(addr).expect("client connect");
    s.set_nodelay(true).expect("nodelay");
    let mut back = [0u8; MSG];
    let mut trip = |i: usize| {
        let m = message(i, &ctx);
        s.write_all(&m).expect("client write");
        s.read_exact(&mut back).expect("client read");
        assert_eq!(back, m, "echo changed the message");
    };
    for i in 0..200 {
        trip(i);
    }
    mark_start();
    let v = time_each(n, &mut trip);
    mark_end();
    v
}

fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("client runtime")
}

fn throughput_client(addr: SocketAddr, msgs: usize) -> Vec<f64> {
    let rt = client_runtime();
    let per = rt.block_on(async move {
        let mut conns = Vec::with_capacity(NET_CONNS);
        for _ in 0..NET_CONNS {
            let s = tokio::net::TcpStream::connect(addr).await.expect("connect");
            s.set_nodelay(true).expect("nodelay");
            conns.push(s);
        }
        let ctx = Ctx::new();
        mark_start();
        let start = Instant::now();
        let tasks: Vec<_> = conns
            .into_iter()
            .map(|s| tokio::spawn(pipeline(s, msgs, ctx.clone())))
            .collect();
        for t in tasks {
            t.await.expect("client connection");
        }
        let end = Instant::now();
        mark_end();
        per_op(start, end, NET_CONNS * msgs)
    });
    vec![per]
}

/// One connection of the throughput row: keeps [`DEPTH`] messages in
/// flight until `msgs` came back.
async fn pipeline(mut s: tokio::net::TcpStream, msgs: usize, ctx: Arc<Ctx>) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut out = Vec::with_capacity(DEPTH * MSG);
    let mut buf = vec![0u8; DEPTH * MSG];
    let (mut sent, mut received) = (0, 0usize);
    while sent < msgs.min(DEPTH) {
        out.extend_from_slice(&message(sent, &ctx));
        sent += 1;
    }
    s.write_all(&out).await.expect("client write");
    while received < msgs * MSG {
        let n = s.read(&mut buf).await.expect("client read");
        assert!(n > 0, "server closed early");
        let before = received / MSG;
        received += n;
        out.clear();
        for _ in before..received / MSG {
            if sent < msgs {
                out.extend_from_slice(&message(sent, &ctx));
                sent += 1;
            }
        }
        if !out.is_empty() {
            s.write_all(&out).await.expect("client write");
        }
    }
}

fn accept_client(addr: SocketAddr, n: usize) -> Vec<f64> {
    let rt = client_runtime();
    let ctx = Ctx::new();
    let per = rt.block_on(async move {
        mark_start();
        let start = Instant::now();
        let tasks: Vec<_> = (0..CONNECTORS)
            .map(|k| {
                let ctx = ctx.clone();
                tokio::spawn(async move {
                    for i in (k..n).step_by(CONNECTORS) {
                        connect_once(addr, i, &ctx).await;
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("connector");
        }
        let end = Instant::now();
        mark_end();
        per_op(start, end, n)
    });
    vec![per]
}

/// One connection of the accept row: connect, one echo, close with a reset.
async fn connect_once(addr: SocketAddr, i: usize, ctx: &Ctx) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let m = message(i, ctx);
    s.write_all(&m).await.expect("client write");
    let mut back = [0u8; MSG];
    s.read_exact(&mut back).await.expect("client read");
    assert_eq!(back, m, "echo changed the message");
    // Linger 0 resets instead of leaving TIME_WAIT behind; with a zero
    // timeout it cannot block the drop (why tokio deprecated the setter).
    #[allow(deprecated)]
    s.set_linger(Some(Duration::ZERO)).expect("linger");
}

// ---------------------------------------------------------------------------
// The servers.

fn local() -> SocketAddr {
    ([127, 0, 0, 1], 0).into()
}

fn weft_async(sc: Scenario, p: &Params) -> Vec<f64> {
    let reactor = super::weft_rows::reactor();
    let listener = weft::net::TcpListener::bind(local()).expect("weft bind");
    let addr = listener.local_addr().expect("weft addr");
    let h = reactor.handle();
    reactor
        .spawn_local(async move {
            loop {
                let (s, _) = listener.accept().await.expect("weft accept");
                s.set_nodelay(true).expect("nodelay");
                h.spawn_local(async move {
                    let mut buf = vec![0u8; BUF];
                    loop {
                        match (&s).read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if (&s).write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })
                .detach();
            }
        })
        .detach();
    let remote = reactor.remote();
    let c = client(sc, p, addr, move || {
        remote.stop();
    });
    reactor.run().expect("weft run");
    c.join().expect("client")
}

/// netproto's echo protocol.
#[derive(Default)]
struct Echo {
    transport: Option<weft::net::Transport>,
}

impl weft::net::Protocol for Echo {
    fn connection_made(&mut self, transport: weft::net::Transport) {
        self.transport = Some(transport);
    }

    fn data_received(&mut self, data: &[u8]) {
        if let Some(t) = &self.transport {
            let _ = t.write(data);
        }
    }
}

fn weft_proto(sc: Scenario, p: &Params) -> Vec<f64> {
    let reactor = super::weft_rows::reactor();
    let port = weft::net::listen_tcp(local(), Echo::default).expect("weft listen_tcp");
    let addr = match port.local_address() {
        weft::net::Address::Inet(a) => a,
        other => panic!("listen_tcp bound {other:?}"),
    };
    let remote = reactor.remote();
    let c = client(sc, p, addr, move || {
        remote.stop();
    });
    reactor.run().expect("weft run");
    drop(port);
    c.join().expect("client")
}

fn tokio_server(sc: Scenario, p: &Params) -> Vec<f64> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let c = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(local()).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.expect("tokio accept");
                s.set_nodelay(true).expect("nodelay");
                tokio::spawn(async move {
                    let mut buf = vec![0u8; BUF];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                });
            }
        });
        let c = client(sc, p, addr, move || {
            let _ = stop_tx.send(());
        });
        let _ = stop_rx.await;
        c
    });
    c.join().expect("client")
}

fn smol_server(sc: Scenario, p: &Params) -> Vec<f64> {
    let ex = Rc::new(async_executor::LocalExecutor::new());
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let listener = async_io::Async::<StdListener>::bind(local()).expect("smol bind");
    let addr = listener.get_ref().local_addr().expect("addr");
    let spawner = ex.clone();
    ex.spawn(async move {
        loop {
            let (s, _) = listener.accept().await.expect("smol accept");
            s.get_ref().set_nodelay(true).expect("nodelay");
            spawner
                .spawn(async move {
                    let mut buf = vec![0u8; BUF];
                    loop {
                        match (&s).read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if (&s).write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                })
                .detach();
        }
    })
    .detach();
    let c = client(sc, p, addr, move || {
        let _ = stop_tx.send_blocking(());
    });
    let _ = async_io::block_on(ex.run(stop_rx.recv()));
    c.join().expect("client")
}

fn std_server(sc: Scenario, p: &Params) -> Vec<f64> {
    let listener = StdListener::bind(local()).expect("std bind");
    let addr = listener.local_addr().expect("addr");
    // The accept thread stays blocked in `accept` when the cell ends; the
    // process exits right after.
    thread::Builder::new()
        .name("bench-std-accept".into())
        .spawn(move || {
            for s in listener.incoming() {
                let Ok(s) = s else { continue };
                s.set_nodelay(true).expect("nodelay");
                let spawned = thread::Builder::new().spawn(move || echo_blocking(s));
                spawned.expect("spawn connection thread");
            }
        })
        .expect("spawn accept thread");
    let c = client(sc, p, addr, || {});
    c.join().expect("client")
}

fn echo_blocking(mut s: StdStream) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        s.write_all(&buf[..n])?;
    }
}
