#!/bin/sh
# Who holds weft-kv's loop off its core: perf's scheduler events during a wrk run,
# each wait of the loop thread (woken or preempted, until it runs again) charged
# to what ran on the CPU it then ran on (its own database threads, the load
# client, other processes).
#
#   [CLIENT_CPUS=LIST] kv/tools/loop_waits.sh BIN_DIR OUT_DIR MIX [-- weft-kv flags]
#
# CLIENT_CPUS (as taskset -c, e.g. 1): the fill and wrk run under taskset -c LIST,
# as kv-load's --client-cpus; e.g. with `-- --loops 1 --loop-cpus 0 --db-cpus 1`.
#
# BIN_DIR holds weft-kv and weft-load (release); needs perf and wrk, and root or
# perf_event_paranoid <= 1. wrk -t2 -c64 runs 6 s; perf records 3 s of it.
set -eu
B=$1; D=$2; MIX=$3; shift 3; [ "${1:-}" = "--" ] && shift
HERE=$(cd "$(dirname "$0")/../.." && pwd)
. "$HERE/kv/tools/serve.sh"
start_kv "$B" "$D" "$@"
CLIENT_ON=""
[ -n "${CLIENT_CPUS:-}" ] && CLIENT_ON="taskset -c $CLIENT_CPUS"
fill "$B" $PORT "$MIX"
$CLIENT_ON wrk -t2 -c64 -d6s -s "$HERE/bench/wrk/mix.lua" http://127.0.0.1:$PORT -- "$MIX" 10000 64 >"$D/wrk.txt" &
WP=$!
sleep 1.5
perf record -q -e sched:sched_switch -e sched:sched_wakeup -a -o "$D/perf.data" -- sleep 3 2>/dev/null
wait $WP
for t in /proc/$SP/task/*; do echo "${t##*/} $(cat "$t/comm")"; done >"$D/threads"
kill $SP; wait $SP 2>/dev/null || true
perf script -i "$D/perf.data" -F comm,pid,tid,cpu,time,event,trace >"$D/perf.txt" 2>/dev/null
grep wrk-result "$D/wrk.txt"
python3 "$HERE/kv/tools/loop_waits.py" "$D"
