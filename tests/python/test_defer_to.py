"""defer_to(executor, fn, ...): a concurrent.futures Executor's result as a
twincore.Future settled on the reactor thread, with a ThreadPoolExecutor and
with a Dask distributed LocalCluster (Debian's python3-distributed)."""

import concurrent.futures
import threading

import pytest

import twincore
from conftest import import_debian, run_until

import _proc_tasks as tasks


def test_thread_pool_executor_result_on_the_reactor_thread(reactor):
    seen = {}

    def work(x):
        seen["worker"] = threading.get_ident()
        return x + 1

    async def main():
        with concurrent.futures.ThreadPoolExecutor(2) as ex:
            fut = twincore.defer_to(ex, work, 41)
            assert isinstance(fut, twincore.Future)
            fut.add_done_callback(
                lambda f: seen.setdefault("cb", threading.get_ident()))
            return await fut
    assert run_until(reactor, main()) == 42
    assert seen["worker"] != threading.get_ident()
    assert seen["cb"] == threading.get_ident()


def test_thread_pool_executor_exception_and_kwargs(reactor):
    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            echoed = await twincore.defer_to(ex, tasks.echo, 1, k=2)
            try:
                await twincore.defer_to(ex, tasks.fail, "no")
            except ValueError as exc:
                return echoed, str(exc)
    assert run_until(reactor, main()) == (((1,), {"k": 2}), "no")


def test_cancelling_a_queued_call_cancels_it_in_the_executor(reactor):
    gate = threading.Event()
    ran = []

    async def main():
        with concurrent.futures.ThreadPoolExecutor(1) as ex:
            first = twincore.defer_to(ex, gate.wait, 10)
            second = twincore.defer_to(ex, ran.append, 1)
            assert second.cancel()
            gate.set()
            assert await first is True
            return second.cancelled()
    assert run_until(reactor, main()) is True
    assert ran == []


def test_a_call_that_is_not_an_executor(reactor):
    async def main():
        with pytest.raises(TypeError, match="'executor'"):
            twincore.defer_to(object(), tasks.square, 2)
    run_until(reactor, main())


@pytest.fixture(scope="module")
def dask_executor():
    distributed = import_debian("distributed")   # python3-distributed
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=2,
                                       processes=False,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        yield client.get_executor()
    finally:
        client.close()
        cluster.close()


# tornado (under distributed) warns about its own event loop set-up.
@pytest.mark.filterwarnings("ignore:make_current is deprecated")
def test_dask_local_cluster(reactor, dask_executor):
    async def main():
        results = await twincore.gather(
            *[twincore.defer_to(dask_executor, tasks.square, i)
              for i in range(10)])
        try:
            await twincore.defer_to(dask_executor, tasks.fail, "dask")
        except ValueError as exc:
            return results, str(exc)
    assert run_until(reactor, main(), 60) == (
        [i * i for i in range(10)], "dask")
