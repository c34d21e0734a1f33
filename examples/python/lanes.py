"""The same pure-Python CPU function on three lanes, timings side by side.

    PYTHONPATH=build-py312/pymod python3.12 examples/python/lanes.py
        [--calls N] [--workers W] [--n N]

- CpuPool: native threads, but one GIL: pure Python runs on one core.
- InterpreterPool (3.12+): a subinterpreter with its own GIL per worker,
  in this process: every core, arguments and results pickled.
- process lane: twincore.ProcessPool where this build has one, else
  concurrent.futures.ProcessPoolExecutor (spawn) through from_asyncio.

Each lane gets the same calls of count_primes(n); all three give Futures
awaited the same way.  The workers of the interpreter and process lanes
load this file (as __mp_main__, as multiprocessing's spawn does), so its
top level imports only the standard library; twincore comes in main().
"""

import argparse
import os
import sys
import time


def count_primes(n):
    """Deliberately pure Python: no C call releases the GIL here."""
    count = 0
    for k in range(2, n):
        for d in range(2, int(k ** 0.5) + 1):
            if k % d == 0:
                break
        else:
            count += 1
    return count


async def timed(name, submit, calls, n):
    import twincore
    t0 = time.perf_counter()
    results = await twincore.gather(*[submit(count_primes, n)
                                      for _ in range(calls)])
    wall = time.perf_counter() - t0
    assert len(set(results)) == 1
    print(f"{name:<34} {wall:7.2f} s   {calls / wall:7.2f} calls/s")
    return wall


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--n", type=int, default=60_000)
    args = ap.parse_args()

    import concurrent.futures
    import multiprocessing
    import twincore

    async def body():
        print(f"Python {sys.version.split()[0]}, {args.workers} workers, "
              f"{args.calls} x count_primes({args.n})")
        cpu = twincore.CpuPool(workers=args.workers)
        await timed("CpuPool (threads, one GIL)", cpu.defer, args.calls,
                    args.n)
        await cpu.aclose()
        if sys.version_info >= (3, 12):
            pool = twincore.InterpreterPool(workers=args.workers)
            # Start the workers' interpreters before timing.
            await twincore.gather(*[pool.defer(count_primes, 10)
                                    for _ in range(args.workers)])
            await timed("InterpreterPool (GIL each)", pool.defer,
                        args.calls, args.n)
            await pool.aclose()
        else:
            print("InterpreterPool                    needs Python 3.12+")
        process_pool = getattr(twincore, "ProcessPool", None)
        if process_pool is not None:
            procs = process_pool(workers=args.workers)
            await timed("ProcessPool", procs.defer, args.calls, args.n)
            await procs.aclose()
        else:
            ex = concurrent.futures.ProcessPoolExecutor(
                args.workers, mp_context=multiprocessing.get_context("spawn"))

            def submit(fn, *a):
                return twincore.from_asyncio(ex.submit(fn, *a))
            await twincore.gather(*[submit(count_primes, 10)
                                    for _ in range(args.workers)])
            await timed("ProcessPoolExecutor (spawn)", submit, args.calls,
                        args.n)
            ex.shutdown()
    twincore.run(body())


if __name__ == "__main__":
    main()
