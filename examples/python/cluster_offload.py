"""The same pure-Python job on twincore's process lane and on a Dask
cluster: the same twincore.Future comes back from both.

    python3 examples/python/cluster_offload.py [--tasks N] [--n N]
        [--workers W] [--scheduler ADDRESS]

The job counts primes below --n, --tasks times. It runs on a ProcessPool of
--workers processes (twincore.defer_to_process's kind), then on a Dask
cluster through twincore.defer_to(client.get_executor(), ...): a
LocalCluster of --workers single-threaded worker processes, or the running
scheduler at --scheduler (tcp://host:8786). Prints both timings. Dask is
Debian's python3-distributed.
"""

import argparse
import time

import twincore


def count_primes(n):
    count = 0
    for k in range(2, n):
        d = 2
        while d * d <= k:
            if k % d == 0:
                break
            d += 1
        else:
            count += 1
    return count


async def job(submit, tasks, n):
    t0 = time.perf_counter()
    results = await twincore.gather(*[submit(count_primes, n)
                                      for _ in range(tasks)])
    return time.perf_counter() - t0, results


async def main(args):
    with twincore.ProcessPool(workers=args.workers) as pool:
        await pool.defer(count_primes, 10)           # workers are up
        lane_s, lane_results = await job(pool.defer, args.tasks, args.n)

    import distributed
    if args.scheduler:
        client = distributed.Client(args.scheduler)
        cluster = None
    else:
        cluster = distributed.LocalCluster(
            n_workers=args.workers, threads_per_worker=1,
            dashboard_address=None)
        client = distributed.Client(cluster)
    try:
        # pure=False: Dask would otherwise run identical calls once.
        executor = client.get_executor(pure=False)
        await twincore.defer_to(executor, count_primes, 10)
        dask_s, dask_results = await job(
            lambda fn, *a: twincore.defer_to(executor, fn, *a),
            args.tasks, args.n)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    assert lane_results == dask_results
    print(f"{args.tasks} x count_primes({args.n}) = {lane_results[0]} each")
    print(f"twincore process lane ({args.workers} processes): "
          f"{lane_s:7.3f} s")
    where = args.scheduler or f"LocalCluster, {args.workers} processes"
    print(f"Dask via defer_to ({where}): {dask_s:7.3f} s")


if __name__ == "__main__":   # workers import this file: keep it guarded
    p = argparse.ArgumentParser(prog="cluster_offload.py")
    p.add_argument("--tasks", type=int, default=40)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--scheduler", default=None)
    twincore.run(main(p.parse_args()))
