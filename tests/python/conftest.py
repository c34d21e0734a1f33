"""Shared fixtures: a fresh reactor per test with a hard timeout, and a
protocol that records its events and asserts their order."""

import logging
import sys
import threading

import pytest

import twincore


def import_debian(name):
    """Import a module from Debian's packages (Twisted, Dask...), built for
    Debian's own Python, 3.11, where it must import. On another interpreter
    that reads Debian's packages (3.12, 3.13: scripts/dev.sh) it may not:
    only there is the test (or, at module level, the module) skipped, with
    the reason in the summary."""
    import importlib
    try:
        return importlib.import_module(name)
    except Exception as exc:
        if sys.version_info[:2] == (3, 11):
            raise
        pytest.skip(f"Debian's {name} does not import on Python "
                    f"{sys.version_info.major}.{sys.version_info.minor}: "
                    f"{exc!r}", allow_module_level=True)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "callback_errors: the test provokes exceptions in reactor callbacks "
        "on purpose and asserts on them itself (caplog); without this mark "
        "any such exception fails the test")


class _ErrorRecorder(logging.Handler):
    """Keeps every ERROR the reactor logs (an exception that escaped a
    user callback, a failure nobody handled) for the test that caused it."""

    def __init__(self):
        super().__init__(level=logging.ERROR)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(autouse=True)
def _callback_errors_fail_the_test(request):
    """Any exception that escapes a reactor callback during a test, and any
    unraisable exception (a __del__, a weakref callback), fails that test:
    an assert inside data_received must not be logged and forgotten."""
    recorder = _ErrorRecorder()
    logger = logging.getLogger("twincore")
    logger.addHandler(recorder)
    unraisable = []
    old_hook = sys.unraisablehook

    def hook(info):
        unraisable.append(info)
        old_hook(info)
    sys.unraisablehook = hook
    try:
        yield recorder
    finally:
        sys.unraisablehook = old_hook
        logger.removeHandler(recorder)
    if request.node.get_closest_marker("callback_errors"):
        return
    problems = []
    fmt = logging.Formatter()
    for rec in recorder.records:
        problems.append(fmt.format(rec))
    for info in unraisable:
        problems.append("unraisable exception in %r: %r" %
                        (info.object, info.exc_value))
    if problems:
        pytest.fail("exceptions escaped reactor callbacks during the test "
                    "(mark it @pytest.mark.callback_errors if they are "
                    "expected):\n" + "\n\n".join(problems),
                    pytrace=False)


class RecordingProtocol(twincore.Protocol):
    """Asserts connection_made -> data_received* -> eof_received? ->
    connection_lost, the last exactly once."""

    def __init__(self, keep_open_on_eof=False):
        self.events = []
        self.data = bytearray()
        self.lost = None
        self.keep_open_on_eof = keep_open_on_eof
        self.done = twincore.Future()

    def connection_made(self, transport):
        assert self.events == [], self.events
        super().connection_made(transport)
        self.events.append("made")

    def data_received(self, data):
        assert self.events and self.events[0] == "made"
        assert "eof" not in self.events and "lost" not in self.events
        assert isinstance(data, bytes) and data
        self.data += data
        if self.events[-1] != "data":
            self.events.append("data")

    def eof_received(self):
        assert "eof" not in self.events and "lost" not in self.events
        self.events.append("eof")
        return self.keep_open_on_eof

    def connection_lost(self, reason):
        assert "lost" not in self.events, "connection_lost called twice"
        self.events.append("lost")
        self.lost = reason
        if not self.done.done():
            self.done.set_result(self)


@pytest.fixture
def reactor():
    """A new Reactor; the test fails (not hangs) after 60 s of run()."""
    r = twincore.Reactor()
    r.cpu_pool = twincore.CpuPool(workers=2)
    yield r
    pool = r.cpu_pool
    pool.close(cancel_queued=True)


def run_until(reactor, future_or_coro, timeout=30.0):
    """Run the reactor until the Future (or coroutine) completes; fail
    after timeout seconds."""
    fut = future_or_coro
    if not isinstance(fut, twincore.Future):
        fut = reactor.spawn(fut)
    timed_out = []

    def expire():
        timed_out.append(True)
        reactor.stop()
    handle = reactor.call_later(timeout, expire)
    fut.add_done_callback(lambda _: reactor.call_soon(reactor.stop))
    reactor.run()
    handle.cancel()
    assert not timed_out, f"timed out after {timeout} s waiting for {fut!r}"
    return fut.result()


# ---- added for the full suite -------------------------------------------

import faulthandler
import os
import shutil
import tempfile


@pytest.fixture(autouse=True)
def _watchdog():
    """A hard limit per test: a hang dumps every thread's stack and ends
    the run instead of blocking it (run_until has the soft limit)."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


@pytest.fixture
def sock_dir():
    """A short directory for Unix socket paths (sun_path holds 108 bytes;
    pytest's tmp_path can be longer)."""
    d = tempfile.mkdtemp(prefix="tc", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


STREAM_KINDS = ["tcp", "unix"]


def listen(reactor, kind, factory, sock_dir=None):
    """Listen on loopback TCP (port 0) or a Unix path; returns (listener,
    connect) where connect(factory) is a Future of the client protocol."""
    if kind == "tcp":
        listener = reactor.listen_tcp(0, factory)
        port = listener.port

        def connect(client_factory):
            return reactor.connect_tcp("127.0.0.1", port, client_factory)
    elif kind == "unix":
        path = os.path.join(sock_dir, "s%d.sock" % id(factory))
        listener = reactor.listen_unix(path, factory)

        def connect(client_factory):
            return reactor.connect_unix(path, client_factory)
    else:
        raise ValueError(kind)
    return listener, connect


def in_thread(fn, *args):
    """Run fn(*args) on a new thread; returns what it returned or the
    exception it raised."""
    out = []

    def body():
        try:
            out.append(fn(*args))
        except BaseException as exc:   # noqa: B902 - handed back
            out.append(exc)
    t = threading.Thread(target=body)
    t.start()
    t.join(30)
    assert not t.is_alive()
    return out[0]


# ---- asyncio as the oracle ----------------------------------------------

class ScenarioProtocol:
    """A protocol usable by both asyncio and twincore: it records the
    events it sees (consecutive data merged) and runs a script of
    reactions. `later(delay, fn)` schedules on whichever loop runs it."""

    def __init__(self, name, later, on_made=None, on_data=None,
                 on_eof=None, keep_open_on_eof=False, on_pause=None,
                 on_resume=None, on_lost=None):
        self.name = name
        self.later = later
        self.events = []
        self.received = bytearray()
        self.transport = None
        self.hooks = dict(made=on_made, data=on_data, eof=on_eof,
                          pause=on_pause, resume=on_resume, lost=on_lost)
        self.keep_open_on_eof = keep_open_on_eof

    def _hook(self, name, *args):
        hook = self.hooks[name]
        if hook is not None:
            hook(self, *args)

    def connection_made(self, transport):
        self.transport = transport
        self.events.append(("made",))
        self._hook("made")

    def data_received(self, data):
        self.received += data
        # Merged in place: a new bytes per chunk made 16 MiB quadratic.
        if self.events and self.events[-1][0] == "data":
            self.events[-1][1].extend(data)
        else:
            self.events.append(("data", bytearray(data)))
        self._hook("data", data)

    def eof_received(self):
        self.events.append(("eof",))
        self._hook("eof")
        return self.keep_open_on_eof

    def pause_writing(self):
        self.events.append(("pause",))
        self._hook("pause")

    def resume_writing(self):
        self.events.append(("resume",))
        self._hook("resume")

    def connection_lost(self, exc):
        self.events.append(("lost", None if exc is None else type(exc)))
        self._hook("lost")


def run_scenario(impl, kind, make_server, make_client, sock_dir,
                 timeout=30.0):
    """Run one server and one client connection on asyncio or twincore;
    make_server(later, done) / make_client(later, done) build
    ScenarioProtocols and call done() once they are finished. Returns
    (server, client)."""
    runner = _scenario_on_asyncio if impl == "asyncio" else \
        _scenario_on_twincore
    return runner(kind, make_server, make_client, sock_dir, timeout)


def _scenario_on_asyncio(kind, make_server, make_client, sock_dir,
                         timeout):
    import asyncio
    loop = asyncio.new_event_loop()
    finished = loop.create_future()
    left = [2]

    def done(_proto=None):
        left[0] -= 1
        if left[0] == 0 and not finished.done():
            finished.set_result(None)

    def later(delay, fn, *args):
        loop.call_later(delay, fn, *args)
    server_box = []

    def server_factory():
        p = make_server(later, done)
        server_box.append(p)
        return p

    async def main():
        if kind == "tcp":
            srv = await loop.create_server(server_factory, "127.0.0.1", 0)
            port = srv.sockets[0].getsockname()[1]
            _, client = await loop.create_connection(
                lambda: make_client(later, done), "127.0.0.1", port)
        else:
            path = os.path.join(sock_dir, "oracle.sock")
            srv = await loop.create_unix_server(server_factory, path)
            _, client = await loop.create_unix_connection(
                lambda: make_client(later, done), path)
        await asyncio.wait_for(finished, timeout)
        srv.close()
        await srv.wait_closed()
        return client
    try:
        client = loop.run_until_complete(main())
    finally:
        loop.close()
    return server_box[0], client


def _scenario_on_twincore(kind, make_server, make_client, sock_dir,
                          timeout):
    reactor = twincore.Reactor()
    reactor.cpu_pool = twincore.CpuPool(workers=1)
    try:
        finished = twincore.Future(reactor)
        left = [2]

        def done(_proto=None):
            left[0] -= 1
            if left[0] == 0 and not finished.done():
                finished.set_result(None)

        def later(delay, fn, *args):
            reactor.call_later(delay, fn, *args)
        server_box = []

        def server_factory():
            p = make_server(later, done)
            server_box.append(p)
            return p
        listener, connect = listen(reactor, kind, server_factory, sock_dir)

        async def main():
            client = await connect(lambda: make_client(later, done))
            await finished
            listener.close()
            return client
        client = run_until(reactor, main(), timeout)
        return server_box[0], client
    finally:
        reactor.cpu_pool.close(cancel_queued=True)
