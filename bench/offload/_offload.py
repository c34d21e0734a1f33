"""What every Python offload program in bench/offload shares.

Each program (twincore_offload.py, asyncio_offload.py, twisted_offload.py,
gevent_offload.py) runs one benchmark, chosen by its first argument, and
prints one JSON line:

- tiny: round trips of a tiny Python call through the framework's thread
  pool (2 workers). Phase 1 keeps --inflight calls (1,000) in flight, each
  completion submitting the next, and counts completions for --duration
  seconds after a 0.2 s warmup: tasks_per_s. Phase 2 runs one call at a
  time for --duration seconds: p50_us and p99_us of submit -> completion
  seen on the loop thread, and cpu_ms_per_1000, the process's CPU time
  (all threads) per 1,000 of those round trips. The same TinyDriver runs both phases for every
  framework: a program says how to submit a call and how to stop, or runs
  its coroutine or greenlet slots on the driver's ticks.
- timer: a 1 ms timer, re-armed on every tick, on the loop while the
  framework's pool (2 workers) hashes 1 MiB buffers with hashlib.sha256
  (which releases the GIL), --load-inflight of them kept in flight.
  Lateness = when the tick ran - when it was due, in ms (negative: early),
  over a window that opens 0.2 s after the load started and closes after
  --duration seconds once it holds --ticks samples (2,000; at most 3 x
  --duration in all): p50_ms, p99_ms, max_ms, and hashes_per_s, the load's
  completions in the window (2 workers on 1 MiB each: both busy).
  TimerDriver keeps the samples and the load's count.
- sha256: hashlib.sha256 of 1 MiB buffers on a pool of 1 worker, then of 2,
  --inflight of them (4) kept in flight, each completion submitting the
  next, in windows ordered 1, 2, 2, 1 (each half of --duration, counted
  after 0.1 s): per_s and mb_per_s {"1", "2"} and ratio, 2 / 1. ShaDriver
  runs the windows; a program says how to make, use and close a pool.

Every program arms an alarm, so a wedged framework ends the process instead
of hanging the runner.
"""

import argparse
import json
import os
import signal
import time

WARMUP_S = 0.2
BUFFER_SIZE = 1024 * 1024
TIMER_INTERVAL_S = 0.001

now = time.perf_counter


def tiny(x):
    """The work of a tiny task: one Python call doing almost nothing."""
    return x + 1


def buffers(n, size=BUFFER_SIZE):
    """n distinct pseudo-random buffers of size bytes."""
    return [os.urandom(size) for _ in range(n)]


def parse_args(prog, modes, extra=None):
    p = argparse.ArgumentParser(prog=prog)
    p.add_argument("mode", choices=modes)
    p.add_argument("--duration", type=float, default=2.0,
                   help="seconds per measured phase")
    p.add_argument("--inflight", type=int,
                   help="tiny: calls in flight in the throughput phase "
                   "(1,000); sha256: buffers in flight (4)")
    p.add_argument("--workers", type=int, default=2,
                   help="threads of the framework's pool")
    p.add_argument("--load-inflight", type=int, default=4,
                   help="timer: sha256 calls kept in flight")
    p.add_argument("--ticks", type=int, default=2000,
                   help="timer: samples the window needs before it closes")
    if extra is not None:
        extra(p)
    args = p.parse_args()
    if args.inflight is None:
        args.inflight = 4 if args.mode == "sha256" else 1000
    if not 0 < args.duration <= 600 or not 0 < args.inflight <= 100000:
        p.error("bad --duration or --inflight")
    # A hard bound: the phases, start-up, and a generous margin.
    signal.alarm(int(5 * args.duration + 30))
    return args


def percentile(sorted_values, q):
    if not sorted_values:
        return None
    i = int(q * (len(sorted_values) - 1) + 0.5)
    return sorted_values[i]


def emit(record):
    print(json.dumps(record), flush=True)


class TinyDriver:
    """Both phases of the tiny benchmark. Phase 1: begin_throughput(), then
    every completion calls throughput_tick(), which says whether to submit
    another. Phase 2: begin_latency(), then one call at a time, each
    completion calling latency_tick(submitted), which says whether to go
    on. Coroutine and greenlet slots call these directly; run_callbacks()
    drives both phases for frameworks whose calls take a done callback."""

    def __init__(self, duration, inflight):
        self.duration = duration
        self.inflight = inflight
        self.completed = 0
        self.samples = []
        self.errors = 0

    def begin_throughput(self):
        self.start = now()
        self.end = self.start + self.duration
        self.counting = False
        self.count_start = self.last = self.start
        self.active = self.inflight

    def throughput_tick(self):
        """Counts one completion; True if the caller should submit
        another, False once the window is over (the slot ends)."""
        t = now()
        if not self.counting and t - self.start >= WARMUP_S:
            self.counting = True
            self.count_start = t
            self.end += t - self.start
        elif self.counting and t < self.end:
            self.completed += 1
            self.last = t
        if t < self.end:
            return True
        self.active -= 1
        return False

    def begin_latency(self):
        self.start = now()
        self.end = self.start + self.duration
        self.lat_cpu = None
        self.lat_trips = 0

    def latency_tick(self, submitted):
        """Records one round trip that began at submitted; True if the
        caller should submit the next. The process's CPU time (every
        thread: loop, workers, spinning) is read over the same round trips
        as the samples."""
        t = now()
        if t - self.start >= WARMUP_S / 4:
            if self.lat_cpu is None:
                self.lat_cpu = time.process_time()
            else:
                self.samples.append(t - submitted)
                self.lat_trips += 1
        going = t < self.end
        if not going and self.lat_cpu is not None:
            self.lat_cpu = time.process_time() - self.lat_cpu
        return going

    def run_callbacks(self, submit, finished):
        """Both phases through submit(k, done): it starts one tiny call and
        makes done(*anything) run on the loop thread when the call has
        completed. finished() runs once, after phase 2."""
        def throughput_done(*_):
            if self.throughput_tick():
                submit(0, throughput_done)
            elif self.active == 0:
                self.begin_latency()
                latency_submit()

        def latency_submit():
            state["submitted"] = now()
            submit(0, latency_done)

        def latency_done(*_):
            if self.latency_tick(state["submitted"]):
                latency_submit()
            else:
                finished()

        state = {}
        self.begin_throughput()
        for k in range(self.inflight):
            submit(k, throughput_done)

    def result(self, **extra):
        span = self.last - self.count_start
        s = sorted(self.samples)
        return {
            "tasks_per_s": self.completed / span if span > 0 else 0.0,
            "tasks": self.completed,
            "inflight": self.inflight,
            "p50_us": percentile(s, 0.50) * 1e6 if s else None,
            "p99_us": percentile(s, 0.99) * 1e6 if s else None,
            "samples": len(s),
            "cpu_ms_per_1000": (self.lat_cpu / self.lat_trips * 1e6
                                if getattr(self, "lat_trips", 0) else None),
            "errors": self.errors,
            **extra,
        }


class TimerDriver:
    """Lateness samples of a repeating timer and the count of the load's
    completions, both only inside the measured window. The program calls
    start() once the load is running, tick(due) from each timer callback
    (due on the same clock as clock(), perf_counter by default), and
    hashed() from each load completion. The window opens WARMUP_S after
    start() and closes once it holds `ticks` samples and lasted `duration`
    seconds, or after 3 x duration whatever the count: done() then turns
    True and the program stops the timer and lets the load drain."""

    def __init__(self, duration, ticks, clock=now):
        self.duration = duration
        self.ticks = ticks
        self.clock = clock
        self.lateness = []
        self.hashed_count = 0
        self.closed_at = None

    def start(self):
        self.begin = self.clock() + WARMUP_S
        self.min_end = self.begin + self.duration
        self.max_end = self.begin + 3 * self.duration

    def tick(self, due):
        t = self.clock()
        if self.closed_at is None and due >= self.begin:
            self.lateness.append(t - due)

    def hashed(self):
        t = self.clock()
        if self.closed_at is None and t >= self.begin:
            self.hashed_count += 1

    def done(self):
        if self.closed_at is None:
            t = self.clock()
            if t >= self.max_end or (t >= self.min_end and
                                     len(self.lateness) >= self.ticks):
                self.closed_at = t
        return self.closed_at is not None

    def result(self, **extra):
        s = sorted(self.lateness)
        ms = lambda v: None if v is None else v * 1e3
        span = (self.closed_at or self.clock()) - self.begin
        return {
            "p50_ms": ms(percentile(s, 0.50)),
            "p99_ms": ms(percentile(s, 0.99)),
            "max_ms": ms(s[-1] if s else None),
            "ticks": len(s),
            "window_s": span,
            "hashes_per_s": self.hashed_count / span if span > 0 else 0.0,
            **extra,
        }


class ShaDriver:
    """The sha256 windows. run() opens a pool of 1 worker, keeps inflight
    hashes in flight on it for half of duration (counting completions after
    0.1 s), lets them drain, closes it, and does the same with 2, 2 and 1
    workers. At most DISTINCT_BUFFERS distinct buffers: hashlib only reads
    them, and 400 in flight need not hold 400 MiB."""

    ORDER = (1, 2, 2, 1)
    SETTLE_S = 0.1
    DISTINCT_BUFFERS = 16

    def __init__(self, duration, inflight):
        self.half = duration / 2
        self.inflight = inflight
        self.bufs = buffers(min(inflight, self.DISTINCT_BUFFERS))
        self.counts = {1: 0, 2: 0}
        self.spans = {1: 0.0, 2: 0.0}

    def run(self, open_pool, submit, close_pool, call_soon, finished):
        """open_pool(n) returns a pool of n workers; submit(pool, buf, done)
        starts hashlib.sha256(buf) on it and makes done(*anything) run on
        the loop thread when it has completed; close_pool(pool) ends it;
        call_soon(fn, *args) runs fn on the loop thread later. finished()
        runs once, after the last window."""
        def window(i):
            if i == len(self.ORDER):
                finished()
                return
            n = self.ORDER[i]
            pool = open_pool(n)
            w = {"start": now(), "counting": False, "first": 0.0,
                 "last": 0.0, "count": 0, "active": self.inflight}
            w["end"] = w["start"] + self.half

            def hashed(buf):
                t = now()
                if not w["counting"] and t - w["start"] >= self.SETTLE_S:
                    w["counting"] = True
                    w["first"] = t
                    w["end"] += t - w["start"]
                elif w["counting"] and t < w["end"]:
                    w["count"] += 1
                    w["last"] = t
                if t < w["end"]:
                    submit(pool, buf, lambda *_: hashed(buf))
                    return
                w["active"] -= 1
                if w["active"] == 0:
                    close_pool(pool)
                    self.counts[n] += w["count"]
                    self.spans[n] += w["last"] - w["first"]
                    call_soon(window, i + 1)

            for k in range(self.inflight):
                buf = self.bufs[k % len(self.bufs)]
                submit(pool, buf, lambda *_, buf=buf: hashed(buf))

        window(0)

    def result(self, **extra):
        per_s = {str(n): self.counts[n] / self.spans[n]
                 if self.spans[n] > 0 else 0.0 for n in (1, 2)}
        return {
            "size": BUFFER_SIZE,
            "inflight": self.inflight,
            "per_s": per_s,
            "mb_per_s": {n: v * BUFFER_SIZE / 1e6 for n, v in per_s.items()},
            "ratio": per_s["2"] / per_s["1"] if per_s["1"] else None,
            "buffers": {str(n): self.counts[n] for n in (1, 2)},
            **extra,
        }
