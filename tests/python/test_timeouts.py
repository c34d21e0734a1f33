"""wait_for(), ``async with timeout()``, Future.with_timeout(): timeouts
that cancel the work and ones that do not fire. No timing is asserted
beyond "long before the 30 s the test may run"."""

import pytest

import twincore
from conftest import run_until


def test_wait_for_expires_and_cancels_the_work(reactor):
    seen = []

    async def work():
        try:
            await twincore.sleep(60)
        except twincore.CancelledError:
            seen.append("cancelled")
            raise

    async def main():
        inner = twincore.spawn(work())
        with pytest.raises(TimeoutError):
            await twincore.wait_for(inner, 0.01)
        assert inner.cancelled()
        return seen
    assert run_until(reactor, main()) == ["cancelled"]


def test_wait_for_in_time_returns_the_result(reactor):
    async def main():
        assert await twincore.wait_for(twincore.sleep(0, "a"), 30) == "a"
        assert await twincore.wait_for(twincore.sleep(0, "b"), None) == "b"
        fut = twincore.Future(reactor)
        reactor.call_later(0.01, fut.set_result, "c")
        assert await twincore.wait_for(fut, 30) == "c"
        # Its timer is gone: nothing is cancelled later.
        await twincore.sleep(0.05)
        return fut.result()
    assert run_until(reactor, main()) == "c"


def test_wait_for_failure_and_outer_cancel(reactor):
    async def boom():
        raise KeyError("k")

    async def main():
        with pytest.raises(KeyError):
            await twincore.wait_for(boom(), 30)
        inner = twincore.Future(reactor)
        outer = twincore.spawn(twincore.wait_for(inner, 30))
        await twincore.sleep(0)
        outer.cancel()
        with pytest.raises(twincore.CancelledError):
            await outer   # a cancel from outside is no timeout
        assert inner.cancelled()
        with pytest.raises(TypeError):
            await twincore.wait_for(twincore.sleep(0), "soon")
    run_until(reactor, main())


def test_timeout_block_expires(reactor):
    after = []

    async def main():
        with pytest.raises(TimeoutError):
            async with twincore.timeout(0.01) as t:
                await twincore.sleep(60)
                after.append("not reached")
        assert t.expired()
        after.append("after")
        # The task goes on and can be cancelled normally later.
        await twincore.sleep(0)
        return after
    assert run_until(reactor, main()) == ["after"]


def test_timeout_block_in_time_and_none(reactor):
    async def main():
        async with twincore.timeout(30) as t:
            await twincore.sleep(0.001)
        assert not t.expired()
        async with twincore.timeout(None) as t:
            await twincore.sleep(0.001)
        async with twincore.timeout(30) as t:
            t.reschedule(0.01)
            with pytest.raises(twincore.CancelledError):
                await twincore.sleep(60)
            # Swallowed inside: the block ends normally, then TimeoutError
            # is not raised because no CancelledError left it.
        assert t.expired()
        await twincore.sleep(0.05)   # a cancelled timer never fires
        return "ok"
    assert run_until(reactor, main()) == "ok"


def test_timeout_outside_a_task(reactor):
    async def enter():
        async with twincore.timeout(1):
            pass

    coro = enter()
    with pytest.raises(RuntimeError, match="twincore coroutine"):
        coro.send(None)
    coro.close()


def test_future_with_timeout(reactor):
    async def main():
        f = twincore.Future(reactor)
        assert f.with_timeout(0.01) is f
        with pytest.raises(TimeoutError):
            await f
        assert f.cancelled()

        g = twincore.Future(reactor).with_timeout(30)
        reactor.call_later(0.01, g.set_result, 5)
        assert await g == 5
        await twincore.sleep(0.05)
        assert g.result() == 5

        h = twincore.Future(reactor).with_timeout(30)
        h.cancel()   # a cancel of its own stays a CancelledError
        with pytest.raises(twincore.CancelledError):
            await h

        errors = []
        k = twincore.Future(reactor).with_timeout(0.01)
        k.add_errback(lambda e: errors.append(type(e).__name__))
        await twincore.sleep(0.1)
        with pytest.raises(ValueError):
            twincore.Future(reactor).with_timeout(-1)
        return errors
    assert run_until(reactor, main()) == ["TimeoutError"]


def test_cpu_work_with_timeout(reactor):
    """A queued defer_to_cpu() Future times out like any other."""
    import threading
    gate = threading.Event()

    async def main():
        blockers = [reactor.defer_to_cpu(gate.wait, 30) for _ in range(2)]
        queued = reactor.defer_to_cpu(lambda: "ran").with_timeout(0.01)
        with pytest.raises(TimeoutError):
            await queued
        gate.set()
        for b in blockers:
            assert await b is True
    run_until(reactor, main())
