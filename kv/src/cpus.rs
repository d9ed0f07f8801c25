//! CPU placement: which CPUs a thread may run on (`sched_setaffinity`),
//! for weft-kv's loop threads ([`Config::loop_cpus`](crate::Config::loop_cpus))
//! and its database threads ([`Config::db_cpus`](crate::Config::db_cpus)).
//!
//! A thread may narrow its own CPU set (or widen it again, within the
//! set its process was started with) without privilege: unlike a lower
//! nice value or a real-time policy, placement takes nothing from anyone,
//! it only says where the thread runs. On a 2-core machine shared with the
//! load client, a loop alone on one CPU (its database threads and the
//! client on the other) is no longer preempted by them; see "Loop stalls"
//! in the crate docs for what that changed.
//!
//! A list is written as `taskset -c` takes it: CPU numbers and ranges
//! separated by commas (`0`, `1`, `0-1`, `0,2`, `0-3,6`). A thread's set is
//! inherited by the threads it starts (Linux copies it at `clone`), so a
//! placed thread that starts others must put them back: weft-kv does so for
//! every thread it starts.
//!
//! The bench's tokio twin and `kv-load` use the same lists and calls
//! ([`CpuList`], [`CpuList::apply_to_this_thread`]).

use std::fmt;
use std::io;
use std::str::FromStr;

use rustix::thread::CpuSet;

/// A non-empty set of CPU numbers, as `taskset -c` writes it.
///
/// # Examples
///
/// ```
/// use weft_kv::cpus::CpuList;
///
/// let l: CpuList = "0-2,5".parse().unwrap();
/// assert_eq!(l.cpus(), &[0, 1, 2, 5]);
/// assert_eq!(l.to_string(), "0-2,5");
/// assert!("".parse::<CpuList>().is_err());
/// assert!("x".parse::<CpuList>().is_err());
/// assert!("2-1".parse::<CpuList>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuList {
    /// Sorted, without duplicates, never empty.
    cpus: Vec<usize>,
}

impl CpuList {
    /// The CPU numbers, in increasing order.
    ///
    /// # Examples
    ///
    /// See [`CpuList`].
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Whether `cpu` is in the list.
    ///
    /// # Examples
    ///
    /// ```
    /// let l: weft_kv::cpus::CpuList = "1,3".parse().unwrap();
    /// assert!(l.contains(3) && !l.contains(2));
    /// ```
    pub fn contains(&self, cpu: usize) -> bool {
        self.cpus.binary_search(&cpu).is_ok()
    }

    /// The CPUs the calling thread may run on (`sched_getaffinity`).
    ///
    /// # Errors
    ///
    /// The syscall's (none expected on Linux).
    ///
    /// # Examples
    ///
    /// ```
    /// let mine = weft_kv::cpus::CpuList::of_this_thread().unwrap();
    /// assert!(!mine.cpus().is_empty());
    /// ```
    pub fn of_this_thread() -> io::Result<CpuList> {
        let set = rustix::thread::sched_getaffinity(None)?;
        CpuList::from_set(&set).ok_or_else(|| io::Error::other("sched_getaffinity returned no CPU"))
    }

    /// The CPUs thread `tid` (a kernel thread id of any process) may run on.
    ///
    /// # Errors
    ///
    /// The syscall's (`ESRCH`: no such thread).
    ///
    /// # Examples
    ///
    /// ```
    /// let tid = rustix::thread::gettid().as_raw_nonzero().get();
    /// assert_eq!(
    ///     weft_kv::cpus::CpuList::of_thread(tid).unwrap(),
    ///     weft_kv::cpus::CpuList::of_this_thread().unwrap()
    /// );
    /// ```
    pub fn of_thread(tid: i32) -> io::Result<CpuList> {
        let pid = rustix::process::Pid::from_raw(tid)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "thread id 0"))?;
        let set = rustix::thread::sched_getaffinity(Some(pid))?;
        CpuList::from_set(&set).ok_or_else(|| io::Error::other("sched_getaffinity returned no CPU"))
    }

    fn from_set(set: &CpuSet) -> Option<CpuList> {
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU).filter(|&c| set.is_set(c)).collect();
        (!cpus.is_empty()).then_some(CpuList { cpus })
    }

    /// Checks that every CPU of the list is in `allowed` (e.g. the set the
    /// process was started with, [`CpuList::of_this_thread`]).
    ///
    /// # Errors
    ///
    /// `InvalidInput`, naming the first CPU outside `allowed`.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_kv::cpus::CpuList;
    ///
    /// let allowed: CpuList = "0-1".parse().unwrap();
    /// assert!("1".parse::<CpuList>().unwrap().check_within(&allowed).is_ok());
    /// let e = "1-2".parse::<CpuList>().unwrap().check_within(&allowed).unwrap_err();
    /// assert!(e.to_string().contains("CPU 2"), "{e}");
    /// ```
    pub fn check_within(&self, allowed: &CpuList) -> io::Result<()> {
        match self.cpus.iter().find(|&&c| !allowed.contains(c)) {
            None => Ok(()),
            Some(c) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("CPU {c} is not one this process may run on (it may run on {allowed})"),
            )),
        }
    }

    /// Restricts the calling thread to these CPUs (`sched_setaffinity`; no
    /// privilege needed). Threads it starts afterwards inherit the set.
    ///
    /// # Errors
    ///
    /// The syscall's: `EINVAL` when no CPU of the list is one the thread
    /// may use (e.g. outside its cgroup's cpuset). Check the list first
    /// with [`CpuList::check_within`] for a clearer message.
    ///
    /// # Examples
    ///
    /// ```
    /// use weft_kv::cpus::CpuList;
    ///
    /// std::thread::spawn(|| {
    ///     let mine = CpuList::of_this_thread().unwrap();
    ///     let first: CpuList = mine.cpus()[0].to_string().parse().unwrap();
    ///     first.apply_to_this_thread().unwrap();
    ///     assert_eq!(CpuList::of_this_thread().unwrap(), first);
    /// })
    /// .join()
    /// .unwrap();
    /// ```
    pub fn apply_to_this_thread(&self) -> io::Result<()> {
        let mut set = CpuSet::new();
        for &c in &self.cpus {
            set.set(c);
        }
        rustix::thread::sched_setaffinity(None, &set)
            .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("CPUs {self}: {e}")))
    }
}

impl FromStr for CpuList {
    type Err = String;

    /// Parses `taskset -c`'s form: comma-separated CPU numbers and
    /// inclusive ranges `a-b` (`a <= b`), every number below the kernel's
    /// `CPU_SETSIZE` (1024). Duplicates are merged.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let max = CpuSet::MAX_CPU;
        let number = |t: &str| -> Result<usize, String> {
            let t = t.trim();
            let n: usize = t
                .parse()
                .map_err(|_| format!("CPU list {s:?}: {t:?} is not a CPU number"))?;
            if n >= max {
                return Err(format!(
                    "CPU list {s:?}: CPU {n} is out of range (CPU numbers go up to {})",
                    max - 1
                ));
            }
            Ok(n)
        };
        if s.trim().is_empty() {
            return Err("empty CPU list (e.g. 0, 1, 0-1 or 0,2)".to_owned());
        }
        let mut cpus = Vec::new();
        for item in s.split(',') {
            match item.split_once('-') {
                Some((a, b)) => {
                    let (a, b) = (number(a)?, number(b)?);
                    if a > b {
                        return Err(format!("CPU list {s:?}: range {a}-{b} runs backwards"));
                    }
                    cpus.extend(a..=b);
                }
                None => cpus.push(number(item)?),
            }
        }
        cpus.sort_unstable();
        cpus.dedup();
        Ok(CpuList { cpus })
    }
}

impl fmt::Display for CpuList {
    /// The shortest `taskset -c` form: runs of consecutive CPUs as ranges.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut i = 0;
        let mut first = true;
        while i < self.cpus.len() {
            let start = self.cpus[i];
            let mut end = start;
            while i + 1 < self.cpus.len() && self.cpus[i + 1] == end + 1 {
                i += 1;
                end = self.cpus[i];
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            if end == start {
                write!(f, "{start}")?;
            } else {
                write!(f, "{start}-{end}")?;
            }
            i += 1;
        }
        Ok(())
    }
}

/// Where weft-kv's threads run, checked once when [`run`](crate::run)
/// starts, from the calling thread (loop 0).
///
/// Invariants:
/// - `original` is the calling thread's set before any change: every list
///   was checked to lie within it.
/// - With `loops` set, loop 0 runs on it from just after its reactor was
///   built (its watchdog thread, started by the build, keeps `original`)
///   until [`run`](crate::run) returns (then it gets `original` back).
/// - Every thread started from a placed loop thread by weft-kv is put
///   back: another loop thread first takes `original` (so its own
///   watchdog keeps it), then `loops`; a database thread takes `db`, or
///   `original` when only the loops are placed. Threads weft itself
///   might start later from a loop thread (its reactor's thread pool,
///   which weft-kv does not use) would inherit the loop's set.
#[derive(Clone, Debug)]
pub(crate) struct Placement {
    original: CpuList,
    loops: Option<CpuList>,
    db: Option<CpuList>,
}

impl Placement {
    /// Checks the config's lists against the calling thread's set.
    ///
    /// # Errors
    ///
    /// `InvalidInput` naming the list and the first CPU outside the set.
    pub(crate) fn new(config: &crate::Config) -> io::Result<Placement> {
        let original = CpuList::of_this_thread()?;
        for (what, list) in [("loop", &config.loop_cpus), ("database", &config.db_cpus)] {
            if let Some(l) = list {
                l.check_within(&original)
                    .map_err(|e| io::Error::new(e.kind(), format!("{what} CPUs {l}: {e}")))?;
            }
        }
        Ok(Placement {
            original,
            loops: config.loop_cpus.clone(),
            db: config.db_cpus.clone(),
        })
    }

    /// Puts the calling loop thread on the loops' CPUs (if placed).
    pub(crate) fn place_loop(&self) -> io::Result<()> {
        match &self.loops {
            Some(l) => l
                .apply_to_this_thread()
                .map_err(|e| io::Error::new(e.kind(), format!("loop thread: {e}"))),
            None => Ok(()),
        }
    }

    /// Gives the calling thread the original set back if it may have
    /// inherited a loop's (the loops are placed).
    pub(crate) fn unplace(&self) -> io::Result<()> {
        match &self.loops {
            Some(_) => self.original.apply_to_this_thread(),
            None => Ok(()),
        }
    }

    /// The set a database thread takes when it starts (`None`: keep what
    /// it inherited, which is then `original`).
    pub(crate) fn db_thread(&self) -> Option<CpuList> {
        match (&self.db, &self.loops) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(_)) => Some(self.original.clone()),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> CpuList {
        s.parse().unwrap()
    }

    #[test]
    fn lists_parse_as_taskset_writes_them_and_print_back_short() {
        assert_eq!(l("0").cpus(), &[0]);
        assert_eq!(l("1").cpus(), &[1]);
        assert_eq!(l("0-1").cpus(), &[0, 1]);
        assert_eq!(l("0,2").cpus(), &[0, 2]);
        assert_eq!(l("3,0-1,1").cpus(), &[0, 1, 3]);
        assert_eq!(l(" 0 - 1 , 4 ").cpus(), &[0, 1, 4]);
        assert_eq!(l("1023").cpus(), &[1023]);
        for (s, shown) in [
            ("0", "0"),
            ("0-1", "0-1"),
            ("0,2", "0,2"),
            ("0,1,2,4,6,7", "0-2,4,6-7"),
            ("5,4", "4-5"),
        ] {
            assert_eq!(l(s).to_string(), shown);
            assert_eq!(l(shown), l(s));
        }
    }

    #[test]
    fn bad_lists_are_refused_with_a_reason() {
        for (s, why) in [
            ("", "empty"),
            ("  ", "empty"),
            (",", "not a CPU number"),
            ("0,", "not a CPU number"),
            ("0,,1", "not a CPU number"),
            ("a", "not a CPU number"),
            ("-1", "not a CPU number"),
            ("1-", "not a CPU number"),
            ("0-1-2", "not a CPU number"),
            ("0x1", "not a CPU number"),
            ("1.5", "not a CPU number"),
            ("0-10:2", "not a CPU number"),
            ("2-1", "backwards"),
            ("1024", "out of range"),
            ("0-4096", "out of range"),
            ("99999999999999999999999", "not a CPU number"),
        ] {
            let e = s.parse::<CpuList>().unwrap_err();
            assert!(e.contains(why), "{s:?}: {e}");
        }
    }

    #[test]
    fn a_cpu_outside_the_allowed_set_is_named() {
        let allowed = l("0-1");
        assert!(l("0").check_within(&allowed).is_ok());
        assert!(l("0-1").check_within(&allowed).is_ok());
        let e = l("0,7").check_within(&allowed).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("CPU 7"), "{e}");
        assert!(e.to_string().contains("0-1"), "{e}");
    }

    #[test]
    fn a_placement_applies_to_this_thread_only_and_is_inherited_and_undone() {
        std::thread::spawn(|| {
            let mine = CpuList::of_this_thread().unwrap();
            let last = l(&mine.cpus()[mine.cpus().len() - 1].to_string());
            let cfg = crate::Config {
                loop_cpus: Some(last.clone()),
                ..Default::default()
            };
            let p = Placement::new(&cfg).unwrap();
            // Only the loops placed: a database thread goes back.
            assert_eq!(p.db_thread(), Some(mine.clone()));
            p.place_loop().unwrap();
            assert_eq!(CpuList::of_this_thread().unwrap(), last);
            // Linux copies the set at `clone`.
            let child = std::thread::spawn(|| CpuList::of_this_thread().unwrap())
                .join()
                .unwrap();
            assert_eq!(child, last);
            p.unplace().unwrap();
            assert_eq!(CpuList::of_this_thread().unwrap(), mine);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_placement_outside_this_threads_set_is_refused_before_any_change() {
        let cfg = crate::Config {
            db_cpus: Some(l("1023")),
            ..Default::default()
        };
        let mine = CpuList::of_this_thread().unwrap();
        if mine.contains(1023) {
            return;
        }
        let e = Placement::new(&cfg).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("database CPUs 1023"), "{e}");
        assert_eq!(CpuList::of_this_thread().unwrap(), mine);
    }
}
