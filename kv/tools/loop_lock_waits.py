"""Sums the loop thread's futex calls (from loop_lock_waits.sh's `perf script`)
by operation and by the first frame outside std/core (the lock's owner in
weft): count, total and longest time in the call, and how many took over
0.5 ms (each of those is a turn held up by another thread's lock)."""
import collections
import re
import sys

calls = collections.defaultdict(list)
pending = None
for block in open(sys.argv[1]).read().split("\n\n"):
    lines = block.strip().splitlines()
    if not lines:
        continue
    head = lines[0]
    m = re.search(r"(\d+)\.(\d+):", head)
    if not m:
        continue
    t = int(m.group(1)) * 1_000_000_000 + int(m.group(2).ljust(9, "0")[:9])
    if "sys_enter_futex" in head:
        op = re.search(r"op: (0x[0-9a-f]+)", head).group(1)
        frames = [l.split(None, 1)[1] for l in lines[1:] if len(l.split(None, 1)) > 1]
        frames = [f for f in frames if not f.startswith(("std::", "<std::", "syscall", "core::", "weft::loom"))]
        name = {"0x00000089": "wait", "0x00000081": "wake"}.get(op, op)
        pending = (t, name, frames[0][:100] if frames else "?")
    elif "sys_exit_futex" in head and pending:
        calls[pending[1:]].append(t - pending[0])
        pending = None
for (op, site), v in sorted(calls.items(), key=lambda kv: -sum(kv[1])):
    v.sort()
    print(f"futex {op} in {site}: {len(v)} calls, {sum(v) / 1e6:.2f} ms in all, longest {v[-1] / 1e3:.0f} us, "
          f"{sum(1 for x in v if x > 500_000)} over 0.5 ms")
