"""The interpreter lane (InterpreterPool, CPython 3.12+) against twincore's
process lane (ProcessPool) in one run (issue 17), and on 3.13 against
CPython's own subinterpreters (test.support.interpreters).

usage: PYTHONPATH=BUILD/pymod python3.X bench/offload/interp_lane.py
           [--rounds N] [--figures scaling,tiny,one,startup,cpython]

Every pool has 2 workers unless said otherwise; the functions come from
_lane_tasks.py, which imports nothing. Rounds alternate or rotate the
lanes, and each figure is the median over --rounds rounds.

- scaling: spin(2e6), a pure-Python loop, 8 calls on InterpreterPool(1)
  and InterpreterPool(2), rounds in the order 1, 2, 2, 1, ...; calls/s,
  the 2/1 ratio, and the process's CPU time over wall time (about 2 when
  both CPUs were ours: on a shared machine the ratio cannot be better than
  the CPU the others left).
- tiny: add(k, 1), 20,000 calls with 1,000 in flight, on InterpreterPool(2),
  twincore.ProcessPool(2) (the process lane: the goal's reference) and, as
  extra information, concurrent.futures.ProcessPoolExecutor(2) (spawn,
  its futures made twincore Futures by from_asyncio); calls/s and the
  ratios to the process lane.
- one: one add() at a time, 2,000 calls on each; p50 and p99 of the round
  trip, and the p50 ratio to the process lane.
- startup: a worker's start-up, defined two ways, on a fresh
  InterpreterPool(workers=1) each round: worker_ms, from the worker thread
  beginning its interpreter to that interpreter ready to run a task
  (stats()["startup"]: Py_NewInterpreterFromConfig, then the runner;
  cpu_ms is the thread's CPU time for both); first_result_ms, from the
  InterpreterPool() call to the first add()'s result on the loop. For
  scale, cpython_create_ms: CPython's own create() of an empty
  subinterpreter (_interpreters on 3.13, _xxsubinterpreters on 3.12) on
  the main thread, alternating with the pools.
- cpython (3.13, test.support.interpreters): the same spin on 1 and 2
  threads with one interpreter each (Interpreter.exec); the same tiny
  calls through 2 interpreters, each serving a queues.Queue pair on its
  thread (20,000 calls, 1,000 in flight; Queue.get polls every 10 ms when
  empty, as 3.13 implements it); and one at a time, both through that
  queue worker and by Interpreter.exec() on the caller's thread.

Each figure prints one JSON line with the load average (1 min) before and
after it. Benchmarks report; they never pass or fail.
"""

import argparse
import json
import os
import statistics
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _lane_tasks import add, spin  # noqa: E402

SPIN_N = 2_000_000
TINY_TOTAL = 20_000
INFLIGHT = 1000
ONE_CALLS = 2000
FIGURES = ("scaling", "tiny", "one", "startup", "cpython")


def emit(**kw):
    print(json.dumps(kw), flush=True)


def load():
    return round(os.getloadavg()[0], 2)


def med(values):
    return statistics.median(values)


def us(seconds):
    return round(seconds * 1e6, 1)


async def scaling_round(pool, calls):
    """calls/s, and this process's CPU time over the wall time."""
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


def cpython_interpreters():
    """CPython's low-level module, or None."""
    try:
        import _interpreters as xi
    except ImportError:
        try:
            import _xxsubinterpreters as xi
        except ImportError:
            return None
    return xi


def cpython_create():
    """Wall and thread CPU seconds of creating one empty subinterpreter
    with CPython's own module (destroyed after, untimed)."""
    xi = cpython_interpreters()
    c0, t0 = time.thread_time(), time.perf_counter()
    iid = xi.create()
    wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
    xi.destroy(iid)
    return wall, cpu


async def startup_round():
    import twincore
    t0 = time.perf_counter()
    pool = twincore.InterpreterPool(workers=1)
    await pool.defer(add, 1, 1)
    first = time.perf_counter() - t0
    [s] = pool.stats()["startup"]
    await pool.aclose()
    return first, s


def rotations(lanes, rounds):
    for i in range(rounds):
        k = i % len(lanes)
        yield lanes[k:] + lanes[:k]


async def twincore_figures(args):
    import concurrent.futures
    import multiprocessing
    import twincore
    want = set(args.figures)
    p1 = twincore.InterpreterPool(workers=1)
    p2 = twincore.InterpreterPool(workers=2)
    # Warm: every worker has its interpreter before timing starts.
    await twincore.gather(*[p1.defer(spin, 10) for _ in range(2)])
    await twincore.gather(*[p2.defer(spin, SPIN_N // 10) for _ in range(4)])

    if "scaling" in want:
        l0 = load()
        rates = {1: [], 2: []}
        cpu = {1: [], 2: []}
        order = [1, 2, 2, 1] * ((args.rounds + 1) // 2)
        for w in order[:2 * args.rounds]:
            rate, busy = await scaling_round(p1 if w == 1 else p2, 8)
            rates[w].append(round(rate, 3))
            cpu[w].append(round(busy, 2))
        m1, m2 = med(rates[1]), med(rates[2])
        emit(figure="scaling spin(2e6), InterpreterPool 2 vs 1 workers",
             calls_per_s_1=round(m1, 2), calls_per_s_2=round(m2, 2),
             ratio=round(m2 / m1, 3), cpu_over_wall_1=med(cpu[1]),
             cpu_over_wall_2=med(cpu[2]), rounds=rates, load=[l0, load()])

    if want & {"tiny", "one"}:
        proc = twincore.ProcessPool(workers=2)
        ex = concurrent.futures.ProcessPoolExecutor(
            2, mp_context=multiprocessing.get_context("spawn"))
        lanes = {
            "interp": p2.defer,
            "process": proc.defer,
            "ppe": lambda fn, *a: twincore.from_asyncio(ex.submit(fn, *a)),
        }
        for submit in lanes.values():
            await twincore.gather(*[submit(add, 1, 1) for _ in range(8)])
        names = list(lanes)
        if "tiny" in want:
            l0 = load()
            rates = {n: [] for n in names}
            for order in rotations(names, args.rounds):
                for n in order:
                    rates[n].append(await tiny(lanes[n], TINY_TOTAL,
                                               INFLIGHT))
            m = {n: med(v) for n, v in rates.items()}
            emit(figure="tiny calls, 1000 in flight (calls/s)",
                 interp=round(m["interp"]), process_lane=round(m["process"]),
                 ppe=round(m["ppe"]),
                 ratio_to_process_lane=round(m["interp"] / m["process"], 2),
                 ratio_to_ppe=round(m["interp"] / m["ppe"], 2),
                 load=[l0, load()])
        if "one" in want:
            l0 = load()
            p50s = {n: [] for n in names}
            p99s = {n: [] for n in names}
            for order in rotations(names, args.rounds):
                for n in order:
                    p50, p99 = await one_at_a_time(lanes[n], ONE_CALLS)
                    p50s[n].append(p50)
                    p99s[n].append(p99)
            m50 = {n: med(v) for n, v in p50s.items()}
            m99 = {n: med(v) for n, v in p99s.items()}
            emit(figure="one at a time (round trip, µs)",
                 interp_p50=us(m50["interp"]),
                 process_lane_p50=us(m50["process"]), ppe_p50=us(m50["ppe"]),
                 interp_p99=us(m99["interp"]),
                 process_lane_p99=us(m99["process"]), ppe_p99=us(m99["ppe"]),
                 p50_ratio_to_process_lane=round(
                     m50["interp"] / m50["process"], 3),
                 p50_ratio_to_ppe=round(m50["interp"] / m50["ppe"], 3),
                 load=[l0, load()])
        ex.shutdown()
        await proc.aclose()
    await p1.aclose()
    await p2.aclose()

    if "startup" in want:
        l0 = load()
        firsts, worker, interp, runner, cpu = [], [], [], [], []
        cp_wall, cp_cpu = [], []
        have_cpython = cpython_interpreters() is not None
        for i in range(args.rounds):
            pair = ["pool", "cpython"] if i % 2 == 0 else ["cpython", "pool"]
            for what in pair:
                if what == "pool":
                    first, s = await startup_round()
                    firsts.append(first * 1e3)
                    interp.append(s["interpreter_ns"] / 1e6)
                    runner.append(s["runner_ns"] / 1e6)
                    worker.append((s["interpreter_ns"] + s["runner_ns"])
                                  / 1e6)
                    cpu.append(s["cpu_ns"] / 1e6)
                elif have_cpython:
                    wall, c = cpython_create()
                    cp_wall.append(wall * 1e3)
                    cp_cpu.append(c * 1e3)
        r2 = lambda v: round(med(v), 2) if v else None  # noqa: E731
        emit(figure="worker start-up (ms)", worker_ms=r2(worker),
             interpreter_ms=r2(interp), runner_ms=r2(runner),
             cpu_ms=r2(cpu), first_result_ms=r2(firsts),
             cpython_create_ms=r2(cp_wall), cpython_create_cpu_ms=r2(cp_cpu),
             worker_ms_rounds=[round(w, 1) for w in worker],
             site_imported=not sys.flags.no_site, load=[l0, load()])


# ---- CPython 3.13's own: test.support.interpreters ----------------------

_PRELUDE = ("import sys\nsys.path[:] = {path!r}\n"
            "from _lane_tasks import add, spin\n")
_SERVE = """
while True:
    k = qin.get()
    if k is None:
        break
    qout.put(add(k, 1))
"""


def cpython_figures(args):
    try:
        from test.support import interpreters
        from test.support.interpreters import queues
    except ImportError:
        emit(figure="CPython's own subinterpreters", skipped=(
            "test.support.interpreters is not here (3.13+)"))
        return
    prelude = _PRELUDE.format(path=sys.path)

    def fresh():
        interp = interpreters.create()
        interp.exec(prelude)
        return interp

    # Scaling: 8 spin calls on 1 thread, or 4 on each of 2 threads.
    interps = [fresh(), fresh()]
    l0 = load()
    rates = {1: [], 2: []}
    order = [1, 2, 2, 1] * ((args.rounds + 1) // 2)
    for w in order[:2 * args.rounds]:
        def work(interp, n=8 // w):
            for _ in range(n):
                interp.exec(f"spin({SPIN_N})")
        ts = [threading.Thread(target=work, args=(interps[i],))
              for i in range(w)]
        t0 = time.perf_counter()
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        rates[w].append(8 / (time.perf_counter() - t0))
    m1, m2 = med(rates[1]), med(rates[2])
    emit(figure="CPython 3.13 interpreters: spin(2e6), 2 threads vs 1",
         calls_per_s_1=round(m1, 2), calls_per_s_2=round(m2, 2),
         ratio=round(m2 / m1, 3), load=[l0, load()])

    # Tiny calls: a queue pair per interpreter, served on its own thread.
    pairs, threads = [], []
    for interp in interps:
        qin, qout = queues.create(syncobj=True), queues.create(syncobj=True)
        interp.exec("import _interpqueues\ndef serve():\n" + "".join(
            "    " + line + "\n" for line in _SERVE.strip().splitlines()))
        interp.prepare_main(qin=qin, qout=qout)
        t = threading.Thread(target=interp.exec, args=("serve()",))
        t.start()
        threads.append(t)
        pairs.append((qin, qout))
    l0 = load()
    tiny_rates = []
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        done = 0
        while done < TINY_TOTAL:
            n = min(INFLIGHT, TINY_TOTAL - done)
            for k in range(n):
                pairs[k % 2][0].put(k)
            got = [pairs[k % 2][1].get() for k in range(n)]
            assert got[-1] == n
            done += n
        tiny_rates.append(TINY_TOTAL / (time.perf_counter() - t0))
    lat = []
    for k in range(min(ONE_CALLS, 200)):    # each takes ~10 ms (polling)
        t0 = time.perf_counter()
        pairs[0][0].put(k)
        assert pairs[0][1].get() == k + 1
        lat.append(time.perf_counter() - t0)
    for qin, _ in pairs:
        qin.put(None)
    for t in threads:
        t.join()
    lat.sort()
    queue_p50 = lat[len(lat) // 2]
    # One at a time on the caller's thread: Interpreter.exec() runs in the
    # other interpreter without a thread switch.
    ex = interps[0]
    qout = queues.create(syncobj=True)
    ex.prepare_main(qout=qout)
    ex.exec("def step():\n    qout.put(add(k, 1))\n")
    lat2 = []
    for k in range(ONE_CALLS):
        t0 = time.perf_counter()
        ex.prepare_main(k=k)
        ex.exec("step()")
        assert qout.get_nowait() == k + 1
        lat2.append(time.perf_counter() - t0)
    lat2.sort()
    emit(figure="CPython 3.13 interpreters: tiny calls",
         queue_workers_calls_per_s=round(med(tiny_rates)),
         queue_worker_one_p50_us=us(queue_p50),
         exec_on_caller_thread_p50_us=us(lat2[len(lat2) // 2]),
         exec_on_caller_thread_p99_us=us(lat2[int(len(lat2) * 0.99)]),
         load=[l0, load()])
    for interp in interps:
        interp.close()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--figures", type=lambda s: s.split(","),
                    default=list(FIGURES),
                    help="comma-separated: " + ",".join(FIGURES))
    args = ap.parse_args()
    import twincore
    emit(python=sys.version.split()[0], cpus=os.cpu_count(),
         executable=sys.executable, command=" ".join(sys.argv),
         load=load())
    twincore.run(twincore_figures(args))
    if "cpython" in args.figures:
        cpython_figures(args)


if __name__ == "__main__":
    main()
