"""Twisted in the offload benchmarks (see _offload.py).

usage: twisted_offload.py {tiny,timer} [--duration S] [--workers N]

Runs on the epollreactor, whose thread pool is sized to --workers (2)
threads, minimum and maximum.
- tiny: deferToThread(tiny, k), a callback on the Deferred submitting the
  next.
- timer: a LoopingCall every 1 ms while deferToThread(hashlib.sha256, buf)
  keeps both workers busy. A LoopingCall runs on a fixed grid (start + n x
  interval, skipping missed slots), so a tick's due time is the time of the
  DelayedCall the LoopingCall scheduled, read through a clock that records
  it; lateness is measured on reactor.seconds(), the clock Twisted
  schedules with.
"""

import hashlib
import os
import sys

from twisted.internet import epollreactor

epollreactor.install()

from twisted.internet import reactor, task, threads  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _offload  # noqa: E402  (found through the path set just above)

PROG = "twisted_offload.py"


class RecordingClock:
    """The reactor's IReactorTime, remembering when the last call it
    scheduled is due."""

    def __init__(self, clock):
        self.clock = clock
        self.due = None

    def seconds(self):
        return self.clock.seconds()

    def callLater(self, delay, fn, *args, **kwargs):
        call = self.clock.callLater(delay, fn, *args, **kwargs)
        self.due = call.getTime()
        return call


def run_tiny(args):
    def submit(k, done):
        threads.deferToThread(_offload.tiny, k).addCallback(done)

    driver = _offload.TinyDriver(args.duration, args.inflight)
    reactor.callWhenRunning(driver.run_callbacks, submit, reactor.stop)
    reactor.run()
    return driver.result(bench="twisted deferToThread", workers=args.workers)


def run_timer(args):
    bufs = _offload.buffers(args.load_inflight)
    driver = _offload.TimerDriver(args.duration, args.ticks,
                                  clock=reactor.seconds)
    clock = RecordingClock(reactor)
    state = {"load": 0, "ticking": True}

    def maybe_stop():
        if not state["ticking"] and state["load"] == 0:
            reactor.stop()

    def tick():
        driver.tick(clock.due)
        if driver.done():
            state["ticking"] = False
            loop.stop()
            maybe_stop()

    def hash_one(buf):
        state["load"] += 1
        threads.deferToThread(hashlib.sha256, buf).addCallback(
            lambda _: hashed(buf))

    def hashed(buf):
        state["load"] -= 1
        driver.hashed()
        if driver.done():
            maybe_stop()
        else:
            hash_one(buf)

    loop = task.LoopingCall(tick)
    loop.clock = clock

    def start():
        driver.start()
        for buf in bufs:
            hash_one(buf)
        loop.start(_offload.TIMER_INTERVAL_S, now=False)

    reactor.callWhenRunning(start)
    reactor.run()
    return driver.result(bench="twisted LoopingCall", workers=args.workers,
                         load_inflight=args.load_inflight)


def main():
    args = _offload.parse_args(PROG, ["tiny", "timer"])
    reactor.getThreadPool().adjustPoolsize(args.workers, args.workers)
    run = run_tiny if args.mode == "tiny" else run_timer
    _offload.emit(run(args))


if __name__ == "__main__":
    main()
