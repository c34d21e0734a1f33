"""Timeouts: wait_for(aw, timeout), ``async with timeout(s)``, and
Future.with_timeout(s) (Twisted's Deferred.addTimeout).

Each arms one reactor timer and cancels it when the work ends first; on
expiry it cancels the work, and the CancelledError that this cancel
causes becomes the builtin TimeoutError (asyncio's since 3.11). A cancel
from elsewhere stays a CancelledError.
"""

import inspect

from ._future import CancelledError
from ._current import _current_reactor, _current_task
from ._task import _ensure_future

__all__ = ["wait_for", "timeout", "Timeout"]


def _check_delay(delay, what):
    if delay is None:
        return
    if isinstance(delay, bool) or not isinstance(delay, (int, float)):
        raise TypeError(f"{what}(): 'timeout' must be a number or None, got "
                        f"{type(delay).__name__}")
    if delay != delay:
        raise ValueError(f"{what}(): 'timeout' must not be NaN")


async def wait_for(aw, timeout, *, reactor=None):
    """Await aw (a Future, coroutine or other awaitable) for at most timeout
    seconds (None: no limit). On expiry aw is cancelled and TimeoutError
    raised; cancelling the caller cancels aw too, as asyncio.wait_for."""
    try:
        _check_delay(timeout, "wait_for")
    except (TypeError, ValueError):
        if inspect.iscoroutine(aw):
            aw.close()   # never started: no "never awaited" warning
        raise
    r = reactor if reactor is not None else _current_reactor()
    fut = _ensure_future(aw, r)
    if timeout is None:
        return await fut
    expired = []

    def expire():
        if not fut.done():
            expired.append(True)
            fut.cancel()
    handle = r.call_later(max(timeout, 0), expire)
    try:
        return await fut
    except CancelledError as exc:
        if expired:
            raise TimeoutError(
                f"wait_for() timed out after {timeout} s") from exc
        raise
    finally:
        handle.cancel()


class Timeout:
    """``async with twincore.timeout(s):`` cancels the task running the
    block when s seconds pass (None: never) and raises TimeoutError out of
    the block; ``reschedule(s)`` moves the deadline, ``expired()`` tells
    whether it fired."""

    def __init__(self, delay):
        _check_delay(delay, "timeout")
        self._delay = delay
        self._task = None
        self._handle = None
        self._expired = False

    async def __aenter__(self):
        task = _current_task()
        if task is None:
            raise RuntimeError("timeout(): use it in a twincore coroutine")
        if self._task is not None:
            raise RuntimeError("timeout(): already entered")
        self._task = task
        self.reschedule(self._delay)
        return self

    def reschedule(self, delay):
        """A new deadline, delay seconds from now (None: none)."""
        _check_delay(delay, "reschedule")
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._delay = delay
        if delay is not None and self._task is not None and \
                not self._expired:
            self._handle = self._task._reactor.call_later(max(delay, 0),
                                                          self._expire)

    def expired(self):
        return self._expired

    def _expire(self):
        self._handle = None
        if not self._task.done():
            self._expired = True
            self._task.cancel()

    async def __aexit__(self, exc_type, exc, tb):
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired and exc_type is not None and \
                issubclass(exc_type, CancelledError):
            raise TimeoutError(
                f"timeout() expired after {self._delay} s") from exc
        return False


def timeout(delay):
    """``async with twincore.timeout(delay): ...`` (see Timeout)."""
    return Timeout(delay)


def future_with_timeout(fut, delay):
    """Future.with_timeout: cancel fut after delay seconds unless it is
    done; its chain then fails with TimeoutError instead of
    CancelledError. Returns fut."""
    if isinstance(delay, bool) or not isinstance(delay, (int, float)) or \
            not delay >= 0:
        raise ValueError("with_timeout(): 'timeout' must be a number >= 0, "
                         f"got {delay!r}")
    r = fut._reactor
    if r is None:
        r = _current_reactor()
    if fut.done():
        return fut
    expired = []

    def expire():
        if not fut.done():
            expired.append(True)
            fut.cancel()
    handle = r.call_later(delay, expire)

    def passed(value):
        handle.cancel()
        return value

    def failed(exc):
        handle.cancel()
        if expired and isinstance(exc, CancelledError):
            raise TimeoutError(
                f"with_timeout(): timed out after {delay} s") from exc
        raise exc
    fut.add_callbacks(passed, failed)
    return fut
