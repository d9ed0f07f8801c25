#!/bin/sh
# Instructions per request of weft-kv (or the tokio twin) under a short fixed load, by thread.
#
#   kv/tools/callgrind.sh BIN_DIR OUT_DIR [MIX] [SECS] [CONNS] [-- SERVER FLAGS]
#
# BIN_DIR holds weft-kv, weft-load and kv-tokio built for valgrind
# (RUSTFLAGS="--cfg rustix_use_libc" CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
#  CARGO_TARGET_DIR=target/cg cargo build --release -p weft-kv -p weft-bench --bins).
# SERVER is weft-kv (default) or kv-tokio; MIX is the read percent (90).
# The server runs under callgrind (one output file per thread); the key space is
# filled, the counters are zeroed, wrk (or weft-load without wrk) runs MIX for
# SECS with CONNS connections, then the counters are dumped. Prints the requests
# answered (wrk's count) and each thread's instructions per request.
set -eu
BIN=$1; OUT=$2; MIX=${3:-90}; SECS=${4:-10}; CONNS=${5:-16}
shift 2; [ $# -gt 0 ] && shift; [ $# -gt 0 ] && shift; [ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
SERVER=weft-kv
if [ $# -gt 0 ]; then SERVER=$1; shift; fi
HERE=$(cd "$(dirname "$0")/../.." && pwd)
. "$HERE/kv/tools/serve.sh"
mkdir -p "$OUT"; rm -f "$OUT"/cg.out* "$OUT"/db*
PORT=$((20000 + $$ % 10000))
valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$OUT/cg.out" \
  "$BIN/$SERVER" --listen 127.0.0.1:$PORT --db "$OUT/db.sqlite3" "$@" >"$OUT/server.log" 2>&1 &
VG=$!
wait_listening "$OUT/server.log" $VG 120
fill "$BIN" $PORT "$MIX"
callgrind_control -z $VG >/dev/null
if command -v wrk >/dev/null; then
  wrk -t1 -c"$CONNS" -d"${SECS}s" -s "$HERE/bench/wrk/mix.lua" http://127.0.0.1:$PORT -- "$MIX" 10000 64 >"$OUT/client.log"
  REQ=$(sed -n 's/.*wrk-result requests=\([0-9]*\).*/\1/p' "$OUT/client.log")
else
  "$BIN/weft-load" --url http://127.0.0.1:$PORT -c "$CONNS" -d "$SECS" --reads "$MIX" >"$OUT/client.log"
  REQ=$(awk -F'|' '/^\| [0-9]/{gsub(/ /,"",$7); print $7}' "$OUT/client.log")
fi
callgrind_control -d $VG >/dev/null
kill -TERM $VG; wait $VG || true
echo "requests: $REQ"
# cg.out.1-TT: the dump taken after the client (thread TT); 1: the loop (main thread).
for f in $(ls "$OUT"/cg.out.1-* 2>/dev/null | sort); do
  n=$(sed -n 's/^summary: //p;s/^totals: //p' "$f" | head -1)
  t=$(sed -n 's/^thread: //p' "$f" | head -1)
  [ -n "$n" ] && [ "$n" -gt 0 ] && echo "$f thread $t: $n Ir, $((n / REQ)) per request"
done
