"""CpuPool (native worker threads for Python callables), the default pool
made on first use, the exit hook of every pool, a task's
timeout, and the module-level defer_to_cpu() and get_include()."""

import atexit
import os
import threading
import weakref

from ._twincore import CpuPool as _CCpuPool, PRIORITY_NORMAL
from ._current import _current_reactor
from ._lane import PoolLifecycle, closed_future, join_on_thread
from ._validate import _check_timeout, _env_workers


class CpuPool(_CCpuPool, PoolLifecycle):
    """Native worker threads for CPU work: ``CpuPool(workers=N)`` (0: one
    per CPU). A worker takes the GIL only for the call itself, so callables
    that release it (hashlib, zlib, numpy) run on every core at once.
    A pool nobody closed is closed at interpreter exit, as
    ``close(cancel_queued=True)``; one nobody holds stays open until its
    queued and running tasks are delivered.

    ``close()`` joins the workers, so on a reactor's thread it would stall
    the loop: there it raises RuntimeError while tasks for that reactor
    still run. In a coroutine use ``await pool.aclose()`` or
    ``async with CpuPool() as pool:``. After ``fork()`` the child's pool
    starts new workers; tasks queued or running in the parent never run in
    the child."""

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        _open_pools.add(self)
        return self

    def defer(self, fn, /, *args, priority=PRIORITY_NORMAL, timeout=None,
              reactor=None, **kwargs):
        """Run fn(*args, **kwargs) on a worker; returns a Future settled on
        the reactor's thread with the result or the exception (traceback
        kept). ``timeout`` (seconds) fails it with TimeoutError."""
        r = reactor if reactor is not None else _current_reactor()
        # Before submitting: a bad timeout must not leave the task running.
        _check_timeout(timeout, "defer_to_cpu")
        fut = self._defer(r, fn, args, kwargs or None, priority)
        if timeout is not None:
            _apply_timeout(r, fut, timeout, "defer_to_cpu")
        return fut

    def aclose(self, cancel_queued=False, *, reactor=None):
        """Close without blocking the reactor: new tasks are refused at
        once (``closed`` is True), queued ones run (or, with cancel_queued,
        complete as cancelled), and the workers are joined on a helper
        thread. Returns a Future, settled on the reactor's thread once
        they are; ``await pool.aclose()`` in a coroutine. reactor: the one
        to settle it on (default: the reactor running on this thread that
        tasks of this pool still run for; with none, nothing here waits for
        the pool and it closes at once, as close() does)."""
        r = reactor
        if r is None:
            r = self._reactor_here(cancel_queued)
        if r is None:
            self.close(cancel_queued)
            return closed_future()
        self._begin_close(cancel_queued)
        return join_on_thread(r, self._join_workers, "twincore-pool-close")


def _apply_timeout(r, fut, timeout, what):
    """Fail fut with TimeoutError after timeout seconds (checked already by
    _check_timeout(), before the task was submitted)."""
    def expire():
        if not fut.done():
            task = fut._task
            if task is not None:
                task.cancel()   # still queued: it never runs
            hook, fut._cancel_hook = fut._cancel_hook, None
            if hook is not None:
                hook()
            if not fut.done():
                fut.set_exception(TimeoutError(
                    f"{what}() timed out after {timeout} s"))
    handle = r.call_later(timeout, expire)
    fut.add_done_callback(lambda _: handle.cancel())


_default_pool = None
# Made on first use, maybe by a thread other than the reactor's.
_default_pool_lock = threading.RLock()
# Every CpuPool made, the default one too, for the exit hook.
_open_pools = weakref.WeakSet()


def _get_default_pool():
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None or _default_pool.closed:
            _default_pool = CpuPool(
                workers=_env_workers("TWINCORE_CPU_WORKERS"))
        return _default_pool


@atexit.register
def _close_pools():
    # Join the workers while the interpreter is whole: a worker taking the
    # GIL during finalization would hang (or be ended by pthread_exit).
    # Tasks running now finish; queued ones are cancelled. No loop runs any
    # more, so close() need not refuse to block one.
    for pool in list(_open_pools):
        pool._begin_close(True)
        pool._join_workers()


def get_include():
    """The directory of twincore_capi.h, for C extensions that hand native
    work to twincore's CPU pool (see that header)."""
    return os.path.dirname(os.path.abspath(__file__))


def defer_to_cpu(fn, /, *args, priority=PRIORITY_NORMAL, timeout=None,
                 **kwargs):
    """Run fn(*args, **kwargs) on the CPU pool of the running reactor (of
    the default one outside a running reactor); returns a Future delivered
    on the reactor thread. Arguments are passed explicitly (nothing is
    shared implicitly). A failure nobody observes is logged."""
    return _current_reactor().defer_to_cpu(fn, *args, priority=priority,
                                           timeout=timeout, **kwargs)
