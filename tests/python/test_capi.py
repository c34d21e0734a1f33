"""The capsule C API, used by a separate extension (capi_ext/capi_demo.c,
built by the test suite): native work on twincore's pool, no GIL held while
it runs, and a twincore Future back on the reactor thread."""

import threading

import pytest

import twincore
from conftest import run_until

import capi_demo  # noqa: E402  built beside the suite by meson


def fnv1a(data):
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


def test_native_task_settles_a_future(reactor):
    data = bytes(range(256)) * 64
    fut = capi_demo.fnv1a(reactor, data)
    assert isinstance(fut, twincore.Future)
    seen = []
    fut.add_callback(lambda v: seen.append(threading.get_ident()) or v)
    assert run_until(reactor, fut) == fnv1a(data)
    assert seen == [threading.get_ident()]   # the reactor thread


def test_many_native_tasks_in_flight(reactor):
    blobs = [bytes([i % 256]) * (i + 1) for i in range(500)]
    futs = [capi_demo.fnv1a(reactor, b) for b in blobs]
    results = run_until(reactor, twincore.gather(*futs, reactor=reactor))
    assert results == [fnv1a(b) for b in blobs]


def test_native_failure_fails_the_future(reactor):
    fut = capi_demo.fnv1a(reactor, b"x", True)
    with pytest.raises(OSError) as info:
        run_until(reactor, fut)
    assert info.value.errno == 5   # EIO from the work function


def test_type_errors_are_clear(reactor):
    with pytest.raises(TypeError, match="Reactor"):
        capi_demo.fnv1a(object(), b"x")
    assert capi_demo.loop_and_pool(reactor) is True
    with pytest.raises(TypeError, match="Reactor"):
        capi_demo.loop_and_pool(42)


def test_header_is_found_through_get_include():
    import os
    assert os.path.exists(os.path.join(twincore.get_include(),
                                       "twincore_capi.h"))
