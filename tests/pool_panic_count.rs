//! A pool counts a panicking job in `PoolStatistics::panicked` (and
//! `completed`) before anyone can see the job's outcome: a statistics read
//! made where the outcome arrives already includes it.
//!
//! The old order (outcome first, count after) is made to fail every time:
//! a callback reads the statistics on the pool thread before the thread can
//! count; for work deferred from the loop, a subscriber holds the pool
//! thread in the pool's panic log line (after the outcome went to the loop,
//! in both orders) until the loop has read the statistics.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};
use weft::{Reactor, ThreadError, ThreadPool};

#[test]
fn a_callback_sees_its_own_panic_counted() {
    let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
    pool.start();
    let (tx, rx) = mpsc::channel();
    let stats = pool.clone();
    pool.call_in_thread_with_callback(
        || -> u8 { panic!("counted first") },
        move |result| {
            let s = stats.statistics();
            tx.send((result, s.panicked, s.completed)).unwrap();
        },
    )
    .unwrap_or_else(|_| unreachable!());
    let (result, panicked, completed) = rx.recv().unwrap();
    assert!(matches!(result, Err(ThreadError::Panicked { .. })));
    assert_eq!((panicked, completed), (1, 1));
    pool.stop();
}

/// Panic messages containing this hold their pool thread in the log line.
const HELD: &str = "held in the log";

/// Releases a pool thread held in its panic log line.
fn held() -> &'static Mutex<Option<Receiver<()>>> {
    static HELD_GATE: OnceLock<Mutex<Option<Receiver<()>>>> = OnceLock::new();
    HELD_GATE.get_or_init(|| Mutex::new(None))
}

struct Holder;

struct PanicField(String);

impl Visit for PanicField {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "panic" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> Layer<S> for Holder {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut panic = PanicField(String::new());
        event.record(&mut panic);
        if !panic.0.contains(HELD) {
            return;
        }
        let gate = held().lock().unwrap().take();
        if let Some(gate) = gate {
            // A guard against a hang only: the loop releases it at once.
            let _ = gate.recv_timeout(Duration::from_secs(60));
        }
    }
}

fn hold_next_log() -> Sender<()> {
    let (release, gate) = mpsc::channel();
    *held().lock().unwrap() = Some(gate);
    release
}

#[test]
fn the_loop_sees_a_deferred_panic_counted() {
    tracing::subscriber::set_global_default(Registry::default().with(Holder)).unwrap();
    let reactor = Reactor::new().unwrap();
    let pool = Arc::new(ThreadPool::new(1, 1).unwrap());
    pool.start();

    let release = hold_next_log();
    let d = reactor.defer_to_thread_pool(&pool, || -> u8 { panic!("{HELD}") });
    let stats = pool.clone();
    let (result, panicked) = reactor
        .run_until_complete(async move {
            let result = d.await;
            let panicked = stats.statistics().panicked;
            let _ = release.send(());
            (result, panicked)
        })
        .unwrap();
    assert!(matches!(result, Err(ThreadError::Panicked { .. })));
    assert_eq!(panicked, 1);

    // The same through the reactor's own pool.
    let release = hold_next_log();
    let d = reactor.defer_to_thread(|| -> u8 { panic!("{HELD}") });
    let stats = reactor.thread_pool();
    let (result, panicked) = reactor
        .run_until_complete(async move {
            let result = d.await;
            let panicked = stats.statistics().panicked;
            let _ = release.send(());
            (result, panicked)
        })
        .unwrap();
    assert!(matches!(result, Err(ThreadError::Panicked { .. })));
    assert_eq!(panicked, 1);
    pool.stop();
}
