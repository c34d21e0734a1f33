"""Shared fixtures: a fresh reactor per test with a hard timeout, and a
protocol that records its events and asserts their order."""

import threading

import pytest

import twincore


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
        connect.path = path
    else:
        raise ValueError(kind)
    return listener, connect


def in_thread(fn, *args):
    """Run fn(*args) on a new thread; returns what it returned or the
    exception it raised."""
    import threading
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


class Collector:
    """Settles a Future once `n` items have been added."""

    def __init__(self, n):
        self.items = []
        self.n = n
        self.done = twincore.Future()
        if n == 0:
            self.done.set_result([])

    def add(self, item):
        self.items.append(item)
        if len(self.items) == self.n and not self.done.done():
            self.done.set_result(self.items)
