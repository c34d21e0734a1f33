"""CpuPool: construction, cancellation of queued work, running(), priority
order, stats(), close() and the context manager, max_queued, parallel
hashing on two workers, pools shared by reactors, and the default pool."""

import hashlib
import os
import subprocess
import sys
import threading

import pytest

import twincore
from conftest import run_until


class Blocker:
    """A task that occupies a worker until release()."""

    def __init__(self):
        self.started = threading.Event()
        self.released = threading.Event()

    def __call__(self, value="blocker"):
        self.started.set()
        assert self.released.wait(30), "blocker never released"
        return value

    def release(self):
        self.released.set()


@pytest.fixture
def pool1():
    pool = twincore.CpuPool(workers=1)
    yield pool
    pool.close(cancel_queued=True)


def settle(reactor, seconds=0.05):
    run_until(reactor, twincore.sleep(seconds, reactor=reactor))


# ---- construction -----------------------------------------------------

def test_workers():
    with twincore.CpuPool(workers=3) as pool:
        assert pool.workers == 3
        assert not pool.closed
        assert pool.stats()["workers"] == 3
    with twincore.CpuPool() as pool:
        assert pool.workers == os.cpu_count()


@pytest.mark.parametrize("kwargs,exc,name", [
    ({"workers": -1}, ValueError, "workers"),
    ({"workers": 1025}, ValueError, "workers"),
    ({"workers": "2"}, TypeError, "workers"),
    ({"workers": 1.5}, TypeError, "workers"),
    ({"max_queued": -1}, ValueError, "max_queued"),
    ({"max_queued": "x"}, TypeError, "max_queued"),
])
def test_constructor_errors(kwargs, exc, name):
    with pytest.raises(exc, match=name):
        twincore.CpuPool(**kwargs)


# ---- cancellation and running() ------------------------------------------

def test_cancel_queued_work(reactor, pool1):
    blocker = Blocker()
    ran = []
    first = pool1.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    queued = [pool1.defer(ran.append, i, reactor=reactor) for i in range(5)]
    errbacks = []
    for f in queued:
        f.add_errback(lambda e: errbacks.append(type(e)))
    stats = pool1.stats()
    assert stats["running"] == 1 and stats["queued"] == 5
    for f in queued:
        assert f.state == "pending" and not f.running()
        assert f.cancel() is True
        assert f.cancelled() and f.state == "cancelled"
        assert f.cancel() is False
    blocker.release()
    assert run_until(reactor, first) == "blocker"
    settle(reactor)
    assert ran == []
    assert errbacks == [twincore.CancelledError] * 5
    stats = pool1.stats()
    assert stats["cancelled"] == 5
    assert stats["queued"] == 0 and stats["running"] == 0


def test_cancel_some_of_the_queue(reactor, pool1):
    blocker = Blocker()
    ran = []
    first = pool1.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    futs = [pool1.defer(ran.append, i, reactor=reactor) for i in range(6)]
    for f in futs[::2]:
        f.cancel()
    blocker.release()
    run_until(reactor, twincore.gather(first, *futs[1::2], reactor=reactor))
    assert ran == [1, 3, 5]


def test_running_and_state_while_a_task_runs(reactor, pool1):
    blocker = Blocker()
    running = pool1.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    queued = pool1.defer(len, "ab", reactor=reactor)
    assert running.running() and running.state == "running"
    assert not running.done()
    assert not queued.running() and queued.state == "pending"
    blocker.release()
    assert run_until(reactor, running) == "blocker"
    assert run_until(reactor, queued) == 2
    assert not running.running() and running.state == "done"


def test_cancel_a_running_task(reactor, pool1, caplog):
    blocker = Blocker()
    fut = pool1.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    fut.cancel()
    assert fut.cancelled()
    blocker.release()   # it runs to its end; the result goes nowhere
    with caplog.at_level("ERROR", logger="twincore"):
        run_until(reactor, pool1.defer(len, "", reactor=reactor))
        settle(reactor)
    assert fut.cancelled()
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []


def test_priority_order(reactor, pool1):
    blocker = Blocker()
    order = []
    first = pool1.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    H, N, L = (twincore.PRIORITY_HIGH, twincore.PRIORITY_NORMAL,
               twincore.PRIORITY_LOW)
    plan = [("low1", L), ("normal1", N), ("high1", H), ("low2", L),
            ("high2", H), ("normal2", N)]
    futs = [pool1.defer(order.append, name, priority=p, reactor=reactor)
            for name, p in plan]
    blocker.release()
    run_until(reactor, twincore.gather(first, *futs, reactor=reactor))
    assert order == ["high1", "high2", "normal1", "normal2", "low1", "low2"]


def test_max_queued(reactor):
    pool = twincore.CpuPool(workers=1, max_queued=2)
    blocker = Blocker()
    try:
        first = pool.defer(blocker, reactor=reactor)
        assert blocker.started.wait(10)
        a = pool.defer(len, "a", reactor=reactor)
        b = pool.defer(len, "bb", reactor=reactor)
        with pytest.raises(BlockingIOError):
            pool.defer(len, "ccc", reactor=reactor)
        blocker.release()
        assert run_until(reactor, twincore.gather(
            first, a, b, reactor=reactor)) == ["blocker", 1, 2]
    finally:
        blocker.release()
        pool.close()


# ---- stats ----------------------------------------------------------

def _fail():
    raise KeyError("x")


def test_stats_counters(reactor, pool1):
    before = pool1.stats()
    assert set(before) >= {"submitted", "completed", "failed", "cancelled",
                           "queued", "running", "workers"}
    assert before["workers"] == 1
    blocker = Blocker()
    first = pool1.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    oks = [pool1.defer(len, "x", reactor=reactor) for _ in range(10)]
    bad = [pool1.defer(_fail, reactor=reactor) for _ in range(3)]
    dropped = [pool1.defer(len, "y", reactor=reactor) for _ in range(4)]
    mid = pool1.stats()
    assert mid["running"] == 1 and mid["queued"] == 17
    assert mid["submitted"] - before["submitted"] == 18
    for f in dropped:
        f.cancel()
    blocker.release()
    run_until(reactor, twincore.gather(first, *oks, *bad,
                                       return_exceptions=True,
                                       reactor=reactor))
    settle(reactor)
    after = pool1.stats()
    ran = (after["completed"] + after["failed"]) - \
        (before["completed"] + before["failed"])
    assert ran == 1 + 10 + 3
    assert after["cancelled"] - before["cancelled"] == 4
    assert after["queued"] == 0 and after["running"] == 0
    assert after["submitted"] - before["submitted"] == 18


# ---- close and the context manager -------------------------------------

def test_close_drains_queued_work(reactor):
    pool = twincore.CpuPool(workers=1)
    blocker = Blocker()
    first = pool.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    queued = [pool.defer(pow, i, 2, reactor=reactor) for i in range(5)]
    threading.Timer(0.05, blocker.release).start()
    pool.close()   # waits for the queue to drain
    assert pool.closed
    got = run_until(reactor, twincore.gather(first, *queued,
                                             reactor=reactor))
    assert got == ["blocker", 0, 1, 4, 9, 16]
    pool.close()   # harmless twice


def test_close_cancel_queued(reactor):
    pool = twincore.CpuPool(workers=1)
    blocker = Blocker()
    ran = []
    first = pool.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    queued = [pool.defer(ran.append, i, reactor=reactor) for i in range(5)]
    threading.Timer(0.05, blocker.release).start()
    pool.close(cancel_queued=True)
    assert run_until(reactor, first) == "blocker"
    settle(reactor)
    assert ran == []
    assert all(f.cancelled() for f in queued)


def test_use_after_close(reactor):
    pool = twincore.CpuPool(workers=1)
    pool.close()
    assert pool.closed
    with pytest.raises(RuntimeError, match="closed"):
        pool.defer(len, "x", reactor=reactor)
    with pytest.raises(RuntimeError, match="closed"):
        pool.stats()
    with pytest.raises(TypeError):
        pool.close(cancel_queued=[1], extra=1)


def test_context_manager(reactor):
    with twincore.CpuPool(workers=2) as pool:
        assert isinstance(pool, twincore.CpuPool)
        fut = pool.defer(pow, 3, 3, reactor=reactor)
    assert pool.closed
    assert run_until(reactor, fut) == 27


def test_context_manager_does_not_swallow_exceptions():
    with pytest.raises(KeyError):
        with twincore.CpuPool(workers=1) as pool:
            raise KeyError("out")
    assert pool.closed


# ---- parallel work ------------------------------------------------------

def test_hashlib_on_two_workers_in_parallel(reactor):
    pool = reactor.cpu_pool
    assert pool.workers == 2
    barrier = threading.Barrier(2, timeout=20)
    buffers = [bytes([i]) * (4 << 20) for i in range(8)]
    threads = set()

    def digest(buf, meet):
        threads.add(threading.get_ident())
        if meet:
            barrier.wait()   # both workers inside a task at once
        return hashlib.sha256(buf).hexdigest()
    futs = [reactor.defer_to_cpu(digest, b, i < 2)
            for i, b in enumerate(buffers)]
    got = run_until(reactor, twincore.gather(*futs, reactor=reactor),
                    timeout=60)
    assert got == [hashlib.sha256(b).hexdigest() for b in buffers]
    assert len(threads) == 2


# ---- pools and reactors -------------------------------------------------

def test_reactor_uses_its_cpu_pool(reactor, pool1):
    reactor.cpu_pool = pool1
    before = pool1.stats()["submitted"]
    assert run_until(reactor, reactor.defer_to_cpu(len, "abc")) == 3
    assert pool1.stats()["submitted"] == before + 1


def test_one_pool_shared_by_two_reactors(reactor):
    pool = reactor.cpu_pool
    results = {}

    def other_thread():
        r2 = twincore.Reactor()
        r2.cpu_pool = pool
        seen = []
        fut = r2.defer_to_cpu(pow, 2, 8)
        fut.add_callback(lambda v: seen.append(threading.get_ident()) or v)
        results["other"] = (run_until(r2, fut), seen,
                            threading.get_ident())

    t = threading.Thread(target=other_thread)
    t.start()
    mine = []
    fut = reactor.defer_to_cpu(pow, 3, 3)
    fut.add_callback(lambda v: mine.append(threading.get_ident()) or v)
    assert run_until(reactor, fut) == 27
    t.join(30)
    assert not t.is_alive()
    value, seen, ident = results["other"]
    assert value == 256 and seen == [ident]
    assert mine == [threading.get_ident()]


@pytest.mark.parametrize("env,expected", [("3", "3"), ("1", "1"),
                                          (None, str(os.cpu_count()))])
def test_default_pool_size_from_the_environment(env, expected):
    code = "import twincore; print(twincore.reactor.cpu_pool.workers)"
    environ = dict(os.environ)
    environ.pop("TWINCORE_CPU_WORKERS", None)
    if env is not None:
        environ["TWINCORE_CPU_WORKERS"] = env
    out = subprocess.run([sys.executable, "-c", code], env=environ,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == expected


def test_default_pool_bad_environment():
    code = ("import twincore\n"
            "try:\n"
            "    twincore.reactor.cpu_pool\n"
            "except ValueError as e:\n"
            "    print('ValueError', e)\n")
    environ = dict(os.environ, TWINCORE_CPU_WORKERS="many")
    out = subprocess.run([sys.executable, "-c", code], env=environ,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ValueError")
    assert "TWINCORE_CPU_WORKERS" in out.stdout


# ---- lifetimes: who may close or free a pool, and where (issue 12) --------

def run_child(code, timeout=60):
    """Run code in a new interpreter: a broken pool aborts it, not the
    suite."""
    return subprocess.run([sys.executable, "-c", code],
                          capture_output=True, text=True, timeout=timeout)


def assert_child_ok(res, expected):
    assert res.returncode == 0, \
        f"exit status {res.returncode}; stderr:\n{res.stderr[-3000:]}"
    assert "AddressSanitizer" not in res.stderr, res.stderr[-3000:]
    assert res.stdout.split() == expected, (res.stdout, res.stderr[-3000:])


LIFETIME_PRELUDE = """
import gc, threading, weakref
import twincore
r = twincore.Reactor()

def run_until(fut, timeout=30):
    fut.add_done_callback(lambda _: r.stop())
    handle = r.call_later(timeout, r.stop)
    r.run()
    handle.cancel()
    assert fut.done(), "timed out"
    return fut.result()
"""


def test_a_pool_in_a_cycle_collected_while_its_task_allocates():
    """The GC runs on the pool's worker (inside the task) while the pool is
    garbage but for that task: it stays alive until the task is delivered,
    and is collected (and closed) afterwards, never on its own worker."""
    res = run_child(LIFETIME_PRELUDE + """
def churn():
    junk = [[[] for _ in range(50)] for _ in range(2000)]
    gc.collect()
    return len(junk)

pool = twincore.CpuPool(workers=1)
pool.me = pool   # a reference cycle: only the GC frees it
ref = weakref.ref(pool)
fut = pool.defer(churn, reactor=r)
del pool
print(run_until(fut))
gc.collect()
print(ref() is None)
""")
    assert_child_ok(res, ["2000", "True"])


def test_a_task_drops_the_last_reference_to_its_own_pool():
    res = run_child(LIFETIME_PRELUDE + """
holder = [twincore.CpuPool(workers=1)]
ref = weakref.ref(holder[0])

def drop():
    holder.clear()
    return "dropped"

fut = holder[0].defer(drop, reactor=r)
print(run_until(fut))
print(ref() is None)
""")
    assert_child_ok(res, ["dropped", "True"])


def test_close_from_one_of_its_own_workers():
    """pool.defer(pool.close): the pool closes at once (no self-join); the
    tasks queued behind still run, and the workers exit on their own."""
    res = run_child(LIFETIME_PRELUDE + """
pool = twincore.CpuPool(workers=2)
gate = threading.Event()
first = pool.defer(gate.wait, 30, reactor=r)
closer = pool.defer(pool.close, reactor=r)
print(run_until(closer))
print(pool.closed)
later = []
try:
    pool.defer(len, "x", reactor=r)
except RuntimeError as exc:
    later.append("refused")
print(*later)
gate.set()
print(run_until(first))
pool.close()   # already closed: returns

# Nobody holds the pool once its tasks are delivered, while its drainers,
# joined by nobody, may still be finishing: they keep it alive till then.
refs = []
for n in range(56, 72):
    pool = twincore.CpuPool(workers=1)
    refs.append(weakref.ref(pool))
    gate = threading.Event()
    futs = [pool.defer(gate.wait, 30, reactor=r),
            pool.defer(pool.close, reactor=r)]
    futs += [pool.defer(pow, i, 2, reactor=r) for i in range(n)]
    del pool
    gate.set()
    got = run_until(twincore.gather(*futs, reactor=r))
    assert got == [True, None] + [i * i for i in range(n)], got
for _ in range(100):
    gc.collect()
    if all(ref() is None for ref in refs):
        break
    threading.Event().wait(0.05)
print(all(ref() is None for ref in refs))
""")
    assert_child_ok(res, ["None", "True", "refused", "True", "True"])


def test_cpu_pool_first_read_from_another_thread():
    """A monitoring thread may be the first to read reactor.cpu_pool (the
    lazy set-up of the default pool and the loop's resolver); threads that
    race for it get the same pool, and the reactor's thread then uses it."""
    res = run_child(LIFETIME_PRELUDE + """
seen = []
barrier = threading.Barrier(4)

def monitor():
    barrier.wait()
    pool = r.cpu_pool
    seen.append((pool, pool.stats()["workers"] == pool.workers))

threads = [threading.Thread(target=monitor) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(len(seen), len({id(p) for p, _ in seen}), all(ok for _, ok in seen))
print(seen[0][0] is r.cpu_pool)
print(run_until(r.defer_to_cpu(pow, 2, 10)))
""")
    assert_child_ok(res, ["4", "1", "True", "True", "1024"])


def test_an_unreferenced_pool_finishes_its_queued_work(reactor):
    blocker = Blocker()
    pool = twincore.CpuPool(workers=1)
    first = pool.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    queued = pool.defer(pow, 2, 5, reactor=reactor)
    del pool   # nobody holds it; its tasks do
    blocker.release()
    got = run_until(reactor, twincore.gather(first, queued,
                                             reactor=reactor))
    assert got == ["blocker", 32]


def test_await_a_task_of_a_pool_nobody_holds(reactor):
    async def main():
        return await twincore.CpuPool(workers=1).defer(pow, 3, 4,
                                                       reactor=reactor)
    assert run_until(reactor, main()) == 81


# ---- closing on the reactor's thread: aclose() and async with ----------

def test_blocking_close_on_the_running_reactor_thread_is_refused(reactor):
    blocker = Blocker()
    pool = twincore.CpuPool(workers=1)

    async def main():
        fut = pool.defer(blocker, reactor=reactor)
        with pytest.raises(RuntimeError, match="aclose"):
            pool.close()
        with pytest.raises(RuntimeError, match="aclose"):
            with pool:
                pass
        assert not pool.closed   # refused: nothing happened
        blocker.release()
        return await fut
    assert run_until(reactor, main()) == "blocker"
    # Nothing runs for the reactor any more: close() does not refuse.
    async def close_idle():
        pool.close()
        return pool.closed
    assert run_until(reactor, close_idle()) is True


def test_async_with_lets_tasks_that_need_the_loop_finish(reactor):
    """A task that waits for the reactor's thread: a blocking close on that
    thread would deadlock; async with closes without blocking the loop."""
    def needs_loop():
        ran = threading.Event()
        reactor.call_from_thread(ran.set)
        assert ran.wait(30), "the loop never ran the call"
        return "done"

    async def main():
        async with twincore.CpuPool(workers=1) as pool:
            fut = pool.defer(needs_loop, reactor=reactor)
        assert pool.closed
        assert fut.done()   # the workers were joined: it ran
        async with twincore.CpuPool(workers=1) as idle:
            assert await idle.defer(pow, 2, 3, reactor=reactor) == 8
        assert idle.closed   # nothing ran any more: closed at once
        return fut.result()
    assert run_until(reactor, main()) == "done"


def test_aclose(reactor):
    blocker = Blocker()
    pool = twincore.CpuPool(workers=1)
    ran = []
    first = pool.defer(blocker, reactor=reactor)
    assert blocker.started.wait(10)
    queued = [pool.defer(ran.append, i, reactor=reactor) for i in range(3)]

    async def main():
        closing = pool.aclose(cancel_queued=True, reactor=reactor)
        assert pool.closed   # at once: new tasks are refused
        with pytest.raises(RuntimeError, match="closed"):
            pool.defer(len, "x", reactor=reactor)
        assert not closing.done()   # the blocker still runs
        blocker.release()
        assert await closing is None
        assert first.done() and first.result() == "blocker"
        assert await pool.aclose(reactor=reactor) is None   # twice: fine
        return [f.cancelled() for f in queued]
    assert run_until(reactor, main()) == [True, True, True]
    assert ran == []


# ---- a worker keeps its thread state -----------------------------------

_worker_local = threading.local()


def _remember_on_worker(k):
    """Counts the tasks this worker thread ran, in a threading.local()."""
    seen = getattr(_worker_local, "tasks", 0)
    _worker_local.tasks = seen + 1
    return threading.get_ident(), seen


def test_worker_keeps_thread_state_between_tasks(reactor, pool1):
    # One thread state per worker thread for its whole life: what a task
    # leaves in a threading.local() is there for the next task on the same
    # worker, as on any Python thread (a thread state made per batch of
    # tasks dropped it, and cost an mmap and munmap each time).
    results = []
    for k in range(5):
        f = pool1.defer(_remember_on_worker, k, reactor=reactor)
        results.append(run_until(reactor, f))
        settle(reactor, 0.01)   # each task in a batch of its own
    idents = {ident for ident, _ in results}
    assert len(idents) == 1
    assert [seen for _, seen in results] == [0, 1, 2, 3, 4]


def test_worker_thread_states_go_with_the_pool():
    # Closing a pool deletes its workers' thread states (taking the GIL on
    # their way out) and does not deadlock the closer, which waits without
    # the GIL; a child process exits cleanly with a used pool never closed.
    code = (
        "import threading, twincore\n"
        "r = twincore.Reactor()\n"
        "async def use(p):\n"
        "    for _ in range(8):\n"
        "        await p.defer(threading.get_ident, reactor=r)\n"
        "for n in range(20):\n"
        "    p = twincore.CpuPool(workers=2)\n"
        "    twincore.run(use(p), reactor=r)\n"
        "    p.close()\n"
        "p = twincore.CpuPool(workers=2)\n"
        "twincore.run(use(p), reactor=r)\n"
        "print('ok', threading.active_count())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["ok", "1"]
