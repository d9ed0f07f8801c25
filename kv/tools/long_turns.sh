#!/bin/sh
# Where weft-kv's long loop turns (> 1.05 ms) go: a placed wrk run with perf
# recording CPU 0 (the loop's, `--loop-cpus 0`) on CLOCK_MONOTONIC, beside the
# server's own list of long turns, then kv/tools/long_turns.py.
#
#   [LIGHT=1] [AT=start] kv/tools/long_turns.sh BIN_DIR OUT_DIR MIX [-- weft-kv flags]
#
# BIN_DIR holds weft-kv and weft-load (release). The per-turn list (`LT` lines
# on stderr) needs weft-kv built with kv/tools/long_turns-instr.patch applied
# (`git apply kv/tools/long_turns-instr.patch`, in src/reactor/turn.rs; local
# only, never committed: it prints every turn over 1.05 ms); with a plain build
# only the counts from /metrics are printed. The server runs with `--loops 1
# --loop-cpus 0 --db-cpus 1` unless flags are given; wrk -t2 -c64 runs 8 s on
# CPU 1, perf (itself on CPU 1) records 3 s of it on CPU 0: scheduler switches,
# interrupts and softirqs, page faults and (unless LIGHT=1) every syscall.
# AT=start records from wrk's start (its 64 connections arriving) instead
# of from its third second.
# Needs perf, wrk, curl, root or perf_event_paranoid <= 1.
set -eu
B=$1; D=$2; MIX=$3; shift 3; [ "${1:-}" = "--" ] && shift
[ $# -eq 0 ] && set -- --loops 1 --loop-cpus 0 --db-cpus 1
HERE=$(cd "$(dirname "$0")/../.." && pwd)
. "$HERE/kv/tools/serve.sh"
KV_STDERR="$D/turns" start_kv "$B" "$D" "$@"
CLIENT_ON="taskset -c 1"
fill "$B" $PORT "$MIX"
scrape() { curl -s http://127.0.0.1:$PORT/metrics | grep -E '^weft_kv_loop_(turn_seconds_(bucket\{loop="0",le="0.001048576"\}|count)|late_ticks|longest_turn)|^weft_kv_loop_lag_max'; }
scrape >"$D/metrics.before"
grep -E '^cpu0 ' /proc/stat >"$D/stat.before"
$CLIENT_ON wrk -t2 -c64 -d8s -s "$HERE/bench/wrk/mix.lua" http://127.0.0.1:$PORT -- "$MIX" 10000 64 >"$D/wrk.txt" &
WP=$!
[ "${AT:-middle}" = start ] || sleep 2
EV="-e sched:sched_switch -e irq:irq_handler_entry -e irq:irq_handler_exit -e irq:softirq_entry -e irq:softirq_exit -e exceptions:page_fault_user -e exceptions:page_fault_kernel"
[ "${LIGHT:-0}" = 1 ] || EV="$EV -e raw_syscalls:sys_enter -e raw_syscalls:sys_exit"
# shellcheck disable=SC2086
taskset -c 1 perf record -q -k mono -C 0 $EV -o "$D/perf.data" -- sleep 3 2>/dev/null
wait $WP
grep -E '^cpu0 ' /proc/stat >"$D/stat.after"
scrape >"$D/metrics.after"
for t in /proc/$SP/task/*; do echo "${t##*/} $(cat "$t/comm")"; done >"$D/threads"
kill $SP; wait $SP 2>/dev/null || true
perf script --ns -i "$D/perf.data" -F comm,tid,cpu,time,event,trace >"$D/perf.txt" 2>/dev/null
grep wrk-result "$D/wrk.txt" || tail -5 "$D/wrk.txt"
echo "metrics before / after (turns <= 1.05 ms, all turns, late ticks):"; cat "$D/metrics.before" "$D/metrics.after"
echo "cpu0 steal (jiffies): $(awk '{print $9}' "$D/stat.before") -> $(awk '{print $9}' "$D/stat.after")"
python3 "$HERE/kv/tools/long_turns.py" "$D"
