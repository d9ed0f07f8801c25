#!/usr/bin/env python3
"""Twisted and asyncio on the same operations as weft-bench.

    python3 bench/python/bench.py [--quick] [--json FILE]

Measures, in one run, alternating the two subjects round by round (each round
in a fresh subprocess, because a Twisted reactor cannot be restarted):

- callFromThread / call_soon_threadsafe burst from one producer (ns/call);
- the same into an idle loop: send -> run latency (p50 / p99);
- deferToThread / run_in_executor round trip, sequential (p50 / p99), and
  with waves of 1000 in flight (ns/job);
- blockingCallFromThread / run_coroutine_threadsafe(...).result() round trip
  from a plain thread (p50 / p99);
- callInThread / executor.submit throughput from one submitter (ns/job).

Twisted is optional: without it (pip install twisted) only asyncio runs.
"""

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import threading
import time

SIZES = {
    True: dict(rounds=3, burst=20_000, wake=200, rtt=500, waves=2, pool=20_000),
    False: dict(rounds=5, burst=100_000, wake=1_000, rtt=2_000, waves=10, pool=100_000),
}
GAP = 0.00025  # pause between wake-latency sends, so the loop is idle


def now():
    return time.perf_counter()


def ns(seconds):
    return seconds * 1e9


# --------------------------------------------------------------------------
# Twisted


def twisted_suite(sz):
    from twisted.internet import defer, reactor, threads

    out = {}

    def run_thread(fn):
        t = threading.Thread(target=fn)
        t.start()
        return t

    @defer.inlineCallbacks
    def main():
        try:
            # callFromThread burst
            n = sz["burst"]
            done = defer.Deferred()
            count = [0]
            start = [0.0]

            def tick():
                count[0] += 1
                if count[0] == n:
                    done.callback(now())

            def producer():
                start[0] = now()
                for _ in range(n):
                    reactor.callFromThread(tick)

            run_thread(producer)
            end = yield done
            out["cft_burst_1p"] = [ns(end - start[0]) / n]

            # wake latency into an idle reactor
            lat = []
            done = defer.Deferred()

            def record(t):
                lat.append(ns(now() - t))
                if len(lat) == sz["wake"]:
                    done.callback(None)

            def waker():
                for _ in range(sz["wake"]):
                    time.sleep(GAP)
                    reactor.callFromThread(record, now())

            run_thread(waker)
            yield done
            out["cft_wake_latency"] = lat

            # deferToThread, sequential
            rtt = []
            for _ in range(sz["rtt"]):
                t = now()
                yield threads.deferToThread(lambda: 1)
                rtt.append(ns(now() - t))
            out["defer_rtt_seq"] = rtt

            # deferToThread, waves of 1000 in flight
            t = now()
            for _ in range(sz["waves"]):
                yield defer.gatherResults([threads.deferToThread(lambda: 1) for _ in range(1000)])
            out["defer_1000_in_flight"] = [ns(now() - t) / (1000 * sz["waves"])]

            # blockingCallFromThread from a plain thread
            done = defer.Deferred()

            def caller():
                v = []
                for _ in range(sz["rtt"]):
                    t = now()
                    threads.blockingCallFromThread(reactor, lambda: 1)
                    v.append(ns(now() - t))
                reactor.callFromThread(done.callback, v)

            run_thread(caller)
            out["blocking_call_rtt"] = yield done

            # callInThread throughput from one submitter (the reactor thread)
            n = sz["pool"]
            done = defer.Deferred()
            lock = threading.Lock()
            finished = [0]

            def job():
                with lock:
                    finished[0] += 1
                    last = finished[0] == n
                if last:
                    reactor.callFromThread(done.callback, now())

            t = now()
            for _ in range(n):
                reactor.callInThread(job)
            end = yield done
            out["pool_throughput"] = [ns(end - t) / n]
        finally:
            reactor.stop()

    reactor.callWhenRunning(main)
    reactor.run(installSignalHandlers=False)
    return out


# --------------------------------------------------------------------------
# asyncio


def asyncio_suite(sz):
    from concurrent.futures import ThreadPoolExecutor

    out = {}

    async def main():
        loop = asyncio.get_running_loop()
        executor = ThreadPoolExecutor()
        loop.set_default_executor(executor)

        # call_soon_threadsafe burst
        n = sz["burst"]
        done = loop.create_future()
        count = [0]
        start = [0.0]

        def tick():
            count[0] += 1
            if count[0] == n:
                done.set_result(now())

        def producer():
            start[0] = now()
            for _ in range(n):
                loop.call_soon_threadsafe(tick)

        threading.Thread(target=producer).start()
        end = await done
        out["cft_burst_1p"] = [ns(end - start[0]) / n]

        # wake latency into an idle loop
        lat = []
        done = loop.create_future()

        def record(t):
            lat.append(ns(now() - t))
            if len(lat) == sz["wake"]:
                done.set_result(None)

        def waker():
            for _ in range(sz["wake"]):
                time.sleep(GAP)
                loop.call_soon_threadsafe(record, now())

        threading.Thread(target=waker).start()
        await done
        out["cft_wake_latency"] = lat

        # run_in_executor, sequential
        rtt = []
        for _ in range(sz["rtt"]):
            t = now()
            await loop.run_in_executor(None, int)
            rtt.append(ns(now() - t))
        out["defer_rtt_seq"] = rtt

        # run_in_executor, waves of 1000 in flight
        t = now()
        for _ in range(sz["waves"]):
            await asyncio.gather(*(loop.run_in_executor(None, int) for _ in range(1000)))
        out["defer_1000_in_flight"] = [ns(now() - t) / (1000 * sz["waves"])]

        # run_coroutine_threadsafe(...).result() from a plain thread
        async def one():
            return 1

        def caller():
            v = []
            for _ in range(sz["rtt"]):
                t = now()
                asyncio.run_coroutine_threadsafe(one(), loop).result()
                v.append(ns(now() - t))
            return v

        out["blocking_call_rtt"] = await asyncio.to_thread(caller)

        # executor.submit throughput from one submitter
        n = sz["pool"]
        lock = threading.Lock()
        finished = [0]
        all_done = threading.Event()

        def job():
            with lock:
                finished[0] += 1
                if finished[0] == n:
                    all_done.set()

        def submitter():
            t = now()
            for _ in range(n):
                executor.submit(job)
            all_done.wait(120)
            return ns(now() - t) / n

        out["pool_throughput"] = [await asyncio.to_thread(submitter)]
        executor.shutdown(wait=True)

    asyncio.run(main())
    return out


# --------------------------------------------------------------------------
# Driver

ROWS = [
    ("cft_burst_1p", "callFromThread burst, 1 producer (ns/call)", False),
    ("cft_wake_latency", "callFromThread wake latency, idle loop (p50 / p99)", True),
    ("defer_rtt_seq", "deferToThread round trip, sequential (p50 / p99)", True),
    ("defer_1000_in_flight", "deferToThread, 1000 in flight (ns/job)", False),
    ("blocking_call_rtt", "blockingCallFromThread round trip (p50 / p99)", True),
    ("pool_throughput", "pool throughput, one submitter (ns/job)", False),
]


def fmt(v):
    if v < 1e3:
        return f"{v:.0f} ns"
    if v < 1e6:
        return f"{v / 1e3:.1f} µs"
    return f"{v / 1e6:.2f} ms"


def pct(v, q):
    s = sorted(v)
    return s[round((len(s) - 1) * q)]


def have_twisted():
    try:
        import twisted  # noqa: F401
    except ImportError:
        return False
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write raw samples here")
    ap.add_argument("--child", choices=["twisted", "asyncio"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    sz = SIZES[a.quick]
    if a.child:
        suite = twisted_suite if a.child == "twisted" else asyncio_suite
        json.dump(suite(sz), sys.stdout)
        return

    subjects = ["twisted", "asyncio"] if have_twisted() else ["asyncio"]
    if "twisted" not in subjects:
        print("twisted not installed (pip install twisted): asyncio only", file=sys.stderr)
    raw = {s: [] for s in subjects}
    for r in range(sz["rounds"]):
        order = subjects[r % len(subjects):] + subjects[: r % len(subjects)]
        for s in order:
            cmd = [sys.executable, __file__, "--child", s] + (["--quick"] if a.quick else [])
            res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=True)
            raw[s].append(json.loads(res.stdout))
        print(f"round {r + 1}/{sz['rounds']} done", file=sys.stderr)

    print(f"## Python peers ({'--quick, ' if a.quick else ''}{sz['rounds']} rounds, "
          f"Python {sys.version.split()[0]})\n")
    print("| scenario | " + " | ".join(subjects) + " |")
    print("|---|" + "---|" * len(subjects))
    for key, label, latency in ROWS:
        cells = []
        for s in subjects:
            v = [x for rnd in raw[s] for x in rnd[key]]
            if latency:
                cells.append(f"{fmt(pct(v, 0.5))} / {fmt(pct(v, 0.99))}")
            else:
                cells.append(fmt(statistics.median(v)))
        print(f"| {label} | " + " | ".join(cells) + " |")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(raw, f)


if __name__ == "__main__":
    main()
