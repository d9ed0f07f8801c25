//! Net benchmark: a 64-byte TCP echo round trip over loopback, client and
//! server on one loop thread, weft against tokio's `current_thread` runtime
//! in the same run.
//!
//! Run: `cargo bench --bench net`.

use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

const MSG: [u8; 64] = [7u8; 64];

fn weft_echo(iters: u64) -> Duration {
    use futures_lite::{AsyncReadExt, AsyncWriteExt};
    use weft::net::{TcpListener, TcpStream};

    let reactor = weft::Reactor::new().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = listener.local_addr().unwrap();
    reactor
        .spawn_local(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).await.is_ok() {
                s.write_all(&buf).await.unwrap();
            }
        })
        .detach();
    reactor
        .run_until_complete(async move {
            let mut c = TcpStream::connect(addr).await.unwrap();
            c.set_nodelay(true).unwrap();
            let mut buf = [0u8; 64];
            // Warm the connection up outside the measurement.
            c.write_all(&MSG).await.unwrap();
            c.read_exact(&mut buf).await.unwrap();
            let start = Instant::now();
            for _ in 0..iters {
                c.write_all(&MSG).await.unwrap();
                c.read_exact(&mut buf).await.unwrap();
            }
            start.elapsed()
        })
        .unwrap()
}

fn tokio_echo(iters: u64) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    rt.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.set_nodelay(true).unwrap();
            let mut buf = [0u8; 64];
            while s.read_exact(&mut buf).await.is_ok() {
                s.write_all(&buf).await.unwrap();
            }
        });
        let mut c = TcpStream::connect(addr).await.unwrap();
        c.set_nodelay(true).unwrap();
        let mut buf = [0u8; 64];
        c.write_all(&MSG).await.unwrap();
        c.read_exact(&mut buf).await.unwrap();
        let start = Instant::now();
        for _ in 0..iters {
            c.write_all(&MSG).await.unwrap();
            c.read_exact(&mut buf).await.unwrap();
        }
        start.elapsed()
    })
}

fn echo(c: &mut Criterion) {
    let mut g = c.benchmark_group("tcp_echo_64B_round_trip");
    g.bench_function("weft", |b| b.iter_custom(weft_echo));
    g.bench_function("tokio_current_thread", |b| b.iter_custom(tokio_echo));
    g.finish();
}

criterion_group!(benches, echo);
criterion_main!(benches);
