"""Conversions between twincore Futures and asyncio futures or Twisted
Deferreds, for code that mixes them. Each is usable only where that library
is importable."""

from ._future import Future, CancelledError

__all__ = ["to_asyncio", "from_asyncio", "to_deferred", "from_deferred"]


def to_asyncio(future, loop):
    """An asyncio Future on loop that follows a twincore Future. The
    twincore side calls back on the reactor thread, so the result crosses
    with loop.call_soon_threadsafe."""
    afut = loop.create_future()

    def copy(result):
        if not afut.done():
            loop.call_soon_threadsafe(_set_if_pending, afut, result, False)
        return result

    def copy_failure(exc):
        loop.call_soon_threadsafe(_set_if_pending, afut, exc, True)
        raise exc
    copy_failure._tc_observer = True
    future.add_callbacks(copy, copy_failure)
    return afut


def _set_if_pending(afut, value, failed):
    if afut.done():
        return
    if failed:
        if isinstance(value, CancelledError):
            afut.cancel()
        else:
            afut.set_exception(value)
    else:
        afut.set_result(value)


def from_asyncio(afut, reactor):
    """A twincore Future following an asyncio future (which may live on
    another thread's loop)."""
    fut = Future(reactor)

    def done(a):
        if a.cancelled():
            reactor.call_from_thread(_settle, fut, CancelledError(), True)
        elif a.exception() is not None:
            reactor.call_from_thread(_settle, fut, a.exception(), True)
        else:
            reactor.call_from_thread(_settle, fut, a.result(), False)
    if afut.done():
        done(afut)   # settled for good: reading it is safe from any thread
    else:
        # asyncio futures are not thread-safe: attach the callback on the
        # future's own loop, which wakes up for it (a plain
        # add_done_callback from here could be lost or never run).
        afut.get_loop().call_soon_threadsafe(afut.add_done_callback, done)
    return fut


def _settle(fut, value, failed):
    if fut.done():
        return
    if failed:
        fut.set_exception(value)
    else:
        fut.set_result(value)


def to_deferred(future):
    """A Twisted Deferred following a twincore Future (same thread)."""
    from twisted.internet.defer import Deferred
    from twisted.python.failure import Failure
    d = Deferred()

    def ok(result):
        d.callback(result)
        return result

    def bad(exc):
        d.errback(Failure(exc, type(exc), exc.__traceback__))
        raise exc
    future.add_callbacks(ok, bad)
    return d


def from_deferred(d, reactor=None):
    """A twincore Future following a Twisted Deferred (same thread)."""
    fut = Future(reactor)

    def ok(result):
        if not fut.done():   # it may have been cancelled meanwhile
            fut.set_result(result)

    def bad(failure):
        if not fut.done():
            fut.set_exception(failure.value)
    d.addCallbacks(ok, bad)
    return fut
