"""What every lane's pool shares (CpuPool, InterpreterPool, ProcessPool):
``with`` and ``async with``, and an ``aclose()`` that joins the workers on
a helper thread and settles a Future on the reactor that waits for it, so
a coroutine can close a pool without blocking its loop."""

import threading

from ._future import Future


class PoolLifecycle:
    """Mixin: the context-manager protocols on a pool's close()/aclose().
    A C base that defines __enter__/__exit__ itself comes first in the MRO
    and keeps them."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()
        return False

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc_info):
        await self.aclose()
        return False


def closed_future():
    """The Future of an aclose() that had nothing to wait for."""
    fut = Future()
    fut.set_result(None)
    return fut


def join_on_thread(reactor, join, name):
    """Run join() on a new thread; returns a Future of reactor settled once
    it returned. Not a daemon: interpreter exit waits for it before the
    pools' exit hooks run."""
    fut = Future(reactor)

    def settle():
        if not fut.done():
            fut.set_result(None)

    def run():
        try:
            join()
        finally:
            try:
                reactor.call_from_thread(settle)
            except RuntimeError:
                pass   # the reactor closed meanwhile: nobody waits
    threading.Thread(target=run, name=name).start()
    return fut
