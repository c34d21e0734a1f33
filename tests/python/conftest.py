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
