"""twincore's defer_to_cpu in the offload benchmarks (see _offload.py).

usage: twincore_offload.py {tiny,timer,sha256} [--duration S] [--workers N]
                           [--inflight N]

- tiny: reactor.defer_to_cpu(tiny, k) on reactor.cpu_pool (a CpuPool of
  --workers, 2), a done callback on the returned Future submitting the next.
- timer: reactor.call_later(0.001, tick), re-armed by each tick, while
  defer_to_cpu(hashlib.sha256, buf) keeps both workers busy.
- sha256: defer(hashlib.sha256, buf) of 1 MiB buffers on CpuPool(workers=1)
  and CpuPool(workers=2), --inflight (4) in flight, windows in the order
  1, 2, 2, 1 (each half of --duration): buffers and MB per second and the
  2/1 ratio.

Run with PYTHONPATH naming the build's pymod directory (bench/run.py does).
"""

import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _offload  # noqa: E402  (found through the path set just above)
from _offload import now  # noqa: E402

import twincore  # noqa: E402

PROG = "twincore_offload.py"


def run_tiny(args):
    reactor = twincore.reactor
    reactor.cpu_pool = twincore.CpuPool(workers=args.workers)

    def submit(k, done):
        reactor.defer_to_cpu(_offload.tiny, k).add_done_callback(done)

    driver = _offload.TinyDriver(args.duration, args.inflight)
    reactor.call_soon(driver.run_callbacks, submit, reactor.stop)
    reactor.run()
    _offload.emit(driver.result(bench="twincore defer_to_cpu",
                                workers=args.workers))


def run_timer(args):
    reactor = twincore.reactor
    reactor.cpu_pool = twincore.CpuPool(workers=args.workers)
    bufs = _offload.buffers(args.load_inflight)
    driver = _offload.TimerDriver(args.duration, args.ticks)
    state = {"due": 0.0, "load": 0, "ticking": True}

    def maybe_stop():
        if not state["ticking"] and state["load"] == 0:
            reactor.stop()

    def tick():
        driver.tick(state["due"])
        if driver.done():
            state["ticking"] = False
            maybe_stop()
            return
        state["due"] = now() + _offload.TIMER_INTERVAL_S
        reactor.call_later(_offload.TIMER_INTERVAL_S, tick)

    def hash_one(buf):
        state["load"] += 1
        reactor.defer_to_cpu(hashlib.sha256, buf).add_done_callback(
            lambda fut: hashed(buf))

    def hashed(buf):
        state["load"] -= 1
        driver.hashed()
        if driver.done():
            maybe_stop()
        else:
            hash_one(buf)

    def start():
        driver.start()
        for buf in bufs:
            hash_one(buf)
        state["due"] = now() + _offload.TIMER_INTERVAL_S
        reactor.call_later(_offload.TIMER_INTERVAL_S, tick)

    reactor.call_soon(start)
    reactor.run()
    _offload.emit(driver.result(bench="twincore call_later",
                                workers=args.workers,
                                load_inflight=args.load_inflight))


def run_sha256(args):
    reactor = twincore.reactor
    driver = _offload.ShaDriver(args.duration, args.inflight)

    def submit(pool, buf, done):
        pool.defer(hashlib.sha256, buf, reactor=reactor).add_done_callback(
            done)

    reactor.call_soon(driver.run, lambda n: twincore.CpuPool(workers=n),
                      submit, lambda pool: pool.close(), reactor.call_soon,
                      reactor.stop)
    reactor.run()
    _offload.emit(driver.result(bench="twincore defer_to_cpu sha256"))


def main():
    args = _offload.parse_args(PROG, ["tiny", "timer", "sha256"])
    {"tiny": run_tiny, "timer": run_timer, "sha256": run_sha256}[args.mode](
        args)


if __name__ == "__main__":
    main()
