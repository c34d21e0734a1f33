"""Coroutines on a reactor: the task that drives one (_Task),
inline_callbacks, and the module-level spawn, sleep, gather and run."""

import inspect
import logging
import sys
import weakref

from . import _twincore
from ._future import Future, CancelledError
from ._interop import from_asyncio
from ._current import (_running, _current_reactor, _get_default_reactor,
                       _take_over)


# Every task not yet collected, for run()'s clean-up (as asyncio's).
_live_tasks = weakref.WeakSet()
_log = logging.getLogger("twincore")


def _tasks_on(r):
    return [t for t in list(_live_tasks) if t._reactor is r and not t.done()]


def _deferred_module():
    """twisted.internet.defer if something imported it, else None."""
    return sys.modules.get("twisted.internet.defer")


class _Task(Future):
    """Drives a coroutine: each awaited Future resumes it on a later
    reactor iteration (never recursively)."""

    __slots__ = ("_coro", "_waiting", "_must_cancel", "_step")

    def __init__(self, reactor, coro):
        super().__init__(reactor)
        self._coro = coro
        self._waiting = None
        self._must_cancel = False
        # _step(value, exc): one step, in C (taskstep.c); it waits on a
        # twincore Future itself and leaves other awaitables to _wait_for.
        self._step = _twincore._TaskStep(self, coro, _running)
        reactor.call_soon(self._step, None, None)
        _live_tasks.add(self)

    def cancel(self, msg=None):
        if self.done():
            return False
        waiting = self._waiting
        if isinstance(waiting, Future):
            if waiting.cancel(msg):
                return True
        elif waiting is not None and not waiting.called:
            waiting.cancel()   # a Deferred: it fails with Twisted's
            return True        # CancelledError, thrown in as ours
        # Not waiting, or what it awaited is done and its resume queued.
        self._must_cancel = True
        return True

    def _abandon(self):
        """run() gives up on this task: settle it cancelled and close its
        coroutine (a finally block that awaits cannot run any more)."""
        waiting, self._waiting = self._waiting, None
        self._must_cancel = False
        try:
            if isinstance(waiting, Future):
                waiting.cancel()   # a sleep's timer, a connect
            if not self.done():
                Future.cancel(self)
            self._coro.close()
        except Exception:
            _log.warning("twincore.run(): %r could not finish its clean-up",
                         self._coro, exc_info=True)

    def _wait_for(self, yielded):
        r = self._reactor
        if isinstance(yielded, Future):
            owner = yielded._reactor
            if owner is not None and owner is not r:
                # Its callbacks would run on the other reactor's thread:
                # refuse at once, as asyncio does.
                r.call_soon(self._step, None, RuntimeError(
                    f"a task of {r!r} awaited {yielded!r}, a Future attached "
                    "to a different reactor; settle a Future of this "
                    "reactor from there with call_from_thread()"))
                return
            self._waiting = yielded

            def resume(result):
                r.call_soon(self._step, result, None)
                return result

            def resume_failure(exc):
                r.call_soon(self._step, None, exc)
                raise exc
            yielded.add_callbacks(resume, resume_failure)
            # The coroutine sees the failure: it is handled there.
            yielded._handled = True
            return
        if hasattr(yielded, "add_done_callback") and \
                hasattr(yielded, "get_loop"):   # an asyncio future
            self._wait_for(from_asyncio(yielded, r))
            return
        defer = _deferred_module()
        if defer is not None and isinstance(yielded, defer.Deferred):
            self._wait_deferred(yielded, defer)
            return
        r.call_soon(self._step, None, TypeError(
            f"a twincore coroutine awaited {yielded!r}; await twincore "
            "Futures, asyncio futures or Twisted Deferreds"))

    def _wait_deferred(self, d, defer):
        """`await d` delegates to the Deferred itself, which gives the
        coroutine its result when sent anything; `yield d` (inline
        callbacks) takes the value sent. Both get the result; a failure
        is thrown in, Twisted's CancelledError as twincore's."""
        r = self._reactor
        self._waiting = d

        def fired(result):
            if not isinstance(result, defer.Failure):
                r.call_soon(self._step, result, None)
                return result
            exc = result.value
            if isinstance(exc, defer.CancelledError):
                cancelled = CancelledError()
                cancelled.__cause__ = exc
                exc = cancelled
            r.call_soon(self._step, None, exc)
            return None   # the coroutine has taken the failure
        d.addBoth(fired)


def inline_callbacks(fn):
    """Decorator for generator functions, in the manner of Twisted's
    inlineCallbacks: ``result = yield future`` suspends until the future is
    done. Calling the function returns a Future of its return value."""
    if not inspect.isgeneratorfunction(fn):
        raise TypeError("inline_callbacks(): expected a generator function")

    def wrapper(*args, **kwargs):
        r = kwargs.pop("_reactor", None) or _current_reactor()
        return _Task(r, fn(*args, **kwargs))
    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


def spawn(coro):
    """reactor.spawn(coro) on the running reactor (outside one, on the
    default reactor)."""
    return _current_reactor().spawn(coro)


async def sleep(seconds, result=None, *, reactor=None):
    """Suspend a coroutine for seconds (float('inf'): until cancelled);
    returns result. The reactor is the running one unless given."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"sleep(): 'seconds' must be a number, got "
                        f"{type(seconds).__name__}")
    if not seconds >= 0:   # also NaN
        raise ValueError(f"sleep(): 'seconds' must be >= 0, got {seconds!r}")
    r = reactor if reactor is not None else _current_reactor()
    fut = Future(r)
    handle = r.call_later(seconds, _set_if_pending, fut, result)
    fut._cancel_hook = handle.cancel
    return await fut


def _set_if_pending(fut, value):
    if not fut.done():
        fut.set_result(value)


def _ensure_future(aw, r):
    if isinstance(aw, Future):
        return aw
    if inspect.iscoroutine(aw) or inspect.isgenerator(aw):
        return r.spawn(aw)
    if hasattr(aw, "__await__"):
        async def wrap():
            return await aw
        return r.spawn(wrap())
    raise TypeError(f"expected an awaitable, got {type(aw).__name__}")


def gather(*aws, return_exceptions=False, reactor=None):
    """A Future of the list of results of aws, in order. The first failure
    fails it (cancelling the rest), unless return_exceptions."""
    r = reactor if reactor is not None else _current_reactor()
    futs = [_ensure_future(a, r) for a in aws]
    out = Future(r)
    results = [None] * len(futs)
    left = [len(futs)]
    cancelling = []
    if not futs:
        out.set_result([])
        return out

    def one_done(i, f):
        if out.done():
            return
        if cancelling:   # out.cancel() is cancelling the children
            out.cancel()
            return
        exc = f.exception()
        if exc is not None and not return_exceptions:
            out.set_exception(exc)
            for other in futs:
                other.cancel()
            return
        results[i] = exc if exc is not None else f.result()
        left[0] -= 1
        if left[0] == 0:
            out.set_result(results)

    for i, f in enumerate(futs):
        f.add_done_callback(lambda f, i=i: one_done(i, f))

    def cancel_children():
        cancelling.append(True)
        for f in futs:
            f.cancel()
    out._cancel_hook = cancel_children
    return out


def run(main, *, reactor=None):
    """Start the reactor (the default one unless given), run the coroutine
    main to completion, stop the reactor and return main's result (or
    raise its exception), as asyncio.run() and Twisted's task.react() do.

    When run() ends, for whatever reason, no task of the reactor is left
    running: on Ctrl-C (KeyboardInterrupt), SystemExit or a callback that
    raised one, and when something stopped the reactor early (RuntimeError),
    main is cancelled; then every task still pending on the reactor is
    cancelled too, and the reactor runs until they have finished, so their
    finally blocks run (and may await) on the live reactor. Another
    interruption meanwhile gives up: the tasks left are marked cancelled
    and their coroutines closed. Then the exception is raised. Timers,
    listeners and transports stay as they are, to be used by the next
    run(). RuntimeError when a reactor already runs on this thread."""
    r = reactor if reactor is not None else _get_default_reactor()
    if getattr(_running, "reactor", None) is not None or r.running:
        if inspect.iscoroutine(main):
            main.close()   # never started: no "never awaited" warning
        if r.running and r is not getattr(_running, "reactor", None):
            raise RuntimeError("run(): the reactor runs on another thread; "
                               "use call_from_thread()")
        raise RuntimeError("run() cannot be called while a reactor runs on "
                           "this thread; await the coroutine instead")
    if isinstance(main, Future):
        fut = main
    elif inspect.iscoroutine(main) or inspect.isgenerator(main):
        _take_over(r)
        fut = r.spawn(main)
    else:
        raise TypeError(f"run(): expected a coroutine, got "
                        f"{type(main).__name__}")
    try:
        finished = _run_until_done(r, fut)
    except BaseException:
        _shut_down(r, fut)
        raise
    _shut_down(r, fut)
    if not finished:
        raise RuntimeError("run(): the reactor stopped before main finished")
    return fut.result()


def _run_until_done(r, fut):
    """Run r until fut is done; False when something stopped r first."""
    if fut.done():
        return True

    def stop(_):
        if r.running:
            r.stop()
    fut.add_done_callback(stop)
    r.run()
    return fut.done()


def _shut_down(r, main):
    """asyncio.run()'s clean-up: cancel main and every task pending on r
    and run r until they are done; what is left then is abandoned."""
    try:
        tasks = _tasks_on(r)
        if not main.done() and main not in tasks:
            tasks.append(main)
        if tasks:
            for t in tasks:
                t.cancel()
            _run_until_done(r, gather(*tasks, return_exceptions=True,
                                      reactor=r))
            for t in tasks:
                # gather() saw these failures: nobody else will.
                if t is not main and t.done() and not t.cancelled() and \
                        t.exception() is not None:
                    exc = t.exception()
                    _log.error("twincore.run(): %r failed while being "
                               "cancelled", t, exc_info=(type(exc), exc,
                                                         exc.__traceback__))
    finally:
        for t in _tasks_on(r):
            t._abandon()
        if not main.done():
            main.cancel()   # a Future, not a task, that nobody settled
