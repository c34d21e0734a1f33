"""InterpreterPool: pure-Python work on every core in one process, each
worker thread running its own subinterpreter with its own GIL (CPython
3.12+). The queue, cancel, stats and completion route are the native
pool's (pymod/_twincore/interp.c); this file checks and pickles."""

import importlib
import marshal
import os
import pickle
import sys
import threading
import weakref

from . import _twincore
from ._lane import PoolLifecycle, closed_future, join_on_thread
from ._validate import _env_workers

HAVE_INTERPRETERS = sys.version_info >= (3, 12)
_NEEDS = ("InterpreterPool needs CPython 3.12 or later (a GIL per "
          "interpreter, PEP 684); this is "
          f"{sys.version_info.major}.{sys.version_info.minor}")

_RUNNER_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            "_interp_worker.py")
_runner_code = None


def _runner():
    # The runner compiled once per process; each worker reads it back from
    # these bytes (marshal of a code object: same interpreter, same format).
    global _runner_code
    if _runner_code is None:
        with open(_RUNNER_FILE, encoding="utf-8") as f:
            code = compile(f.read(), _RUNNER_FILE, "exec")
        _runner_code = marshal.dumps(code)
    return _runner_code


class _RemoteTraceback(Exception):
    """The traceback of the exception as it was raised in the worker's
    interpreter; the __cause__ of the exception a Future fails with."""

    def __init__(self, tb):
        self.tb = tb

    def __str__(self):
        return '\n"""\n' + self.tb + '"""'


def _rebuild(module, qualname, data, message, tb):
    # The same type where the main interpreter can import it (unpickled
    # whole where it pickles), else RuntimeError with its name.
    exc = None
    if data is not None:
        try:
            exc = pickle.loads(data)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        cls = None
        try:
            cls = importlib.import_module(module)
            for part in qualname.split("."):
                cls = getattr(cls, part)
        except Exception:
            cls = None
        try:
            if isinstance(cls, type) and issubclass(cls, BaseException):
                exc = cls(message)
        except Exception:
            exc = None
        if exc is None:
            exc = RuntimeError(f"{module}.{qualname}: {message}")
    if tb:
        exc.__cause__ = _RemoteTraceback(tb)
    return exc


def _locate(fn):
    if not callable(fn):
        raise TypeError("defer_to_interpreter(): 'fn' must be callable, "
                        f"got {type(fn).__name__}")
    module = getattr(fn, "__module__", None)
    qualname = getattr(fn, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or \
            "<" in qualname:
        raise TypeError(
            "defer_to_interpreter(): 'fn' must be importable by name "
            "(a module-level function or class, or a method reached "
            f"through one), got {fn!r}")
    main_path = None
    if module == "__main__":
        main_path = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_path is None:
            raise TypeError(
                "defer_to_interpreter(): 'fn' is defined in an interactive "
                "__main__, which a subinterpreter cannot import; put it in "
                "a module")
        main_path = os.path.abspath(main_path)
    return module, qualname, main_path


# Every InterpreterPool made, for the exit hook.
_open_pools = weakref.WeakSet()


if HAVE_INTERPRETERS:
    _Bases = (_twincore._InterpreterPool, PoolLifecycle)
else:
    _Bases = (PoolLifecycle,)


class InterpreterPool(*_Bases):
    """``InterpreterPool(workers=N)`` (0: one per CPU), CPython 3.12+: each
    worker thread runs its own subinterpreter, with its own GIL, created on
    its first task and reused, so pure-Python functions run on every core
    at once. ``defer(fn, *args, **kwargs)`` returns a Future settled on the
    reactor's thread. fn must be importable by name in a fresh interpreter
    (a module-level function, or one of the running script); arguments
    and the result travel by pickle. An exception arrives as the same type
    where this interpreter can import it, its traceback text as its
    ``__cause__``. A function that cannot be imported there, or a module
    that refuses subinterpreters (single-phase extensions), fails that call
    with ImportError naming the module; the worker goes on. Cancelling the
    Future (or its timeout) removes a queued task, and raises
    KeyboardInterrupt inside a running one. On 3.11 it raises
    RuntimeError."""

    def __new__(cls, workers=0):
        if not HAVE_INTERPRETERS:
            raise RuntimeError(_NEEDS)
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise TypeError("InterpreterPool(): 'workers' must be an int, "
                            f"got {type(workers).__name__}")
        self = super().__new__(cls, workers, _runner(), pickle.loads,
                               _rebuild)
        _open_pools.add(self)
        return self

    def __init__(self, workers=0):
        pass

    def defer(self, fn, /, *args, priority=_twincore.PRIORITY_NORMAL,
              timeout=None, reactor=None, **kwargs):
        """Run fn(*args, **kwargs) in a worker's interpreter; returns a
        Future settled on the reactor's thread. ``timeout`` (seconds)
        fails it with TimeoutError (and interrupts the call)."""
        from . import _current_reactor, _check_timeout, _apply_timeout
        r = reactor if reactor is not None else _current_reactor()
        _check_timeout(timeout, "defer_to_interpreter")
        module, qualname, main_path = _locate(fn)
        payload = pickle.dumps((sys.path, args, kwargs), protocol=5)
        fut = self._defer(r, module, qualname, main_path, payload, priority)
        if timeout is not None:
            _apply_timeout(r, fut, timeout, "defer_to_interpreter")
        return fut

    def close(self, cancel_queued=False):
        """Run (or cancel, and interrupt what runs) the queued tasks, then
        join the workers, each ending its interpreter. On the thread of a
        running reactor while tasks are left it raises RuntimeError instead
        of stalling the loop: use aclose() there."""
        from . import _running
        if self._busy() and getattr(_running, "reactor", None) is not None:
            raise RuntimeError(
                "close(): tasks of this InterpreterPool are left and "
                "joining the workers here would stall the running reactor; "
                "use 'await pool.aclose()'")
        self._begin_close(cancel_queued)
        self._join_workers()

    def aclose(self, cancel_queued=False, *, reactor=None):
        """Close without blocking the reactor: the workers are joined on a
        helper thread; returns a Future settled on the reactor (default:
        the one running on this thread; with none, it closes at once, as
        close() does) once they are."""
        from . import _running
        r = reactor
        if r is None:
            r = getattr(_running, "reactor", None)
        if r is None:
            # No reactor runs here to wait on: close at once, as close().
            self.close(cancel_queued)
            return closed_future()
        self._begin_close(cancel_queued)
        return join_on_thread(r, self._join_workers, "twincore-interp-close")


def _close_pools():
    # Before finalization: interrupt what runs, cancel what waits, and end
    # every worker's interpreter (CPython refuses to finalize with
    # subinterpreters left).
    for pool in list(_open_pools):
        pool._begin_close(True)
        pool._join_workers()


if HAVE_INTERPRETERS:
    import atexit
    atexit.register(_close_pools)


_default_pool = None
_default_lock = threading.Lock()


def _get_default_pool():
    global _default_pool
    with _default_lock:
        if _default_pool is None or _default_pool.closed:
            _default_pool = InterpreterPool(
                workers=_env_workers("TWINCORE_INTERP_WORKERS"))
        return _default_pool


def defer_to_interpreter(fn, /, *args, priority=_twincore.PRIORITY_NORMAL,
                         timeout=None, reactor=None, **kwargs):
    """``InterpreterPool.defer`` on the default pool (one worker per CPU,
    or TWINCORE_INTERP_WORKERS), made on first use. 3.12+."""
    if not HAVE_INTERPRETERS:
        raise RuntimeError(_NEEDS.replace("InterpreterPool",
                                          "defer_to_interpreter()"))
    return _get_default_pool().defer(fn, *args, priority=priority,
                                     timeout=timeout, reactor=reactor,
                                     **kwargs)
