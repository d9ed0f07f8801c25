"""Where the wall time of weft-kv's long loop turns went.

Input: a directory written by long_turns.sh: `turns` (one `LT ...` line per turn
whose work exceeded 1.05 ms, printed by weft-kv built with
kv/tools/long_turns-instr.patch applied: phase timestamps on CLOCK_MONOTONIC and
the thread's CPU time over the turn), `perf.txt` (`perf script --ns` of CPU 0
recorded with `-k mono`: sched_switch, irq/softirq entry/exit, page faults and,
unless LIGHT=1, raw syscalls) and `threads` ("TID NAME" of the server's
threads; the loop is the one named weft-kv).

Each long turn inside the recorded stretch is split into: off-CPU (preempted,
by who ran next; or blocked, by the syscall it blocked in), steal (the vCPU
not running: the larger of the steal the guest was told of, i.e. wall time the
thread was neither on its CPU nor off it, which CLOCK_THREAD_CPUTIME_ID leaves
out under CONFIG_PARAVIRT_TIME_ACCOUNTING, and the stretches over 0.2 ms in
which the CPU recorded no event at all: a loop doing socket I/O makes a
softirq every few µs and a busy CPU takes the tick every 4 ms at HZ=250, so a
silent stretch is the vCPU gone without the guest being told, as in a nested
VM), interrupts and softirqs taken while the loop
was on its CPU (by vector), syscall time (by call, interrupts inside left
out) and the rest (user code). Prints one line per turn and the counts: which
part was the largest in how many turns, and the loop's own work per turn."""
import bisect
import collections
import re
import sys

d = sys.argv[1]
threads = dict(l.split(None, 1) for l in open(d + "/threads").read().splitlines())
loop = [t for t, c in threads.items() if c.strip() == "weft-kv"][0]
own = set(threads)
SYS = {0: "read", 1: "write", 20: "writev", 44: "sendto", 45: "recvfrom", 46: "sendmsg",
       47: "recvmsg", 232: "epoll_wait", 281: "epoll_pwait", 441: "epoll_pwait2", 233: "epoll_ctl",
       202: "futex", 3: "close", 288: "accept4", 43: "accept", 48: "shutdown", 54: "setsockopt",
       228: "clock_gettime", 9: "mmap", 11: "munmap", 12: "brk", 25: "mremap", 28: "madvise",
       291: "epoll_create1", 290: "eventfd2", 286: "timerfd_settime", 24: "sched_yield"}

turns = []
for l in open(d + "/turns"):
    if l.startswith("LT "):
        turns.append({k: int(v) if v.lstrip("-").isdigit() else v
                      for k, v in (x.split("=") for x in l.split()[1:])})

line_re = re.compile(r"^\s*(.*?)\s+(\d+)\s+\[(\d+)\]\s+(\d+)\.(\d+):\s+(\S+):\s*(.*)$")
switch_re = re.compile(r"prev_comm=(.*?) prev_pid=(\d+) .*prev_state=(\S+) ==> next_comm=(.*?) next_pid=(\d+)")
on = None          # loop on CPU since
offs = []          # (start, end, [who ran], preempted?)
cur_off = None
irqs = []          # (start, end, name) while the loop was current
irq_open = {}
sys_open = None
syscalls = []      # (start, end, name)
faults = []        # times
stamps = []        # every event on the CPU, in order (silent stretches)
t_first = t_last = None
for line in open(d + "/perf.txt"):
    m = line_re.match(line)
    if not m:
        continue
    comm, tid, cpu, s, ns, ev, rest = m.groups()
    t = int(s) * 1_000_000_000 + int(ns.ljust(9, "0")[:9])
    t_first = t if t_first is None else t_first
    t_last = t
    stamps.append(t)
    if ev == "sched:sched_switch":
        pc, prev, state, nc, nxt = switch_re.search(rest).groups()
        if prev == loop:
            # Blocked (not preempted): name the syscall it blocked in.
            cur_off = [t, None, [], state.startswith("R") or (sys_open[1] if sys_open else "?")]
        if cur_off is not None and nxt != loop:
            cur_off[2].append((nc, nxt))
        if nxt == loop:
            if cur_off is not None:
                cur_off[1] = t
                offs.append(tuple(cur_off))
            cur_off = None
    elif tid != loop:
        continue
    elif ev in ("irq:softirq_entry", "irq:irq_handler_entry"):
        name = re.search(r"(?:action|name)=(\S+)", rest).group(1)
        irq_open[ev[4:7]] = (t, ("softirq " if ev.startswith("irq:soft") else "irq ") + name)
    elif ev in ("irq:softirq_exit", "irq:irq_handler_exit"):
        o = irq_open.pop(ev[4:7], None)
        if o:
            irqs.append((o[0], t, o[1]))
    elif ev == "raw_syscalls:sys_enter":
        sys_open = (t, SYS.get(int(re.search(r"NR (\d+)", rest).group(1)), rest.split()[1]))
    elif ev == "raw_syscalls:sys_exit":
        if sys_open:
            syscalls.append((sys_open[0], t, sys_open[1]))
        sys_open = None
    elif ev.startswith("exceptions:page_fault"):
        faults.append(t)


def who(tid_comm):
    nc, tid = tid_comm
    if tid == "0":
        return "idle"
    if tid in own:
        return "own:" + threads[tid].strip()
    for p in ("ksoftirqd", "kworker", "rcu", "migration", "wrk", "weft-load", "perf"):
        if nc.startswith(p):
            return p
    return "other:" + nc


def clip(a, b, lo, hi):
    return max(0, min(b, hi) - max(a, lo))


SILENT = 200_000  # ns: a stretch this long with no event is the vCPU gone


def silent(lo, hi):
    """The stretches in [lo, hi) over SILENT with no event on the CPU."""
    i = bisect.bisect_left(stamps, lo)
    pts = [lo] + stamps[i:bisect.bisect_right(stamps, hi)] + [hi]
    return [(a, b) for a, b in zip(pts, pts[1:]) if b - a > SILENT]


rows = []
for tr in turns:
    lo, hi = tr["m0"], tr["m5"]
    if lo < t_first or hi > t_last:
        continue
    windows = [(lo, hi)]
    if tr["slept"] == "true" and tr["pe"]:
        windows = [(lo, tr["pe"]), (tr["pr"], hi)]
    wall = sum(b - a for a, b in windows)
    off, off_by, blocked = 0, collections.Counter(), collections.Counter()
    for a, b, ran, preempted in offs:
        for lo2, hi2 in windows:
            c = clip(a, b, lo2, hi2)
            if c:
                off += c
                if preempted is True:
                    off_by[who(ran[0]) if ran else "?"] += c
                else:
                    off_by[f"blocked in {preempted}"] += c
                    blocked[preempted] += c
    irq, irq_by, irq_spans = 0, collections.Counter(), []
    for a, b, name in irqs:
        c = sum(clip(a, b, x, y) for x, y in windows)
        if c:
            irq += c
            irq_by[name] += c
            irq_spans.append((a, b))
    sysc, sys_by, nsys, longest = 0, collections.Counter(), collections.Counter(), (0, "")
    for a, b, name in syscalls:
        c = sum(clip(a, b, x, y) for x, y in windows)
        if c:
            c -= sum(clip(x, y, a, b) for x, y in irq_spans)
            c -= sum(clip(x, y, a, b) for x, y, _, _ in offs)
            c = max(c, 0)
            sysc += c
            sys_by[name] += c
            nsys[name] += 1
            longest = max(longest, (c, name))
    nf = sum(1 for f in faults if any(x <= f < y for x, y in windows))
    # The thread's CPU time (CLOCK_THREAD_CPUTIME_ID over the turn) leaves out
    # the time the hypervisor ran something else on this vCPU (steal, with
    # CONFIG_PARAVIRT_TIME_ACCOUNTING): what is neither on the CPU nor off it.
    steal = 0
    if "cpu" in tr:
        off_all = sum(clip(a, b, lo, hi) for a, b, _, _ in offs)
        steal = max(0, (hi - lo) - off_all - tr["cpu"])
    # Silent stretches: the loop's off-CPU spans left out (counted there),
    # and taken out of the interrupts they fell in (the vCPU was gone).
    quiet = [q for x, y in windows for q in silent(x, y)]
    gone = max(0, sum(b - a - sum(clip(x, y, a, b) for x, y, _, _ in offs) for a, b in quiet))
    irq = max(0, irq - sum(clip(x, y, a, b) for x, y in irq_spans for a, b in quiet))
    steal = max(steal, gone)
    user = max(0, wall - off - irq - sysc - steal)
    ph = {"calls": tr["m1"] - tr["m0"], "timers": tr["m2"] - tr["m1"],
          "poll": (tr["pr"] - tr["pe"]) if tr["pe"] else 0,
          "io": (tr["m3"] - tr["pr"]) if tr["pe"] else tr["m3"] - tr["m2"],
          "tasks": tr["m4"] - tr["m3"], "end": tr["m5"] - tr["m4"]}
    if tr["pe"]:
        ph["timers"] = tr["pe"] - tr["m1"]
    rows.append(dict(tr=tr, wall=wall, off=off, steal=steal, blocked=blocked, off_by=off_by, irq=irq, irq_by=irq_by, sys=sysc,
                     sys_by=sys_by, nsys=nsys, longest=longest, faults=nf, user=user, ph=ph))

us = lambda n: f"{n / 1000:.0f}"
print(f"loop tid {loop}; recorded {(t_last - t_first) / 1e9:.2f} s; long turns in the log {len(turns)}, "
      f"inside the recording {len(rows)}")
print("wall_us off_us steal_us irq_us sys_us user_us faults | phases calls/timers/poll/io/tasks/end us | "
      "n calls/events/polled | off by whom | irq | top syscalls (n, us)")
for r in rows:
    tr, ph = r["tr"], r["ph"]
    offs_s = ",".join(f"{k}:{us(v)}" for k, v in r["off_by"].most_common(3))
    irq_s = ",".join(f"{k}:{us(v)}" for k, v in r["irq_by"].most_common(3))
    sys_s = ",".join(f"{k}x{r['nsys'][k]}:{us(v)}" for k, v in r["sys_by"].most_common(4))
    print(f"{us(r['wall'])} {us(r['off'])} {us(r['steal'])} {us(r['irq'])} {us(r['sys'])} {us(r['user'])} {r['faults']} | "
          f"{'/'.join(us(ph[k]) for k in ('calls', 'timers', 'poll', 'io', 'tasks', 'end'))} | "
          f"{tr['calls']}/{tr['events']}/{tr['polled']} | {offs_s} | {irq_s} | {sys_s} "
          f"| longest syscall {r['longest'][1]} {us(r['longest'][0])}")
n = len(rows)
if n:
    def cnt(f):
        return sum(1 for r in rows if f(r))
    print(f"\n{n} long turns in the recording:")
    print(f"  off-CPU >= 0.5 ms: {cnt(lambda r: r['off'] >= 500_000)}; any off-CPU: {cnt(lambda r: r['off'] > 0)}")
    print(f"  blocked (not preempted) >= 0.5 ms: {cnt(lambda r: sum(r['blocked'].values()) >= 500_000)}, "
          f"of which in futex: {cnt(lambda r: r['blocked']['futex'] >= 500_000)}; preempted >= 0.5 ms: "
          f"{cnt(lambda r: r['off'] - sum(r['blocked'].values()) >= 500_000)}")
    print(f"  steal (vCPU not running) >= 0.5 ms: {cnt(lambda r: r['steal'] >= 500_000)}; "
          f"off-CPU + steal >= 0.5 ms: {cnt(lambda r: r['off'] + r['steal'] >= 500_000)}")
    print(f"  irq+softirq on the loop >= 0.3 ms: {cnt(lambda r: r['irq'] >= 300_000)}")
    print(f"  syscalls >= 0.5 ms in all: {cnt(lambda r: r['sys'] >= 500_000)}; one syscall >= 0.3 ms: "
          f"{cnt(lambda r: r['longest'][0] >= 300_000)}")
    print(f"  user (rest) >= 0.5 ms: {cnt(lambda r: r['user'] >= 500_000)}; page faults in the turn: "
          f"{cnt(lambda r: r['faults'] > 0)}")
    dom = collections.Counter(max(("off", r["off"]), ("steal", r["steal"]), ("irq", r["irq"]), ("sys", r["sys"]),
                                  ("user", r["user"]), key=lambda x: x[1])[0] for r in rows)
    print("  largest share:", dict(dom))
    def cause(r):
        parts = collections.Counter()
        for k, v in r["off_by"].items():
            if k.startswith("blocked in "):
                parts["blocked (" + k[11:] + ")"] += v
            elif k.split(":")[0] in ("ksoftirqd", "kworker", "rcu", "migration"):
                parts["preempted by a kernel thread"] += v
            elif k.startswith("own:"):
                parts["preempted by its own threads"] += v
            else:
                parts["preempted by other processes"] += v
        parts["steal"] += r["steal"]
        parts["interrupts and softirqs"] += r["irq"]
        parts["own work (user + syscalls)"] += r["user"] + r["sys"]
        return parts.most_common(1)[0][0]
    own = sorted(r["user"] + r["sys"] for r in rows)
    print(f"  the loop's own work (user + syscalls, interrupts left out) in a long turn: median {own[len(own) // 2] / 1e3:.0f} us, "
          f"max {own[-1] / 1e3:.0f} us")
    print("  largest part per turn:", dict(collections.Counter(cause(r) for r in rows).most_common()))
    phd = collections.Counter(max(r["ph"].items(), key=lambda x: x[1])[0] for r in rows)
    print("  longest phase:", dict(phd))
    tot = collections.Counter()
    for r in rows:
        for k in ("off", "steal", "irq", "sys", "user"):
            tot[k] += r[k]
        for k, v in r["ph"].items():
            tot["ph_" + k] += v
    w = sum(r["wall"] for r in rows)
    print("  share of all long-turn wall time: " + ", ".join(
        f"{k} {100 * tot[k] / w:.0f}%" for k in ("off", "steal", "irq", "sys", "user")))
    print("  by phase: " + ", ".join(f"{k} {100 * tot['ph_' + k] / w:.0f}%"
                                    for k in ("calls", "timers", "poll", "io", "tasks", "end")))
    sys_all, n_all = collections.Counter(), collections.Counter()
    for r in rows:
        sys_all.update(r["sys_by"])
        n_all.update(r["nsys"])
    print("  syscalls in long turns (n, ms): " + ", ".join(
        f"{k} {n_all[k]} {v / 1e6:.2f}" for k, v in sys_all.most_common(6)))
