#!/bin/sh
# The load-test table: weft-kv (--loops 1 and 2) against its tokio twin (bench/src/bin/kv-tokio),
# each server started fresh per row, run by weft-load and by wrk (if installed:
# apt-get install wrk) with the same connections and duration.
#
#   bench/kv-load.sh [-d SECS] [-c CONNS] [--only weft-kv,tokio-mutex-cap1,..]
#                    [--mixes 90,10] [--clients weft-load,wrk] [--rounds N]
#                    [--before-dir DIR]   (A/B rows: see bench/src/bin/kv-load.rs)
#
# Defaults: 64 connections, 10 s per row, 90/10 and 10/90 read/write, both
# clients, all seven servers (about 7 minutes). Run it on a quiet machine: the
# load average is printed before and after.
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p weft-kv -p weft-bench --bins
exec "${CARGO_TARGET_DIR:-target}/release/kv-load" "$@"
