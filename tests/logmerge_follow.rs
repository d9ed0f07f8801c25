//! The `logmerge` example with `--follow`, in-process: lines appended to a
//! followed file reach the merged output through the loop's inotify watch.
//! The polling fallback is set to an hour, so only a file-change event can
//! deliver them in time; each step waits for the previous line to come out
//! (read from a FIFO), so nothing sleeps. Its own binary: the test stops the
//! example with SIGINT, which is process-wide.

#![cfg(target_os = "linux")]

#[allow(dead_code)]
#[path = "../examples/logmerge.rs"]
mod logmerge;

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::mpsc;
use std::time::Duration;

const PATIENCE: Duration = Duration::from_secs(20);

fn append(path: &Path, text: &str) {
    let mut f = OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

#[test]
fn follow_merges_appended_lines_as_they_are_written() {
    let dir: PathBuf =
        std::env::temp_dir().join(format!("weft-logmerge-follow-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (a, b, out) = (dir.join("a.log"), dir.join("b.log"), dir.join("out"));
    std::fs::write(&a, "a1\n").unwrap();
    std::fs::write(&b, "b1\n").unwrap();
    assert!(Command::new("mkfifo").arg(&out).status().unwrap().success());

    let argv: Vec<std::ffi::OsString> = vec![
        "--follow".into(),
        "--interval".into(),
        "3600000".into(),
        "-o".into(),
        out.clone().into(),
        a.clone().into(),
        b.clone().into(),
    ];
    let merger = std::thread::spawn(move || {
        let args = logmerge::parse_args(argv.into_iter()).unwrap().unwrap();
        logmerge::run(args)
    });
    // Opening the FIFO waits for the writer; lines arrive as flushed.
    let (tx, rx) = mpsc::channel();
    let fifo = out.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(std::fs::File::open(fifo).unwrap()).lines() {
            if tx.send(line.unwrap()).is_err() {
                break;
            }
        }
    });
    let next = || rx.recv_timeout(PATIENCE).expect("a merged line");
    let mut first = [next(), next()];
    first.sort();
    assert_eq!(first, ["a1", "b1"]);

    append(&a, "a2\n");
    assert_eq!(next(), "a2");
    append(&b, "b2\n");
    assert_eq!(next(), "b2");
    // A line written in two pieces comes out whole.
    append(&a, "a3 ");
    append(&a, "end\n");
    assert_eq!(next(), "a3 end");
    // Rotation: a new file under the followed name is read from the start.
    std::fs::rename(&a, dir.join("a.log.1")).unwrap();
    std::fs::write(&a, "a4\n").unwrap();
    assert_eq!(next(), "a4");

    signal_hook::low_level::raise(signal_hook::consts::SIGINT).unwrap();
    let code = merger.join().unwrap().unwrap();
    assert_eq!(code, ExitCode::SUCCESS);
    reader.join().unwrap();
    assert!(rx.try_recv().is_err(), "no stray output");
    let _ = std::fs::remove_dir_all(&dir);
}
