//! Ported from Twisted `src/twisted/_threads/test/test_convenience.py` (`Quit`).

use weft::AlreadyQuit;
use weft::threads::Quit;

#[test]
fn a_new_quit_flag_is_not_set() {
    assert!(!Quit::new().is_set());
}

#[test]
fn set_makes_the_flag_set() {
    let quit = Quit::new();
    quit.set().unwrap();
    assert!(quit.is_set());
}

#[test]
fn check_on_an_unset_flag_succeeds() {
    assert_eq!(Quit::new().check(), Ok(()));
}

#[test]
fn check_after_set_is_already_quit() {
    let quit = Quit::new();
    quit.set().unwrap();
    assert_eq!(quit.check(), Err(AlreadyQuit(())));
}

#[test]
fn second_quit_set_is_already_quit() {
    let quit = Quit::new();
    quit.set().unwrap();
    assert_eq!(quit.set(), Err(AlreadyQuit(())));
}

// weft: the flag is atomic, so exactly one of many racing `set`s wins.
#[test]
fn exactly_one_of_many_concurrent_sets_wins() {
    let quit = Quit::new();
    let wins = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8).map(|_| s.spawn(|| quit.set().is_ok())).collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .filter(|&won| won)
            .count()
    });
    assert_eq!(wins, 1);
}
