"""InterpreterPool and defer_to_interpreter (issue 17): a subinterpreter
with its own GIL per worker, 3.12+; on 3.11 a clear RuntimeError.  The
functions the workers run live in interp_tasks.py."""

import os
import pickle
import signal
import subprocess
import sys
import tempfile
import textwrap
import types

import pytest

import twincore
from conftest import run_until

import interp_tasks

HAVE = sys.version_info >= (3, 12)
needs_312 = pytest.mark.skipif(
    not HAVE, reason="InterpreterPool needs 3.12+ (3.11 is checked by "
                     "test_refused_before_3_12)")
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.skipif(HAVE, reason="3.12+ has InterpreterPool")
def test_refused_before_3_12(reactor):
    with pytest.raises(RuntimeError, match=r"3\.12 or later"):
        twincore.InterpreterPool(workers=1)
    with pytest.raises(RuntimeError, match=r"3\.12 or later"):
        twincore.defer_to_interpreter(interp_tasks.add, 1, 2,
                                      reactor=reactor)


@pytest.fixture
def pool():
    p = twincore.InterpreterPool(workers=2)
    yield p
    p.close(cancel_queued=True)


@pytest.fixture
def pool1():
    p = twincore.InterpreterPool(workers=1)
    yield p
    p.close(cancel_queued=True)


def flag_file(size=2):
    fd, path = tempfile.mkstemp(prefix="tc_interp_")
    os.write(fd, b"\0" * size)
    os.close(fd)
    return path


def wait_for_flag(reactor, path, timeout=20):
    async def poll():
        for _ in range(int(timeout / 0.01)):
            with open(path, "rb") as f:
                if f.read(1) == b"1":
                    return True
            await twincore.sleep(0.01, reactor=reactor)
        return False
    assert run_until(reactor, poll(), timeout=timeout + 5)


@needs_312
def test_result_and_stats_shape(reactor, pool):
    fut = pool.defer(interp_tasks.add, 2, b=40, reactor=reactor)
    assert run_until(reactor, fut) == 42
    stats = pool.stats()
    assert set(stats) == set(reactor.cpu_pool.stats()) | {"startup"}
    assert stats["workers"] == 2 and pool.workers == 2
    assert stats["submitted"] == 1 and stats["completed"] == 1
    # One task started one worker's interpreter, and timed it.
    [startup] = stats["startup"]
    assert set(startup) == {"interpreter_ns", "runner_ns", "cpu_ns"}
    assert all(isinstance(v, int) and v > 0 for v in startup.values())


@needs_312
def test_runs_in_another_interpreter(reactor, pool1):
    main = interp_tasks.where()
    there = run_until(reactor, pool1.defer(interp_tasks.where,
                                           reactor=reactor))
    again = run_until(reactor, pool1.defer(interp_tasks.where,
                                           reactor=reactor))
    assert there[2] != main[2]      # its own sys.modules
    assert again == there           # the same worker and interpreter


@needs_312
def test_two_workers_run_python_at_the_same_time(reactor, pool):
    # Each spins in pure Python with a switch interval longer than the
    # wait: under one shared GIL the first would never let the second in.
    path = flag_file()
    try:
        a = pool.defer(interp_tasks.rendezvous, path, 0, 1, reactor=reactor)
        b = pool.defer(interp_tasks.rendezvous, path, 1, 0, reactor=reactor)
        assert run_until(reactor, twincore.gather(a, b, reactor=reactor),
                         timeout=60) == [True, True]
    finally:
        os.unlink(path)


@needs_312
def test_ten_thousand_tiny_calls(reactor, pool):
    futs = [pool.defer(interp_tasks.add, i, 1, reactor=reactor)
            for i in range(10_000)]
    got = run_until(reactor, twincore.gather(*futs, reactor=reactor),
                    timeout=120)
    assert got == [i + 1 for i in range(10_000)]
    assert pool.stats()["completed"] == 10_000


@needs_312
def test_bytes_round_trip(reactor, pool1):
    data = bytes(range(256)) * 4096
    assert run_until(reactor, pool1.defer(interp_tasks.echo, data,
                                          reactor=reactor)) == data


@needs_312
def test_exception_type_and_traceback(reactor, pool1):
    fut = pool1.defer(interp_tasks.fail, "no luck", reactor=reactor)
    with pytest.raises(interp_tasks.TaskError, match="no luck") as info:
        run_until(reactor, fut)
    tb = str(info.value.__cause__)
    assert "interp_tasks.py" in tb and "in fail" in tb
    assert "TaskError: no luck" in tb
    assert pool1.stats()["failed"] == 1


@needs_312
def test_exception_that_does_not_pickle(reactor, pool1):
    fut = pool1.defer(interp_tasks.fail_unpicklable, "locked",
                      reactor=reactor)
    with pytest.raises(interp_tasks.Unpicklable, match="locked"):
        run_until(reactor, fut)


@needs_312
def test_unimportable_function_fails_that_call_only(reactor, pool1):
    mod = types.ModuleType("tc_only_in_main")
    exec("def f():\n    return 1\n", mod.__dict__)
    sys.modules["tc_only_in_main"] = mod
    try:
        fut = pool1.defer(mod.f, reactor=reactor)
        with pytest.raises(ImportError, match="tc_only_in_main") as info:
            run_until(reactor, fut)
        assert info.value.name == "tc_only_in_main"
    finally:
        del sys.modules["tc_only_in_main"]
    assert run_until(reactor, pool1.defer(interp_tasks.add, 1, 1,
                                          reactor=reactor)) == 2


@needs_312
def test_functions_not_reachable_by_name_are_refused(reactor, pool1):
    with pytest.raises(TypeError, match="importable by name"):
        pool1.defer(lambda: 1, reactor=reactor)

    def local():
        pass
    with pytest.raises(TypeError, match="importable by name"):
        pool1.defer(local, reactor=reactor)
    with pytest.raises(TypeError, match="callable"):
        pool1.defer(42, reactor=reactor)


@needs_312
def test_extension_refusing_subinterpreters(reactor, pool1):
    # capi_demo is multi-phase but does not declare per-interpreter GIL
    # support: an interpreter with its own GIL must refuse it.
    import capi_demo
    assert capi_demo.__name__ == "capi_demo"   # fine in the main one
    fut = pool1.defer(interp_tasks.import_capi_demo, reactor=reactor)
    with pytest.raises(ImportError, match="capi_demo"):
        run_until(reactor, fut)
    fut = pool1.defer(capi_demo.fnv1a, b"x", reactor=reactor)
    with pytest.raises(ImportError, match="capi_demo"):
        run_until(reactor, fut)
    assert run_until(reactor, pool1.defer(interp_tasks.add, 2, 3,
                                          reactor=reactor)) == 5


@needs_312
def test_cancel_queued_and_running(reactor, pool1):
    path = flag_file()
    try:
        running = pool1.defer(interp_tasks.spin_until_interrupted, path,
                              reactor=reactor)
        queued = pool1.defer(interp_tasks.add, 1, 2, reactor=reactor)
        wait_for_flag(reactor, path)
        assert queued.cancel()
        assert queued.cancelled()
        assert running.cancel()
        assert running.cancelled()
        # The worker was interrupted and goes on; nothing of the
        # interrupt reaches the next task.
        after = pool1.defer(interp_tasks.spin, 1000, reactor=reactor)
        assert run_until(reactor, after, timeout=30) == sum(range(1000))
        stats = pool1.stats()
        assert stats["cancelled"] >= 1 and stats["running"] == 0
    finally:
        os.unlink(path)


@needs_312
def test_timeout_interrupts_a_running_task(reactor, pool1):
    path = flag_file()
    try:
        fut = pool1.defer(interp_tasks.spin_until_interrupted, path,
                          timeout=0.5, reactor=reactor)
        with pytest.raises(TimeoutError):
            run_until(reactor, fut, timeout=30)
        assert run_until(reactor, pool1.defer(interp_tasks.add, 5,
                                              reactor=reactor),
                         timeout=30) == 5
    finally:
        os.unlink(path)


@needs_312
def test_close_runs_what_is_queued(reactor):
    p = twincore.InterpreterPool(workers=1)
    futs = [p.defer(interp_tasks.add, i, 1, reactor=reactor)
            for i in range(20)]
    p.close()
    assert p.closed
    assert run_until(reactor, twincore.gather(*futs, reactor=reactor)) == \
        [i + 1 for i in range(20)]
    with pytest.raises(RuntimeError, match="closed"):
        p.defer(interp_tasks.add, 1, reactor=reactor)


@needs_312
def test_close_cancelling_with_busy_workers(reactor):
    p = twincore.InterpreterPool(workers=1)
    path = flag_file()
    try:
        running = p.defer(interp_tasks.spin_until_interrupted, path,
                          reactor=reactor)
        queued = [p.defer(interp_tasks.add, i, reactor=reactor)
                  for i in range(5)]
        wait_for_flag(reactor, path)
        p.close(cancel_queued=True)   # interrupts the running one
        run_until(reactor, twincore.sleep(0.05, reactor=reactor))
        assert running.cancelled()
        assert all(f.cancelled() for f in queued)
    finally:
        os.unlink(path)


@needs_312
def test_context_manager_and_default_pool(reactor):
    with twincore.InterpreterPool(workers=1) as p:
        fut = p.defer(interp_tasks.add, 20, 22, reactor=reactor)
    assert p.closed
    assert run_until(reactor, fut) == 42
    fut = twincore.defer_to_interpreter(interp_tasks.add, 1, 2,
                                        reactor=reactor)
    assert run_until(reactor, fut) == 3
    # No reactor runs here: aclose() closes at once.
    p = twincore.InterpreterPool(workers=1)
    closing = p.aclose()
    assert p.closed and closing.done()


def run_script(body, timeout=60):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [p for p in sys.path if p and os.path.isdir(p)])
    return subprocess.run([sys.executable, "-c", textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=timeout,
                          env=env, cwd=HERE)


@needs_312
def test_interpreter_exit_with_busy_workers():
    # Exit while both workers spin: the exit hook interrupts them, ends
    # their interpreters and the process exits in time.
    path = flag_file()
    try:
        proc = run_script(f"""
            import twincore, interp_tasks
            async def main():
                pool = twincore.InterpreterPool(workers=2)
                futs = [pool.defer(interp_tasks.spin_until_interrupted,
                                   {path!r}, 600) for _ in range(4)]
                for _ in range(2000):
                    if open({path!r}, "rb").read(1) == b"1":
                        break
                    await twincore.sleep(0.01)
                print("busy", flush=True)
            twincore.run(main())
            """)
        assert proc.returncode == 0, proc.stderr
        assert "busy" in proc.stdout
    finally:
        os.unlink(path)


@needs_312
def test_twincore_imports_in_a_subinterpreter():
    # Checked with CPython's own subinterpreters, in a child process: on
    # 3.12.1 CPython's _asyncio (which twincore imports) frees memory twice
    # at exit once a subinterpreter loaded it, whoever imported it, so the
    # child's exit status only counts from 3.13 on; the import itself
    # must succeed on both.
    proc = run_script("""
        import sys
        try:
            import _interpreters as xi
            iid = xi.create("isolated")
            err = xi.run_string(iid, "import twincore; "
                                "assert twincore.Reactor")
            assert err is None, err
        except ImportError:
            import _xxsubinterpreters as xi
            iid = xi.create(isolated=True)
            xi.run_string(iid, "import twincore; assert twincore.Reactor")
        xi.destroy(iid)
        print("imported", flush=True)
        """)
    assert "imported" in proc.stdout, proc.stderr
    if sys.version_info >= (3, 13):
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode in (0, -signal.SIGABRT), proc.stderr


@needs_312
def test_no_leak_over_100000_calls(reactor, pool):
    def batch(n):
        futs = [pool.defer(interp_tasks.add, i, 1, reactor=reactor)
                for i in range(n)]
        got = run_until(reactor, twincore.gather(*futs, reactor=reactor),
                        timeout=120)
        assert got[-1] == n
    for _ in range(10):
        batch(1000)
    before = interp_tasks.rss_kib()
    for _ in range(90):
        batch(1000)
    grown = interp_tasks.rss_kib() - before
    assert grown < 32 * 1024, f"RSS grew by {grown} KiB over 90,000 calls"
    assert pool.stats()["completed"] == 100_000


@needs_312
def test_a_function_of_the_running_script(tmp_path):
    # The workers load the script as __mp_main__: its functions are found,
    # its "if __name__ == '__main__'" block does not run again there.
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import sys

        def triple(x):
            return (x * 3, __name__)

        if __name__ == "__main__":
            import twincore
            print("main block", flush=True)
            async def main():
                with twincore.InterpreterPool(workers=1) as pool:
                    print(await pool.defer(triple, 14), flush=True)
            twincore.run(main())
        """))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [p for p in sys.path if p and os.path.isdir(p)])
    proc = subprocess.run([sys.executable, str(script)], capture_output=True,
                          text=True, timeout=60, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["main block", "(42, '__mp_main__')"]
