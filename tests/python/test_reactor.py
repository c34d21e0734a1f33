"""Reactor: run/stop, call_soon, call_from_thread, time, stats, cpu_pool,
and the thread rule (every method but call_from_thread on the reactor's
own thread)."""

import threading

import pytest

import twincore
from conftest import in_thread, run_until


def test_reactor_takes_no_arguments():
    with pytest.raises(TypeError):
        twincore.Reactor(1)


def test_default_reactor_exists():
    assert isinstance(twincore.reactor, twincore.Reactor)
    assert not twincore.reactor.running


def test_run_until_stop(reactor):
    seen = []

    def first():
        seen.append(reactor.running)
        reactor.stop()
    assert not reactor.running
    reactor.call_soon(first)
    reactor.run()
    assert seen == [True]
    assert not reactor.running


def test_run_again_after_stop(reactor):
    count = []
    for _ in range(3):
        reactor.call_soon(count.append, 1)
        reactor.call_soon(reactor.stop)
        reactor.run()
    assert count == [1, 1, 1]


def test_stop_before_run_returns_at_once(reactor):
    """As asyncio's run_forever(): stop() first, and run() polls once
    without waiting, runs what is due, and returns (issue 15)."""
    ran = []
    reactor.stop()
    reactor.call_soon(ran.append, 1)
    reactor.call_later(3600, ran.append, "late")
    reactor.run()
    assert ran == [1]
    # Consumed: the next run() runs until stop() again.
    reactor.call_later(0.01, reactor.stop)
    reactor.call_soon(ran.append, 2)
    reactor.run()
    assert ran == [1, 2]


def test_nested_run_raises(reactor):
    errors = []

    def nested():
        try:
            reactor.run()
        except RuntimeError as exc:
            errors.append(exc)
        reactor.stop()
    reactor.call_soon(nested)
    reactor.run()
    assert len(errors) == 1
    assert "already running" in str(errors[0])
    assert not reactor.running


def test_stop_then_more_callbacks_still_returns(reactor):
    ran = []
    reactor.call_soon(reactor.stop)
    reactor.call_soon(ran.append, "same batch")
    reactor.run()
    # stop() lets the current iteration finish: its batch ran.
    assert ran == ["same batch"]


def test_call_soon_fifo_with_args(reactor):
    out = []
    for i in range(100):
        reactor.call_soon(out.append, i)
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert out == list(range(100))


def test_call_soon_from_a_callback_runs_after_the_queued_ones(reactor):
    out = []

    def a():
        out.append("a")
        reactor.call_soon(out.append, "a2")
    reactor.call_soon(a)
    reactor.call_soon(out.append, "b")
    reactor.call_later(0.05, reactor.stop)
    reactor.run()
    assert out == ["a", "b", "a2"]


def test_call_soon_multiple_args_and_return_value_ignored(reactor):
    got = []

    def f(a, b, c):
        got.append((a, b, c))
        return "ignored"
    reactor.call_soon(f, 1, "two", None)
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert got == [(1, "two", None)]


def test_call_soon_argument_errors(reactor):
    with pytest.raises(TypeError, match="fn"):
        reactor.call_soon()
    with pytest.raises(TypeError, match="fn"):
        reactor.call_soon(42)
    with pytest.raises(TypeError, match="fn"):
        reactor.call_soon("not callable", 1)


def test_call_soon_runs_on_the_reactor_thread(reactor):
    idents = []
    reactor.call_soon(lambda: idents.append(threading.get_ident()))
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert idents == [threading.get_ident()]


def test_time_is_monotonic_and_advances(reactor):
    t0 = reactor.time()
    assert isinstance(t0, float)
    seen = []

    def sample():
        seen.append(reactor.time())
        if len(seen) < 3:
            reactor.call_later(0.01, sample)
        else:
            reactor.stop()
    reactor.call_soon(sample)
    reactor.run()
    assert t0 <= seen[0] <= seen[1] <= seen[2]
    assert seen[2] > t0


def test_stats(reactor):
    before = reactor.stats()
    assert set(before) >= {"iterations", "wakeups", "thread_calls",
                           "soon_calls", "open_handles"}
    assert all(isinstance(v, int) and v >= 0 for v in before.values())
    reactor.call_from_thread(lambda: None)
    reactor.call_soon(reactor.stop)
    reactor.run()
    after = reactor.stats()
    assert after["iterations"] > before["iterations"]
    assert after["thread_calls"] >= before["thread_calls"] + 1


def test_cpu_pool_property(reactor):
    pool = reactor.cpu_pool
    assert isinstance(pool, twincore.CpuPool)
    assert pool.workers == 2
    with pytest.raises(TypeError, match="cpu_pool"):
        reactor.cpu_pool = "not a pool"
    other = twincore.CpuPool(workers=1)
    try:
        reactor.cpu_pool = other
        assert reactor.cpu_pool is other
    finally:
        reactor.cpu_pool = pool
        other.close()


def test_cpu_pool_defaults_to_the_shared_pool():
    r = twincore.Reactor()
    pool = r.cpu_pool
    assert isinstance(pool, twincore.CpuPool)
    assert not pool.closed
    assert twincore.Reactor().cpu_pool is pool


# ---- call_from_thread -------------------------------------------------------

def test_call_from_thread_argument_errors(reactor):
    with pytest.raises(TypeError, match="fn"):
        reactor.call_from_thread()
    with pytest.raises(TypeError, match="fn"):
        reactor.call_from_thread(3)
    err = in_thread(reactor.call_from_thread, "nope")
    assert isinstance(err, TypeError) and "fn" in str(err)


def test_call_from_thread_from_the_loop_thread(reactor):
    out = []
    reactor.call_from_thread(out.append, 1)
    reactor.call_from_thread(reactor.stop)
    reactor.run()
    assert out == [1]


def test_call_from_thread_wakes_a_blocked_loop(reactor):
    out = []
    loop_ident = threading.get_ident()

    def worker():
        reactor.call_from_thread(out.append, threading.get_ident())
        reactor.call_from_thread(reactor.stop)
    # No timer or IO pending: only the cross-thread call can wake epoll.
    watchdog = reactor.call_later(30, reactor.stop)
    t = threading.Timer(0.05, worker)
    t.start()
    reactor.run()
    t.join()
    assert watchdog.active(), "the loop was not woken by call_from_thread"
    watchdog.cancel()
    assert len(out) == 1 and out[0] != loop_ident


def test_call_from_thread_4_threads_x_10000(reactor):
    threads, per_thread = 4, 10_000
    loop_ident = threading.get_ident()
    seen = {i: [] for i in range(threads)}
    wrong_thread = []
    total = [0]
    done = twincore.Future(reactor)
    start = threading.Barrier(threads + 1, timeout=30)

    def record(tid, seq):
        if threading.get_ident() != loop_ident:
            wrong_thread.append((tid, seq))
        seen[tid].append(seq)
        total[0] += 1
        if total[0] == threads * per_thread:
            done.set_result(None)

    def producer(tid):
        start.wait()
        for seq in range(per_thread):
            reactor.call_from_thread(record, tid, seq)

    workers = [threading.Thread(target=producer, args=(i,))
               for i in range(threads)]
    for t in workers:
        t.start()
    start.wait()
    try:
        run_until(reactor, done, timeout=60)
    finally:
        for t in workers:
            t.join(30)
    assert not wrong_thread
    assert total[0] == threads * per_thread
    for tid in range(threads):
        assert seen[tid] == list(range(per_thread)), f"thread {tid} order"


@pytest.mark.callback_errors
def test_call_from_thread_exception_does_not_stop_the_reactor(reactor,
                                                              caplog):
    out = []

    def boom():
        raise ValueError("from thread")
    in_thread(reactor.call_from_thread, boom)
    in_thread(reactor.call_from_thread, out.append, "after")
    reactor.call_later(0.05, reactor.stop)
    with caplog.at_level("ERROR", logger="twincore"):
        reactor.run()
    assert out == ["after"]
    assert any(r.exc_info and r.exc_info[0] is ValueError
               for r in caplog.records)


# ---- the thread rule ------------------------------------------------------

def _ops(reactor):
    """(name, callable) pairs that must raise RuntimeError off-thread."""
    return [
        ("run", lambda: reactor.run()),
        ("run_once", lambda: reactor.run_once(0)),
        ("stop", lambda: reactor.stop()),
        ("add_reader", lambda: reactor.add_reader(0, print)),
        ("remove_reader", lambda: reactor.remove_reader(0)),
        ("add_writer", lambda: reactor.add_writer(1, print)),
        ("remove_writer", lambda: reactor.remove_writer(1)),
        ("call_soon", lambda: reactor.call_soon(print)),
        ("call_later", lambda: reactor.call_later(1, print)),
        ("listen_tcp", lambda: reactor.listen_tcp(0, twincore.Protocol)),
        ("listen_unix", lambda: reactor.listen_unix(
            "@twincore-test-thread", twincore.Protocol)),
        ("listen_udp", lambda: reactor.listen_udp(
            0, twincore.DatagramProtocol())),
        ("connect_tcp", lambda: reactor.connect_tcp(
            "127.0.0.1", 9, twincore.Protocol)),
        ("connect_tcp(name)", lambda: reactor.connect_tcp(
            "localhost", 9, twincore.Protocol)),
        ("connect_unix", lambda: reactor.connect_unix(
            "@twincore-test-none", twincore.Protocol)),
        ("add_signal_handler", lambda: reactor.add_signal_handler(
            10, print)),
        ("remove_signal_handler", lambda: reactor.remove_signal_handler(10)),
        ("spawn", lambda: _spawn_noop(reactor)),
        ("CpuPool.defer", lambda: reactor.cpu_pool.defer(
            int, 1, reactor=reactor)),
        ("defer_to_cpu", lambda: reactor.defer_to_cpu(int, 1)),
    ]


async def _noop():
    return None


def _spawn_noop(reactor):
    coro = _noop()
    try:
        return reactor.spawn(coro)
    except BaseException:
        coro.close()   # never started: no "never awaited" warning
        raise


@pytest.mark.parametrize("name", [name for name, _ in _ops(None)])
def test_foreign_thread_raises_runtime_error(reactor, name):
    op = dict(_ops(reactor))[name]
    # Once it has run, a reactor is its thread's (before, the first run()
    # may adopt it: test_loop_manners.py).
    reactor.run_once(0)
    err = in_thread(op)
    if isinstance(err, twincore.Future):
        err.cancel()
    assert isinstance(err, RuntimeError), f"{name}: got {err!r}"
    assert "thread" in str(err)


def test_foreign_thread_timer_and_listener_methods(reactor):
    handle = reactor.call_later(10, print)
    listener = reactor.listen_tcp(0, twincore.Protocol)
    try:
        for op in (handle.cancel, lambda: handle.reset(1), listener.close):
            err = in_thread(op)
            assert isinstance(err, RuntimeError), err
        assert handle.active()
    finally:
        handle.cancel()
        listener.close()


# ---- the default reactor (issues 12.6 and 13) --------------------------

IMPORT_PROBE = r"""
import os, sys, threading
def fds():
    return sorted(os.listdir("/proc/self/fd"))
def tasks():
    return sorted(os.listdir("/proc/self/task"))
before = (fds(), tasks(), threading.active_count())
import twincore
after = (fds(), tasks(), threading.active_count())
print(before == after, before, after)
assert "reactor" not in vars(twincore)   # not made yet
r = twincore.reactor                    # made on first use
print(isinstance(r, twincore.Reactor), twincore.reactor is r)
"""


def test_import_opens_no_descriptor_and_starts_no_thread():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", IMPORT_PROBE],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("True"), lines[0]
    assert lines[1] == "True True"


HELPER_IMPORT = r"""
import threading
box = []
def helper():
    import twincore
    box.append(twincore.reactor)   # even made (first used) there
t = threading.Thread(target=helper)
t.start()
t.join()
import twincore

async def main():
    await twincore.sleep(0.01)
    return twincore.get_running_reactor() is box[0]
print(twincore.run(main()))
twincore.reactor.call_soon(print, "again")
twincore.reactor.call_soon(twincore.reactor.stop)
twincore.reactor.run()
"""


def test_default_reactor_belongs_to_the_thread_that_runs_it():
    """twincore first imported, and its default reactor first used, on a
    helper thread: run() on the main thread works (issue 12.6)."""
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-c", HELPER_IMPORT],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["True", "again"]


def test_a_running_default_reactor_is_not_taken_over():
    """run() on another thread while the default reactor runs: refused."""
    errors = []

    def probe():
        async def main():
            return 1
        coro = main()
        try:
            twincore.run(coro)
        except RuntimeError as exc:
            return exc
    r = twincore.reactor
    r.call_soon(lambda: errors.append(in_thread(probe)))
    r.call_soon(r.stop)
    r.run()
    assert isinstance(errors[0], RuntimeError), errors
    assert "thread" in str(errors[0])
