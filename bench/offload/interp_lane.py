"""The interpreter lane (InterpreterPool, CPython 3.12+) against the
process lane, in one run (issue 17).

usage: PYTHONPATH=BUILD/pymod python3.12 interp_lane.py [--rounds N]

- scaling: spin(N), a pure-Python loop, 8 calls on InterpreterPool(1) and
  InterpreterPool(2), rounds in the order 1, 2, 2, 1, ...; calls/s, the
  2/1 ratio of the medians, and the process's CPU time over wall time
  (about 2 when both CPUs were ours: on a shared machine the ratio of
  calls/s cannot be better than the CPU the others left).
- tiny: add(k, 1) with 1000 in flight, 20,000 calls, on InterpreterPool(2)
  and on the process lane (concurrent.futures.ProcessPoolExecutor(2),
  spawn, its futures turned into twincore Futures by from_asyncio), the two
  alternating; calls/s.
- one: one add() at a time, 2000 calls, p50 and p99 of the round trip.
- startup: a fresh InterpreterPool(1)'s first call minus the p50 round
  trip: the worker's interpreter start-up.

The workers load this file as __mp_main__ (as multiprocessing's spawn
does), so its top level imports only the standard library.  Prints a JSON
line per figure; benchmarks report, they never pass or fail.
"""

import argparse
import json
import os
import statistics
import sys
import time


def spin(n):
    s = 0
    for i in range(n):
        s += i
    return s


def add(a, b):
    return a + b


SPIN_N = 2_000_000


def emit(**kw):
    print(json.dumps(kw), flush=True)


def run(fut_or_coro):
    import twincore
    return twincore.run(fut_or_coro)


async def scaling_round(pool, calls):
    """calls/s, and this process's CPU time over the wall time (2.0: both
    CPUs were ours throughout)."""
    import twincore
    c0, t0 = time.process_time(), time.perf_counter()
    await twincore.gather(*[pool.defer(spin, SPIN_N) for _ in range(calls)])
    wall = time.perf_counter() - t0
    return calls / wall, (time.process_time() - c0) / wall


async def tiny(submit, total, inflight):
    import twincore
    t0 = time.perf_counter()
    done = 0
    while done < total:
        n = min(inflight, total - done)
        got = await twincore.gather(*[submit(add, k, 1) for k in range(n)])
        assert got[-1] == n
        done += n
    return total / (time.perf_counter() - t0)


async def one_at_a_time(submit, calls):
    lat = []
    for k in range(calls):
        t0 = time.perf_counter()
        assert await submit(add, k, 1) == k + 1
        lat.append(time.perf_counter() - t0)
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99)]


async def first_call(workers):
    import twincore
    pool = twincore.InterpreterPool(workers=workers)
    t0 = time.perf_counter()
    await pool.defer(add, 1, 1)
    first = time.perf_counter() - t0
    await pool.aclose()
    return first


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    import concurrent.futures
    import multiprocessing
    import twincore

    async def body():
        emit(python=sys.version.split()[0], cpus=os.cpu_count())
        p1 = twincore.InterpreterPool(workers=1)
        p2 = twincore.InterpreterPool(workers=2)
        # Warm: every worker has its interpreter before timing starts.
        await twincore.gather(*[p1.defer(spin, 10) for _ in range(2)])
        await twincore.gather(*[p2.defer(spin, SPIN_N // 10)
                                for _ in range(4)])
        rates = {1: [], 2: []}
        cpu = {1: [], 2: []}
        order = [1, 2, 2, 1] * ((args.rounds + 1) // 2)
        for w in order[:2 * args.rounds]:
            rate, busy = await scaling_round(p1 if w == 1 else p2, 8)
            rates[w].append(round(rate, 3))
            cpu[w].append(round(busy, 2))
        m1, m2 = statistics.median(rates[1]), statistics.median(rates[2])
        emit(figure="scaling spin(2e6)", calls_per_s_1=round(m1, 2),
             calls_per_s_2=round(m2, 2), ratio=round(m2 / m1, 3),
             cpu_over_wall_1=statistics.median(cpu[1]),
             cpu_over_wall_2=statistics.median(cpu[2]), rounds=rates)

        ex = concurrent.futures.ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("spawn"))

        def proc_submit(fn, *a):
            return twincore.from_asyncio(ex.submit(fn, *a))

        def interp_submit(fn, *a):
            return p2.defer(fn, *a)
        await twincore.gather(*[proc_submit(add, 1, 1) for _ in range(4)])
        tiny_rates = {"interp": [], "process": []}
        for i in range(args.rounds):
            for lane in (("interp", "process") if i % 2 == 0
                         else ("process", "interp")):
                sub = interp_submit if lane == "interp" else proc_submit
                tiny_rates[lane].append(await tiny(sub, 20_000, 1000))
        ti = statistics.median(tiny_rates["interp"])
        tp = statistics.median(tiny_rates["process"])
        emit(figure="tiny calls, 1000 in flight", interp_calls_per_s=round(ti),
             process_calls_per_s=round(tp), ratio=round(ti / tp, 2))

        p50s = {"interp": [], "process": []}
        p99s = {"interp": [], "process": []}
        for i in range(args.rounds):
            for lane in (("interp", "process") if i % 2 == 0
                         else ("process", "interp")):
                sub = interp_submit if lane == "interp" else proc_submit
                p50, p99 = await one_at_a_time(sub, 2000)
                p50s[lane].append(p50)
                p99s[lane].append(p99)
        i50 = statistics.median(p50s["interp"])
        pr50 = statistics.median(p50s["process"])
        emit(figure="one at a time", interp_p50_us=round(i50 * 1e6, 1),
             process_p50_us=round(pr50 * 1e6, 1),
             interp_p99_us=round(statistics.median(p99s["interp"]) * 1e6, 1),
             process_p99_us=round(statistics.median(p99s["process"]) * 1e6,
                                  1),
             ratio=round(i50 / pr50, 3))
        ex.shutdown()

        firsts = [await first_call(1) for _ in range(args.rounds)]
        emit(figure="worker start-up (first call minus p50 round trip)",
             startup_ms=round((statistics.median(firsts) - i50) * 1e3, 2),
             first_call_ms=[round(f * 1e3, 2) for f in firsts])
        await p1.aclose()
        await p2.aclose()
    twincore.run(body())


if __name__ == "__main__":
    main()
