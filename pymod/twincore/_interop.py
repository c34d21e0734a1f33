"""Conversions between twincore Futures and asyncio futures (or
concurrent.futures ones) and Twisted Deferreds, for code that mixes them.
Each is usable only where that library is importable.

Results, failures and cancellation cross both ways: cancelling either side
cancels the other, and each side ends cancelled in its own terms
(``cancelled()`` true, asyncio's CancelledError on the twincore and asyncio
sides, ``twisted.internet.defer.CancelledError`` on a Deferred)."""

import concurrent.futures

from ._future import Future, CancelledError

__all__ = ["to_asyncio", "from_asyncio", "to_deferred", "from_deferred"]


def to_asyncio(future, loop):
    """An asyncio Future on loop that follows a twincore Future (call it on
    the reactor's thread). The twincore side calls back on the reactor
    thread, so the outcome crosses with loop.call_soon_threadsafe;
    cancelling the asyncio future cancels the twincore one, on its reactor
    thread."""
    afut = loop.create_future()
    r = future._reactor

    def cancelled_there(a):   # on the asyncio loop's thread
        if not a.cancelled():
            return
        if r is None:   # a Future of no reactor is not bound to a thread
            _cancel_if_pending(future)
            return
        try:
            r.call_from_thread(_cancel_if_pending, future)
        except RuntimeError:
            pass   # the reactor is closed: the Future stays as it is
    # First, while no other thread knows afut (asyncio's futures are not
    # thread-safe).
    afut.add_done_callback(cancelled_there)

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


def _cancel_if_pending(fut):
    if not fut.done():
        fut.cancel()


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


def from_asyncio(afut, reactor=None):
    """A twincore Future of reactor (default: the running one, else the
    default one) following an asyncio future, which may live on another
    thread's loop, or a concurrent.futures.Future. Cancelling the twincore
    Future cancels the other (a concurrent future that already runs cannot
    be; the twincore one is cancelled all the same)."""
    if reactor is None:
        from ._current import _current_reactor
        reactor = _current_reactor()
    fut = Future(reactor)

    def done(a):   # on the thread that settled a
        if a.cancelled():
            how, value = "cancel", None
        elif a.exception() is not None:
            how, value = "fail", a.exception()
        else:
            how, value = "ok", a.result()
        try:
            reactor.call_from_thread(_settle, fut, value, how)
        except RuntimeError:
            pass   # the reactor is closed: the Future stays pending

    if isinstance(afut, concurrent.futures.Future):
        # Thread-safe: calls back at once if done, else on the thread that
        # settles it.
        fut._cancel_hook = afut.cancel
        afut.add_done_callback(done)
        return fut
    loop = afut.get_loop()

    def cancel_there():
        try:
            loop.call_soon_threadsafe(afut.cancel)
        except RuntimeError:
            pass   # the loop is closed
    fut._cancel_hook = cancel_there
    if afut.done():
        done(afut)   # settled for good: reading it is safe from any thread
    else:
        # asyncio futures are not thread-safe: attach the callback on the
        # future's own loop, which wakes up for it (a plain
        # add_done_callback from here could be lost or never run).
        loop.call_soon_threadsafe(afut.add_done_callback, done)
    return fut


def _settle(fut, value, how):
    if fut.done():
        return
    if how == "cancel":
        fut._cancel_hook = None   # the other side is cancelled already
        fut.cancel()
    elif how == "fail":
        fut.set_exception(value)
    else:
        fut.set_result(value)


def to_deferred(future):
    """A Twisted Deferred following a twincore Future (same thread).
    Cancelling the Deferred cancels the Future; a cancelled Future fails
    the Deferred with twisted's own CancelledError."""
    from twisted.internet import defer
    from twisted.python.failure import Failure
    d = defer.Deferred(lambda _: future.cancel())

    def ok(result):
        if not d.called:
            d.callback(result)
        return result

    def bad(exc):
        if not d.called:
            if isinstance(exc, CancelledError):
                err = defer.CancelledError(*exc.args)
                err.__cause__ = exc
                d.errback(Failure(err))
            else:
                d.errback(Failure(exc, type(exc), exc.__traceback__))
        raise exc
    future.add_callbacks(ok, bad)
    return d


def from_deferred(d, reactor=None):
    """A twincore Future following a Twisted Deferred (same thread); it
    takes the Deferred's result or failure. Cancelling the Future cancels
    the Deferred; a Deferred that fails with twisted's CancelledError
    leaves the Future cancelled."""
    from twisted.internet import defer
    fut = Future(reactor)

    def ok(result):
        if not fut.done():   # it may have been cancelled meanwhile
            fut.set_result(result)

    def bad(failure):
        if fut.done():
            return
        if failure.check(defer.CancelledError):
            fut._cancel_hook = None
            fut.cancel()
        else:
            fut.set_exception(failure.value)
    fut._cancel_hook = d.cancel
    d.addCallbacks(ok, bad)
    return fut
