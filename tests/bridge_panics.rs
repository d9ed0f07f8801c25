//! Every await that can report a panic hands back the original payload
//! (tokio's `JoinError::into_panic`), so the caller can `resume_unwind` it.
//! The payloads here are `u32`s: before, only the message survived
//! (`"<non-string panic payload>"`), so every downcast below failed.

use std::panic::{AssertUnwindSafe, catch_unwind, panic_any, resume_unwind};
use std::thread;

use weft::threads::{ThreadWorker, Worker};
use weft::{Reactor, RunError, ThreadError};

fn payload_u32(payload: Box<dyn std::any::Any + Send>) -> Option<u32> {
    payload.downcast_ref::<u32>().copied()
}

#[test]
fn defer_to_thread_hands_back_the_original_payload() {
    let reactor = Reactor::new().unwrap();
    let d = reactor.defer_to_thread(|| -> u8 { panic_any(7_u32) });
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert!(err.is_panic());
    assert!(!err.is_cancelled());
    assert_eq!(err.to_string(), "job panicked: <non-string panic payload>");
    assert_eq!(payload_u32(err.into_panic()), Some(7));
}

#[test]
fn defer_to_worker_hands_back_the_original_payload() {
    let reactor = Reactor::new().unwrap();
    let worker = ThreadWorker::new().unwrap();
    let d = reactor.defer_to_worker(&worker, || -> u8 { panic_any(8_u32) });
    let err = reactor.run_until_complete(d).unwrap().unwrap_err();
    assert_eq!(payload_u32(err.try_into_panic().unwrap()), Some(8));
    worker.quit().unwrap();
}

#[test]
fn a_string_panic_keeps_its_payload_type_and_can_be_resumed() {
    let reactor = Reactor::new().unwrap();
    let n = std::hint::black_box(1);
    let d = reactor.defer_to_thread(move || -> u8 { panic!("boom {n}") });
    let payload = reactor
        .run_until_complete(d)
        .unwrap()
        .unwrap_err()
        .into_panic();
    let caught = catch_unwind(AssertUnwindSafe(move || resume_unwind(payload))).unwrap_err();
    assert_eq!(
        caught.downcast_ref::<String>().map(String::as_str),
        Some("boom 1")
    );
}

#[test]
fn a_panicking_local_task_hands_its_payload_to_its_awaiter() {
    let reactor = Reactor::new().unwrap();
    let task = reactor.spawn_local(async { panic_any::<u32>(9) });
    let err = reactor.run_until_complete(task).unwrap().unwrap_err();
    assert_eq!(payload_u32(err.into_panic()), Some(9));
}

#[test]
fn run_until_complete_hands_back_the_futures_payload() {
    let reactor = Reactor::new().unwrap();
    let err = reactor
        .run_until_complete(async { panic_any::<u32>(10) })
        .unwrap_err();
    assert!(matches!(
        err,
        RunError::Failed(ThreadError::Panicked { .. })
    ));
    assert_eq!(payload_u32(err.try_into_panic().unwrap()), Some(10));
}

#[test]
fn blocking_call_and_blocking_await_hand_back_the_payload() {
    let reactor = Reactor::new().unwrap();
    let remote = reactor.remote();
    let caller = thread::spawn(move || {
        let call = remote.blocking_call(|| -> u8 { panic_any(11_u32) });
        let awaited = remote.blocking_await(|| async { panic_any::<u32>(12) });
        let built = remote.blocking_await(|| -> std::future::Ready<u8> { panic_any(13_u32) });
        remote.stop();
        (call.unwrap_err(), awaited.unwrap_err(), built.unwrap_err())
    });
    reactor.run().unwrap();
    let (call, awaited, built) = caller.join().unwrap();
    assert!(call.is_panic());
    assert_eq!(payload_u32(call.try_into_panic().unwrap()), Some(11));
    assert_eq!(payload_u32(awaited.try_into_panic().unwrap()), Some(12));
    assert_eq!(payload_u32(built.try_into_panic().unwrap()), Some(13));
}

#[test]
fn clones_share_one_payload_and_later_takers_get_the_message() {
    let err = ThreadError::Panicked {
        message: "boom".into(),
    };
    let copy = err.clone();
    assert_eq!(err, copy);
    let first = err.into_panic();
    assert_eq!(
        first.downcast_ref::<String>().map(String::as_str),
        Some("boom")
    );
    let second = copy.into_panic();
    assert_eq!(
        second.downcast_ref::<String>().map(String::as_str),
        Some("boom")
    );
}

#[test]
fn into_panic_on_another_error_panics_and_try_into_panic_hands_it_back() {
    assert_eq!(
        ThreadError::Cancelled.try_into_panic().unwrap_err(),
        ThreadError::Cancelled
    );
    assert!(catch_unwind(|| ThreadError::Stopped.into_panic()).is_err());
}

#[test]
fn the_errors_stay_send_sync_and_unwind_safe_with_a_payload_inside() {
    fn check<T>()
    where
        T: Send + Sync + std::panic::UnwindSafe + std::panic::RefUnwindSafe + std::error::Error,
    {
    }
    check::<ThreadError>();
    check::<weft::CallError>();
    check::<RunError>();
    let boxed: Box<dyn std::error::Error + Send + Sync> = Box::new(ThreadError::Panicked {
        message: weft::Panic::from("boom"),
    });
    assert_eq!(boxed.to_string(), "job panicked: boom");
}
