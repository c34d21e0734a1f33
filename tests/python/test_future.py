"""twincore.Future: states, settling, Deferred-style chaining (values pass
down, errbacks, add_both, a returned Future pauses the chain), cancel,
and the logging of failures nobody handled."""

import asyncio
import gc
import logging
import subprocess
import sys

import pytest

import twincore
from twincore import CancelledError, Future, InvalidStateError
from conftest import run_until


def unhandled_records(caplog):
    return [r for r in caplog.records
            if r.name == "twincore" and r.levelno >= logging.ERROR]


def test_state_constants():
    assert (twincore.PENDING, twincore.RUNNING, twincore.DONE,
            twincore.FAILED, twincore.CANCELLED) == \
        ("pending", "running", "done", "failed", "cancelled")


def test_shares_asyncio_exception_classes():
    assert CancelledError is asyncio.CancelledError
    assert InvalidStateError is asyncio.InvalidStateError


def test_pending():
    f = Future()
    assert f.state == "pending"
    assert not f.done() and not f.cancelled() and not f.running()
    with pytest.raises(InvalidStateError):
        f.result()
    with pytest.raises(InvalidStateError):
        f.exception()
    assert "pending" in repr(f)


def test_set_result():
    f = Future()
    f.set_result(42)
    assert f.state == "done"
    assert f.done() and not f.cancelled() and not f.running()
    assert f.result() == 42
    assert f.exception() is None
    assert "42" in repr(f)


def test_set_result_none_and_future_values():
    f = Future()
    f.set_result(None)
    assert f.done() and f.result() is None


def test_double_set_result_raises():
    f = Future()
    f.set_result(1)
    with pytest.raises(InvalidStateError):
        f.set_result(2)
    with pytest.raises(InvalidStateError):
        f.set_exception(ValueError())
    assert f.result() == 1


def test_set_exception():
    f = Future()
    err = ValueError("bad")
    f.set_exception(err)
    assert f.state == "failed"
    assert f.done() and not f.cancelled()
    assert f.exception() is err
    with pytest.raises(ValueError, match="bad"):
        f.result()
    with pytest.raises(InvalidStateError):
        f.set_result(1)
    with pytest.raises(InvalidStateError):
        f.set_exception(KeyError())


def test_set_exception_with_a_class_instantiates_it():
    f = Future()
    f.set_exception(KeyError)
    assert isinstance(f.exception(), KeyError)


@pytest.mark.parametrize("bad", [42, "text", None, ValueError.__name__])
def test_set_exception_rejects_non_exceptions(bad):
    f = Future()
    with pytest.raises(TypeError, match="exc"):
        f.set_exception(bad)
    assert f.state == "pending"


# ---- chaining ---------------------------------------------------------

def test_callback_return_values_pass_down():
    f = Future()
    seen = []
    assert f.add_callback(lambda x: x + 1) is f
    f.add_callback(lambda x: seen.append(x) or x * 10)
    f.add_callback(lambda x: seen.append(x))
    f.set_result(1)
    assert seen == [2, 20]
    assert f.result() is None   # the last callback returned None


def test_callbacks_added_after_done_run_at_once():
    f = Future()
    f.set_result("v")
    seen = []
    f.add_callback(seen.append)
    assert seen == ["v"]


def test_callback_args_and_kwargs():
    f = Future()
    seen = []
    f.add_callback(lambda r, a, b=None: seen.append((r, a, b)), 1, b=2)
    f.add_errback(lambda e, a, b=None: seen.append(("err", a, b)), 3, b=4)
    f.set_result("r")
    assert seen == [("r", 1, 2)]

    g = Future()
    g.add_callback(lambda r, a: seen.append(("cb", a)), 0)
    g.add_errback(lambda e, a, b=None: seen.append((type(e), a, b)), 3, b=4)
    g.set_exception(KeyError())
    assert seen[-1] == (KeyError, 3, 4)


def test_add_callbacks_pairs():
    seen = []
    f = Future()
    f.add_callbacks(lambda r, k=None: seen.append(("ok", r, k)),
                    lambda e, k=None: seen.append(("bad", type(e), k)),
                    callback_kwargs={"k": 1}, errback_kwargs={"k": 2})
    f.set_result(5)
    g = Future()
    g.add_callbacks(lambda r, x: seen.append(("ok", r, x)),
                    lambda e, x: seen.append(("bad", type(e), x)),
                    callback_args=(7,), errback_args=(8,))
    g.set_exception(OSError())
    assert seen == [("ok", 5, 1), ("bad", OSError, 8)]


def test_raising_callback_goes_to_the_next_errback():
    f = Future()
    seen = []

    def boom(_):
        raise ValueError("in callback")
    f.add_callback(boom)
    f.add_callback(lambda r: seen.append("skipped"))
    f.add_errback(lambda e: seen.append(e) or "recovered")
    f.add_callback(lambda r: seen.append(r))
    f.set_result(1)
    assert isinstance(seen[0], ValueError) and seen[1:] == ["recovered"]
    assert f.state == "done"


def test_state_follows_the_chain():
    f = Future()
    f.set_result(1)

    def boom(_):
        raise KeyError("k")
    f.add_callback(boom)
    assert f.state == "failed"
    assert isinstance(f.exception(), KeyError)
    f.add_errback(lambda e: "ok")
    assert f.state == "done"
    assert f.result() == "ok"


def test_errback_reraising_passes_the_failure_on():
    f = Future()
    seen = []

    def reraise(e):
        seen.append("first")
        raise e
    f.add_errback(reraise)
    f.add_errback(lambda e: seen.append(type(e)))
    f.set_exception(IndexError())
    assert seen == ["first", IndexError]


def test_errback_raising_a_new_exception():
    f = Future()
    seen = []

    def translate(e):
        raise RuntimeError("translated") from e
    f.add_errback(translate)
    f.add_errback(lambda e: seen.append((type(e), type(e.__cause__))))
    f.set_exception(IndexError())
    assert seen == [(RuntimeError, IndexError)]


def test_success_skips_errbacks():
    f = Future()
    seen = []
    f.add_errback(lambda e: seen.append("errback"))
    f.add_callback(seen.append)
    f.set_result(3)
    assert seen == [3]


def test_add_both():
    seen = []
    ok, bad = Future(), Future()
    ok.add_both(lambda r, tag: seen.append((tag, r)), "ok")
    bad.add_both(lambda r, tag: seen.append((tag, type(r))) or "fixed",
                 "bad")
    ok.set_result(1)
    bad.set_exception(ValueError())
    assert seen == [("ok", 1), ("bad", ValueError)]
    assert bad.result() == "fixed"


def test_add_done_callback_sees_the_future_and_keeps_the_chain():
    seen = []
    f = Future()
    f.add_callback(lambda r: r * 2)
    assert f.add_done_callback(lambda fut: seen.append(fut)) is f
    f.add_callback(lambda r: seen.append(r))
    f.set_result(21)
    assert seen == [f, 42]

    g = Future()
    g.add_done_callback(lambda fut: seen.append(type(fut.exception())))
    g.add_errback(lambda e: seen.append("errback"))
    g.set_exception(KeyError())
    assert seen[-2:] == [KeyError, "errback"]


def test_callback_adding_callbacks_runs_them_in_order():
    f = Future()
    seen = []

    def first(r):
        seen.append("first")
        f.add_callback(lambda r: seen.append("added") or r)
        return r
    f.add_callback(first)
    f.add_callback(lambda r: seen.append("second") or r)
    f.set_result(0)
    assert seen == ["first", "second", "added"]


@pytest.mark.parametrize("method", ["add_callback", "add_errback",
                                    "add_both", "add_done_callback"])
def test_non_callable_callbacks_are_rejected(method):
    f = Future()
    with pytest.raises(TypeError, match="fn"):
        getattr(f, method)(42)


def test_add_callbacks_argument_errors():
    f = Future()
    with pytest.raises(TypeError, match="callback"):
        f.add_callbacks(None)
    with pytest.raises(TypeError, match="errback"):
        f.add_callbacks(print, 5)


# ---- a callback returning a Future pauses the chain ---------------------

def test_returned_future_pauses_the_chain():
    outer, inner = Future(), Future()
    seen = []
    outer.add_callback(lambda r: seen.append(("first", r)) or inner)
    outer.add_callback(lambda r: seen.append(("second", r)) or r + 1)
    outer.set_result(1)
    assert seen == [("first", 1)]
    with pytest.raises(InvalidStateError):
        outer.result()
    inner.set_result(10)
    assert seen == [("first", 1), ("second", 10)]
    assert outer.result() == 11


def test_returned_future_failure_goes_to_errbacks():
    outer, inner = Future(), Future()
    seen = []
    outer.add_callback(lambda r: inner)
    outer.add_callback(lambda r: seen.append("skipped"))
    outer.add_errback(lambda e: seen.append(type(e)) or "recovered")
    outer.set_result(None)
    inner.set_exception(LookupError())
    assert seen == [LookupError]
    assert outer.result() == "recovered"


def test_returned_future_already_done_continues_at_once():
    outer, inner = Future(), Future()
    inner.set_result("ready")
    seen = []
    outer.add_callback(lambda r: inner)
    outer.add_callback(seen.append)
    outer.set_result(0)
    assert seen == ["ready"]


def test_errback_returning_a_future():
    outer, inner = Future(), Future()
    seen = []
    outer.add_errback(lambda e: inner)
    outer.add_callback(seen.append)
    outer.set_exception(ValueError())
    assert seen == []
    inner.set_result("after recovery")
    assert seen == ["after recovery"]


def test_callbacks_added_while_paused_wait_too():
    outer, inner = Future(), Future()
    seen = []
    outer.add_callback(lambda r: inner)
    outer.set_result(None)
    outer.add_callback(seen.append)
    assert seen == []
    inner.set_result(5)
    assert seen == [5]


def test_long_chains_do_not_exhaust_the_stack():
    f = Future()
    for _ in range(10_000):
        f.add_callback(lambda r: r + 1)
    f.set_result(0)
    assert f.result() == 10_000


DEEP_NESTING = """
import sys
from twincore import Future
depth = 2000
futs = [Future() for _ in range(depth + 1)]
for i in range(depth):
    futs[i].add_callback(lambda r, nxt=futs[i + 1]: nxt)
for i in range(depth):
    futs[i].set_result(None)
seen = []
futs[0].add_callback(seen.append)
futs[depth].set_result("bottom")
assert seen == ["bottom"], seen
print("ok")
"""


def test_deeply_nested_returned_futures():
    # In a child interpreter: a stack overflow there cannot take the test
    # runner down with it.
    proc = subprocess.run([sys.executable, "-c", DEEP_NESTING],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", \
        proc.stderr[-2000:]


# ---- cancel ---------------------------------------------------------

def test_cancel_pending():
    f = Future()
    assert f.cancel() is True
    assert f.cancelled() and f.done()
    assert f.state == "cancelled"
    with pytest.raises(CancelledError):
        f.result()
    assert isinstance(f.exception(), CancelledError)
    assert f.cancel() is False
    with pytest.raises(InvalidStateError):
        f.set_result(1)
    with pytest.raises(InvalidStateError):
        f.set_exception(ValueError())


def test_cancel_calls_errbacks_with_cancelled_error():
    f = Future()
    seen = []
    f.add_errback(lambda e: seen.append(e) or "recovered")
    f.cancel()
    assert len(seen) == 1 and isinstance(seen[0], CancelledError)
    assert f.cancelled()
    assert f.result() == "recovered"   # Deferred-style: the errback won


def test_cancel_with_message():
    f = Future()
    assert f.cancel("why")
    with pytest.raises(CancelledError) as info:
        f.result()
    assert "why" in info.value.args


def test_cancel_done_or_failed_does_nothing():
    f = Future()
    f.set_result(1)
    assert f.cancel() is False
    assert f.state == "done" and f.result() == 1
    g = Future()
    g.set_exception(ValueError())
    assert g.cancel() is False
    assert g.state == "failed"
    g.exception()


def test_cancel_runs_callbacks_errback_path_only():
    f = Future()
    seen = []
    f.add_callback(lambda r: seen.append("callback"))
    f.add_both(lambda r: seen.append(type(r)))
    f.cancel()
    assert seen == [CancelledError]


def test_cancelled_future_is_not_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="twincore"):
        f = Future()
        f.cancel()
        del f
        gc.collect()
    assert unhandled_records(caplog) == []


# ---- failures nobody handled -------------------------------------------

def _fail_and_drop(exc):
    f = Future()
    f.set_exception(exc)


@pytest.mark.callback_errors
def test_unhandled_failure_is_logged_on_gc(caplog):
    with caplog.at_level(logging.ERROR, logger="twincore"):
        try:
            raise ValueError("nobody looked")
        except ValueError as exc:
            _fail_and_drop(exc)
        gc.collect()
    recs = unhandled_records(caplog)
    assert len(recs) == 1
    assert recs[0].exc_info[0] is ValueError
    assert "nobody looked" in caplog.text
    assert "test_unhandled_failure_is_logged_on_gc" in caplog.text  # tb


@pytest.mark.callback_errors
def test_failure_watched_only_by_add_done_callback_is_still_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="twincore"):
        f = Future()
        f.add_done_callback(lambda fut: None)
        f.set_exception(KeyError("watched"))
        del f
        gc.collect()
    assert len(unhandled_records(caplog)) == 1


@pytest.mark.parametrize("how", ["errback", "result", "exception", "both"])
def test_handled_failures_are_not_logged(caplog, how):
    with caplog.at_level(logging.ERROR, logger="twincore"):
        f = Future()
        f.set_exception(KeyError("seen"))
        if how == "errback":
            f.add_errback(lambda e: None)
        elif how == "both":
            f.add_both(lambda r: None)
        elif how == "result":
            with pytest.raises(KeyError):
                f.result()
        else:
            f.exception()
        del f
        gc.collect()
    assert unhandled_records(caplog) == []


@pytest.mark.callback_errors
def test_failure_raised_again_by_a_callback_chain_is_logged(caplog):
    with caplog.at_level(logging.ERROR, logger="twincore"):
        f = Future()
        f.add_errback(lambda e: None)         # handled ...

        def fail_again(_):
            raise OSError("new failure")
        f.add_callback(fail_again)            # ... then a new one, unseen
        f.set_exception(KeyError())
        del f
        gc.collect()
    recs = unhandled_records(caplog)
    assert len(recs) == 1 and recs[0].exc_info[0] is OSError


# ---- threads (issue 12.5) ---------------------------------------------

def _from_thread(fn, *args):
    from conftest import in_thread
    return in_thread(fn, *args)


@pytest.mark.parametrize("method", ["set_result", "set_exception",
                                    "cancel"])
def test_settling_from_another_thread_raises(reactor, method):
    """Settling on another thread would run the callbacks there, and an
    awaiting coroutine would never resume: refused at once."""
    f = Future(reactor)
    seen = []
    f.add_both(seen.append)
    arg = {"set_result": (1,), "set_exception": (KeyError("k"),),
           "cancel": ()}[method]
    err = _from_thread(getattr(f, method), *arg)
    assert isinstance(err, RuntimeError), err
    assert "call_from_thread" in str(err)
    assert f.state == "pending" and seen == []


def test_call_from_thread_settles_and_resumes_the_awaiting_coroutine(
        reactor):
    import threading
    from conftest import run_until
    f = Future(reactor)

    async def main():
        return await f
    t = threading.Timer(0.02, reactor.call_from_thread, (f.set_result, 7))
    t.start()
    assert run_until(reactor, main(), timeout=10) == 7
    t.join()


def test_a_future_without_a_reactor_is_not_bound_to_a_thread():
    f = Future()
    assert _from_thread(f.set_result, 3) is None
    assert f.result() == 3


def test_the_reactor_argument_must_be_a_reactor():
    with pytest.raises(TypeError, match="reactor"):
        Future(object())
    with pytest.raises(TypeError, match="reactor"):
        Future(reactor="r")


# ---- StopIteration (issue 12.8) ---------------------------------------

@pytest.mark.parametrize("exc", [StopIteration, StopIteration(5)])
def test_set_exception_wraps_stop_iteration(exc):
    f = Future()
    f.set_exception(exc)
    err = f.exception()
    assert type(err) is RuntimeError
    assert isinstance(err.__cause__, StopIteration)
    with pytest.raises(RuntimeError, match="StopIteration"):
        f.result()


def test_a_callback_raising_stop_iteration_fails_with_runtime_error():
    f = Future()

    def leak(_):
        raise StopIteration(1)
    f.add_callback(leak)
    f.set_result(None)
    assert type(f.exception()) is RuntimeError
    assert isinstance(f.exception().__cause__, StopIteration)


# ---- callback timing (documented in _future.py and twincore/future.h) ----

def test_callback_timing_synchronous_in_the_settling_call():
    """Deferred style: callbacks run inside set_result / set_exception /
    cancel, and inside add_callback once the Future is done."""
    seen = []
    ok, bad, gone = Future(), Future(), Future()
    ok.add_callback(lambda v: seen.append(("ok", v)))
    bad.add_errback(lambda e: seen.append(("bad", type(e))))
    gone.add_errback(lambda e: seen.append(("gone", type(e))))
    ok.set_result(1)
    assert seen == [("ok", 1)]
    bad.set_exception(KeyError("k"))
    assert seen[-1] == ("bad", KeyError)
    gone.cancel()
    assert seen[-1] == ("gone", CancelledError)
    ok.add_both(lambda v: seen.append(("late", v)))
    assert seen[-1] == ("late", None)   # the chain's value after the first


def test_callback_timing_defer_to_cpu(reactor):
    """A defer_to_cpu() Future runs its callbacks in the reactor's batch
    that delivers the result, before anything that batch queues with
    call_soon."""
    order = []
    fut = reactor.defer_to_cpu(pow, 2, 5)

    def first(v):
        reactor.call_soon(order.append, "soon")
        order.append(("first", v))
        return v
    fut.add_callback(first)
    fut.add_callback(lambda v: order.append(("second", v)))
    run_until(reactor, fut)
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))
    assert order == [("first", 32), ("second", 32), "soon"]


def test_callback_timing_await_resumes_later(reactor):
    """A coroutine awaiting a Future is not resumed inside set_result:
    it resumes afterwards, through call_soon."""
    fut = Future(reactor)
    order = []

    async def waiter():
        order.append(("resumed", await fut))
    done = reactor.spawn(waiter())

    def settle():
        fut.set_result(7)
        order.append("set_result returned")
    reactor.call_later(0.01, settle)
    run_until(reactor, done)
    assert order == ["set_result returned", ("resumed", 7)]
