"""Charges each wait of weft-kv's loop thread (runnable, not running) to what ran
meanwhile on the CPU the loop then ran on. Input: a directory written by
loop_waits.sh (perf.txt: `perf script` of sched_switch/sched_wakeup; threads:
"TID NAME" of the server's threads, loop 0 named weft-kv)."""
import bisect
import collections
import re
import sys

d = sys.argv[1]
threads = dict(l.split(None, 1) for l in open(d + "/threads").read().splitlines())
loop = [t for t, c in threads.items() if c.strip() == "weft-kv"][0]
db = {t for t, c in threads.items() if c.strip().startswith("weft-db")}
own = set(threads)
line_re = re.compile(r"^\s*(\S.*?)\s+(\d+)/(\d+)\s+\[(\d+)\]\s+([\d.]+):\s+sched:(\w+):\s+(.*)$")
switch_re = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)")
timeline = collections.defaultdict(list)  # cpu -> [(time, tid, comm)] of who runs from then
waits = []  # (start, end, cpu the loop then ran on)
since = None
for line in open(d + "/perf.txt"):
    m = line_re.match(line)
    if not m:
        continue
    _, _, _, cpu, t, ev, rest = m.groups()
    t, cpu = float(t), int(cpu)
    if ev == "sched_switch":
        _, prev, state, ncomm, nxt = switch_re.search(rest).groups()
        timeline[cpu].append((t, nxt, ncomm))
        if prev == loop and state.startswith("R"):
            since = t  # preempted: runnable from now
        if nxt == loop and since is not None:
            waits.append((since, t, cpu))
            since = None
    elif ev == "sched_wakeup":
        if re.search(r"pid=(\d+) ", rest).group(1) == loop and since is None:
            since = t


def category(tid, comm):
    if tid in db:
        return "its database threads"
    if tid in own:
        return "its other threads"
    if comm.startswith(("wrk", "weft-load")):
        return "the load client"
    if tid == "0":
        return "idle"
    return "other processes"


starts = {c: [x[0] for x in tl] for c, tl in timeline.items()}
total, by, by_long, n_long = 0.0, collections.Counter(), collections.Counter(), 0
for s, e, cpu in waits:
    tl, ts = timeline[cpu], starts[cpu]
    j = max(bisect.bisect_right(ts, s) - 1, 0)
    share = collections.Counter()
    while j < len(tl) and tl[j][0] < e:
        a, b = max(tl[j][0], s), min(tl[j + 1][0] if j + 1 < len(tl) else e, e)
        if b > a:
            share[category(tl[j][1], tl[j][2])] += b - a
        j += 1
    total += e - s
    by.update(share)
    if e - s > 0.001:
        n_long += 1
        by_long.update(share)
span = max(tl[-1][0] for tl in timeline.values()) - min(tl[0][0] for tl in timeline.values())
print(f"{len(waits)} waits, {total * 1e3:.0f} ms runnable but waiting in {span:.2f} s "
      f"({total / span * 100:.0f}%); {n_long} waits over 1 ms ({sum(by_long.values()) * 1e3:.0f} ms)")
for k, v in by.most_common():
    print(f"  behind {k}: {v * 1e3:.0f} ms ({v / max(total, 1e-9) * 100:.0f}%); in waits over 1 ms: {by_long[k] * 1e3:.0f} ms")
