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
