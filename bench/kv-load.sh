#!/bin/sh
# The load-test table: weft-kv (--loops 1 and 2) against its tokio twin (bench/src/bin/kv-tokio),
# each server started fresh per row, run by weft-load and by wrk (if installed:
# apt-get install wrk) with the same connections and duration.
#
#   bench/kv-load.sh [-d SECS] [-c CONNS] [--only weft-kv,tokio-mutex-cap1,..]
#                    [--mixes 90,10] [--clients weft-load,wrk] [--rounds N]
#                    [--before-dir DIR]   (A/B rows: see bench/src/bin/kv-load/main.rs)
#                    [--client-cpus LIST] [--extra NAME=FLAGS].. [--extra-twin NAME=FLAGS]..
#
# CPU placement (as taskset -c): --client-cpus 1 runs every client on CPU 1 for
# every server; place a server with its own flags in an --extra (weft-kv) or
# --extra-twin (kv-tokio) row, e.g.
#   --extra 'weft-kv-l0-d1=--loops 1 --loop-cpus 0 --db-cpus 1'
#   --extra-twin 'tokio-mutex-cap1-pin=--variant mutex --blocking 1 --worker-cpus 0 --blocking-cpus 1'
# The table's placement column says where each row's client and server threads ran.
#
# Defaults: 64 connections, 10 s per row, 90/10 and 10/90 read/write, both
# clients, all seven servers (about 7 minutes). Run it on a quiet machine: the
# load average is printed before and after.
set -eu
cd "$(dirname "$0")/.."
cargo build --release -p weft-kv -p weft-bench --bins
exec "${CARGO_TARGET_DIR:-target}/release/kv-load" "$@"
