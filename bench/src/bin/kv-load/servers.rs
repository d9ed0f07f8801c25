//! The servers under test: weft-kv (one and two loops), its tokio twin's
//! variants, and the opt-in A/B rows.

use std::path::{Path, PathBuf};

/// A server under test: its row name and how to start it (the database
/// path and the listen address `127.0.0.1:0` are added).
pub(crate) struct Server {
    pub(crate) name: String,
    pub(crate) binary: &'static str,
    pub(crate) args: Vec<String>,
    /// Run only when named in `--only` (A/B rows).
    pub(crate) opt_in: bool,
    /// Where its binary is, if not `--bin-dir` (`--before-dir` rows).
    pub(crate) dir: Option<PathBuf>,
}

/// The servers, weft-kv first (one and two loops). Caps are the database connection counts:
/// weft-kv's (1 writer + [`weft_kv::default_readers`] readers, the cores
/// its loop leaves free) for the thread-local variant, the one connection
/// for the mutex; deadpool's pool size (its default, 2 × CPUs) already
/// bounds its blocking calls.
///
/// Opt-in rows (run only when named in `--only`), for A/B runs:
/// `weft-kv-{1loop,2loops}-bgckpt` (`--checkpoints background`),
/// `weft-kv-{1loop,2loops}-perjob` (`--db-handover job`),
/// `weft-kv-2loops-nobal` (`--balance off`) and
/// `weft-kv-before-{1loop,2loops}` (the `weft-kv` binary in `--before-dir`,
/// e.g. a build of an earlier commit).
pub(crate) fn servers(before_dir: Option<&Path>) -> Vec<Server> {
    let conns = weft_kv::default_readers() + 1;
    let row = |name: String, binary: &'static str, args: &[&str]| Server {
        name,
        binary,
        args: args.iter().map(|a| a.to_string()).collect(),
        opt_in: false,
        dir: None,
    };
    let opt_in = |name: &str, args: &[&str], dir: Option<&Path>| Server {
        opt_in: true,
        dir: dir.map(Path::to_path_buf),
        ..row(name.to_owned(), "weft-kv", args)
    };
    let tokio = |name: &str, args: &[&str]| row(name.to_owned(), "kv-tokio", args);
    vec![
        row("weft-kv-1loop".to_owned(), "weft-kv", &["--loops", "1"]),
        row("weft-kv-2loops".to_owned(), "weft-kv", &["--loops", "2"]),
        tokio("tokio-thread-local", &["--variant", "thread-local"]),
        row(
            format!("tokio-thread-local-cap{conns}"),
            "kv-tokio",
            &[
                "--variant",
                "thread-local",
                "--blocking",
                &conns.to_string(),
            ],
        ),
        tokio("tokio-mutex", &["--variant", "mutex"]),
        tokio(
            "tokio-mutex-cap1",
            &["--variant", "mutex", "--blocking", "1"],
        ),
        tokio("tokio-deadpool", &["--variant", "deadpool"]),
        Server {
            opt_in: true,
            ..tokio(
                "tokio-mutex-cap1-hc",
                &[
                    "--variant",
                    "mutex",
                    "--blocking",
                    "1",
                    "--half-close",
                    "on",
                ],
            )
        },
        opt_in(
            "weft-kv-1loop-bgckpt",
            &["--loops", "1", "--checkpoints", "background"],
            None,
        ),
        opt_in(
            "weft-kv-2loops-bgckpt",
            &["--loops", "2", "--checkpoints", "background"],
            None,
        ),
        opt_in(
            "weft-kv-1loop-perjob",
            &["--loops", "1", "--db-handover", "job"],
            None,
        ),
        opt_in(
            "weft-kv-2loops-perjob",
            &["--loops", "2", "--db-handover", "job"],
            None,
        ),
        opt_in(
            "weft-kv-2loops-nobal",
            &["--loops", "2", "--balance", "off"],
            None,
        ),
        opt_in("weft-kv-before-1loop", &["--loops", "1"], before_dir),
        opt_in("weft-kv-before-2loops", &["--loops", "2"], before_dir),
    ]
}
