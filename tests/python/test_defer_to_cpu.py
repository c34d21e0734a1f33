"""defer_to_cpu: results and exceptions (with traceback) delivered on the
reactor thread, arguments, priority and timeout validation, timeouts, and
the logging of fire-and-forget failures."""

import gc
import logging
import threading
import traceback

import pytest

import twincore
from conftest import run_until


def add(a, b, *, c=0):
    return a + b + c


def failing_task(msg):
    raise ValueError(msg)


def unhandled_records(caplog):
    return [r for r in caplog.records
            if r.name == "twincore" and r.levelno >= logging.ERROR]


def test_result_delivered_on_the_reactor_thread(reactor):
    loop_ident = threading.get_ident()
    seen = {}

    def work(x):
        seen["worker"] = threading.get_ident()
        return x * 2
    fut = reactor.defer_to_cpu(work, 21)
    assert isinstance(fut, twincore.Future)
    fut.add_callback(lambda r: seen.setdefault("callback",
                                               threading.get_ident()) and r)
    assert run_until(reactor, fut) == 42
    assert seen["worker"] != loop_ident
    assert seen["callback"] == loop_ident
    assert fut.state == "done"


def test_args_and_kwargs(reactor):
    fut = reactor.defer_to_cpu(add, 1, 2, c=3)
    assert run_until(reactor, fut) == 6

    def echo(*args, **kwargs):
        return args, kwargs
    fut = reactor.defer_to_cpu(echo, "a", args=1, kwargs=2)
    assert run_until(reactor, fut) == (("a",), {"args": 1, "kwargs": 2})


def test_a_keyword_named_fn_reaches_the_callable(reactor):
    # As Executor.submit(fn, /, *args, **kwargs): fn is positional-only.
    def echo(**kwargs):
        return kwargs
    fut = reactor.defer_to_cpu(echo, fn=3)
    assert run_until(reactor, fut) == {"fn": 3}


def test_pool_defer_with_an_explicit_reactor(reactor):
    fut = reactor.cpu_pool.defer(add, 2, 3, reactor=reactor)
    assert run_until(reactor, fut) == 5


def test_module_level_defer_to_cpu_uses_the_default_reactor():
    async def main():
        return await twincore.defer_to_cpu(add, 4, 5, c=1)
    assert twincore.run(main()) == 10


@pytest.mark.parametrize("fn,args,expected", [
    (len, ("abc",), 3),
    (sorted, ([3, 1, 2],), [1, 2, 3]),
    ("x".join, (["a", "b"],), "axb"),
    ((lambda: None), (), None),
])
def test_callables_of_every_kind(reactor, fn, args, expected):
    assert run_until(reactor, reactor.defer_to_cpu(fn, *args)) == expected


def test_exception_with_traceback_on_the_reactor_thread(reactor):
    loop_ident = threading.get_ident()
    seen = {}

    def errback(exc):
        seen["thread"] = threading.get_ident()
        seen["exc"] = exc
        return "handled"
    fut = reactor.defer_to_cpu(failing_task, "bad input")
    fut.add_errback(errback)
    assert run_until(reactor, fut) == "handled"
    assert seen["thread"] == loop_ident
    exc = seen["exc"]
    assert isinstance(exc, ValueError) and exc.args == ("bad input",)
    names = [f.name for f in traceback.extract_tb(exc.__traceback__)]
    assert "failing_task" in names


def test_exception_raised_by_await(reactor):
    async def main():
        try:
            await reactor.defer_to_cpu(failing_task, "awaited")
        except ValueError as exc:
            return [f.name for f in traceback.extract_tb(exc.__traceback__)]
    assert "failing_task" in run_until(reactor, main())


def test_many_in_flight(reactor):
    futs = [reactor.defer_to_cpu(pow, i, 2) for i in range(2000)]
    got = run_until(reactor, twincore.gather(*futs, reactor=reactor))
    assert got == [i * i for i in range(2000)]


# ---- argument errors ------------------------------------------------

@pytest.mark.parametrize("priority", [twincore.PRIORITY_HIGH,
                                      twincore.PRIORITY_NORMAL,
                                      twincore.PRIORITY_LOW])
def test_priorities_accepted(reactor, priority):
    assert run_until(reactor, reactor.defer_to_cpu(
        add, 1, 1, priority=priority)) == 2


@pytest.mark.parametrize("bad", [99, -99, twincore.PRIORITY_LOW + 1,
                                 twincore.PRIORITY_HIGH - 1])
def test_priority_out_of_range(reactor, bad):
    before = reactor.cpu_pool.stats()["submitted"]
    with pytest.raises(ValueError, match="priority"):
        reactor.defer_to_cpu(add, 1, 1, priority=bad)
    assert reactor.cpu_pool.stats()["submitted"] == before


@pytest.mark.parametrize("bad", ["high", None, 1.5])
def test_priority_wrong_type(reactor, bad):
    with pytest.raises(TypeError, match="priority"):
        reactor.defer_to_cpu(add, 1, 1, priority=bad)


def test_fn_must_be_callable(reactor):
    with pytest.raises(TypeError, match="fn"):
        reactor.defer_to_cpu(42)
    with pytest.raises(TypeError, match="fn"):
        twincore.defer_to_cpu("text")


@pytest.mark.parametrize("bad", [0, -1, float("nan")])
def test_timeout_bad_value_submits_nothing(reactor, bad):
    ran = []
    before = reactor.cpu_pool.stats()["submitted"]
    with pytest.raises(ValueError, match="timeout"):
        reactor.defer_to_cpu(ran.append, 1, timeout=bad)
    assert reactor.cpu_pool.stats()["submitted"] == before
    run_until(reactor, twincore.sleep(0.05, reactor=reactor))
    assert ran == []


@pytest.mark.parametrize("bad", ["1", [1]])
def test_timeout_wrong_type(reactor, bad):
    with pytest.raises(TypeError, match="timeout"):
        reactor.defer_to_cpu(add, 1, 1, timeout=bad)


# ---- timeout --------------------------------------------------------

def test_timeout_fails_a_running_task_with_timeout_error(reactor):
    release = threading.Event()
    started = threading.Event()

    def blocking():
        started.set()
        release.wait(20)
        return "too late"
    fut = reactor.defer_to_cpu(blocking, timeout=0.1)
    try:
        with pytest.raises(TimeoutError):
            run_until(reactor, fut, timeout=20)
        assert started.is_set()
        assert fut.state == "failed"
    finally:
        release.set()
    # The late result is dropped, not delivered twice or logged.
    run_until(reactor, twincore.sleep(0.05, reactor=reactor))
    assert isinstance(fut.exception(), TimeoutError)


def test_timeout_while_queued_means_it_never_runs(reactor):
    pool = twincore.CpuPool(workers=1)
    release = threading.Event()
    started = threading.Event()
    ran = []

    def blocking():
        started.set()
        release.wait(20)
    try:
        blocker = pool.defer(blocking, reactor=reactor)
        assert started.wait(10)
        queued = pool.defer(ran.append, "queued", reactor=reactor,
                            timeout=0.05)
        with pytest.raises(TimeoutError):
            run_until(reactor, queued, timeout=20)
        release.set()
        run_until(reactor, blocker)
        run_until(reactor, twincore.sleep(0.05, reactor=reactor))
        assert ran == []
    finally:
        release.set()
        pool.close()


def test_timeout_not_reached(reactor):
    fut = reactor.defer_to_cpu(add, 1, 2, timeout=30)
    assert run_until(reactor, fut) == 3
    # Nothing is left armed: the reactor has no pending timer to fire.
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))
    assert fut.result() == 3


# ---- fire and forget --------------------------------------------------

def _fire_and_forget(reactor):
    reactor.defer_to_cpu(failing_task, "nobody waits for me")


@pytest.mark.callback_errors
def test_fire_and_forget_failure_is_logged(reactor, caplog):
    pool = reactor.cpu_pool
    before = pool.stats()

    def finished():
        s = pool.stats()
        return (s["completed"] + s["failed"] >
                before["completed"] + before["failed"])

    with caplog.at_level(logging.ERROR, logger="twincore"):
        _fire_and_forget(reactor)

        async def wait():
            for _ in range(5000):
                if finished():
                    break
                await twincore.sleep(0.001, reactor=reactor)
            for _ in range(3):   # let the completion be dispatched
                await twincore.sleep(0, reactor=reactor)
        run_until(reactor, wait())
        gc.collect()
    recs = unhandled_records(caplog)
    assert len(recs) == 1, caplog.text
    assert recs[0].exc_info[0] is ValueError
    assert "nobody waits for me" in caplog.text
    assert "failing_task" in caplog.text   # with its traceback


def test_fire_and_forget_success_is_not_logged(reactor, caplog):
    with caplog.at_level(logging.ERROR, logger="twincore"):
        reactor.defer_to_cpu(add, 1, 1)
        run_until(reactor, twincore.sleep(0.1, reactor=reactor))
        gc.collect()
    assert unhandled_records(caplog) == []


def test_observed_failure_is_not_logged(reactor, caplog):
    with caplog.at_level(logging.ERROR, logger="twincore"):
        fut = reactor.defer_to_cpu(failing_task, "observed")
        with pytest.raises(ValueError):
            run_until(reactor, fut)
        del fut
        gc.collect()
    assert unhandled_records(caplog) == []
