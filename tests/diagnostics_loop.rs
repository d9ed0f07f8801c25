//! The loop's detectors: slow callbacks (manual clock), the stall watchdog
//! (one real thread, released by the test), the blocking-call wait warning,
//! and the statistics under a known workload. Each detector must name the
//! line that scheduled the offending code, and stay silent on a healthy run.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::{Layer, Registry};
use weft::Reactor;
use weft::testing::ManualClock;

/// One `weft::diagnostics` event, as the capture layer saw it.
#[derive(Debug, Clone, Default)]
struct Captured {
    message: String,
    location: String,
}

struct Visitor<'a>(&'a mut Captured);

impl Visit for Visitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        match field.name() {
            "message" => self.0.message = format!("{value:?}"),
            "location" => self.0.location = format!("{value:?}"),
            _ => {}
        }
    }
}

/// Records `weft::diagnostics` events and forwards each on a channel.
struct Capture {
    seen: Arc<Mutex<Vec<Captured>>>,
    tx: Mutex<mpsc::Sender<Captured>>,
}

impl<S: tracing::Subscriber> Layer<S> for Capture {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        if event.metadata().target() != "weft::diagnostics" {
            return;
        }
        let mut c = Captured::default();
        event.record(&mut Visitor(&mut c));
        self.seen.lock().unwrap().push(c.clone());
        let _ = self.tx.lock().unwrap().send(c);
    }
}

struct Events {
    seen: Arc<Mutex<Vec<Captured>>>,
    rx: mpsc::Receiver<Captured>,
}

impl Events {
    fn all(&self) -> Vec<Captured> {
        self.seen.lock().unwrap().clone()
    }

    /// The slow-callback reports (the watchdog may also, rightly, report a
    /// callback that advanced the manual clock past the threshold while it
    /// was still running).
    fn slow(&self) -> Vec<Captured> {
        let all = self.all().into_iter();
        all.filter(|c| c.message.contains("slow callback"))
            .collect()
    }

    /// The next event; the timeout only keeps a broken build from hanging.
    fn next(&self) -> Captured {
        self.rx
            .recv_timeout(Duration::from_secs(120))
            .expect("expected a diagnostics event")
    }
}

fn capture() -> (tracing::Dispatch, Events) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let layer = Capture {
        seen: seen.clone(),
        tx: Mutex::new(tx),
    };
    let dispatch = tracing::Dispatch::new(Registry::default().with(layer));
    (dispatch, Events { seen, rx })
}

fn here(line: u32) -> String {
    format!("{}:{line}:", file!())
}

fn diag_reactor(clock: &ManualClock) -> Reactor {
    Reactor::builder()
        .clock(clock.clone())
        .slow_callback_threshold(Some(Duration::from_millis(100)))
        .build()
        .unwrap()
}

#[test]
fn a_slow_timed_call_is_reported_with_the_line_that_scheduled_it() {
    let (dispatch, events) = capture();
    tracing::dispatcher::with_default(&dispatch, || {
        let clock = ManualClock::new();
        let reactor = diag_reactor(&clock);
        let c = clock.clone();
        let line = line!() + 1;
        reactor.call_soon(move || c.advance(Duration::from_millis(200)));
        reactor.iterate(Some(Duration::ZERO));
        let all = events.slow();
        assert_eq!(all.len(), 1, "{all:?}");
        assert!(all[0].location.starts_with(&here(line)), "{all:?}");
        assert!(all[0].message.contains("slow callback"), "{all:?}");
        assert!(all[0].message.contains("200ms"), "{all:?}");
        let stats = reactor.statistics();
        assert_eq!(stats.slow_callbacks, 1);
        assert_eq!(stats.longest_callback, Duration::from_millis(200));
        assert_eq!(stats.longest_turn, Duration::from_millis(200));
    });
}

#[test]
fn a_slow_call_from_a_thread_and_a_slow_task_poll_name_their_lines() {
    let (dispatch, events) = capture();
    tracing::dispatcher::with_default(&dispatch, || {
        let clock = ManualClock::new();
        let reactor = diag_reactor(&clock);
        let c = clock.clone();
        let call_line = line!() + 3;
        reactor
            .remote()
            .call_from_thread(move || c.advance(Duration::from_millis(150)))
            .unwrap();
        let c = clock.clone();
        let task_line = line!() + 1;
        let _task = reactor.spawn_local(async move { c.advance(Duration::from_secs(1)) });
        reactor.iterate(Some(Duration::ZERO));
        let all = events.slow();
        assert_eq!(all.len(), 2, "{all:?}");
        assert!(all[0].location.starts_with(&here(call_line)), "{all:?}");
        assert!(all[0].message.contains("call from thread"), "{all:?}");
        assert!(all[1].location.starts_with(&here(task_line)), "{all:?}");
        assert!(all[1].message.contains("local task"), "{all:?}");
        assert_eq!(reactor.statistics().slow_callbacks, 2);
        assert_eq!(
            reactor.statistics().longest_callback,
            Duration::from_secs(1)
        );
    });
}

#[test]
fn a_healthy_run_with_diagnostics_on_logs_nothing() {
    let (dispatch, events) = capture();
    tracing::dispatcher::with_default(&dispatch, || {
        let clock = ManualClock::new();
        let reactor = diag_reactor(&clock);
        for _ in 0..100 {
            let c = clock.clone();
            reactor.call_soon(move || c.advance(Duration::from_millis(100)));
            reactor.remote().call_from_thread(|| ()).unwrap();
        }
        let _t = reactor.spawn_local(async {});
        reactor.iterate(Some(Duration::ZERO));
        reactor.iterate(Some(Duration::ZERO));
        assert!(events.all().is_empty(), "{:?}", events.all());
        let stats = reactor.statistics();
        assert_eq!(stats.slow_callbacks, 0);
        assert_eq!(stats.stalls_detected, 0);
        // Exactly the threshold is not "longer than" it.
        assert_eq!(stats.longest_callback, Duration::from_millis(100));
        assert_eq!(stats.longest_turn, Duration::from_secs(10));
    });
}

#[test]
fn with_diagnostics_off_nothing_is_timed() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    let c = clock.clone();
    reactor.call_soon(move || c.advance(Duration::from_secs(5)));
    reactor.iterate(Some(Duration::ZERO));
    let stats = reactor.statistics();
    assert_eq!(stats.slow_callbacks, 0);
    assert_eq!(stats.longest_callback, Duration::ZERO);
}

#[test]
fn the_statistics_are_exact_under_a_known_workload() {
    let clock = ManualClock::new();
    let reactor = diag_reactor(&clock);
    let remote = reactor.remote();
    for ms in [10, 20, 30] {
        let c = clock.clone();
        remote
            .call_from_thread(move || c.advance(Duration::from_millis(ms)))
            .unwrap();
    }
    reactor.call_later(Duration::from_secs(1), || ());
    assert_eq!(reactor.statistics().inbox_depth, 3);
    reactor.iterate(Some(Duration::ZERO));
    let stats = reactor.statistics();
    assert_eq!(stats.calls_from_thread, 3);
    assert_eq!(stats.calls_run, 3);
    assert_eq!(stats.inbox_depth, 0);
    assert_eq!(stats.turns, 1);
    assert_eq!(stats.timers_live, 1);
    assert_eq!(stats.slow_callbacks, 0);
    assert_eq!(stats.longest_callback, Duration::from_millis(30));
    assert_eq!(stats.longest_turn, Duration::from_millis(60));
}

#[test]
fn the_watchdog_reports_a_stalled_loop_while_it_is_stalled() {
    let (dispatch, events) = capture();
    let clock = ManualClock::new();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (line_tx, line_rx) = mpsc::channel();
    let loop_clock = clock.clone();
    let loop_thread = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let reactor = diag_reactor(&loop_clock);
            let c = loop_clock.clone();
            line_tx.send(line!() + 1).unwrap();
            reactor.call_soon(move || {
                c.advance(Duration::from_millis(250));
                // Held until the test has seen the watchdog's report.
                release_rx.recv().unwrap();
            });
            reactor.iterate(Some(Duration::ZERO));
            reactor.statistics()
        })
    });
    let line = line_rx.recv().unwrap();
    let stall = events.next();
    assert!(stall.message.contains("stalled"), "{stall:?}");
    assert!(stall.location.starts_with(&here(line)), "{stall:?}");
    assert!(stall.message.contains("250ms"), "{stall:?}");
    release_tx.send(()).unwrap();
    let stats = loop_thread.join().unwrap();
    let returned = events.next();
    assert!(returned.message.contains("slow callback"), "{returned:?}");
    assert!(returned.location.starts_with(&here(line)), "{returned:?}");
    assert_eq!(stats.stalls_detected, 1);
    assert_eq!(stats.slow_callbacks, 1);
}

/// The calls of a turn are watched as one run (the site is published once
/// for a burst from one line): the one that stalls, behind quick ones from
/// the same line, is still named while it is stalled, and timed on its own.
#[test]
fn a_stalled_call_from_a_thread_in_a_burst_is_reported_while_it_is_stalled() {
    let (dispatch, events) = capture();
    let clock = ManualClock::new();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (line_tx, line_rx) = mpsc::channel();
    let loop_clock = clock.clone();
    let loop_thread = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            let reactor = diag_reactor(&loop_clock);
            let remote = reactor.remote();
            let release_rx = Arc::new(Mutex::new(release_rx));
            let line = line!() + 5;
            for i in 0..5 {
                let c = loop_clock.clone();
                let release_rx = release_rx.clone();
                remote
                    .call_from_thread(move || {
                        if i == 3 {
                            c.advance(Duration::from_millis(250));
                            // Held until the test has seen the report.
                            release_rx.lock().unwrap().recv().unwrap();
                        } else {
                            c.advance(Duration::from_millis(10));
                        }
                    })
                    .unwrap();
            }
            line_tx.send(line).unwrap();
            reactor.iterate(Some(Duration::ZERO));
            reactor.statistics()
        })
    });
    let line = line_rx.recv().unwrap();
    let stall = events.next();
    assert!(stall.message.contains("stalled"), "{stall:?}");
    assert!(stall.message.contains("call from thread"), "{stall:?}");
    assert!(stall.location.starts_with(&here(line)), "{stall:?}");
    assert!(stall.message.contains("250ms"), "{stall:?}");
    release_tx.send(()).unwrap();
    let stats = loop_thread.join().unwrap();
    let slow = events.slow();
    assert_eq!(slow.len(), 1, "{slow:?}");
    assert!(slow[0].location.starts_with(&here(line)), "{slow:?}");
    assert!(slow[0].message.contains("250ms"), "{slow:?}");
    assert_eq!(stats.stalls_detected, 1);
    assert_eq!(stats.slow_callbacks, 1);
    assert_eq!(stats.calls_run, 5);
    assert_eq!(stats.longest_callback, Duration::from_millis(250));
}

#[test]
fn a_long_blocking_call_is_logged_with_its_callers_line_and_again_when_it_returns() {
    let (dispatch, events) = capture();
    let reactor = Reactor::builder()
        .blocking_call_threshold(Some(Duration::from_millis(1)))
        .build()
        .unwrap();
    let remote = reactor.remote();
    let (line_tx, line_rx) = mpsc::channel();
    let caller = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || {
            line_tx.send(line!() + 1).unwrap();
            remote.blocking_call(|| 7)
        })
    });
    let line = line_rx.recv().unwrap();
    // The loop does not run until the warning is out.
    let waiting = events.next();
    assert!(waiting.message.contains("has waited"), "{waiting:?}");
    assert!(waiting.location.starts_with(&here(line)), "{waiting:?}");
    while !caller.is_finished() {
        reactor.iterate(Some(Duration::from_millis(10)));
    }
    assert_eq!(caller.join().unwrap(), Ok(7));
    let returned = events.next();
    assert!(returned.message.contains("returned after"), "{returned:?}");
    assert!(returned.location.starts_with(&here(line)), "{returned:?}");
}

#[test]
fn a_prompt_blocking_call_logs_nothing() {
    let (dispatch, events) = capture();
    let reactor = Reactor::builder()
        .blocking_call_threshold(Some(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let remote = reactor.remote();
    let caller = std::thread::spawn(move || {
        tracing::dispatcher::with_default(&dispatch, || remote.blocking_call(|| 7))
    });
    while !caller.is_finished() {
        reactor.iterate(Some(Duration::from_millis(10)));
    }
    assert_eq!(caller.join().unwrap(), Ok(7));
    assert!(events.all().is_empty(), "{:?}", events.all());
}

/// A manual clock that moves by `idle` whenever the loop asks how long it
/// may sleep: time that passes while the loop is idle.
struct IdleClock {
    inner: ManualClock,
    idle: Duration,
}

impl weft::Clock for IdleClock {
    fn now(&self) -> Duration {
        self.inner.now()
    }

    fn sleep_until(&self, _deadline: Duration) -> Option<Duration> {
        self.inner.advance(self.idle);
        Some(Duration::ZERO)
    }

    fn register_waker(&self, wake: Arc<dyn Fn() + Send + Sync>) {
        self.inner.register_waker(wake);
    }
}

#[test]
fn the_turn_histogram_records_each_turns_work_exactly() {
    use weft::Clock as _;
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    let remote = reactor.remote();
    let c = clock.clone();
    remote
        .call_from_thread(move || c.advance(Duration::from_millis(3)))
        .unwrap();
    reactor.iterate(Some(Duration::ZERO));
    // Time between turns belongs to no turn.
    clock.advance(Duration::from_secs(1));
    let c = clock.clone();
    reactor.call_soon(move || c.advance(Duration::from_micros(700)));
    reactor.iterate(Some(Duration::ZERO));
    reactor.iterate(Some(Duration::ZERO));
    let lag = reactor.turn_histogram();
    assert_eq!(lag.count(), 3);
    assert_eq!(lag.sum(), Duration::from_micros(3_700));
    assert_eq!(lag.largest(), Duration::from_millis(3));
    // 700 µs falls in [2^19, 2^20) ns; 3 ms in [2^21, 2^22); 0 in bucket 0.
    assert_eq!(lag.quantile(0.34), Duration::from_nanos(1 << 20));
    assert_eq!(lag.quantile(0.0), Duration::from_nanos(1));
    assert_eq!(lag.max(), Duration::from_nanos(1 << 22));
    assert_eq!(reactor.statistics().longest_turn, Duration::from_millis(3));
    assert_eq!(remote.turn_histogram(), reactor.handle().turn_histogram());
    assert_eq!(clock.now(), Duration::from_micros(1_003_700));
}

#[test]
fn time_the_loop_spends_idle_is_not_part_of_a_turn() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder()
        .clock(IdleClock {
            inner: clock.clone(),
            idle: Duration::from_secs(5),
        })
        .build()
        .unwrap();
    // A pending timer, so an idle turn asks the clock how long to sleep.
    reactor.call_later(Duration::from_secs(3600), || ());
    let c = clock.clone();
    reactor.call_soon(move || c.advance(Duration::from_millis(2)));
    // Turn 1 works (2 ms) and does not go idle; turn 2 goes idle for 5 s.
    reactor.iterate(Some(Duration::ZERO));
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(weft::Clock::now(&clock), Duration::from_millis(5_002));
    let lag = reactor.turn_histogram();
    assert_eq!(lag.count(), 2);
    assert_eq!(lag.sum(), Duration::from_millis(2));
    assert_eq!(reactor.statistics().longest_turn, Duration::from_millis(2));
}

#[test]
fn the_inbox_reports_how_long_its_oldest_call_has_waited() {
    let clock = ManualClock::new();
    let reactor = Reactor::builder().clock(clock.clone()).build().unwrap();
    let remote = reactor.remote();
    assert_eq!(reactor.statistics().inbox_oldest_age, Duration::ZERO);
    remote.call_from_thread(|| ()).unwrap();
    clock.advance(Duration::from_millis(5));
    remote.call_from_thread(|| ()).unwrap();
    clock.advance(Duration::from_millis(2));
    let stats = remote.statistics();
    assert_eq!(stats.inbox_depth, 2);
    assert_eq!(stats.inbox_oldest_age, Duration::from_millis(7));
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(reactor.statistics().inbox_oldest_age, Duration::ZERO);

    // A call queued while a callback holds the loop ages with it.
    let seen = Arc::new(Mutex::new(None));
    let (c, r, s) = (clock.clone(), remote.clone(), seen.clone());
    reactor.call_soon(move || {
        r.call_from_thread(|| ()).unwrap();
        c.advance(Duration::from_millis(30));
        *s.lock().unwrap() = Some(r.statistics().inbox_oldest_age);
    });
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(*seen.lock().unwrap(), Some(Duration::from_millis(30)));
    assert_eq!(
        reactor.statistics().inbox_oldest_age,
        Duration::from_millis(30)
    );
    reactor.iterate(Some(Duration::ZERO));
    assert_eq!(reactor.statistics().inbox_oldest_age, Duration::ZERO);
}

/// `calls_run` is counted once per batch, so a panic that propagates out of
/// a batch must still count the calls that ran, with diagnostics on or off.
#[test]
fn calls_run_counts_the_calls_before_a_propagated_panic() {
    for diag in [false, true] {
        let clock = ManualClock::new();
        let reactor = Reactor::builder()
            .clock(clock.clone())
            .panic_policy(weft::reactor::PanicPolicy::Propagate)
            .slow_callback_threshold(diag.then_some(Duration::from_millis(100)))
            .build()
            .unwrap();
        let remote = reactor.remote();
        remote.call_from_thread(|| ()).unwrap();
        remote.call_from_thread(|| panic!("boom")).unwrap();
        remote.call_from_thread(|| ()).unwrap();
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            reactor.iterate(Some(Duration::ZERO))
        }));
        assert!(outcome.is_err());
        assert_eq!(reactor.statistics().calls_run, 2, "diagnostics {diag}");
        reactor.iterate(Some(Duration::ZERO));
        let stats = reactor.statistics();
        assert_eq!(stats.calls_run, 3, "diagnostics {diag}");
        assert_eq!(stats.panics, 1, "diagnostics {diag}");
    }
}
