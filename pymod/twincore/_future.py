"""twincore.Future: a Deferred-style result that is also awaitable.

Callbacks run on the reactor thread, in the order added. Each callback gets
the current result of the chain and its return value becomes the next
result; an exception raised, or a failure passed on, goes to the next
errback. A callback that returns a Future pauses the chain until that
Future completes. A failure that nobody handled is logged (through
``logging``) when the Future is garbage collected: fire-and-forget work never
fails silently.
"""

import logging
import sys

__all__ = ["Future", "CancelledError", "InvalidStateError", "TimeoutError",
           "PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED"]

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

_log = logging.getLogger("twincore")

try:  # Share asyncio's classes so `except asyncio.CancelledError` works too.
    from asyncio import CancelledError, InvalidStateError
except ImportError:  # pragma: no cover
    class CancelledError(BaseException):
        pass

    class InvalidStateError(Exception):
        pass

TimeoutError = TimeoutError  # the builtin, as asyncio's since 3.11


def _passthrough(result):
    return result


class Future:
    """A result that arrives later, on the reactor thread.

    ``state`` is one of "pending", "running", "done", "failed",
    "cancelled" at any moment; callbacks fire when it completes, so nobody
    has to poll.
    """

    __slots__ = ("_reactor", "_state", "_result", "_failed", "_callbacks",
                 "_running", "_paused", "_handled", "_cancel_hook", "_task",
                 "__weakref__")

    def __init__(self, reactor=None):
        self._reactor = reactor
        self._state = PENDING
        self._result = None
        self._failed = False
        self._callbacks = []
        self._running = False      # inside _run_callbacks
        self._paused = 0           # waiting on a Future a callback returned
        self._handled = False      # a failure was seen by an errback/await
        self._cancel_hook = None   # called by cancel() while pending
        self._task = None          # a CpuTask, for running()

    # -- state ---------------------------------------------------------------

    @property
    def state(self):
        if self._state == PENDING and self.running():
            return RUNNING
        return self._state

    def done(self):
        """True once it has a result, a failure, or was cancelled."""
        return self._state != PENDING

    def running(self):
        if self._state != PENDING:
            return False
        task = self._task
        return bool(task is not None and task.started())

    def cancelled(self):
        return self._state == CANCELLED

    def result(self):
        """The current result of the chain; raises its failure, or
        InvalidStateError while pending."""
        if self._state == PENDING or self._paused:
            raise InvalidStateError("result(): the Future is not done")
        if self._failed:
            self._handled = True
            raise self._result
        return self._result

    def exception(self):
        """The failure (an exception) or None; InvalidStateError while
        pending."""
        if self._state == PENDING or self._paused:
            raise InvalidStateError("exception(): the Future is not done")
        if self._failed:
            self._handled = True
            return self._result
        return None

    # -- settling ------------------------------------------------------------

    def set_result(self, value):
        """Complete with value; InvalidStateError if already done."""
        if self._state != PENDING:
            raise InvalidStateError(
                f"set_result(): the Future is already {self._state}")
        self._settle(value, False, DONE)

    def set_exception(self, exc):
        """Fail with exc (an exception instance or class)."""
        if isinstance(exc, type):
            exc = exc()
        if not isinstance(exc, BaseException):
            raise TypeError(
                "set_exception(): 'exc' must be an exception, got "
                f"{type(exc).__name__}")
        if self._state != PENDING:
            raise InvalidStateError(
                f"set_exception(): the Future is already {self._state}")
        self._settle(exc, True, FAILED)

    def cancel(self, msg=None):
        """Cancel a pending Future: errbacks get CancelledError. Returns
        True if it was cancelled."""
        if self._state != PENDING:
            return False
        hook, self._cancel_hook = self._cancel_hook, None
        if hook is not None:
            try:
                hook()
            except Exception:
                _log.exception("twincore: exception in a cancel hook")
        if self._state != PENDING:  # the hook settled it
            return self._state == CANCELLED
        self._settle(CancelledError(msg) if msg else CancelledError(),
                     True, CANCELLED)
        self._handled = True   # cancelling is observing
        return True

    def _settle(self, value, failed, state):
        self._state = state
        self._result = value
        self._failed = failed
        self._cancel_hook = None
        self._task = None
        self._run_callbacks()

    # -- callbacks -----------------------------------------------------------

    def add_callbacks(self, callback, errback=None, callback_args=(),
                      callback_kwargs=None, errback_args=(),
                      errback_kwargs=None):
        """Add a callback/errback pair; the one matching the chain's state
        runs. Returns self, for chaining."""
        if not callable(callback):
            raise TypeError("add_callbacks(): 'callback' must be callable")
        if errback is not None and not callable(errback):
            raise TypeError("add_callbacks(): 'errback' must be callable")
        self._callbacks.append(
            ((callback, callback_args, callback_kwargs or {}),
             (errback or _reraise, errback_args, errback_kwargs or {})))
        if self._state != PENDING:
            self._run_callbacks()
        return self

    def add_callback(self, fn, *args, **kwargs):
        """fn(result, *args, **kwargs) on success; its return value is the
        new result."""
        if not callable(fn):
            raise TypeError("add_callback(): 'fn' must be callable")
        return self.add_callbacks(fn, None, args, kwargs)

    def add_errback(self, fn, *args, **kwargs):
        """fn(exception, *args, **kwargs) on failure; returning a value
        recovers, raising passes a failure on."""
        if not callable(fn):
            raise TypeError("add_errback(): 'fn' must be callable")
        return self.add_callbacks(_passthrough, fn, (), None, args, kwargs)

    def add_both(self, fn, *args, **kwargs):
        """fn(result_or_exception, ...) either way."""
        if not callable(fn):
            raise TypeError("add_both(): 'fn' must be callable")
        return self.add_callbacks(fn, fn, args, kwargs, args, kwargs)

    def add_done_callback(self, fn):
        """asyncio style: fn(self) once done; does not change the chain."""
        if not callable(fn):
            raise TypeError("add_done_callback(): 'fn' must be callable")

        def observe(result):
            fn(self)
            return result
        return self.add_callbacks(observe, _observe_failure(fn, self))

    def _run_callbacks(self):
        if self._running or self._paused:
            return
        self._running = True
        try:
            while self._callbacks and not self._paused:
                pair = self._callbacks.pop(0)
                fn, args, kwargs = pair[1] if self._failed else pair[0]
                if self._failed and fn is not _reraise and \
                        not getattr(fn, "_tc_observer", False):
                    self._handled = True
                try:
                    res = fn(self._result, *args, **kwargs)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as exc:
                    if exc is not self._result:
                        self._handled = False
                    self._result, self._failed = exc, True
                    if self._state == DONE:
                        self._state = FAILED
                    continue
                if isinstance(res, Future):
                    if res is self:
                        raise InvalidStateError(
                            "a callback returned its own Future")
                    self._paused += 1
                    res.add_callbacks(self._resume, self._resume_failure)
                    return
                self._result, self._failed = res, False
                if self._state == FAILED:
                    self._state = DONE
        finally:
            self._running = False

    def _resume(self, result):
        self._paused -= 1
        self._result, self._failed = result, False
        self._state = DONE if self._state != CANCELLED else CANCELLED
        self._run_callbacks()
        return None

    def _resume_failure(self, exc):
        self._paused -= 1
        self._result, self._failed = exc, True
        self._handled = False
        if self._state == DONE:
            self._state = FAILED
        self._run_callbacks()
        return None   # the inner Future's failure is now ours

    # -- await ---------------------------------------------------------------

    def __await__(self):
        if self._state == PENDING or self._paused:
            yield self
        return self.result()

    __iter__ = __await__   # `yield from` in generator-based code

    def __del__(self):
        if self._failed and not self._handled and \
                not isinstance(self._result, CancelledError):
            exc = self._result
            try:
                _log.error("twincore: unhandled failure in %r", self,
                           exc_info=(type(exc), exc, exc.__traceback__))
            except Exception:  # interpreter shutdown
                pass

    def __repr__(self):
        state = self.state
        if self._state == DONE:
            return f"<twincore.Future done result={self._result!r:.60}>"
        if self._failed:
            return f"<twincore.Future {state} {self._result!r:.60}>"
        return f"<twincore.Future {state}>"


def _reraise(exc):
    raise exc


def _observe_failure(fn, fut):
    def observe(exc):
        fn(fut)
        raise exc
    observe._tc_observer = True   # watching is not handling
    return observe


if sys.version_info < (3, 11):  # pragma: no cover
    raise ImportError("twincore needs Python 3.11")
