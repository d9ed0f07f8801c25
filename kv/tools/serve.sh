# Sourced by the tools here (sh): starting a measured server the same way.

# wait_listening LOG PID SECS: waits until the server writing LOG says it
# listens; after SECS, prints LOG, kills PID and exits 1.
wait_listening() {
  _tries=0
  until grep -q "listening on" "$1" 2>/dev/null; do
    sleep 0.2; _tries=$((_tries + 1))
    [ "$_tries" -lt $(($3 * 5)) ] || { cat "$1"; kill "$2"; exit 1; }
  done
}

# fill BIN_DIR PORT MIX: fills the server's key space (weft-load, no duration),
# under $CLIENT_ON if set (e.g. "taskset -c 1").
fill() {
  ${CLIENT_ON:-} "$1/weft-load" --url "http://127.0.0.1:$2" -c 1 -d 0 --reads "$3" >/dev/null
}

# start_kv BIN_DIR OUT_DIR [weft-kv flags]: a fresh OUT_DIR and weft-kv in it
# (data in OUT_DIR/db, stdout in OUT_DIR/out, stderr there too unless
# KV_STDERR names a file), on a port the kernel picks (port 0, read back
# from its "listening on" line); returns once it listens, with PORT and SP
# (its pid) set.
start_kv() {
  _bin=$1; _dir=$2; shift 2
  rm -rf "$_dir"; mkdir -p "$_dir"
  if [ -n "${KV_STDERR:-}" ]; then
    "$_bin/weft-kv" --listen 127.0.0.1:0 --db "$_dir/db" "$@" >"$_dir/out" 2>"$KV_STDERR" &
  else
    "$_bin/weft-kv" --listen 127.0.0.1:0 --db "$_dir/db" "$@" >"$_dir/out" 2>&1 &
  fi
  SP=$!
  wait_listening "$_dir/out" $SP 30
  PORT=$(sed -n 's|.*listening on http://127\.0\.0\.1:\([0-9]*\)/.*|\1|p' "$_dir/out" | head -1)
  [ -n "$PORT" ] || { cat "$_dir/out"; kill $SP; exit 1; }
}
