"""Spawn-to-exit of /bin/true, 200 in a row: twincore's
Reactor.spawn_process against asyncio's create_subprocess_exec, in the same
run, alternating (twincore, asyncio, twincore, ...) so that both see the
same machine.  Each child inherits the standard streams; each spawn waits
for the previous child's exit.  Prints one line per round and the medians.

usage: PYTHONPATH=build/pymod /usr/bin/python3 bench/process/spawn_true.py
       [--rounds N] [--children N]

Bounded: --rounds (5) x 2 x --children (200) spawns; a round that takes
over 60 s stops the run.
"""

import argparse
import asyncio
import statistics
import time

import twincore

PROG = "/bin/true"


def twincore_round(n):
    reactor = twincore.Reactor()

    class P(twincore.ProcessProtocol):
        def __init__(self):
            self.done = twincore.Future(reactor)

        def connection_lost(self, exc):
            self.done.set_result(None)

    async def main():
        for _ in range(n):
            proto = await reactor.spawn_process(P, [PROG], stdin=None,
                                                stdout=None, stderr=None)
            await proto.done
            assert proto.transport.returncode == 0

    t0 = time.perf_counter()
    fut = reactor.spawn(main())
    fut.add_done_callback(lambda _: reactor.stop())
    guard = reactor.call_later(60, reactor.stop)
    reactor.run()
    guard.cancel()
    fut.result()
    elapsed = time.perf_counter() - t0
    reactor.close()
    return elapsed


def asyncio_round(n):
    async def main():
        for _ in range(n):
            proc = await asyncio.create_subprocess_exec(PROG)
            assert await proc.wait() == 0

    t0 = time.perf_counter()
    asyncio.run(asyncio.wait_for(main(), 60))
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--children", type=int, default=200)
    args = ap.parse_args()
    times = {"twincore": [], "asyncio": []}
    for r in range(args.rounds):
        for name, fn in (("twincore", twincore_round),
                         ("asyncio", asyncio_round)):
            t = fn(args.children)
            times[name].append(t)
            print(f"round {r + 1}: {name:8s} {args.children} x {PROG}: "
                  f"{t * 1000:8.1f} ms ({t / args.children * 1e6:7.0f} "
                  "us each)", flush=True)
    tc = statistics.median(times["twincore"])
    ai = statistics.median(times["asyncio"])
    print(f"median: twincore {tc * 1000:.1f} ms, asyncio {ai * 1000:.1f} ms; "
          f"twincore/asyncio = {tc / ai:.2f}")


if __name__ == "__main__":
    main()
