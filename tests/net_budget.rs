//! The co-operative I/O budget: a task whose reads always succeed still
//! lets the other tasks on the loop run.

use std::cell::Cell;
use std::rc::Rc;

use futures_lite::AsyncReadExt;
use weft::Reactor;
use weft::net::UnixStream;

#[test]
fn a_reader_that_never_blocks_still_yields_to_other_tasks() {
    const BYTES: usize = 64 * 1024;
    let reactor = Reactor::new().unwrap();
    // All the data is in the kernel before the reader starts, and the peer
    // is closed: no read ever returns WouldBlock.
    let (std_a, std_b) = std::os::unix::net::UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut &std_a, &vec![1u8; BYTES]).unwrap();
    drop(std_a);
    std_b.set_nonblocking(true).unwrap();
    let reader_done = Rc::new(Cell::new(false));
    let other_polls = Rc::new(Cell::new(0u32));
    {
        let (done, polls) = (reader_done.clone(), other_polls.clone());
        reactor
            .spawn_local(async move {
                while !done.get() {
                    polls.set(polls.get() + 1);
                    futures_lite::future::yield_now().await;
                }
            })
            .detach();
    }
    let done = reader_done.clone();
    let total = reactor
        .run_until_complete(async move {
            let mut s = UnixStream::from_std(std_b).unwrap();
            let mut total = 0;
            let mut byte = [0u8; 1];
            loop {
                let n = s.read(&mut byte).await.unwrap();
                if n == 0 {
                    break;
                }
                total += n;
            }
            done.set(true);
            total
        })
        .unwrap();
    assert_eq!(total, BYTES);
    // BYTES + 1 reads at 128 per poll: the other task ran at least once per
    // yield (about 512 times); without the budget it would run once.
    let polls = other_polls.get();
    assert!(
        polls >= (BYTES / 128) as u32 - 1,
        "other task polled {polls} times"
    );
}
