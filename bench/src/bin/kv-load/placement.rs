//! The placement column: where the client and each server thread were
//! allowed to run, read back from `/proc/PID/task/TID/status`, by role.

use weft_kv::cpus::CpuList;

use crate::Options;

/// A server thread's role, from its name (`comm`, at most 15 bytes).
fn role(comm: &str) -> &'static str {
    match comm {
        "weft-kv" => "loop",
        c if c.starts_with("weft-kv-loop") => "loop",
        c if c.starts_with("weft-db-") => "db",
        "kv-tokio" | "kv-tokio-worker" => "workers",
        "kv-tokio-block" => "blocking",
        c if c.starts_with("tokio-") => "tokio",
        _ => "other",
    }
}

/// `Cpus_allowed_list` of a `/proc/.../status`.
fn cpus_allowed(status: &str) -> Option<String> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .map(|v| v.trim().to_owned())
}

/// Where `threads` ((name, `Cpus_allowed_list`)) may run, by role
/// (`role CPUs`, several sets of one role joined by `|`), or
/// `server unplaced` when every one may run on `all`.
fn describe_placement(threads: &[(String, String)], all: &str) -> String {
    if threads.iter().all(|(_, c)| c == all) {
        return "server unplaced".into();
    }
    let mut roles: Vec<(&str, Vec<&str>)> = Vec::new();
    for r in ["loop", "workers", "tokio", "db", "blocking", "other"] {
        let mut sets: Vec<&str> = threads
            .iter()
            .filter(|(n, _)| role(n) == r)
            .map(|(_, c)| c.as_str())
            .collect();
        sets.sort_unstable();
        sets.dedup();
        if !sets.is_empty() {
            roles.push((r, sets));
        }
    }
    roles
        .iter()
        .map(|(r, sets)| format!("{r} {}", sets.join("|")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The placement column: the client's CPUs, then the server's threads'.
pub(crate) fn placement(o: &Options, pid: u32) -> String {
    let all = CpuList::of_this_thread()
        .map(|l| l.to_string())
        .unwrap_or_default();
    let client = o
        .client_cpus
        .as_ref()
        .map_or("any".to_owned(), |c| c.to_string());
    let mut threads = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            let dir = t.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            if let Some(c) = cpus_allowed(&status) {
                threads.push((comm.trim().to_owned(), c));
            }
        }
    }
    format!("client {client}; {}", describe_placement(&threads, &all))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;
    use crate::run::output;

    fn t(name: &str, cpus: &str) -> (String, String) {
        (name.to_owned(), cpus.to_owned())
    }

    #[test]
    fn describes_a_servers_threads_by_role() {
        let weft = [
            t("weft-kv", "0"),
            t("weft-loop-watch", "0-1"),
            t("weft-db-kv-w", "1"),
            t("weft-db-kv-r0", "1"),
        ];
        assert_eq!(describe_placement(&weft, "0-1"), "loop 0, db 1, other 0-1");
        let two = [
            t("weft-kv", "0"),
            t("weft-kv-loop-1", "1"),
            t("weft-db-kv-w", "0-1"),
        ];
        assert_eq!(describe_placement(&two, "0-1"), "loop 0|1, db 0-1");
        let twin = [
            t("kv-tokio", "0"),
            t("kv-tokio-worker", "0"),
            t("kv-tokio-block", "1"),
        ];
        assert_eq!(describe_placement(&twin, "0-1"), "workers 0, blocking 1");
        let unplaced = [t("kv-tokio", "0-1"), t("tokio-rt-worker", "0-1")];
        assert_eq!(describe_placement(&unplaced, "0-1"), "server unplaced");
        assert_eq!(
            cpus_allowed("Name:\tx\nCpus_allowed:\t3\nCpus_allowed_list:\t0-1\n"),
            Some("0-1".to_owned())
        );
    }

    #[test]
    fn a_client_started_on_cpus_runs_there_and_kv_load_keeps_its_own() {
        let mine = CpuList::of_this_thread().unwrap();
        let last: CpuList = mine.cpus()[mine.cpus().len() - 1]
            .to_string()
            .parse()
            .unwrap();
        let mut c = Command::new("sh");
        c.args(["-c", "grep Cpus_allowed_list /proc/self/status"]);
        let out = output(c, Some(&last)).unwrap();
        assert_eq!(cpus_allowed(&out), Some(last.to_string()));
        assert_eq!(CpuList::of_this_thread().unwrap(), mine);
        let mut c = Command::new("sh");
        c.args(["-c", "grep Cpus_allowed_list /proc/self/status"]);
        let out = output(c, None).unwrap();
        assert_eq!(cpus_allowed(&out), Some(mine.to_string()));
    }
}
