"""Leak checks: 100,000 callbacks and 100,000 defer_to_cpu calls (1,000 in
flight at a time) leave the number of live objects and the process's RSS
flat, after a warm-up round."""

import gc
import os
import threading

import twincore
from conftest import run_until

BATCH = 1000
OBJECT_SLACK = 1000           # objects, +-
RSS_SLACK = 20 * 1024 * 1024  # bytes of growth


def rss_bytes():
    with open("/proc/self/statm") as f:
        resident_pages = int(f.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE")


def snapshot():
    for _ in range(3):
        gc.collect()
    return len(gc.get_objects()), rss_bytes()


def assert_flat(before, after, what):
    objects = after[0] - before[0]
    rss = after[1] - before[1]
    assert abs(objects) <= OBJECT_SLACK, \
        f"{what}: {objects:+d} live objects"
    # Only growth is a leak: an allocator (ASan's especially) may hand
    # memory back to the system between snapshots.
    assert rss <= RSS_SLACK, f"{what}: RSS {rss / 2**20:+.1f} MiB"


def check_flat(what, one_batch, warmup=10, batches=100):
    for _ in range(warmup):
        one_batch()
    before = snapshot()
    for _ in range(batches):
        one_batch()
    after = snapshot()
    assert_flat(before, after, what)


def test_call_soon(reactor):
    count = [0]

    def cb(arg):
        count[0] += len(arg)

    def one_batch():
        count[0] = 0
        for i in range(BATCH):
            reactor.call_soon(cb, [i])   # a tracked object per call
        reactor.call_soon(reactor.stop)
        reactor.run()
        assert count[0] == BATCH
    check_flat("100,000 call_soon callbacks", one_batch)


def test_call_later(reactor):
    count = [0]

    def cb(arg):
        count[0] += len(arg)

    def one_batch():
        count[0] = 0
        handles = [reactor.call_later(0, cb, [i]) for i in range(BATCH)]
        for h in handles[::10]:
            h.cancel()
        del handles
        run_until(reactor, twincore.sleep(0.001, reactor=reactor))
        assert count[0] == BATCH - BATCH // 10
    check_flat("100,000 timers", one_batch)


def test_call_from_thread(reactor):
    count = [0]

    def cb(arg):
        count[0] += len(arg)

    def producer():
        for i in range(BATCH):
            reactor.call_from_thread(cb, [i])

    def one_batch():
        count[0] = 0
        done = twincore.Future(reactor)
        t = threading.Thread(target=producer)
        t.start()
        t.join(30)

        async def wait():
            for _ in range(10_000):
                if count[0] == BATCH:
                    return
                await twincore.sleep(0.0005, reactor=reactor)
        done = reactor.spawn(wait())
        run_until(reactor, done)
        assert count[0] == BATCH
    check_flat("100,000 call_from_thread calls", one_batch)


def echo(x):
    return x


def test_defer_to_cpu(reactor):
    def one_batch():
        futs = [reactor.defer_to_cpu(echo, [i]) for i in range(BATCH)]
        got = run_until(reactor, twincore.gather(*futs, reactor=reactor))
        assert len(got) == BATCH and got[-1] == [BATCH - 1]
    check_flat("100,000 defer_to_cpu calls", one_batch)


def failing(x):
    raise ValueError(x)


def test_defer_to_cpu_failures(reactor):
    def one_batch():
        futs = [reactor.defer_to_cpu(failing, [i]) for i in range(BATCH)]
        got = run_until(reactor, twincore.gather(
            *futs, return_exceptions=True, reactor=reactor))
        assert all(isinstance(e, ValueError) for e in got)
    check_flat("20,000 failing defer_to_cpu calls", one_batch, warmup=5,
               batches=20)


def test_futures_and_coroutines(reactor):
    async def child(i):
        f = twincore.Future(reactor)
        reactor.call_soon(f.set_result, [i])
        return await f

    def one_batch():
        got = run_until(reactor, twincore.gather(
            *[child(i) for i in range(BATCH)], reactor=reactor))
        assert len(got) == BATCH
    check_flat("20,000 coroutines", one_batch, warmup=5, batches=20)
