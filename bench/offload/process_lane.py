"""The process lane (twincore.ProcessPool) against asyncio +
concurrent.futures.ProcessPoolExecutor and multiprocessing.Pool, 2 worker
processes each (issue 16).

usage: process_lane.py {tiny,cpu,bulk} --peer {twincore,asyncio,mp,interp}
                       [--duration S] [--workers N]
       process_lane.py all [--repeats R] [--duration S]

- tiny: the TinyDriver of _offload.py (1,000 tiny calls in flight, each
  completion submitting the next: tasks_per_s; then one at a time: p50_us,
  p99_us), through the peer's worker processes. mp's completions run on
  its result-handler thread (there is no loop), the others on the loop.
- cpu: a pure-Python function (no GIL release) on 1 and on 2 worker
  processes, 4 calls in flight, windows in the order 1, 2, 2, 1 (each half
  of --duration): calls per second and the 2/1 ratio, and "busy", the
  share of the window the workers spent inside the function (by their own
  clocks), which shows the dispatch overhead even on a loaded machine.
- bulk: a 64 MiB bytes object echoed by a worker (argument and result), 5
  times after one warm-up: the median seconds per round trip.
- all: every mode for every peer, --repeats rounds, the peers' order
  rotating each round; prints the medians and the goals' ratios.

--peer interp (CPython 3.12+, not in "all") runs the same modes on
twincore.InterpreterPool (issue 17): worker threads, each with its own
subinterpreter, against which bench/run.py compares the process lane on
the same Python.

Each prints one JSON line (all: a table). Run with PYTHONPATH naming the
build's pymod directory, and Debian's /usr/bin/python3.
"""

import asyncio
import concurrent.futures
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _offload  # noqa: E402
from _offload import now  # noqa: E402

PEERS = ("twincore", "asyncio", "mp")
EXTRA_PEERS = ("interp",)
BULK = 64 << 20


def spin(n):
    total = 0
    for i in range(n):
        total += i * i % 7
    return total


SPIN_N = 200_000        # about 10-20 ms of pure Python


def timed_spin(n):
    """spin(n); returns the seconds it took in the worker."""
    t0 = now()
    spin(n)
    return now() - t0


def echo(data):
    return data


# ---- one peer: submit(fn, arg, done) and a way to run -------------------------

class TwincorePeer:
    def __init__(self, workers):
        import twincore
        self.twincore = twincore
        self.reactor = twincore.reactor
        self.pool = twincore.ProcessPool(workers=workers)

    def submit(self, fn, arg, done):
        self.pool.defer(fn, arg).add_done_callback(done)

    def run(self, start):
        self.reactor.call_soon(start, self.reactor.stop)
        self.reactor.run()

    def close(self):
        self.pool.close()


class InterpPeer(TwincorePeer):
    def __init__(self, workers):
        import twincore
        self.twincore = twincore
        self.reactor = twincore.reactor
        self.pool = twincore.InterpreterPool(workers=workers)


class AsyncioPeer:
    def __init__(self, workers):
        self.loop = asyncio.new_event_loop()
        self.ex = concurrent.futures.ProcessPoolExecutor(workers)

    def submit(self, fn, arg, done):
        self.loop.run_in_executor(self.ex, fn, arg).add_done_callback(done)

    def run(self, start):
        self.loop.call_soon(start, self.loop.stop)
        self.loop.run_forever()

    def close(self):
        self.ex.shutdown()
        self.loop.close()


class MpPeer:
    def __init__(self, workers):
        self.pool = multiprocessing.get_context("spawn").Pool(workers)
        self.lock = threading.RLock()

    def submit(self, fn, arg, done):
        def cb(result):
            with self.lock:
                done(result)
        self.pool.apply_async(fn, (arg,), callback=cb,
                              error_callback=cb)

    def run(self, start):
        finished = threading.Event()
        with self.lock:
            start(finished.set)
        finished.wait()

    def close(self):
        self.pool.terminate()
        self.pool.join()


def make_peer(name, workers):
    return {"twincore": TwincorePeer, "asyncio": AsyncioPeer,
            "mp": MpPeer, "interp": InterpPeer}[name](workers)


def warm(peer, workers):
    """Every worker started and through one call."""
    left = [workers * 4]

    def start(stop):
        def done(*_):
            left[0] -= 1
            if left[0] == 0:
                stop()
        for _ in range(left[0]):
            peer.submit(spin, 1000, done)
    peer.run(start)


# ---- modes --------------------------------------------------------------------

def run_tiny(peer_name, args):
    peer = make_peer(peer_name, args.workers)
    warm(peer, args.workers)
    driver = _offload.TinyDriver(args.duration, args.inflight)

    def start(stop):
        driver.run_callbacks(lambda k, done: peer.submit(_offload.tiny, k,
                                                         done), stop)
    peer.run(start)
    peer.close()
    lane = "interpreter" if peer_name == "interp" else "process"
    return driver.result(bench=f"{peer_name} {lane} lane",
                         workers=args.workers)


def run_cpu(peer_name, args):
    per_s = {"1": [], "2": []}
    busy = {"1": [], "2": []}
    for n in (1, 2, 2, 1):
        peer = make_peer(peer_name, n)
        warm(peer, n)
        state = {"count": 0, "busy": 0.0}
        window = args.duration / 2

        def start(stop):
            t0 = now()
            state["t0"] = t0

            def done(f):
                t = now()
                if t - t0 < window:
                    state["count"] += 1
                    state["busy"] += _result(f)
                    state["t1"] = t
                    peer.submit(timed_spin, SPIN_N, done)
                else:
                    state["active"] -= 1
                    if state["active"] == 0:
                        stop()
            state["active"] = 4
            for _ in range(4):
                peer.submit(timed_spin, SPIN_N, done)
        peer.run(start)
        peer.close()
        wall = state["t1"] - state["t0"]
        per_s[str(n)].append(state["count"] / wall)
        busy[str(n)].append(state["busy"] / (n * wall))
    per = {k: statistics.mean(v) for k, v in per_s.items()}
    # busy: the share of the window the workers spent inside the function
    # (as their clocks saw it, preemption included): what the lane's
    # dispatch leaves of the workers' time, whatever the machine's load.
    return {"bench": f"{peer_name} pure-Python CPU", "per_s": per,
            "ratio": per["2"] / per["1"],
            "busy": {k: statistics.mean(v) for k, v in busy.items()}}


def run_bulk(peer_name, args):
    # The peers' 64 MiB round trips take seconds each under load.
    signal.alarm(600)
    peer = make_peer(peer_name, args.workers)
    warm(peer, args.workers)
    data = os.urandom(1 << 20) * (BULK >> 20)
    times = []
    for i in range(6):
        box = {}

        def start(stop):
            box["t0"] = now()

            def done(f):
                box["t"] = now() - box["t0"]
                box["ok"] = _result(f) == data
                stop()
            peer.submit(echo, data, done)
        peer.run(start)
        if i:
            times.append(box["t"])
        assert box["ok"]
    peer.close()
    return {"bench": f"{peer_name} 64 MiB echo",
            "median_s": statistics.median(times), "runs": times}


def _result(f):
    if hasattr(f, "result"):
        return f.result()
    return f


# ---- all ------------------------------------------------------------------------

def run_all(args):
    rounds = {m: {p: [] for p in PEERS} for m in ("tiny", "cpu", "bulk")}
    for rep in range(args.repeats):
        order = PEERS[rep % 3:] + PEERS[:rep % 3]
        for mode in ("tiny", "cpu", "bulk"):
            for peer in order:
                cmd = [sys.executable, os.path.abspath(__file__), mode,
                       "--peer", peer, "--duration", str(args.duration)]
                out = subprocess.run(cmd, capture_output=True, text=True,
                                     timeout=600)
                if out.returncode:
                    print(f"{mode} {peer}: failed\n{out.stderr}",
                          file=sys.stderr)
                    continue
                rec = json.loads(out.stdout.strip().splitlines()[-1])
                rounds[mode][peer].append(rec)
                print(f"[round {rep + 1}] {mode:4} {peer:8} "
                      f"{_brief(mode, rec)}", flush=True)
    med = statistics.median

    def m(mode, peer, key):
        vals = [r[key] for r in rounds[mode][peer] if r.get(key) is not None]
        return med(vals) if vals else float("nan")
    print()
    print(f"{'peer':10} {'tiny/s':>9} {'p50 us':>8} {'p99 us':>8} "
          f"{'cpu 1':>7} {'cpu 2':>7} {'2/1':>5} {'64MiB s':>8}")
    for p in PEERS:
        cpu = rounds["cpu"][p]
        c1 = med([r["per_s"]["1"] for r in cpu]) if cpu else float("nan")
        c2 = med([r["per_s"]["2"] for r in cpu]) if cpu else float("nan")
        ratio = med([r["ratio"] for r in cpu]) if cpu else float("nan")
        print(f"{p:10} {m('tiny', p, 'tasks_per_s'):9.0f} "
              f"{m('tiny', p, 'p50_us'):8.1f} {m('tiny', p, 'p99_us'):8.1f} "
              f"{c1:7.1f} {c2:7.1f} {ratio:5.2f} "
              f"{m('bulk', p, 'median_s'):8.3f}")
    tc, aio, mp_ = "twincore", "asyncio", "mp"
    print()
    print("goals (medians of the runs):")
    print(f"  cpu 2/1 ratio (>= 1.85):            "
          f"{med([r['ratio'] for r in rounds['cpu'][tc]]):.2f}")
    print(f"  tiny/s vs ProcessPoolExecutor (>= 3): "
          f"{m('tiny', tc, 'tasks_per_s') / m('tiny', aio, 'tasks_per_s'):.2f}")
    print(f"  tiny/s vs multiprocessing.Pool (> 1):  "
          f"{m('tiny', tc, 'tasks_per_s') / m('tiny', mp_, 'tasks_per_s'):.2f}")
    print(f"  p50 vs ProcessPoolExecutor (<= 0.5):  "
          f"{m('tiny', tc, 'p50_us') / m('tiny', aio, 'p50_us'):.2f}")
    print(f"  64 MiB speed-up vs the faster (>= 2): "
          f"{min(m('bulk', aio, 'median_s'), m('bulk', mp_, 'median_s')) / m('bulk', tc, 'median_s'):.2f}")


def _brief(mode, rec):
    if mode == "tiny":
        return (f"{rec['tasks_per_s']:8.0f}/s  p50 {rec['p50_us']:7.1f} us  "
                f"p99 {rec['p99_us']:7.1f} us")
    if mode == "cpu":
        return (f"1: {rec['per_s']['1']:6.1f}/s  2: {rec['per_s']['2']:6.1f}"
                f"/s  ratio {rec['ratio']:.2f}  busy "
                f"{rec['busy']['1']:.1%} {rec['busy']['2']:.1%}")
    return f"median {rec['median_s']:.3f} s"


def main():
    def extra(p):
        p.add_argument("--peer", choices=PEERS + EXTRA_PEERS,
                       default="twincore")
        p.add_argument("--repeats", type=int, default=3)
    if len(sys.argv) > 1 and sys.argv[1] == "all":
        import argparse
        p = argparse.ArgumentParser(prog="process_lane.py all")
        p.add_argument("mode")
        p.add_argument("--repeats", type=int, default=3)
        p.add_argument("--duration", type=float, default=2.0)
        run_all(p.parse_args())
        return
    args = _offload.parse_args("process_lane.py", ("tiny", "cpu", "bulk"),
                               extra)
    fn = {"tiny": run_tiny, "cpu": run_cpu, "bulk": run_bulk}[args.mode]
    _offload.emit(fn(args.peer, args))


if __name__ == "__main__":
    main()
