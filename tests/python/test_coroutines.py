"""Coroutines on the reactor: spawn, await, cancel, sleep, gather,
inline_callbacks and twincore.run."""

import pytest

import twincore
from twincore import CancelledError, Future
from conftest import run_until


def later(reactor, delay, value=None, exc=None):
    """A Future settled delay seconds from now."""
    f = Future(reactor)
    if exc is not None:
        reactor.call_later(delay, f.set_exception, exc)
    else:
        reactor.call_later(delay, f.set_result, value)
    return f


# ---- spawn and await --------------------------------------------------

def test_spawn_returns_a_future_of_the_result(reactor):
    async def main(x):
        return x * 2
    task = reactor.spawn(main(21))
    assert isinstance(task, Future)
    assert task.state == "pending"
    assert run_until(reactor, task) == 42
    assert task.state == "done"


@pytest.mark.parametrize("bad", [42, None, lambda: None])
def test_spawn_rejects_non_coroutines(reactor, bad):
    with pytest.raises(TypeError, match="coroutine"):
        reactor.spawn(bad)


def test_spawn_rejects_an_uncalled_async_function(reactor):
    async def main():
        return 1
    with pytest.raises(TypeError, match="coroutine"):
        reactor.spawn(main)


def test_coroutine_starts_on_a_later_iteration(reactor):
    steps = []

    async def main():
        steps.append("body")
    task = reactor.spawn(main())
    steps.append("after spawn")
    run_until(reactor, task)
    assert steps == ["after spawn", "body"]


def test_await_a_future(reactor):
    async def main():
        a = await later(reactor, 0.01, "a")
        b = await later(reactor, 0, "b")
        return a + b
    assert run_until(reactor, main()) == "ab"


def test_await_an_already_done_future(reactor):
    async def main():
        f = Future(reactor)
        f.set_result(5)
        return await f
    assert run_until(reactor, main()) == 5


def test_await_a_failed_future_raises_in_the_coroutine(reactor):
    async def main():
        try:
            await later(reactor, 0.01, exc=KeyError("k"))
        except KeyError as exc:
            return ("caught", exc.args)
    assert run_until(reactor, main()) == ("caught", ("k",))


def test_coroutine_exception_fails_its_future_with_traceback(reactor):
    async def failing_coroutine():
        await later(reactor, 0)
        raise ValueError("from the coroutine")
    task = reactor.spawn(failing_coroutine())
    with pytest.raises(ValueError, match="from the coroutine") as info:
        run_until(reactor, task)
    names = [entry.name for entry in info.traceback]
    assert "failing_coroutine" in names
    assert task.state == "failed"


def test_resume_happens_on_a_later_iteration_not_inside_set_result(reactor):
    order = []
    f = Future(reactor)

    async def main():
        await f
        order.append("resumed")

    def settle():
        f.set_result(None)
        order.append("set_result returned")
    task = reactor.spawn(main())
    reactor.call_later(0.01, settle)
    run_until(reactor, task)
    assert order == ["set_result returned", "resumed"]


def test_nested_coroutines(reactor):
    async def inner(x):
        await twincore.sleep(0, reactor=reactor)
        return x + 1

    async def outer():
        total = 0
        for i in range(10):
            total += await inner(i)
        return total
    assert run_until(reactor, outer()) == sum(range(1, 11))


def test_many_awaits_do_not_grow_the_stack(reactor):
    async def main():
        n = 0
        for i in range(5000):
            f = Future(reactor)
            f.set_result(i)
            n += await f
        return n
    assert run_until(reactor, main()) == sum(range(5000))


def test_many_concurrent_tasks(reactor):
    async def one(i):
        await twincore.sleep((i % 20) / 1000, reactor=reactor)
        return i
    tasks = [reactor.spawn(one(i)) for i in range(1000)]
    got = run_until(reactor, twincore.gather(*tasks, reactor=reactor))
    assert got == list(range(1000))


def test_awaiting_something_else_raises_type_error(reactor):
    class Odd:
        def __await__(self):
            yield "not a future"
            return None

    async def main():
        try:
            await Odd()
        except TypeError as exc:
            return str(exc)
    assert "await" in run_until(reactor, main())


def test_generator_based_coroutine_with_yield_from(reactor):
    def gen():
        value = yield from later(reactor, 0, 7)
        return value * 3
    assert run_until(reactor, reactor.spawn(gen())) == 21


def test_module_level_spawn_and_run_use_the_default_reactor():
    async def main():
        await twincore.sleep(0)
        return "default"
    assert twincore.run(twincore.spawn(main())) == "default"
    assert not twincore.reactor.running


# ---- cancel ---------------------------------------------------------

def test_cancel_a_task_waiting_on_sleep(reactor):
    steps = []

    async def main():
        try:
            await twincore.sleep(30, reactor=reactor)
            steps.append("slept")
        except CancelledError:
            steps.append("cancelled")
            raise
        finally:
            steps.append("finally")
    task = reactor.spawn(main())
    reactor.call_later(0.02, task.cancel)
    with pytest.raises(CancelledError):
        run_until(reactor, task, timeout=10)
    assert steps == ["cancelled", "finally"]
    assert task.cancelled() and task.state == "cancelled"


def test_a_task_may_swallow_cancellation(reactor):
    async def main():
        try:
            await twincore.sleep(30, reactor=reactor)
        except CancelledError:
            return "cleaned up"
    task = reactor.spawn(main())
    reactor.call_later(0.02, task.cancel)
    assert run_until(reactor, task, timeout=10) == "cleaned up"
    assert not task.cancelled()


def test_cancel_before_the_first_step(reactor):
    ran = []

    async def main():
        ran.append(True)
    task = reactor.spawn(main())
    assert task.cancel()
    with pytest.raises(CancelledError):
        run_until(reactor, task)
    assert ran == []
    assert task.cancelled()


def test_cancel_a_finished_task_returns_false(reactor):
    async def main():
        return 1
    task = reactor.spawn(main())
    run_until(reactor, task)
    assert task.cancel() is False
    assert task.result() == 1


def test_cancel_propagates_into_the_awaited_future(reactor):
    inner = Future(reactor)

    async def main():
        await inner
    task = reactor.spawn(main())
    reactor.call_later(0.01, task.cancel)
    with pytest.raises(CancelledError):
        run_until(reactor, task)
    assert inner.cancelled()


# ---- sleep ----------------------------------------------------------

def test_sleep_returns_its_result(reactor):
    async def main():
        t0 = reactor.time()
        got = await twincore.sleep(0.02, "value", reactor=reactor)
        return got, reactor.time() - t0
    got, elapsed = run_until(reactor, main())
    assert got == "value"
    assert elapsed >= 0.019


def test_sleep_zero(reactor):
    async def main():
        return await twincore.sleep(0, reactor=reactor)
    assert run_until(reactor, main()) is None


@pytest.mark.parametrize("bad", [-1, -0.5, float("nan")])
def test_sleep_bad_value(reactor, bad):
    async def main():
        await twincore.sleep(bad, reactor=reactor)
    with pytest.raises(ValueError, match="seconds"):
        run_until(reactor, main())


@pytest.mark.parametrize("bad", ["1", None, [1]])
def test_sleep_bad_type(reactor, bad):
    async def main():
        await twincore.sleep(bad, reactor=reactor)
    with pytest.raises(TypeError, match="seconds"):
        run_until(reactor, main())


# ---- gather ---------------------------------------------------------

def test_gather_keeps_argument_order(reactor):
    async def coro(v, delay):
        await twincore.sleep(delay, reactor=reactor)
        return v
    g = twincore.gather(coro("slow", 0.03), later(reactor, 0.01, "fast"),
                        coro("zero", 0), reactor=reactor)
    assert isinstance(g, Future)
    assert run_until(reactor, g) == ["slow", "fast", "zero"]


def test_gather_empty(reactor):
    g = twincore.gather(reactor=reactor)
    assert g.done() and g.result() == []


def test_gather_failure_fails_it_and_cancels_the_rest(reactor):
    slow = later(reactor, 30, "never")

    async def failing():
        await twincore.sleep(0.01, reactor=reactor)
        raise KeyError("first failure")
    g = twincore.gather(slow, failing(), reactor=reactor)
    with pytest.raises(KeyError, match="first failure"):
        run_until(reactor, g)
    assert slow.cancelled()


def test_gather_return_exceptions(reactor):
    async def failing():
        raise ValueError("kept")
    g = twincore.gather(later(reactor, 0.01, 1), failing(),
                        later(reactor, 0, exc=KeyError("k")),
                        return_exceptions=True, reactor=reactor)
    res = run_until(reactor, g)
    assert res[0] == 1
    assert isinstance(res[1], ValueError) and isinstance(res[2], KeyError)


def test_gather_of_any_awaitable(reactor):
    class Awaitable:
        def __await__(self):
            return (yield from later(reactor, 0, "custom"))
    g = twincore.gather(Awaitable(), reactor=reactor)
    assert run_until(reactor, g) == ["custom"]


def test_gather_rejects_non_awaitables(reactor):
    with pytest.raises(TypeError):
        twincore.gather(42, reactor=reactor)


def test_cancel_gather_cancels_children(reactor):
    a, b = later(reactor, 30), later(reactor, 30)
    g = twincore.gather(a, b, reactor=reactor)
    assert g.cancel()
    assert a.cancelled() and b.cancelled() and g.cancelled()


def test_gather_inside_a_coroutine(reactor):
    async def main():
        return await twincore.gather(later(reactor, 0, 1),
                                     later(reactor, 0.01, 2),
                                     reactor=reactor)
    assert run_until(reactor, main()) == [1, 2]


# ---- inline_callbacks -----------------------------------------------

def test_inline_callbacks(reactor):
    @twincore.inline_callbacks
    def work(x):
        """Docstring kept."""
        a = yield later(reactor, 0.01, x)
        b = yield later(reactor, 0, a + 1)
        return a + b
    assert work.__name__ == "work"
    assert work.__doc__ == "Docstring kept."
    fut = work(1, _reactor=reactor)
    assert isinstance(fut, Future)
    assert run_until(reactor, fut) == 3


def test_inline_callbacks_failure_is_thrown_into_the_generator(reactor):
    @twincore.inline_callbacks
    def work():
        try:
            yield later(reactor, 0, exc=KeyError("k"))
        except KeyError:
            value = yield later(reactor, 0, "recovered")
            return value
    assert run_until(reactor, work(_reactor=reactor)) == "recovered"


def test_inline_callbacks_exception_fails_the_future(reactor):
    @twincore.inline_callbacks
    def work():
        yield later(reactor, 0)
        raise OSError("inside")
    with pytest.raises(OSError, match="inside"):
        run_until(reactor, work(_reactor=reactor))


def test_inline_callbacks_can_yield_defer_to_cpu(reactor):
    @twincore.inline_callbacks
    def work():
        r = yield reactor.defer_to_cpu(pow, 2, 10)
        return r
    assert run_until(reactor, work(_reactor=reactor)) == 1024


def test_inline_callbacks_rejects_plain_functions():
    with pytest.raises(TypeError):
        twincore.inline_callbacks(lambda: None)

    async def coro():
        return None
    with pytest.raises(TypeError):
        twincore.inline_callbacks(coro)


# ---- twincore.run ---------------------------------------------------

def test_run_returns_the_result(reactor):
    async def main():
        await twincore.sleep(0.01, reactor=reactor)
        return "result"
    assert twincore.run(main(), reactor=reactor) == "result"
    assert not reactor.running


def test_run_raises_the_exception(reactor):
    async def main():
        await twincore.sleep(0, reactor=reactor)
        raise LookupError("from main")
    with pytest.raises(LookupError, match="from main"):
        twincore.run(main(), reactor=reactor)
    assert not reactor.running


def test_run_twice_on_one_reactor(reactor):
    async def main(v):
        await twincore.sleep(0, reactor=reactor)
        return v
    assert twincore.run(main(1), reactor=reactor) == 1
    assert twincore.run(main(2), reactor=reactor) == 2


def test_run_accepts_a_future(reactor):
    assert twincore.run(later(reactor, 0.01, "f"), reactor=reactor) == "f"


def test_run_rejects_other_things(reactor):
    with pytest.raises(TypeError):
        twincore.run(42, reactor=reactor)

    async def main():
        return None
    with pytest.raises(TypeError):
        twincore.run(main, reactor=reactor)


def test_run_when_the_reactor_stops_early(reactor):
    async def main():
        reactor.stop()
        await twincore.sleep(30, reactor=reactor)
    with pytest.raises(RuntimeError, match="stopped"):
        twincore.run(main(), reactor=reactor)
    assert not reactor.running


def test_run_cancels_the_tasks_left_over(reactor):
    """Tasks still pending when main returns are cancelled, clean up on the
    live reactor (an await works there) and do not run into the next
    run() (issue 12.3)."""
    log = []

    async def helper(name):
        try:
            await twincore.sleep(30, reactor=reactor)
            log.append(name + " woke")
        finally:
            await twincore.sleep(0, reactor=reactor)
            log.append(name + " cleaned")

    async def main():
        reactor.spawn(helper("a"))
        reactor.spawn(helper("b"))
        await twincore.sleep(0.01, reactor=reactor)
        return "main"
    assert twincore.run(main(), reactor=reactor) == "main"
    assert sorted(log) == ["a cleaned", "b cleaned"]

    async def again():
        await twincore.sleep(0.02, reactor=reactor)
        return "again"
    assert twincore.run(again(), reactor=reactor) == "again"
    assert sorted(log) == ["a cleaned", "b cleaned"]


def test_run_when_the_reactor_stopped_early_runs_again(reactor):
    log = []

    async def main():
        try:
            reactor.stop()
            await twincore.sleep(30, reactor=reactor)
        finally:
            log.append("main cleaned")
    with pytest.raises(RuntimeError, match="stopped"):
        twincore.run(main(), reactor=reactor)
    assert log == ["main cleaned"]

    async def again():
        await twincore.sleep(0, reactor=reactor)
        return 2
    assert twincore.run(again(), reactor=reactor) == 2


def test_cancel_a_task_whose_awaited_future_is_done_but_not_resumed(reactor):
    """The awaited Future is done and the resume queued: cancel() still
    cancels the task, on its next step, as asyncio's does."""
    steps = []

    async def main():
        f = Future(reactor)
        reactor.call_soon(f.set_result, 1)
        reactor.call_soon(lambda: steps.append(task.cancel()))
        try:
            await f
            steps.append("resumed")
        except CancelledError:
            steps.append("cancelled")
            raise
    task = reactor.spawn(main())
    with pytest.raises(CancelledError):
        run_until(reactor, task)
    assert steps == [True, "cancelled"] and task.cancelled()


def test_run_inside_a_running_reactor_raises(reactor):
    async def inner():
        return 1

    async def main():
        with pytest.raises(RuntimeError, match="runs on this thread"):
            twincore.run(inner(), reactor=twincore.Reactor())
        return "ok"
    assert twincore.run(main(), reactor=reactor) == "ok"


# ---- defaults mean the running reactor (issue 12.6) -----------------

def test_defaults_mean_the_running_reactor(reactor):
    """Inside twincore.run(main(), reactor=r2), sleep, defer_to_cpu,
    spawn, gather and inline_callbacks without reactor= use r2."""
    @twincore.inline_callbacks
    def gen():
        value = yield twincore.defer_to_cpu(str, "gen")
        return value

    async def child():
        await twincore.sleep(0.01)
        return twincore.get_running_reactor()

    async def main():
        assert twincore.get_running_reactor() is reactor
        await twincore.sleep(0.01)
        n = await twincore.defer_to_cpu(sum, [1, 2, 3])
        seen = await twincore.spawn(child())
        both = await twincore.gather(child(), twincore.sleep(0, "g"))
        return n, seen, both, await gen()
    watchdog = reactor.call_later(20, reactor.stop)
    n, seen, both, g = twincore.run(main(), reactor=reactor)
    watchdog.cancel()
    assert (n, seen, both, g) == (6, reactor, [reactor, "g"], "gen")


def test_get_running_reactor(reactor):
    with pytest.raises(RuntimeError, match="no running reactor"):
        twincore.get_running_reactor()
    seen = []
    reactor.call_soon(lambda: seen.append(twincore.get_running_reactor()))
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert seen == [reactor]
    with pytest.raises(RuntimeError, match="no running reactor"):
        twincore.get_running_reactor()


def test_get_running_reactor_is_per_thread(reactor):
    """A reactor running on one thread is not the running one of another."""
    from conftest import in_thread
    seen = []

    def probe():
        try:
            twincore.get_running_reactor()
        except RuntimeError as exc:
            return exc
    reactor.call_soon(lambda: seen.append(in_thread(probe)))
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert isinstance(seen[0], RuntimeError)


# ---- await of a Future of another reactor (issue 12.5) --------------

def test_awaiting_a_future_of_a_reactor_on_another_thread_raises(reactor):
    import threading
    other = []
    ready = threading.Event()
    done = threading.Event()

    def run_other():
        r2 = twincore.Reactor()
        other.append((r2, Future(r2)))
        r2.call_soon(ready.set)
        r2.call_later(30, r2.stop)
        r2.call_soon(lambda: done.wait(30) and r2.stop())
        r2.run()
        r2.close()
    t = threading.Thread(target=run_other)
    t.start()
    try:
        assert ready.wait(30)
        r2, foreign = other[0]

        async def main():
            with pytest.raises(RuntimeError, match="different reactor"):
                await foreign
            return "refused"
        assert run_until(reactor, main(), timeout=10) == "refused"
    finally:
        done.set()
        t.join(30)
    assert not t.is_alive()


def test_awaiting_a_future_of_another_idle_reactor_raises(reactor):
    r2 = twincore.Reactor()
    foreign = Future(r2)

    async def main():
        with pytest.raises(RuntimeError, match="different reactor"):
            await foreign
        return "refused"
    assert run_until(reactor, main(), timeout=10) == "refused"
    r2.close()


# ---- StopIteration (issue 12.8) -------------------------------------

def _leaks_stop_iteration():
    raise StopIteration("leaked")


@pytest.mark.parametrize("how", ["set_exception", "class", "pool",
                                 "callback"])
def test_await_a_future_failed_with_stop_iteration_raises(reactor, how):
    async def main():
        if how == "pool":
            fut = twincore.defer_to_cpu(_leaks_stop_iteration)
        elif how == "callback":
            fut = Future(reactor)
            fut.add_callback(lambda _: _leaks_stop_iteration())
            reactor.call_soon(fut.set_result, None)
        else:
            fut = Future(reactor)
            exc = StopIteration if how == "class" else StopIteration("x")
            reactor.call_soon(fut.set_exception, exc)
        try:
            value = await fut
        except RuntimeError as exc:
            return exc
        return ("returned", value)
    exc = run_until(reactor, main())
    assert isinstance(exc, RuntimeError), exc
    assert "StopIteration" in str(exc)
    assert isinstance(exc.__cause__, StopIteration)


# ---- the step in C (_TaskStep, taskstep.c) ---------------------------

import gc
import sys
import threading
import weakref

from twincore import _twincore


def test_a_finished_task_and_its_step_go_without_the_gc(reactor):
    """The step drops its references when the task ends: no cycle is left
    for the collector (a failure no one read is logged at once, as
    before)."""
    async def main():
        await later(reactor, 0, "x")
        return 1
    task = reactor.spawn(main())
    run_until(reactor, task)
    step = task._step
    ref = weakref.ref(task)
    gc.disable()
    try:
        del task
        assert ref() is None
        assert sys.getrefcount(step) == 2   # ours and the call's
    finally:
        gc.enable()


def test_values_and_exceptions_passed_through_leak_no_reference(reactor):
    value, error = object(), ValueError("thrown in")
    base_value, base_error = sys.getrefcount(value), sys.getrefcount(error)

    async def main():
        for _ in range(300):
            assert await later(reactor, 0, value) is value
            try:
                await later(reactor, 0, exc=error)
            except ValueError as e:
                assert e is error
        return value
    task = reactor.spawn(main())
    assert run_until(reactor, task) is value
    del task
    error.__traceback__ = None
    gc.collect()
    assert sys.getrefcount(value) == base_value
    assert sys.getrefcount(error) == base_error


def test_a_coroutine_that_catches_the_thrown_exception_and_returns(reactor):
    """throw() ending the coroutine (StopIteration) settles the task."""
    async def main():
        try:
            await later(reactor, 0, exc=KeyError("k"))
        except KeyError:
            return "recovered"
    assert run_until(reactor, main()) == "recovered"


def test_cancel_while_waiting_carries_the_message(reactor):
    waiting = Future(reactor)
    seen = []

    async def main():
        # Runs once this step has left the task waiting (not on a timer:
        # a late first step would see a cancel that came before it).
        reactor.call_soon(task.cancel, "why")
        try:
            await waiting
        except CancelledError as e:
            seen.append(e.args)
            raise
    task = reactor.spawn(main())
    with pytest.raises(CancelledError):
        run_until(reactor, task)
    assert seen == [("why",)]
    assert task.cancelled() and waiting.cancelled()


def test_cancelled_error_raised_by_the_coroutine_cancels_the_task(reactor):
    async def main():
        await later(reactor, 0)
        raise CancelledError("own")
    task = reactor.spawn(main())
    with pytest.raises(CancelledError):
        run_until(reactor, task)
    assert task.cancelled()


def test_a_task_dropped_while_waiting_is_collected_and_closed(reactor):
    """Nothing holds the task nor what it awaits: the collector closes the
    coroutine (its finally runs) and frees task, step and waiter."""
    log = []

    async def main():
        reactor.call_soon(reactor.stop)   # once this step has waited
        try:
            await Future(reactor)
        finally:
            log.append("closed")
    task = reactor.spawn(main())
    reactor.run()
    assert task.state == "pending" and isinstance(task._waiting, Future)
    refs = [weakref.ref(task), weakref.ref(task._waiting)]
    del task
    gc.collect()
    assert [r() for r in refs] == [None, None]
    assert log == ["closed"]


def test_a_step_queued_after_the_task_ended_does_nothing(reactor):
    async def main():
        return 7
    task = reactor.spawn(main())
    step = task._step
    assert run_until(reactor, task) == 7
    assert step(None, None) is None and step(None, ValueError()) is None
    assert task.result() == 7
    assert repr(step) == "<_TaskStep ended>"


def test_a_task_settled_from_outside_is_left_alone(reactor):
    resumed = []

    async def main():
        await later(reactor, 0.01)
        resumed.append(True)
    task = reactor.spawn(main())
    Future.set_result(task, "forced")
    reactor.call_soon(reactor.stop)   # after the step spawn() queued
    reactor.run()
    assert resumed == [] and task.result() == "forced"
    assert repr(task._step) == "<_TaskStep ended>"
    task._coro.close()


def test_the_running_task_is_set_for_the_coroutine_only(reactor):
    seen = []

    async def main():
        seen.append(twincore._current_task())
        await later(reactor, 0)
        seen.append(twincore._current_task())
    task = reactor.spawn(main())
    run_until(reactor, task)
    assert seen == [task, task]
    assert twincore._current_task() is None


def test_waiting_on_a_future_of_no_reactor(reactor):
    f = Future()

    async def main():
        return await f
    task = reactor.spawn(main())
    reactor.call_later(0.01, f.set_result, "free")
    assert run_until(reactor, task) == "free"


def test_a_future_of_another_reactor_is_refused(reactor):
    other = twincore.Reactor()

    async def main():
        await Future(other)
    with pytest.raises(RuntimeError, match="different reactor"):
        run_until(reactor, main())


def test_a_waiter_settled_from_another_thread_is_refused(reactor):
    """A Future of no reactor settled on another thread cannot resume a
    task there: the step refuses (call_soon's RuntimeError) instead of
    running the coroutine on the wrong thread."""
    f = Future()
    errors = []

    async def main():
        reactor.call_soon(reactor.stop)   # once this step has waited
        await f
    task = reactor.spawn(main())
    reactor.run()
    f.add_errback(lambda e: errors.append(e))   # after the task's own
    t = threading.Thread(target=f.set_result, args=(1,))
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError)
    assert task.state == "pending"
    task._coro.close()


def test_task_step_rejects_bad_arguments(reactor):
    async def main():
        pass
    coro = main()
    local = threading.local()
    with pytest.raises(TypeError, match="'task' must be a twincore Future"):
        _twincore._TaskStep(object(), coro, local)
    with pytest.raises(TypeError, match="belong to a Reactor"):
        _twincore._TaskStep(Future(), coro, local)
    step = _twincore._TaskStep(Future(reactor), coro, local)
    with pytest.raises(TypeError):
        step(None)
    with pytest.raises(TypeError, match="keyword"):
        step(None, None, extra=1)
    coro.close()
