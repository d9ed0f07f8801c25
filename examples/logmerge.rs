//! Merges several log files into one output, in the order their lines arrive:
//! each file is read with blocking reads on its own worker thread, and the
//! merge happens on the loop with no lock.
//! Run: `cargo run --release --example logmerge -- a.log b.log -o merged.log`
//! (add `--follow` to keep reading as the files grow, until Ctrl-C)
//!
//! This is the seed program from *Effective Python* ("use threads and
//! coroutines together"): `tail_file` threads feeding one output, first with
//! a `Lock` around `write`, then with `run_in_executor` and
//! `run_coroutine_threadsafe` so that the event loop owns the output. Here:
//!
//! - each input gets a [`ThreadWorker`] (one long-lived thread of its own: a
//!   follower never ends, and long-lived blockers must not occupy the shared
//!   reactor pool that short jobs need), and its reader runs there through
//!   [`defer_to_worker`](weft::reactor::Handle::defer_to_worker), whose
//!   `Deferred` tells the loop when the file is done or why it failed;
//! - a reader sends its lines with `call_from_thread`, a batch per `read`;
//! - the loop owns the output and the counters (`Rc<RefCell<Merge>>`); the
//!   `Send` closures from the readers reach it as the reactor's loop-local
//!   value (`Handle::with_local`), with no `thread_local`.
//!
//! With `--follow` a reader that reached end of file waits until its file
//! changes, then reads again (a truncated file is re-read from the start, a
//! replaced one is reopened) until Ctrl-C. The waiting is event-driven: on
//! Linux the loop owns one inotify descriptor, registered with the reactor
//! like a socket (`weft::net::Async`), watching each file and its directory
//! (for rotation); each event wakes the readers of that file. Where inotify
//! is unavailable (other systems, watch limits) a reader falls back to
//! polling every `--interval`.
//! A file that cannot be opened or read, or that vanishes while followed, is
//! reported on stderr and the others go on. The summary goes to stderr.

use std::cell::RefCell;
use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use weft::reactor::{Phase, SystemEvent};
use weft::threads::{ThreadWorker, Worker};
use weft::{Cancelled, Deferred, Reactor, Remote};

const USAGE: &str = "\
usage: logmerge [--follow] [--interval MS] [-o OUTPUT] FILE...

Merges the lines of FILE... into OUTPUT (default: stdout) in arrival order.

  -o, --output OUTPUT   write the merged lines to OUTPUT (created or truncated)
  -f, --follow          keep reading as the files grow, until Ctrl-C
      --interval MS     how often a follower polls after end of file when file
                        notifications are unavailable (default 200)
  -h, --help            show this help";

/// Lines sent to the loop in one `call_from_thread`, at most.
const MAX_BATCH: usize = 1024;

pub(crate) struct Args {
    files: Vec<PathBuf>,
    output: Option<PathBuf>,
    follow: bool,
    interval: Duration,
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args_os().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(msg) => {
            eprintln!("logmerge: {msg}");
            eprintln!("{}", USAGE.lines().next().unwrap_or_default());
            eprintln!("Try 'logmerge --help' for more information.");
            return ExitCode::from(2);
        }
    };
    match run(args) {
        Ok(code) => code,
        Err(msg) => {
            eprintln!("logmerge: {msg}");
            ExitCode::FAILURE
        }
    }
}

pub(crate) fn parse_args(
    mut argv: impl Iterator<Item = std::ffi::OsString>,
) -> Result<Option<Args>, String> {
    let mut args = Args {
        files: Vec::new(),
        output: None,
        follow: false,
        interval: Duration::from_millis(200),
    };
    let mut only_files = false;
    while let Some(arg) = argv.next() {
        let Some(s) = arg.to_str().filter(|_| !only_files) else {
            args.files.push(arg.into());
            continue;
        };
        match s {
            "--" => only_files = true,
            "-h" | "--help" => return Ok(None),
            "-f" | "--follow" => args.follow = true,
            "-o" | "--output" => {
                if args.output.is_some() {
                    return Err("the output is given twice".into());
                }
                let path = argv.next().ok_or(format!("{s} needs a file name"))?;
                args.output = Some(path.into());
            }
            "--interval" => {
                let ms = argv
                    .next()
                    .and_then(|v| v.to_str().and_then(|v| v.parse::<u64>().ok()))
                    .filter(|&ms| ms > 0)
                    .ok_or("--interval needs a number of milliseconds above 0")?;
                args.interval = Duration::from_millis(ms);
            }
            "-" => return Err("reading stdin is not supported".into()),
            opt if opt.starts_with('-') => return Err(format!("unknown option {opt:?}")),
            _ => args.files.push(arg.into()),
        }
    }
    if args.files.is_empty() {
        return Err("no input files".into());
    }
    if let Some(out) = &args.output {
        // Merging a file into itself would feed on its own output.
        if let Ok(out) = out.canonicalize() {
            if let Some(f) = args
                .files
                .iter()
                .find(|f| f.canonicalize().is_ok_and(|f| f == out))
            {
                return Err(format!("{} is both an input and the output", f.display()));
            }
        }
    }
    Ok(Some(args))
}

pub(crate) fn run(args: Args) -> Result<ExitCode, String> {
    let reactor = Reactor::builder()
        .handle_signals(true)
        .shutdown_timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| format!("cannot create the reactor: {e}"))?;

    let (out, out_name): (Box<dyn Write>, String) = match &args.output {
        Some(path) => {
            let file =
                File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            (Box::new(BufWriter::new(file)), path.display().to_string())
        }
        None => (Box::new(BufWriter::new(io::stdout())), "stdout".into()),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let wakes: Vec<Arc<Wake>> = args.files.iter().map(|_| Arc::default()).collect();
    // Which readers inotify serves (the others poll every `--interval`).
    let watched: Vec<Arc<AtomicBool>> = args.files.iter().map(|_| Arc::default()).collect();
    if args.follow {
        watch::start(&args.files, &wakes, &watched);
    }
    let merge = Rc::new(RefCell::new(Merge {
        out,
        follow: args.follow,
        files: args
            .files
            .iter()
            .map(|p| FileState {
                name: p.display().to_string(),
                lines: 0,
                error: None,
            })
            .collect(),
        open: args.files.len(),
        write_failed: false,
        broken_pipe: false,
        flush_scheduled: false,
        all_done: Vec::new(),
        stop: stop.clone(),
    }));
    registry::install(&reactor, merge.clone());

    // Shutdown (all files done, Ctrl-C, or a write error): tell the readers to
    // finish, and wait for their last lines before the loop exits.
    {
        let merge = merge.clone();
        let stop = stop.clone();
        let wakes = wakes.clone();
        reactor.add_system_event_trigger(Phase::Before, SystemEvent::Shutdown, move || {
            stop.store(true, Ordering::Release);
            // Followers waiting at end of file see the stop now.
            for w in &wakes {
                w.bump();
            }
            merge.borrow_mut().when_all_done()
        });
    }

    let mut workers = Vec::new();
    for (idx, path) in args.files.iter().enumerate() {
        let name = format!("logmerge-{idx}");
        let worker = match ThreadWorker::spawn(std::thread::Builder::new().name(name)) {
            Ok(w) => w,
            Err(e) => {
                merge
                    .borrow_mut()
                    .finished(idx, Err(format!("cannot start a reader thread: {e}")));
                continue;
            }
        };
        let reader = Reader {
            idx,
            path: path.clone(),
            remote: reactor.remote(),
            stop: stop.clone(),
            follow: args.follow,
            interval: args.interval,
            wake: wakes[idx].clone(),
            watched: watched[idx].clone(),
        };
        let done = reactor.defer_to_worker(&worker, move || reader.run());
        let merge = merge.clone();
        done.add_both(move |result| {
            let result = result.unwrap_or_else(|e| Err(format!("reader failed: {e}")));
            merge.borrow_mut().finished(idx, result);
        });
        workers.push(worker);
    }

    let started = Instant::now();
    if merge.borrow().open > 0 {
        reactor.run().map_err(|e| format!("the loop failed: {e}"))?;
    }
    for worker in &workers {
        let _ = worker.quit();
    }

    let mut merge = merge.borrow_mut();
    merge.flush();
    Ok(merge.summary(&out_name, started.elapsed()))
}

/// One input, as the loop sees it.
struct FileState {
    name: String,
    lines: u64,
    error: Option<String>,
}

/// The loop-owned merge: the output and the counters. No lock: only the loop
/// thread touches it.
struct Merge {
    out: Box<dyn Write>,
    follow: bool,
    files: Vec<FileState>,
    /// Readers not yet finished.
    open: usize,
    write_failed: bool,
    broken_pipe: bool,
    flush_scheduled: bool,
    all_done: Vec<weft::Resolver<(), Cancelled>>,
    stop: Arc<AtomicBool>,
}

impl Merge {
    fn lines(&mut self, idx: usize, batch: Vec<Vec<u8>>) {
        if self.write_failed {
            return;
        }
        self.files[idx].lines += batch.len() as u64;
        for line in &batch {
            if let Err(e) = self.out.write_all(line) {
                self.write_error(e);
                return;
            }
        }
        if self.follow && !self.flush_scheduled {
            // Following: make lines visible promptly, one flush per loop turn.
            self.flush_scheduled = true;
            if let Some(reactor) = weft::reactor::current() {
                reactor.call_soon(|| {
                    registry::with(|m| {
                        m.flush_scheduled = false;
                        m.flush();
                    })
                });
            }
        }
    }

    fn note(&self, idx: usize, message: &str) {
        eprintln!("logmerge: {}: {message}", self.files[idx].name);
    }

    fn finished(&mut self, idx: usize, result: Result<(), String>) {
        if let Err(e) = result {
            self.note(idx, &e);
            self.files[idx].error = Some(e);
        }
        self.open -= 1;
        if self.open == 0 {
            for r in self.all_done.drain(..) {
                let _ = r.callback(());
            }
            if let Some(reactor) = weft::reactor::current() {
                reactor.stop();
            }
        }
    }

    fn when_all_done(&mut self) -> Deferred<(), Cancelled> {
        if self.open == 0 {
            return Deferred::succeed(());
        }
        let d = Deferred::new();
        self.all_done.push(d.resolver());
        d
    }

    fn flush(&mut self) {
        if self.write_failed {
            return;
        }
        if let Err(e) = self.out.flush() {
            self.write_error(e);
        }
    }

    fn write_error(&mut self, e: io::Error) {
        self.write_failed = true;
        if e.kind() == io::ErrorKind::BrokenPipe {
            // The reader of our output went away (`| head`): not an error.
            self.broken_pipe = true;
        } else {
            eprintln!("logmerge: cannot write the output: {e}");
        }
        self.stop.store(true, Ordering::Release);
        if let Some(reactor) = weft::reactor::current() {
            reactor.stop();
        }
    }

    fn summary(&self, out_name: &str, elapsed: Duration) -> ExitCode {
        if self.broken_pipe {
            return ExitCode::SUCCESS;
        }
        let total: u64 = self.files.iter().map(|f| f.lines).sum();
        let failed = self.files.iter().filter(|f| f.error.is_some()).count();
        eprintln!(
            "logmerge: {total} lines from {} file(s) into {out_name} in {:.2} s",
            self.files.len(),
            elapsed.as_secs_f64()
        );
        let width = self.files.iter().map(|f| f.name.len()).max().unwrap_or(0);
        for f in &self.files {
            let status = f.error.as_deref().unwrap_or("ok");
            eprintln!("  {:<width$}  {:>10} lines  {status}", f.name, f.lines);
        }
        if self.write_failed || failed > 0 {
            ExitCode::FAILURE
        } else {
            ExitCode::SUCCESS
        }
    }
}

/// How closures sent from reader threads find the loop's `Merge`.
///
/// A `call_from_thread` closure must be `Send`, so it cannot carry the
/// `Rc`; it looks the merge up when it runs, on the loop thread, as the
/// reactor's loop-local value.
mod registry {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::Merge;

    /// Makes `merge` the reactor's loop-local merge.
    pub(super) fn install(reactor: &weft::Reactor, merge: Rc<RefCell<Merge>>) {
        if let Err(e) = reactor.insert_local(merge) {
            eprintln!("logmerge: cannot install the merge: {e}");
        }
    }

    /// Runs `f` on the merge; does nothing off the loop thread.
    pub(super) fn with(f: impl FnOnce(&mut Merge)) {
        let merge = weft::reactor::current()
            .and_then(|h| h.with_local(|m: &mut Rc<RefCell<Merge>>| m.clone()).ok());
        debug_assert!(merge.is_some(), "the merge is used on the loop thread");
        if let Some(merge) = merge {
            f(&mut merge.borrow_mut());
        }
    }
}

/// A blocking reader for one file, run on its own worker thread.
struct Reader {
    idx: usize,
    path: PathBuf,
    remote: Remote,
    stop: Arc<AtomicBool>,
    follow: bool,
    interval: Duration,
    /// Bumped by the loop when the file may have changed (or on stop).
    wake: Arc<Wake>,
    /// Inotify serves this file; otherwise poll every `interval`.
    watched: Arc<AtomicBool>,
}

impl Reader {
    /// Reads (and with `follow`, follows) the file; `Ok` at end of file or on
    /// stop, `Err` with a message when it cannot go on.
    fn run(self) -> Result<(), String> {
        let file = File::open(&self.path).map_err(|e| format!("cannot open: {e}"))?;
        let mut identity = identity(&file);
        let mut input = BufReader::with_capacity(64 * 1024, file);
        let mut pos: u64 = 0;
        // A line still being written (no newline yet): kept until it ends.
        let mut partial: Vec<u8> = Vec::new();
        let mut batch: Vec<Vec<u8>> = Vec::new();
        loop {
            if self.stop.load(Ordering::Acquire) {
                break;
            }
            // Taken before the read: a change after it is never missed.
            let seen = self.wake.generation();
            let n = input
                .read_until(b'\n', &mut partial)
                .map_err(|e| format!("read failed: {e}"))?;
            pos += n as u64;
            if partial.ends_with(b"\n") {
                batch.push(std::mem::take(&mut partial));
            }
            // Send what one read brought in: the batch ends where the
            // buffer does (or at MAX_BATCH lines).
            if !batch.is_empty() && (input.buffer().is_empty() || batch.len() >= MAX_BATCH) {
                self.send(std::mem::take(&mut batch))?;
            }
            if n > 0 {
                continue;
            }
            // End of file.
            if !self.follow {
                break;
            }
            // Check for rotation or truncation before waiting: their events
            // may have been counted in `seen` already, while this read still
            // went to the old file.
            match self.metadata_after_rotation() {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.stop.load(Ordering::Acquire) {
                        break;
                    }
                    self.send_last(partial)?;
                    return Err("vanished while being followed".into());
                }
                Err(e) => return Err(format!("cannot check the file: {e}")),
                Ok(meta) => {
                    if identity.is_some() && identity != identity_of(&meta) {
                        // Rotated: a new file under the same name.
                        self.note("replaced; reading the new file from the start");
                        let file =
                            File::open(&self.path).map_err(|e| format!("cannot reopen: {e}"))?;
                        identity = identity_of(&meta);
                        input = BufReader::with_capacity(64 * 1024, file);
                        pos = 0;
                        continue;
                    } else if meta.len() < pos {
                        self.note("truncated; reading from the start");
                        input
                            .seek(SeekFrom::Start(0))
                            .map_err(|e| format!("cannot rewind: {e}"))?;
                        pos = 0;
                        continue;
                    }
                }
            }
            // Nothing new since `seen` (taken before the read): wait for a
            // change, or poll where there are no notifications.
            let poll = (!self.watched.load(Ordering::Acquire)).then_some(self.interval);
            self.wake.wait_past(seen, &self.stop, poll);
        }
        self.send_last(partial)
    }

    /// The file's metadata; if the name is missing, waits up to one
    /// `--interval` for a rotation's new file before calling it gone,
    /// looking again at each change notification (one can arrive between
    /// the rename and the create).
    fn metadata_after_rotation(&self) -> io::Result<std::fs::Metadata> {
        // A missing file is given one polling interval to come back: a
        // wake in between (a late event of the old file, a spurious
        // condvar wake-up) only means "look again", not "gone".
        let deadline = Instant::now().checked_add(self.interval);
        loop {
            // Read before looking, so a change in between is not missed.
            let seen = self.wake.generation();
            match std::fs::metadata(&self.path) {
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let left = match deadline {
                        Some(d) => d.saturating_duration_since(Instant::now()),
                        None => self.interval,
                    };
                    if left.is_zero() || self.stop.load(Ordering::Acquire) {
                        return Err(e);
                    }
                    self.wake.wait_past(seen, &self.stop, Some(left));
                }
                other => return other,
            }
        }
    }

    /// Sends the unterminated last line, if any, with a newline added.
    fn send_last(&self, mut partial: Vec<u8>) -> Result<(), String> {
        if partial.is_empty() {
            return Ok(());
        }
        partial.push(b'\n');
        self.send(vec![partial])
    }

    fn send(&self, batch: Vec<Vec<u8>>) -> Result<(), String> {
        let idx = self.idx;
        self.remote
            .call_from_thread(move || registry::with(|m| m.lines(idx, batch)))
            .map_err(|_| "the loop stopped; lines dropped".to_string())
    }

    fn note(&self, message: &'static str) {
        let idx = self.idx;
        let _ = self
            .remote
            .call_from_thread(move || registry::with(|m| m.note(idx, message)));
    }
}

/// What tells one file from another under the same name (device and inode).
fn identity(file: &File) -> Option<(u64, u64)> {
    file.metadata().ok().as_ref().and_then(identity_of)
}

#[cfg(unix)]
fn identity_of(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    Some((meta.dev(), meta.ino()))
}

#[cfg(not(unix))]
fn identity_of(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Wakes a follower waiting at end of file: a change counter and a condvar.
#[derive(Default)]
struct Wake {
    generation: Mutex<u64>,
    changed: Condvar,
}

impl Wake {
    fn generation(&self) -> u64 {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Something may have changed (or the program stops).
    fn bump(&self) {
        *self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
        self.changed.notify_all();
    }

    /// Waits until the generation differs from `seen` or `stop` is set; with
    /// `poll`, for that long at most.
    fn wait_past(&self, seen: u64, stop: &AtomicBool, poll: Option<Duration>) {
        let mut g = self
            .generation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        while *g == seen && !stop.load(Ordering::Acquire) {
            match poll {
                Some(d) => {
                    let (guard, _) = self
                        .changed
                        .wait_timeout(g, d)
                        .unwrap_or_else(PoisonError::into_inner);
                    return drop(guard);
                }
                None => g = self.changed.wait(g).unwrap_or_else(PoisonError::into_inner),
            }
        }
    }
}

/// File-change notifications on the loop (Linux: inotify).
#[cfg(target_os = "linux")]
mod watch {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::ffi::OsString;
    use std::os::fd::{AsFd, OwnedFd};
    use std::path::{Path, PathBuf};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use inotify::{EventMask, Inotify, WatchMask};
    use weft::net::Async;

    use super::Wake;

    const FILE_EVENTS: WatchMask = WatchMask::MODIFY
        .union(WatchMask::ATTRIB)
        .union(WatchMask::CLOSE_WRITE)
        .union(WatchMask::MOVE_SELF)
        .union(WatchMask::DELETE_SELF);
    /// A file created, moved or deleted under a followed name (rotation).
    const DIR_EVENTS: WatchMask = WatchMask::CREATE
        .union(WatchMask::MOVED_TO)
        .union(WatchMask::MOVED_FROM)
        .union(WatchMask::DELETE);

    struct Watcher {
        inotify: RefCell<Inotify>,
        /// Watch id of a file -> its readers.
        files: RefCell<HashMap<i32, Vec<usize>>>,
        /// Watch id of a directory -> (name, reader, path) of files in it.
        dirs: HashMap<i32, Vec<(OsString, usize, PathBuf)>>,
        wakes: Vec<Arc<Wake>>,
        watched: Vec<Arc<AtomicBool>>,
    }

    impl Watcher {
        fn watch_file(&self, idx: usize, path: &Path) -> bool {
            let added = self.inotify.borrow().watches().add(path, FILE_EVENTS);
            match added {
                Ok(wd) => {
                    let mut files = self.files.borrow_mut();
                    let readers = files.entry(wd.get_watch_descriptor_id()).or_default();
                    if !readers.contains(&idx) {
                        readers.push(idx);
                    }
                    true
                }
                Err(_) => false,
            }
        }

        fn wake(&self, idx: usize) {
            self.wakes[idx].bump();
        }

        fn on_event(&self, wd: i32, mask: EventMask, name: Option<&OsString>) {
            if mask.contains(EventMask::Q_OVERFLOW) {
                // Events were lost: every follower looks again.
                (0..self.wakes.len()).for_each(|i| self.wake(i));
                return;
            }
            let readers = self.files.borrow().get(&wd).cloned();
            for idx in readers.into_iter().flatten() {
                self.wake(idx);
            }
            let (Some(entries), Some(name)) = (self.dirs.get(&wd), name) else {
                return;
            };
            for (file, idx, path) in entries {
                if file == name {
                    // A new file under the name: watch it too (an error just
                    // means it is gone again; the reader finds out).
                    self.watch_file(*idx, path);
                    self.wake(*idx);
                }
            }
        }

        fn give_up(&self, why: &str) {
            eprintln!("logmerge: file notifications failed ({why}); polling instead");
            for (w, on) in self.wakes.iter().zip(&self.watched) {
                on.store(false, Ordering::Release);
                w.bump();
            }
        }
    }

    /// Watches `paths` (and their directories) from the current loop and
    /// marks in `watched` which readers it serves. Must run on the loop.
    pub(super) fn start(paths: &[PathBuf], wakes: &[Arc<Wake>], watched: &[Arc<AtomicBool>]) {
        let Ok(inotify) = Inotify::init() else {
            return; // every reader polls
        };
        // Readiness through a duplicate of the descriptor (same open file):
        // `Async` owns the duplicate, the loop reads with `Inotify`.
        let Ok(fd) = inotify.as_fd().try_clone_to_owned() else {
            return;
        };
        let Ok(ready) = Async::<OwnedFd>::new(fd) else {
            return;
        };
        let mut dirs: HashMap<i32, Vec<(OsString, usize, PathBuf)>> = HashMap::new();
        let mut dir_ok = vec![false; paths.len()];
        for (idx, path) in paths.iter().enumerate() {
            let dir = match path.parent() {
                Some(d) if !d.as_os_str().is_empty() => d,
                _ => Path::new("."),
            };
            let (Some(name), Ok(wd)) = (path.file_name(), inotify.watches().add(dir, DIR_EVENTS))
            else {
                continue;
            };
            dirs.entry(wd.get_watch_descriptor_id()).or_default().push((
                name.to_owned(),
                idx,
                path.clone(),
            ));
            dir_ok[idx] = true;
        }
        let w = Watcher {
            inotify: RefCell::new(inotify),
            files: RefCell::default(),
            dirs,
            wakes: wakes.to_vec(),
            watched: watched.to_vec(),
        };
        for (idx, path) in paths.iter().enumerate() {
            // A missing file is reported by its reader; no watch needed.
            if w.watch_file(idx, path) && dir_ok[idx] {
                watched[idx].store(true, Ordering::Release);
            }
        }
        let Some(reactor) = weft::reactor::current() else {
            return;
        };
        reactor
            .spawn_local(async move {
                let mut buf = [0u8; 4096];
                loop {
                    let events = ready
                        .read_with(|_| {
                            let mut inotify = w.inotify.borrow_mut();
                            let events = inotify.read_events(&mut buf)?;
                            Ok(events
                                .map(|e| {
                                    let name = e.name.map(|n| n.to_owned());
                                    (e.wd.get_watch_descriptor_id(), e.mask, name)
                                })
                                .collect::<Vec<_>>())
                        })
                        .await;
                    match events {
                        Ok(events) => {
                            for (wd, mask, name) in &events {
                                w.on_event(*wd, *mask, name.as_ref());
                            }
                        }
                        Err(e) => return w.give_up(&e.to_string()),
                    }
                }
            })
            .detach();
    }
}

/// No file notifications here: every follower polls every `--interval`.
#[cfg(not(target_os = "linux"))]
mod watch {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;

    pub(super) fn start(_: &[PathBuf], _: &[Arc<super::Wake>], _: &[Arc<AtomicBool>]) {}
}
