//! The shared sleeps: registry order and sweeping, arming across reactors.

use std::future::poll_fn;
use std::time::Duration;

use hyper::rt::Timer;

use super::*;

/// Runs `test` on a thread of its own and propagates its panic: the sleep
/// registry is per thread, so each such test starts with an empty one.
fn on_a_fresh_thread(test: impl FnOnce() + Send + 'static) {
    std::thread::spawn(test).join().unwrap();
}

/// Polls `s` once (registering it) and expects it pending.
async fn register(s: &mut Pin<Box<dyn hyper::rt::Sleep>>) {
    poll_fn(|cx| {
        assert!(s.as_mut().poll(cx).is_pending());
        Poll::Ready(())
    })
    .await;
}

/// Awaits `s`; `false` if a generous guard (a weft sleep) fires first.
async fn finishes(s: Pin<Box<dyn hyper::rt::Sleep>>) -> bool {
    let handle = weft::reactor::current().unwrap();
    let mut guard = handle.sleep(Duration::from_secs(30));
    let mut s = s;
    let won = poll_fn(|cx| {
        if Pin::new(&mut guard).poll(cx).is_ready() {
            return Poll::Ready(false);
        }
        s.as_mut().poll(cx).map(|_| true)
    })
    .await;
    guard.cancel();
    won
}

#[test]
fn an_earlier_deadline_rearms_and_dropped_sleeps_leave_the_registry() {
    on_a_fresh_thread(|| {
        let reactor = weft::Reactor::new().unwrap();
        reactor
            .run_until_complete(async {
                let mut long = WeftTimer.sleep(Duration::from_secs(60));
                register(&mut long).await;
                assert_eq!(waiting_sleeps(), 1);
                // Armed for 60 s: the short one must arm earlier.
                assert!(finishes(WeftTimer.sleep(Duration::from_millis(5))).await);
                assert_eq!(
                    waiting_sleeps(),
                    1,
                    "the fired one left, the long one stays"
                );
                drop(long);
                assert_eq!(waiting_sleeps(), 0);
            })
            .unwrap();
    });
}

#[test]
fn a_call_armed_by_a_dropped_reactor_does_not_block_the_next_one() {
    on_a_fresh_thread(|| {
        let first = weft::Reactor::new().unwrap();
        // Armed for 40 ms from now; the reactor goes away before that
        // (if it did not, the call fired and this checks less).
        let soon = Instant::now() + Duration::from_millis(40);
        first
            .run_until_complete(async move {
                let mut s = WeftTimer.sleep_until(soon);
                register(&mut s).await;
            })
            .unwrap();
        drop(first);
        // A later deadline on a new reactor of the same thread: the old
        // call, which will never fire, must not stand in for its own.
        let second = weft::Reactor::new().unwrap();
        let fired = second
            .run_until_complete(finishes(
                WeftTimer.sleep_until(soon + Duration::from_millis(20)),
            ))
            .unwrap();
        assert!(fired);
        assert_eq!(waiting_sleeps(), 0);
    });
}

#[test]
fn many_sleeps_with_one_deadline_all_fire() {
    on_a_fresh_thread(|| {
        let reactor = weft::Reactor::new().unwrap();
        reactor
            .run_until_complete(async {
                let at = Instant::now() + Duration::from_millis(5);
                let mut all: Vec<_> = (0..10).map(|_| WeftTimer.sleep_until(at)).collect();
                for s in &mut all {
                    register(s).await;
                }
                assert_eq!(waiting_sleeps(), 10);
                for s in all {
                    assert!(finishes(s).await);
                }
                assert_eq!(waiting_sleeps(), 0);
            })
            .unwrap();
    });
}

#[test]
fn the_registry_yields_due_sleeps_in_deadline_order_and_skips_dropped_ones() {
    let t0 = Instant::now();
    let ms = |n| t0 + Duration::from_millis(n);
    let mut d = Deadlines::default();
    let a = d.insert(ms(30), 1, Waker::noop().clone());
    let b = d.insert(ms(10), 2, Waker::noop().clone()); // earlier: placed in front
    let c = d.insert(ms(20), 3, Waker::noop().clone());
    let e = d.insert(ms(40), 4, Waker::noop().clone());
    assert_eq!(d.first(), Some(ms(10)));
    d.remove(b);
    d.remove(b); // twice: nothing more
    assert_eq!((d.len(), d.first()), (3, Some(ms(20))));
    assert_eq!(d.take_due(ms(30)).len(), 2, "20 and 30, not the dropped 10");
    assert!(d.get_mut(a).is_none() && d.get_mut(c).is_none());
    assert!(d.get_mut(e).is_some());
    // The slots of a and c are free: a later sleep reuses one, and
    // their old keys still name nothing (nor remove it).
    let f = d.insert(ms(50), 5, Waker::noop().clone());
    assert!(f.0 == a.0 || f.0 == c.0);
    assert!(d.get_mut(a).is_none() && d.get_mut(c).is_none());
    d.remove(a);
    d.remove(c);
    assert!(d.get_mut(f).is_some());
    assert_eq!(d.len(), 2);
    // A later sleep dropped at the back leaves the queue on the next
    // insert, which then lands at the back.
    let late = d.insert(ms(90), 6, Waker::noop().clone());
    d.remove(late);
    let g = d.insert(ms(60), 7, Waker::noop().clone());
    assert_eq!(d.order.back(), Some(&(ms(60), g.0, 7)));
    assert_eq!(d.take_due(ms(100)).len(), 3);
    assert_eq!((d.len(), d.first()), (0, None));
}

#[test]
fn dropped_sleeps_behind_a_long_one_do_not_pile_up_in_the_queue() {
    let t0 = Instant::now();
    let mut d = Deadlines::default();
    // An idle keep-alive connection's sleep stays at the front...
    let long = d.insert(t0, 0, Waker::noop().clone());
    // ...while requests register and drop theirs behind it.
    for id in 1..10_000u64 {
        let k = d.insert(t0 + Duration::from_nanos(id), id, Waker::noop().clone());
        d.remove(k);
        assert!(
            d.order.len() <= 2 * d.len() + 65,
            "{} queued",
            d.order.len()
        );
    }
    assert_eq!(d.len(), 1);
    assert!(d.get_mut(long).is_some());
}

#[test]
fn a_sleep_first_polled_on_a_loop_registers_without_reading_the_clock_and_fires_even_if_due() {
    on_a_fresh_thread(|| {
        let reactor = weft::Reactor::new().unwrap();
        let past = Instant::now() - Duration::from_millis(5);
        let fired = reactor
            .run_until_complete(async move {
                let mut s = WeftTimer.sleep_until(past);
                // Already due, yet the first poll registers it (no clock
                // read on a loop's first poll): the armed call, due at
                // once, wakes it.
                register(&mut s).await;
                assert_eq!(waiting_sleeps(), 1);
                finishes(s).await
            })
            .unwrap();
        assert!(fired);
        assert_eq!(waiting_sleeps(), 0);
    });
}

#[test]
fn a_registered_sleep_polled_again_under_the_threads_next_reactor_still_fires() {
    on_a_fresh_thread(|| {
        let s = WeftTimer.sleep_until(Instant::now() + Duration::from_millis(30));
        let first = weft::Reactor::new().unwrap();
        let s = first
            .run_until_complete(async move {
                let mut s = s;
                register(&mut s).await;
                // Wrapped: a future handed back out of a future.
                Some(s)
            })
            .unwrap()
            .expect("handed back");
        // Its armed call went with the first reactor; the registry still
        // holds the sleep, so its next poll must arm a call of its own.
        drop(first);
        let second = weft::Reactor::new().unwrap();
        let fired = second.run_until_complete(finishes(s)).unwrap();
        assert!(fired);
        assert_eq!(waiting_sleeps(), 0);
    });
}
