//! Regression tests for the bridge hazards of issue 8 ("Core, second pass"):
//! each failed against the code before its fix.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weft::reactor::{Phase, SystemEvent};
use weft::threads::{Task, Worker, memory_worker};
use weft::{AlreadyQuit, Deferred, Reactor, ThreadError, ThreadPool};

/// Sets its flag when dropped: shows when a closure's captures go away.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn record<T: 'static>(d: Deferred<T>) -> Rc<RefCell<Option<Result<T, ThreadError>>>> {
    let seen = Rc::new(RefCell::new(None));
    let s = seen.clone();
    d.add_both(move |r| *s.borrow_mut() = Some(r));
    seen
}

#[test]
fn a_result_posted_before_shutdown_fails_nothing_it_is_delivered() {
    // The job completes during shutdown, before the bridge's own `During`
    // step: its result is in the inbox when that step runs, and must win
    // over "fail what is left as cancelled".
    let reactor = Reactor::builder()
        .shutdown_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let (worker, perform) = memory_worker();
    reactor
        .handle()
        .add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move || {
            assert!(perform.perform());
        });
    let seen = record(reactor.defer_to_worker(&worker, || 5));
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(*seen.borrow(), Some(Ok(5)));
}

#[test]
fn a_job_refused_by_a_stopped_pool_resolves_stopped_and_posts_nothing() {
    let reactor = Reactor::new().unwrap();
    let pool = ThreadPool::new(0, 2).unwrap();
    pool.start();
    pool.stop();
    let seen = record(reactor.defer_to_thread_pool(&pool, || 1));
    assert_eq!(*seen.borrow(), Some(Err(ThreadError::Stopped)));
    assert_eq!(
        reactor.handle().statistics().calls_from_thread,
        0,
        "a phantom completion was posted"
    );
}

#[test]
fn a_job_refused_by_a_quit_worker_resolves_stopped_and_posts_nothing() {
    let reactor = Reactor::new().unwrap();
    let (worker, _perform) = memory_worker();
    worker.quit().unwrap();
    let seen = record(reactor.defer_to_worker(&worker, || 1));
    assert_eq!(*seen.borrow(), Some(Err(ThreadError::Stopped)));
    assert_eq!(
        reactor.handle().statistics().calls_from_thread,
        0,
        "a phantom completion was posted"
    );
}

#[test]
fn cancelling_unstarted_work_drops_its_closure_at_once() {
    let reactor = Reactor::new().unwrap();
    let (worker, perform) = memory_worker();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let d = reactor.defer_to_worker(&worker, move || {
        let _keep = &flag;
        r.store(true, Ordering::SeqCst);
    });
    d.cancel();
    assert!(
        dropped.load(Ordering::SeqCst),
        "the cancelled closure is still queued"
    );
    assert!(perform.perform()); // the worker reaches the empty job
    assert!(!ran.load(Ordering::SeqCst));
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(ThreadError::Cancelled)
    );
}

/// A worker that accepts work and drops it unrun.
struct Dropper;

impl Worker for Dropper {
    fn do_work(&self, task: Task) -> Result<(), AlreadyQuit<Task>> {
        drop(task);
        Ok(())
    }

    fn quit(&self) -> Result<(), AlreadyQuit> {
        Ok(())
    }
}

#[test]
fn work_a_worker_drops_unrun_resolves_cancelled() {
    let reactor = Reactor::new().unwrap();
    let d = reactor.defer_to_worker(&Dropper, || 1);
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(ThreadError::Cancelled)
    );
}

#[test]
fn a_before_shutdown_trigger_can_flush_work_through_the_pool() {
    let reactor = Reactor::new().unwrap();
    let _ = reactor.thread_pool(); // the pool exists before shutdown
    let seen = Rc::new(RefCell::new(None));
    let in_thread = Arc::new(AtomicBool::new(false));
    {
        let seen = seen.clone();
        let in_thread = in_thread.clone();
        reactor.handle().add_system_event_trigger(
            Phase::Before,
            SystemEvent::Shutdown,
            move || {
                let h = weft::reactor::current().unwrap();
                h.call_in_thread(move || in_thread.store(true, Ordering::SeqCst))
                    .unwrap();
                let d = h.defer_to_thread(|| 7);
                d.map(move |v| *seen.borrow_mut() = Some(v))
            },
        );
    }
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(*seen.borrow(), Some(7));
    assert!(in_thread.load(Ordering::SeqCst));
}

#[test]
fn a_before_shutdown_trigger_can_use_the_pool_on_first_use() {
    let reactor = Reactor::new().unwrap();
    let seen = Rc::new(RefCell::new(None));
    {
        let seen = seen.clone();
        reactor.handle().add_system_event_trigger(
            Phase::Before,
            SystemEvent::Shutdown,
            move || {
                let h = weft::reactor::current().unwrap();
                h.defer_to_thread(|| 8)
                    .map(move |v| *seen.borrow_mut() = Some(v))
            },
        );
    }
    reactor.stop();
    reactor.run().unwrap();
    assert_eq!(*seen.borrow(), Some(8));
    // The pool was stopped in the `During` phase: it takes no more work.
    assert!(reactor.thread_pool().call_in_thread(|| ()).is_err());
}

#[test]
fn work_submitted_after_shutdown_still_resolves_stopped() {
    let reactor = Reactor::new().unwrap();
    reactor.stop();
    reactor.run().unwrap();
    let seen = record(reactor.defer_to_thread(|| 1));
    assert_eq!(*seen.borrow(), Some(Err(ThreadError::Stopped)));
}

/// Captures the `location` field of every event.
#[derive(Clone, Default)]
struct Locations(Arc<Mutex<Vec<String>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Locations {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        struct Visit<'a>(&'a Mutex<Vec<String>>);
        impl tracing::field::Visit for Visit<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "location" {
                    self.0.lock().unwrap().push(format!("{value:?}"));
                }
            }
        }
        event.record(&mut Visit(&self.0));
    }
}

#[test]
fn a_panicking_completion_is_logged_at_the_submitters_location() {
    use tracing_subscriber::layer::SubscriberExt;

    let locations = Locations::default();
    let subscriber = tracing_subscriber::registry().with(locations.clone());
    let line = tracing::subscriber::with_default(subscriber, || {
        let reactor = Reactor::new().unwrap();
        let line = line!() + 1;
        let d = reactor.defer_to_thread(|| 1);
        d.add_both(|_| panic!("callback"));
        let remote = reactor.remote();
        reactor
            .handle()
            .call_later(Duration::from_millis(1), move || {
                // Stop once the completion (and its panic) went through.
                remote.stop();
            });
        let _ = reactor.run();
        line
    });
    let want = format!("{}:{line}:", file!());
    let got = locations.0.lock().unwrap().clone();
    assert!(
        got.iter().any(|l| l.contains(&want)),
        "no event at {want}; got {got:?}"
    );
}

#[test]
fn cancelling_unstarted_reactor_pool_work_withdraws_it_from_the_backlog() {
    let reactor = Reactor::new().unwrap();
    reactor.suggest_thread_pool_size(1).unwrap();
    let (started_tx, started_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let blocker = reactor.defer_to_thread(move || {
        started_tx.send(()).unwrap();
        release_rx.recv().unwrap();
    });
    reactor.run_until_complete(async {}).unwrap(); // starts the pool
    started_rx.recv().unwrap(); // its only thread is busy now
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = DropFlag(dropped.clone());
    let d = reactor.defer_to_thread(move || drop(flag));
    let pool = reactor.thread_pool();
    assert_eq!(pool.statistics().backlog, 1);
    d.cancel();
    assert_eq!(
        pool.statistics().backlog,
        0,
        "the cancelled job is still queued"
    );
    assert!(dropped.load(Ordering::SeqCst));
    release_tx.send(()).unwrap();
    assert_eq!(reactor.run_until_complete(blocker).unwrap(), Ok(()));
    assert_eq!(
        reactor.run_until_complete(d).unwrap(),
        Err(ThreadError::Cancelled)
    );
}

/// The reactor joins its pool on the loop thread at shutdown. A pool thread
/// that is waiting in `blocking_call_from_thread` then needs the loop: the
/// join answers the inbox while it waits, so the call gets its value and the
/// join ends with every thread gone (before: the join waited out the whole
/// shutdown deadline, here an hour, while the call waited for the loop).
#[test]
fn the_shutdown_pool_join_answers_a_pool_thread_blocked_on_the_loop() {
    let reactor = Reactor::builder()
        .shutdown_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    let (release, released) = std::sync::mpsc::channel::<()>();
    let got = Arc::new(Mutex::new(None));
    // Registered before the pool exists, so it runs before the bridge's own
    // During trigger (the join).
    reactor.add_system_event_trigger(Phase::During, SystemEvent::Shutdown, move || {
        release.send(()).unwrap();
    });
    let remote = reactor.remote();
    let g = got.clone();
    reactor
        .call_in_thread(move || {
            released.recv().unwrap();
            *g.lock().unwrap() = Some(remote.blocking_call(|| 5));
        })
        .unwrap();
    let pool = reactor.thread_pool();
    reactor.call_when_running(|| weft::reactor::current().unwrap().stop());
    reactor.run().unwrap();
    assert_eq!(got.lock().unwrap().take().map(|r| r.ok()), Some(Some(5)));
    assert_eq!(pool.statistics().threads_alive, 0);
}
