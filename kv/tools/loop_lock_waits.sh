#!/bin/sh
# Which locks weft-kv's loop thread waits on: every futex call of the loop
# during a placed wrk run, with its user stack (perf, DWARF unwinding) and
# its duration, summed by the first weft frame (kv/tools/loop_lock_waits.py).
# A FUTEX_WAIT (op 0x89) is the loop blocked on a lock another thread holds;
# a FUTEX_WAKE (0x81) is the loop waking a thread. Works on a plain release
# build (debug info on, as the workspace's release profile has).
#
#   kv/tools/loop_lock_waits.sh BIN_DIR OUT_DIR MIX [-- weft-kv flags]
#
# Defaults to `--loops 1 --loop-cpus 0 --db-cpus 1`; wrk -t2 -c64 runs 6 s on
# CPU 1, perf (on CPU 1) records 3 s of the loop thread. Needs perf, wrk.
set -eu
B=$1; D=$2; MIX=$3; shift 3; [ "${1:-}" = "--" ] && shift
[ $# -eq 0 ] && set -- --loops 1 --loop-cpus 0 --db-cpus 1
HERE=$(cd "$(dirname "$0")/../.." && pwd)
. "$HERE/kv/tools/serve.sh"
start_kv "$B" "$D" "$@"
CLIENT_ON="taskset -c 1"
fill "$B" $PORT "$MIX"
taskset -c 1 wrk -t2 -c64 -d6s -s "$HERE/bench/wrk/mix.lua" http://127.0.0.1:$PORT -- "$MIX" 10000 64 >"$D/wrk.txt" &
WP=$!
sleep 1.5
taskset -c 1 perf record -q -t $SP -e syscalls:sys_enter_futex -e syscalls:sys_exit_futex \
  --call-graph dwarf,16384 -o "$D/perf.data" -- sleep 3 2>/dev/null
wait $WP
kill $SP; wait $SP 2>/dev/null || true
perf script --ns -i "$D/perf.data" -F tid,time,event,trace,ip,sym 2>/dev/null >"$D/stacks.txt"
rm -f "$D/perf.data"
grep wrk-result "$D/wrk.txt" || tail -5 "$D/wrk.txt"
python3 "$HERE/kv/tools/loop_lock_waits.py" "$D/stacks.txt"
