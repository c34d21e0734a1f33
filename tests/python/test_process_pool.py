"""The process lane: ProcessPool and defer_to_process. Results and
exceptions (with the worker's traceback), pickling errors at once, a 100 MiB
round trip, and supervision: a worker killed, segfaulting or exiting mid-task
fails that task with WorkerDied and is replaced; timeouts and cancelling a
running task kill its worker; restart intensity; max_tasks_per_worker; no
child left after close(), after Ctrl-C in run(), or when the parent is
SIGKILLed. Every wait is bounded."""

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import twincore
from conftest import run_until

import _proc_tasks as tasks

HERE = os.path.dirname(os.path.abspath(__file__))


def alive(pid):
    """True while pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def exists(pid):
    return os.path.exists(f"/proc/{pid}")


def wait_for(pred, timeout=10.0):
    """Poll pred (bounded); returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def run_for(reactor, pred, timeout=20.0):
    """Run the reactor until pred() holds (checked every 10 ms)."""
    done = twincore.Future(reactor)

    def check():
        if pred():
            done.set_result(True)
        else:
            reactor.call_later(0.01, check)
    reactor.call_soon(check)
    run_until(reactor, done, timeout)


def pid_of_task(reactor, path):
    run_for(reactor, lambda: os.path.exists(path))
    with open(path) as f:
        return int(f.read())


@pytest.fixture(scope="module")
def lane():
    """One reactor and a 2-worker pool for the tests that do not hurt
    their workers (worker start-up is paid once)."""
    r = twincore.Reactor()
    pool = twincore.ProcessPool(workers=2, reactor=r)
    yield r, pool
    pool.close()
    r.close()


@pytest.fixture
def make_pool(reactor):
    pools = []

    def make(**kwargs):
        kwargs.setdefault("workers", 2)
        pool = twincore.ProcessPool(reactor=reactor, **kwargs)
        pools.append(pool)
        return pool
    yield make
    for pool in pools:
        pids = pool.pids()
        pool.close()
        for pid in pids:
            assert not exists(pid), f"worker {pid} left after close()"


# ---- results, errors, data ------------------------------------------------

def test_results_come_from_other_processes(lane):
    r, pool = lane
    fut = pool.defer(tasks.square, 12)
    assert isinstance(fut, twincore.Future)
    assert run_until(r, fut) == 144
    pids = run_until(r, twincore.gather(
        *[pool.defer(tasks.getpid) for _ in range(20)], reactor=r))
    assert os.getpid() not in pids
    assert set(pids) <= set(pool.pids())


def test_args_kwargs_and_callbacks_on_the_reactor_thread(lane):
    r, pool = lane
    seen = []
    fut = pool.defer(tasks.echo, 1, "a", fn=3, prio=4,
                     priority=twincore.PRIORITY_LOW)
    fut.add_done_callback(lambda f: seen.append(threading.get_ident()))
    assert run_until(r, fut) == ((1, "a"), {"fn": 3, "prio": 4})
    assert seen == [threading.get_ident()]


def test_many_in_flight_all_complete(lane):
    r, pool = lane
    futs = [pool.defer(tasks.square, i) for i in range(2000)]
    assert run_until(r, twincore.gather(*futs, reactor=r)) == \
        [i * i for i in range(2000)]
    s = pool.stats()
    assert s["queued"] == 0 and s["running"] == 0


def test_exception_carries_the_worker_traceback(lane):
    r, pool = lane
    fut = pool.defer(tasks.fail, "boom")
    with pytest.raises(ValueError, match="boom") as info:
        run_until(r, fut)
    cause = info.value.__cause__
    assert isinstance(cause, twincore.RemoteTraceback)
    assert "_proc_tasks.py" in cause.tb and "in fail" in cause.tb
    assert "ValueError: boom" in cause.tb


def test_an_exception_that_cannot_be_rebuilt_keeps_its_text(lane):
    r, pool = lane
    with pytest.raises(RuntimeError, match="_Local: 1-2") as info:
        run_until(r, pool.defer(tasks.raise_unloadable))
    assert "raise_unloadable" in info.value.__cause__.tb


def test_unpicklable_function_or_argument_fails_at_once(lane):
    r, pool = lane
    before = pool.stats()["submitted"]
    with pytest.raises(TypeError, match="cannot pickle the function"):
        pool.defer(lambda: 1)
    with pytest.raises(TypeError, match=r"argument 1 \(lock\)"):
        pool.defer(tasks.echo, 1, threading.Lock())
    with pytest.raises(TypeError, match="keyword argument 'k'"):
        pool.defer(tasks.echo, k=threading.Lock())
    assert pool.stats()["submitted"] == before


def test_an_unpicklable_result_fails_the_task(lane):
    r, pool = lane
    with pytest.raises(TypeError, match="result could not be pickled"):
        run_until(r, pool.defer(tasks.unpicklable_result))
    assert run_until(r, pool.defer(tasks.square, 3)) == 9


def test_100_mib_round_trip(lane):
    r, pool = lane
    data = os.urandom(1 << 20) * 100
    digest, back = run_until(r, pool.defer(tasks.digest_and_echo, data), 60)
    assert digest == hashlib.sha256(data).hexdigest()
    assert type(back) is bytes and len(back) == len(data)
    assert hashlib.sha256(back).hexdigest() == digest


def test_bytearray_and_medium_buffers(lane):
    r, pool = lane
    for n in (0, 1, 70_000, (1 << 20) + 3):
        data = bytearray(os.urandom(n))
        (args, _), = [run_until(r, pool.defer(tasks.echo, data))]
        assert args == (data,) and type(args[0]) is bytearray


def test_results_larger_than_the_socket_buffer(lane):
    # Below the memfd threshold they go through the socket, which the
    # worker must wait on (it is non-blocking) rather than fail.
    r, pool = lane
    data = os.urandom(600_000)
    futs = [pool.defer(tasks.digest_and_echo, data) for _ in range(20)]
    results = run_until(r, twincore.gather(*futs, reactor=r), 60)
    digest = hashlib.sha256(data).hexdigest()
    assert all(d == digest and back == data for d, back in results)
    assert pool.stats()["restarts"] == 0


def test_stats_shape_is_cpu_pools_plus_restarts(lane):
    r, pool = lane
    cpu = twincore.CpuPool(workers=1)
    try:
        keys = set(cpu.stats())
    finally:
        cpu.close()
    s = pool.stats()
    assert set(s) == keys | {"restarts"}
    assert s["workers"] == 2
    assert len(s["drainer_run_ns_log2"]) == len(
        s["drainer_wait_ns_log2"]) == 40
    assert sum(s["drainer_run_ns_log2"]) == s["completed"] + s["failed"]


def test_priority_orders_queued_tasks(make_pool, reactor):
    pool = make_pool(workers=1)
    order = []
    # The first calls fill the worker's pipeline; the rest wait queued.
    block = [pool.defer(tasks.sleep, 0.3) for _ in range(3)]
    futs = []
    for name, prio in (("low", twincore.PRIORITY_LOW),
                       ("normal", twincore.PRIORITY_NORMAL),
                       ("high", twincore.PRIORITY_HIGH)):
        f = pool.defer(tasks.sleep, 0, name, priority=prio)
        f.add_callback(order.append)
        futs.append(f)
    run_until(reactor, twincore.gather(*block, *futs, reactor=reactor))
    assert order == ["high", "normal", "low"]


def test_bad_arguments(make_pool, reactor):
    with pytest.raises(ValueError, match="'workers'"):
        twincore.ProcessPool(workers=-1, reactor=reactor)
    with pytest.raises(ValueError, match="'max_tasks_per_worker'"):
        twincore.ProcessPool(max_tasks_per_worker=0, reactor=reactor)
    with pytest.raises(ValueError, match="'restart_period'"):
        twincore.ProcessPool(restart_period=0, reactor=reactor)
    pool = make_pool(workers=1)
    with pytest.raises(ValueError, match="'priority'"):
        pool.defer(tasks.square, 1, priority=7)
    with pytest.raises(ValueError, match="'timeout'"):
        pool.defer(tasks.square, 1, timeout=0)
    with pytest.raises(TypeError, match="'timeout'"):
        pool.defer(tasks.square, 1, timeout="1")
    err = []
    t = threading.Thread(target=lambda: err.append(
        pytest.raises(RuntimeError, pool.defer, tasks.square, 1)))
    t.start()
    t.join(10)
    assert "thread" in str(err[0].value)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool.defer(tasks.square, 1)


# ---- supervision ------------------------------------------------------------

def test_kill_9_mid_task(make_pool, reactor, tmp_path):
    pool = make_pool(workers=2)
    path = str(tmp_path / "pid")
    victim = pool.defer(tasks.pid_then_sleep, path, 60)
    others = [pool.defer(tasks.square, i) for i in range(50)]
    pid = pid_of_task(reactor, path)
    assert pid in pool.pids()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(twincore.WorkerDied, match="SIGKILL") as info:
        run_until(reactor, victim)
    assert info.value.pid == pid
    assert info.value.signal == signal.SIGKILL
    assert info.value.returncode == -signal.SIGKILL
    assert info.value.exitcode is None
    assert run_until(reactor, twincore.gather(*others, reactor=reactor)) \
        == [i * i for i in range(50)]
    run_for(reactor, lambda: len(pool.pids()) == 2)
    assert pid not in pool.pids()
    assert pool.stats()["restarts"] == 1
    assert not exists(pid)     # reaped: no zombie
    assert run_until(reactor, twincore.gather(
        *[pool.defer(tasks.square, 3) for _ in range(4)],
        reactor=reactor)) == [9] * 4


def test_segfault(make_pool, reactor, monkeypatch):
    # In the ASan run a worker has libasan preloaded (it loads the
    # instrumented extension), whose SEGV handler would turn the signal
    # into exit code 1: let the worker die of the signal itself.
    asan = os.environ.get("ASAN_OPTIONS")
    if asan is not None:
        monkeypatch.setenv("ASAN_OPTIONS", asan + ":handle_segv=0")
    pool = make_pool(workers=1)
    with pytest.raises(twincore.WorkerDied, match="SIGSEGV") as info:
        run_until(reactor, pool.defer(tasks.segfault))
    assert info.value.signal == signal.SIGSEGV
    assert run_until(reactor, pool.defer(tasks.square, 5)) == 25
    assert pool.stats()["restarts"] == 1


def test_exit_code_is_named(make_pool, reactor):
    pool = make_pool(workers=1)
    queued = pool.defer(tasks.square, 7)
    with pytest.raises(twincore.WorkerDied, match="exit code 3") as info:
        run_until(reactor, pool.defer(tasks.exit_now, 3))
    assert info.value.exitcode == 3 and info.value.returncode == 3
    assert run_until(reactor, queued) == 49


def test_a_task_queued_behind_a_crash_runs_elsewhere(make_pool, reactor):
    pool = make_pool(workers=1)
    crash = pool.defer(tasks.exit_now, 9)
    after = [pool.defer(tasks.square, i) for i in range(10)]
    with pytest.raises(twincore.WorkerDied):
        run_until(reactor, crash)
    assert run_until(reactor, twincore.gather(*after, reactor=reactor)) \
        == [i * i for i in range(10)]


def test_idle_worker_killed_is_replaced(make_pool, reactor):
    pool = make_pool(workers=1)
    pid = run_until(reactor, pool.defer(tasks.getpid))
    os.kill(pid, signal.SIGKILL)
    run_for(reactor, lambda: pool.stats()["restarts"] == 1 and
            len(pool.pids()) == 1)
    assert run_until(reactor, pool.defer(tasks.getpid)) != pid
    assert not exists(pid)


def test_timeout_kills_the_worker(make_pool, reactor):
    pool = make_pool(workers=1)
    pid = run_until(reactor, pool.defer(tasks.getpid))
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="0.5 s"):
        run_until(reactor, pool.defer(tasks.sleep, 60, timeout=0.5))
    assert time.monotonic() - t0 < 30
    run_for(reactor, lambda: not exists(pid))
    assert run_until(reactor, pool.defer(tasks.getpid)) != pid
    s = pool.stats()
    assert s["restarts"] == 0 and s["failed"] == 1


def test_timeout_of_a_queued_task_spares_the_worker(make_pool, reactor):
    pool = make_pool(workers=1)
    pid = run_until(reactor, pool.defer(tasks.getpid))
    slow = pool.defer(tasks.sleep, 1.0, "done")
    late = [pool.defer(tasks.square, 2, timeout=0.2) for _ in range(5)]
    results = run_until(reactor, twincore.gather(
        slow, *late, return_exceptions=True, reactor=reactor))
    assert results[0] == "done"
    assert all(isinstance(x, TimeoutError) for x in results[1:])
    assert run_until(reactor, pool.defer(tasks.getpid)) == pid


def test_cancelling_a_running_task_kills_its_worker(make_pool, reactor,
                                                    tmp_path):
    pool = make_pool(workers=1)
    path = str(tmp_path / "pid")
    fut = pool.defer(tasks.pid_then_sleep, path, 60)
    behind = pool.defer(tasks.square, 6)
    pid = pid_of_task(reactor, path)
    assert fut.cancel()
    assert fut.cancelled()
    run_for(reactor, lambda: not exists(pid))   # killed and reaped
    assert run_until(reactor, behind) == 36
    s = pool.stats()
    assert s["cancelled"] == 1 and s["restarts"] == 0


def test_cancelling_a_queued_task_never_runs_it(make_pool, reactor,
                                                tmp_path):
    pool = make_pool(workers=1)
    first = pool.defer(tasks.sleep, 0.3, "first")
    path = str(tmp_path / "never")
    futs = [pool.defer(tasks.pid_then_sleep, path, 0) for _ in range(5)]
    for f in futs:
        assert f.cancel()
    assert run_until(reactor, first) == "first"
    assert run_until(reactor, pool.defer(tasks.square, 4)) == 16
    assert not os.path.exists(path)


def test_restart_intensity_breaks_the_pool(make_pool, reactor):
    pool = make_pool(workers=1, max_restarts=2, restart_period=60)
    crashes = [pool.defer(tasks.exit_now, 1) for _ in range(3)]
    waiting = pool.defer(tasks.square, 2)
    results = run_until(reactor, twincore.gather(
        *crashes, waiting, return_exceptions=True, reactor=reactor))
    assert all(isinstance(x, twincore.WorkerDied) for x in results[:3])
    assert isinstance(results[3], twincore.BrokenProcessPool)
    assert "3 worker processes died within 60 s" in str(results[3])
    with pytest.raises(twincore.BrokenProcessPool, match="max_restarts=2"):
        pool.defer(tasks.square, 1)
    assert pool.stats()["restarts"] == 3
    assert pool.pids() == []


def test_max_tasks_per_worker_recycles(make_pool, reactor):
    pool = make_pool(workers=1, max_tasks_per_worker=2)
    pids = [run_until(reactor, pool.defer(tasks.getpid)) for _ in range(6)]
    assert pids[0] == pids[1] and pids[2] == pids[3] and pids[4] == pids[5]
    assert len({pids[0], pids[2], pids[4]}) == 3
    assert pool.stats()["restarts"] == 0
    run_for(reactor, lambda: not exists(pids[0]) and not exists(pids[2]))


def test_close_kills_busy_and_idle_workers(reactor, tmp_path):
    pool = twincore.ProcessPool(workers=3, reactor=reactor)
    paths = [str(tmp_path / f"pid{i}") for i in range(2)]
    busy = [pool.defer(tasks.pid_then_sleep, p, 60) for p in paths]
    queued = pool.defer(tasks.square, 1)
    idle = run_until(reactor, pool.defer(tasks.getpid))
    queued = [pool.defer(tasks.sleep, 60) for _ in range(10)]
    busy_pids = {pid_of_task(reactor, p) for p in paths}
    pids = pool.pids()
    assert len(pids) == 3 and busy_pids | {idle} <= set(pids)
    pool.close()
    assert all(f.cancelled() for f in busy + queued)
    for pid in pids:
        assert not exists(pid)
    pool.close()   # again: nothing


def test_aclose_lets_tasks_finish(reactor):
    pool = twincore.ProcessPool(workers=1, reactor=reactor)
    futs = [pool.defer(tasks.sleep, 0.05, i) for i in range(4)]
    pids = pool.pids()
    done = pool.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        pool.defer(tasks.square, 1)
    run_until(reactor, done)
    assert [f.result() for f in futs] == [0, 1, 2, 3]
    assert pool.closed
    for pid in pids:
        assert not exists(pid)


def test_defer_to_process_uses_the_reactors_default_pool(reactor):
    async def main():
        return await twincore.defer_to_process(tasks.square, 9)
    try:
        assert run_until(reactor, main()) == 81
        pool = twincore.default_process_pool(reactor)
        assert pool.reactor is reactor
        assert pool.stats()["completed"] == 1
    finally:
        twincore.default_process_pool(reactor).close()


# ---- the parent's end ---------------------------------------------------------

def _script(body, prelude=""):
    return textwrap.dedent("""\
        import os, sys, time
        sys.path.insert(0, %r)
        """ % HERE) + textwrap.dedent(prelude) + textwrap.dedent("""\
        import twincore
        import _proc_tasks as tasks
        """) + textwrap.dedent(body)


def _spawn_parent(tmp_path, body, prelude=""):
    script = tmp_path / "parent.py"
    script.write_text(_script(body, prelude))
    env = dict(os.environ)
    return subprocess.Popen([sys.executable, str(script)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=str(tmp_path))


def _read_pids(proc, timeout=60):
    """The line 'PIDS a b' the parent prints once its workers run tasks."""
    deadline = time.monotonic() + timeout
    line = ""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PIDS") or not line:
            break
    assert line.startswith("PIDS"), (line, proc.stderr.read())
    return [int(p) for p in line.split()[1:]]


def test_parent_sigkill_takes_the_workers_with_it(tmp_path):
    proc = _spawn_parent(tmp_path, """
        async def main():
            pool = twincore.ProcessPool(workers=2)
            futs = [pool.defer(tasks.pid_then_sleep, f"p{i}", 120)
                    for i in range(2)]
            while not all(os.path.exists(f"p{i}") for i in range(2)):
                await twincore.sleep(0.01)
            print("PIDS", *pool.pids(), flush=True)
            await twincore.sleep(120)
        if __name__ == "__main__":
            twincore.run(main())
        """)
    try:
        pids = _read_pids(proc)
        assert len(pids) == 2 and all(alive(p) for p in pids)
        proc.kill()
        proc.wait(30)
        # Both are busy in time.sleep(): only the death signal ends them.
        t0 = time.monotonic()
        assert wait_for(lambda: not any(alive(p) for p in pids), 10), \
            [p for p in pids if alive(p)]
        print("workers gone %.3f s after the parent" %
              (time.monotonic() - t0))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
        proc.stdout.close()
        proc.stderr.close()


def test_ctrl_c_in_run_leaves_no_child_and_no_zombie(tmp_path):
    # The exit hook that lists our children is registered before twincore
    # is imported: atexit runs hooks last in, first out, so it runs after
    # twincore's own and sees what they left behind.
    proc = _spawn_parent(tmp_path, prelude="""
        import atexit

        def children():
            me = str(os.getpid())
            found = []
            for d in os.listdir("/proc"):
                if d.isdigit():
                    try:
                        with open(f"/proc/{d}/stat") as f:
                            rest = f.read().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    if rest[1] == me:
                        found.append((int(d), rest[0]))
            print("CHILDREN", found, flush=True)

        atexit.register(children)
        """, body="""
        async def main():
            pool = twincore.default_process_pool()
            futs = [twincore.defer_to_process(tasks.pid_then_sleep,
                                              f"p{i}", 120)
                    for i in range(2)]
            futs += [twincore.defer_to_process(tasks.sleep, 120)
                     for i in range(4)]
            while not all(os.path.exists(f"p{i}") for i in range(2)):
                await twincore.sleep(0.01)
            print("PIDS", *pool.pids(), flush=True)
            await twincore.gather(*futs)

        if __name__ == "__main__":
            try:
                twincore.run(main())
            except KeyboardInterrupt:
                print("INTERRUPTED", flush=True)
        """)
    try:
        pids = _read_pids(proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert "INTERRUPTED" in out, err
    assert "CHILDREN []" in out, (out, err)
    for pid in pids:
        assert not alive(pid)
    assert proc.returncode == 0, err


def test_close_from_another_thread_while_the_reactor_runs(make_pool,
                                                          reactor):
    from conftest import in_thread
    pool = make_pool(workers=1)

    async def main():
        await pool.defer(tasks.square, 2)
        return in_thread(pool.close)
    err = run_until(reactor, main())
    assert isinstance(err, RuntimeError) and "call_from_thread" in str(err)
    assert not pool.closed
