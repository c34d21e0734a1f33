"""Conversions: to_asyncio/from_asyncio with an asyncio loop running on
another thread, and to_deferred/from_deferred with Twisted's Deferred
(no Twisted reactor needed)."""

import asyncio
import concurrent.futures
import sys
import threading

import pytest

import twincore
from twincore import (CancelledError, Future, from_asyncio, from_deferred,
                      to_asyncio, to_deferred)
from conftest import run_until


@pytest.fixture
def aio_loop():
    """An asyncio loop running on its own thread."""
    loop = asyncio.new_event_loop()
    t = threading.Thread(target=loop.run_forever, name="asyncio")
    t.start()
    yield loop
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)
    assert not t.is_alive()
    loop.close()


def on_loop(loop, coro, timeout=10):
    """Run a coroutine on the asyncio thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout)


async def _new_future():
    return asyncio.get_running_loop().create_future()


async def _wait(afut):
    return await afut


def pump(reactor, seconds=0.05):
    run_until(reactor, twincore.sleep(seconds, reactor=reactor))


# ---- to_asyncio -------------------------------------------------------

def test_to_asyncio_result(reactor, aio_loop):
    fut = Future(reactor)
    afut = to_asyncio(fut, aio_loop)
    assert isinstance(afut, asyncio.Future)
    waiter = asyncio.run_coroutine_threadsafe(_wait(afut), aio_loop)
    reactor.call_later(0.01, fut.set_result, {"answer": 42})
    pump(reactor)
    assert waiter.result(10) == {"answer": 42}
    assert fut.result() == {"answer": 42}   # the chain is unchanged


def test_to_asyncio_of_a_done_future(reactor, aio_loop):
    fut = Future(reactor)
    fut.set_result("early")
    afut = to_asyncio(fut, aio_loop)
    assert on_loop(aio_loop, _wait(afut)) == "early"


def test_to_asyncio_failure(reactor, aio_loop):
    fut = Future(reactor)
    afut = to_asyncio(fut, aio_loop)
    waiter = asyncio.run_coroutine_threadsafe(_wait(afut), aio_loop)
    reactor.call_later(0.01, fut.set_exception, KeyError("k"))
    pump(reactor)
    with pytest.raises(KeyError):
        waiter.result(10)
    assert isinstance(fut.exception(), KeyError)


def test_to_asyncio_cancel(reactor, aio_loop):
    fut = Future(reactor)
    afut = to_asyncio(fut, aio_loop)
    waiter = asyncio.run_coroutine_threadsafe(_wait(afut), aio_loop)
    fut.cancel()
    pump(reactor)
    with pytest.raises(concurrent.futures.CancelledError):
        waiter.result(10)

    async def cancelled():
        return afut.cancelled()
    assert on_loop(aio_loop, cancelled())


def test_to_asyncio_of_defer_to_cpu(reactor, aio_loop):
    afut = to_asyncio(reactor.defer_to_cpu(sum, [1, 2, 3]), aio_loop)
    waiter = asyncio.run_coroutine_threadsafe(_wait(afut), aio_loop)
    pump(reactor, 0.1)
    assert waiter.result(10) == 6


# ---- from_asyncio -----------------------------------------------------

def test_from_asyncio_result_on_the_reactor_thread(reactor, aio_loop):
    afut = on_loop(aio_loop, _new_future())
    fut = from_asyncio(afut, reactor)
    assert isinstance(fut, Future)
    seen = []
    fut.add_callback(lambda r: seen.append(threading.get_ident()) or r)
    aio_loop.call_soon_threadsafe(afut.set_result, "from asyncio")
    assert run_until(reactor, fut, timeout=10) == "from asyncio"
    assert seen == [threading.get_ident()]


def test_from_asyncio_failure(reactor, aio_loop):
    afut = on_loop(aio_loop, _new_future())
    fut = from_asyncio(afut, reactor)
    aio_loop.call_soon_threadsafe(afut.set_exception, OSError("aio"))
    with pytest.raises(OSError, match="aio"):
        run_until(reactor, fut, timeout=10)


def test_from_asyncio_cancel(reactor, aio_loop):
    afut = on_loop(aio_loop, _new_future())
    fut = from_asyncio(afut, reactor)
    aio_loop.call_soon_threadsafe(afut.cancel)
    with pytest.raises(CancelledError):
        run_until(reactor, fut, timeout=10)
    assert fut.cancelled() and fut.state == "cancelled"


def test_from_asyncio_of_an_already_done_future(reactor, aio_loop):
    afut = on_loop(aio_loop, _new_future())

    async def settle():
        afut.set_result("done before")
    on_loop(aio_loop, settle())
    # The asyncio loop is idle now: nothing else will wake it.
    fut = from_asyncio(afut, reactor)
    assert run_until(reactor, fut, timeout=5) == "done before"


def test_await_an_asyncio_future_in_a_twincore_coroutine(reactor, aio_loop):
    afut = on_loop(aio_loop, _new_future())

    async def main():
        return await afut
    aio_loop.call_soon_threadsafe(aio_loop.call_later, 0.02,
                                  afut.set_result, "awaited")
    assert run_until(reactor, main(), timeout=10) == "awaited"


def test_round_trip_through_asyncio(reactor, aio_loop):
    fut = Future(reactor)
    back = from_asyncio(to_asyncio(fut, aio_loop), reactor)
    reactor.call_later(0.01, fut.set_result, "round trip")
    assert run_until(reactor, back, timeout=10) == "round trip"


# ---- Twisted Deferreds ------------------------------------------------

def _import_twisted():
    """Debian's Twisted (and its zope.interface) is built for Debian's own
    Python, 3.11, where it must import; on another interpreter that reads
    Debian's packages (3.12, 3.13: scripts/dev.sh) it may not, and only then
    are the Twisted tests skipped, with the reason in the summary."""
    try:
        from twisted.internet import defer
        from twisted.python import failure
    except Exception as exc:
        if sys.version_info[:2] == (3, 11):
            raise
        return None, None, (
            f"Debian's Twisted does not import on Python "
            f"{sys.version_info.major}.{sys.version_info.minor}: {exc!r}")
    return defer, failure, None


defer, failure, _twisted_missing = _import_twisted()
needs_twisted = pytest.mark.skipif(_twisted_missing is not None,
                                   reason=_twisted_missing or "")


@needs_twisted
def test_to_deferred_result():
    fut = Future()
    d = to_deferred(fut)
    assert isinstance(d, defer.Deferred)
    got = []
    d.addCallback(got.append)
    assert got == []
    fut.set_result(5)
    assert got == [5]
    assert fut.result() == 5


@needs_twisted
def test_to_deferred_of_a_done_future():
    fut = Future()
    fut.set_result("ready")
    got = []
    to_deferred(fut).addCallback(got.append)
    assert got == ["ready"]


@needs_twisted
def test_to_deferred_failure():
    fut = Future()
    got = []
    to_deferred(fut).addErrback(got.append)
    try:
        raise KeyError("kd")
    except KeyError as exc:
        fut.set_exception(exc)
    assert len(got) == 1 and isinstance(got[0], failure.Failure)
    assert isinstance(got[0].value, KeyError)
    assert got[0].getTracebackObject() is not None
    fut.exception()


@needs_twisted
def test_to_deferred_cancel():
    """A cancelled Future fails the Deferred with Twisted's own
    CancelledError, so f.trap() catches it (issue 12.10)."""
    fut = Future()
    got = []
    to_deferred(fut).addErrback(
        lambda f: got.append(f.trap(defer.CancelledError)))
    fut.cancel()
    assert got == [defer.CancelledError]


@needs_twisted
def test_from_deferred_result(reactor):
    d = defer.Deferred()
    fut = from_deferred(d, reactor)
    assert isinstance(fut, Future) and not fut.done()
    d.callback(7)
    assert fut.result() == 7


@needs_twisted
def test_from_deferred_already_fired(reactor):
    fut = from_deferred(defer.succeed("fired"), reactor)
    assert fut.result() == "fired"


@needs_twisted
def test_from_deferred_failure(reactor):
    d = defer.Deferred()
    fut = from_deferred(d, reactor)
    d.errback(ValueError("twisted"))
    assert isinstance(fut.exception(), ValueError)
    # The Deferred's failure was consumed: Twisted logs nothing at GC.
    left = []
    d.addErrback(left.append)
    assert left == []


@needs_twisted
def test_from_deferred_after_the_future_was_cancelled(reactor):
    d = defer.Deferred()
    fut = from_deferred(d, reactor)
    fut.cancel()
    d.callback("too late")   # must not blow up inside the Deferred
    errors = []
    d.addErrback(errors.append)
    assert errors == []
    assert fut.cancelled()


@needs_twisted
def test_from_deferred_in_a_coroutine(reactor):
    d = defer.Deferred()

    async def main():
        return await from_deferred(d, reactor)
    reactor.call_later(0.01, d.callback, "deferred value")
    assert run_until(reactor, main()) == "deferred value"


@needs_twisted
def test_deferred_round_trip(reactor):
    fut = Future(reactor)
    back = from_deferred(to_deferred(fut), reactor)
    fut.set_result("both ways")
    assert back.result() == "both ways"


# ---- cancellation crosses both ways (issue 12.10) ----------------------

def _wait_until(reactor, predicate, timeout=10):
    async def poll():
        for _ in range(int(timeout / 0.005)):
            if predicate():
                return True
            await twincore.sleep(0.005, reactor=reactor)
        return predicate()
    return run_until(reactor, poll(), timeout=timeout + 5)


def test_to_asyncio_cancelled_on_the_asyncio_side(reactor, aio_loop):
    fut = Future(reactor)
    afut = to_asyncio(fut, aio_loop)
    aio_loop.call_soon_threadsafe(afut.cancel)
    assert _wait_until(reactor, fut.done)
    assert fut.cancelled()


def test_from_asyncio_cancelled_on_the_twincore_side(reactor, aio_loop):
    afut = on_loop(aio_loop, _new_future())
    fut = from_asyncio(afut, reactor)
    assert fut.cancel()
    assert fut.cancelled()

    async def state():
        return afut.cancelled()
    for _ in range(1000):
        if on_loop(aio_loop, state()):
            break
    assert on_loop(aio_loop, state())


def test_cancelling_a_task_awaiting_an_asyncio_future_cancels_it(
        reactor, aio_loop):
    afut = on_loop(aio_loop, _new_future())

    async def main():
        return await afut
    task = reactor.spawn(main())
    reactor.call_later(0.02, task.cancel)
    with pytest.raises(CancelledError):
        run_until(reactor, task, timeout=10)

    async def state():
        return afut.cancelled()
    for _ in range(1000):
        if on_loop(aio_loop, state()):
            break
    assert on_loop(aio_loop, state())


def test_from_asyncio_of_a_concurrent_future(reactor):
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        ok = from_asyncio(pool.submit(sum, [1, 2]), reactor)
        bad = from_asyncio(pool.submit(int, "x"), reactor)
        assert run_until(reactor, ok, timeout=10) == 3
        with pytest.raises(ValueError):
            run_until(reactor, bad, timeout=10)


def test_from_asyncio_of_a_concurrent_future_cancel_both_ways(reactor):
    cfut = concurrent.futures.Future()
    fut = from_asyncio(cfut, reactor)
    assert fut.cancel()
    assert cfut.cancelled() and fut.cancelled()

    cfut = concurrent.futures.Future()
    fut = from_asyncio(cfut, reactor)
    threading.Thread(target=cfut.cancel).start()
    assert _wait_until(reactor, fut.done)
    assert fut.cancelled()


@needs_twisted
def test_to_deferred_cancelled_on_the_twisted_side():
    fut = Future()
    d = to_deferred(fut)
    got = []
    d.addErrback(lambda f: got.append(f.trap(defer.CancelledError)))
    d.cancel()
    assert fut.cancelled()
    assert got == [defer.CancelledError]


@needs_twisted
def test_from_deferred_of_a_cancelled_deferred(reactor):
    d = defer.Deferred()
    fut = from_deferred(d, reactor)
    d.cancel()
    assert fut.cancelled() and fut.state == "cancelled"
    assert isinstance(fut.exception(), CancelledError)


@needs_twisted
def test_from_deferred_cancelled_on_the_twincore_side(reactor):
    cancelled = []
    d = defer.Deferred(cancelled.append)
    fut = from_deferred(d, reactor)
    assert fut.cancel()
    assert cancelled == [d] and fut.cancelled()
    errors = []
    d.addErrback(lambda f: errors.append(f.trap(defer.CancelledError)))
    assert errors == []   # the Future took the failure


# ---- awaiting a Deferred (issue 12.10) ---------------------------------

@needs_twisted
def test_await_a_pending_deferred(reactor):
    d = defer.Deferred()

    async def main():
        return await d
    reactor.call_later(0.01, d.callback, "deferred")
    assert run_until(reactor, main(), timeout=10) == "deferred"
    assert d.result == "deferred"   # the Deferred's chain keeps it


@needs_twisted
def test_await_a_deferred_that_fails(reactor):
    d = defer.Deferred()

    async def main():
        with pytest.raises(KeyError):
            await d
        return "caught"
    reactor.call_later(0.01, d.errback, KeyError("k"))
    assert run_until(reactor, main(), timeout=10) == "caught"


@needs_twisted
def test_await_a_deferred_that_is_cancelled(reactor):
    d = defer.Deferred()

    async def main():
        with pytest.raises(CancelledError):
            await d
        return "cancelled"
    reactor.call_later(0.01, d.cancel)
    assert run_until(reactor, main(), timeout=10) == "cancelled"


@needs_twisted
def test_cancelling_a_task_awaiting_a_deferred_cancels_it(reactor):
    cancelled = []
    d = defer.Deferred(cancelled.append)

    async def main():
        await d
    task = reactor.spawn(main())
    reactor.call_later(0.01, task.cancel)
    with pytest.raises(CancelledError):
        run_until(reactor, task, timeout=10)
    assert cancelled == [d] and task.cancelled()


@needs_twisted
def test_inline_callbacks_yielding_a_deferred(reactor):
    d = defer.Deferred()

    @twincore.inline_callbacks
    def gen():
        value = yield d
        return value * 2
    reactor.call_later(0.01, d.callback, 21)
    assert run_until(reactor, gen(_reactor=reactor), timeout=10) == 42
