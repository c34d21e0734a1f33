"""asyncio and uvloop in the offload benchmarks (see _offload.py).

usage: asyncio_offload.py {tiny,timer,sha256} [--uvloop] [--to-thread]
                          [--duration S] [--workers N] [--inflight N]

The loop's default executor is a ThreadPoolExecutor(--workers, 2), so
run_in_executor(None, ...) and asyncio.to_thread use the same 2 threads.
- tiny: loop.run_in_executor(None, tiny, k), a done callback on the
  returned future submitting the next. With --to-thread, asyncio.to_thread
  is a coroutine, so --inflight tasks each loop on `await
  asyncio.to_thread(tiny, k)` (the way it is written), and phase 2 is one
  such task.
- timer: loop.call_later(0.001, tick), re-armed by each tick, while
  run_in_executor(None, hashlib.sha256, buf) keeps both workers busy.
- sha256: loop.run_in_executor(ThreadPoolExecutor(max_workers=N),
  hashlib.sha256, buf) of 1 MiB buffers, N = 1 then 2, --inflight (4) in
  flight, windows in the order 1, 2, 2, 1 (each half of --duration): the
  same figures as twincore_offload.py sha256.
--uvloop runs the same code on uvloop's loop.
"""

import asyncio
import concurrent.futures
import hashlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _offload  # noqa: E402  (found through the path set just above)
from _offload import now  # noqa: E402

PROG = "asyncio_offload.py"


def options(p):
    p.add_argument("--uvloop", action="store_true")
    p.add_argument("--to-thread", action="store_true")


def name(args, what):
    return ("uvloop " if args.uvloop else "asyncio ") + what


async def tiny(args):
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(args.workers))
    driver = _offload.TinyDriver(args.duration, args.inflight)
    if args.to_thread:
        async def throughput_slot(k):
            while True:
                await asyncio.to_thread(_offload.tiny, k)
                if not driver.throughput_tick():
                    return

        async def latency_slot():
            while True:
                submitted = now()
                await asyncio.to_thread(_offload.tiny, 0)
                if not driver.latency_tick(submitted):
                    return

        driver.begin_throughput()
        await asyncio.gather(*(throughput_slot(k)
                               for k in range(args.inflight)))
        driver.begin_latency()
        await latency_slot()
        what = "to_thread"
    else:
        finished = loop.create_future()

        def submit(k, done):
            loop.run_in_executor(None, _offload.tiny, k).add_done_callback(
                done)

        driver.run_callbacks(submit, lambda: finished.set_result(None))
        await finished
        what = "run_in_executor"
    return driver.result(bench=name(args, what), workers=args.workers)


async def timer(args):
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        concurrent.futures.ThreadPoolExecutor(args.workers))
    bufs = _offload.buffers(args.load_inflight)
    driver = _offload.TimerDriver(args.duration, args.ticks)
    finished = loop.create_future()
    state = {"due": 0.0, "load": 0, "ticking": True}

    def maybe_stop():
        if not state["ticking"] and state["load"] == 0 \
                and not finished.done():
            finished.set_result(None)

    def tick():
        driver.tick(state["due"])
        if driver.done():
            state["ticking"] = False
            maybe_stop()
            return
        state["due"] = now() + _offload.TIMER_INTERVAL_S
        loop.call_later(_offload.TIMER_INTERVAL_S, tick)

    def hash_one(buf):
        state["load"] += 1
        loop.run_in_executor(None, hashlib.sha256, buf).add_done_callback(
            lambda fut: hashed(buf))

    def hashed(buf):
        state["load"] -= 1
        driver.hashed()
        if driver.done():
            maybe_stop()
        else:
            hash_one(buf)

    driver.start()
    for buf in bufs:
        hash_one(buf)
    state["due"] = now() + _offload.TIMER_INTERVAL_S
    loop.call_later(_offload.TIMER_INTERVAL_S, tick)
    await finished
    return driver.result(bench=name(args, "call_later"),
                         workers=args.workers,
                         load_inflight=args.load_inflight)


async def sha256(args):
    loop = asyncio.get_running_loop()
    driver = _offload.ShaDriver(args.duration, args.inflight)
    finished = loop.create_future()

    def submit(pool, buf, done):
        loop.run_in_executor(pool, hashlib.sha256, buf).add_done_callback(
            done)

    driver.run(lambda n: concurrent.futures.ThreadPoolExecutor(max_workers=n),
               submit, lambda pool: pool.shutdown(wait=False),
               loop.call_soon, lambda: finished.set_result(None))
    await finished
    return driver.result(bench=name(args, "run_in_executor sha256"))


def main():
    args = _offload.parse_args(PROG, ["tiny", "timer", "sha256"], options)
    if args.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    coro = {"tiny": tiny, "timer": timer, "sha256": sha256}[args.mode](args)
    _offload.emit(asyncio.run(coro))


if __name__ == "__main__":
    main()
