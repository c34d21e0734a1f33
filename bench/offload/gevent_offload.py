"""gevent in the offload benchmarks (see _offload.py).

usage: gevent_offload.py {tiny,timer} [--duration S] [--workers N]

Uses a gevent.threadpool.ThreadPool of --workers (2) threads; nothing is
monkey-patched.
- tiny: gevent's pool.spawn() waits (blocks the calling greenlet) until a
  worker thread is free, so it cannot be called from a hub callback and
  never queues more calls than it has threads: --inflight greenlets each
  loop on pool.spawn(tiny, k).get(), the way gevent code offloads, and
  phase 2 is one such greenlet.
- timer: a greenlet loops on gevent.sleep(0.001) (the way gevent code
  waits), due = the time of the call + 1 ms, while --load-inflight greenlets
  loop on pool.spawn(hashlib.sha256, buf).get(), keeping both workers busy.
"""

import hashlib
import os
import sys

import gevent
import gevent.threadpool

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _offload  # noqa: E402  (found through the path set just above)
from _offload import now  # noqa: E402

PROG = "gevent_offload.py"


def run_tiny(args):
    pool = gevent.threadpool.ThreadPool(args.workers)
    driver = _offload.TinyDriver(args.duration, args.inflight)

    def throughput_slot(k):
        while True:
            pool.spawn(_offload.tiny, k).get()
            if not driver.throughput_tick():
                return

    def latency_slot():
        while True:
            submitted = now()
            pool.spawn(_offload.tiny, 0).get()
            if not driver.latency_tick(submitted):
                return

    driver.begin_throughput()
    gevent.joinall([gevent.spawn(throughput_slot, k)
                    for k in range(args.inflight)])
    driver.begin_latency()
    gevent.spawn(latency_slot).join()
    pool.kill()
    return driver.result(bench="gevent threadpool", workers=args.workers)


def run_timer(args):
    pool = gevent.threadpool.ThreadPool(args.workers)
    bufs = _offload.buffers(args.load_inflight)
    driver = _offload.TimerDriver(args.duration, args.ticks)

    def ticker():
        while not driver.done():
            due = now() + _offload.TIMER_INTERVAL_S
            gevent.sleep(_offload.TIMER_INTERVAL_S)
            driver.tick(due)

    def hasher(buf):
        while not driver.done():
            pool.spawn(hashlib.sha256, buf).get()
            driver.hashed()

    driver.start()
    greenlets = [gevent.spawn(hasher, buf) for buf in bufs]
    greenlets.append(gevent.spawn(ticker))
    gevent.joinall(greenlets)
    pool.kill()
    return driver.result(bench="gevent sleep", workers=args.workers,
                         load_inflight=args.load_inflight)


def main():
    args = _offload.parse_args(PROG, ["tiny", "timer"])
    run = run_tiny if args.mode == "tiny" else run_timer
    _offload.emit(run(args))


if __name__ == "__main__":
    main()
