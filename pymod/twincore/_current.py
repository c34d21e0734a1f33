"""Which reactor and task are current on this thread, and the default
reactor: made on first use (``twincore.reactor``, reactor=None outside a
running reactor), so that importing twincore costs no descriptor and no
thread, and owned by the thread that runs it."""

import threading


# The default reactor, made on first use (through the package's
# __getattr__): importing twincore costs no descriptor and no thread.
_default_reactor = None
_default_lock = threading.Lock()
# .reactor: the reactor whose run() runs on this thread.
_running = threading.local()


def _get_default_reactor():
    global _default_reactor
    with _default_lock:
        if _default_reactor is None:
            from ._reactor import Reactor   # imports this module
            _default_reactor = Reactor()
        return _default_reactor


def _take_over(r):
    """The default reactor belongs to the thread that runs it: an idle one
    made (first used) on another thread moves to this one."""
    if r is _default_reactor and not r.running:
        r._adopt()


def get_running_reactor():
    """The reactor whose run() is running on this thread, as asyncio's
    get_running_loop(); RuntimeError outside one (in a reactor callback or
    a coroutine it is always there)."""
    r = getattr(_running, "reactor", None)
    if r is None:
        raise RuntimeError("no running reactor on this thread")
    return r


def _current_task():
    """The task whose coroutine runs now on this thread, or None."""
    return getattr(_running, "task", None)


def _current_reactor():
    """What reactor=None means: the running reactor, else the default."""
    r = getattr(_running, "reactor", None)
    return r if r is not None else _get_default_reactor()
