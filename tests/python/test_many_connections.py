"""10,000 connections opened and closed in one test, 500 at a time, every
one accounted for on both sides; RLIMIT_NOFILE is raised for the test and
restored after."""

import gc
import resource
import struct

import pytest

import twincore
from conftest import STREAM_KINDS, listen, run_until

TOTAL = 10_000
CONCURRENT = 500


@pytest.fixture
def enough_descriptors():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 4 * CONCURRENT + 256   # both ends of each, and some slack
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.fail(f"RLIMIT_NOFILE hard limit {hard} < {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, need), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)


class Server(twincore.Protocol):
    """Echoes; counts its connections in the factory's tally."""

    def __init__(self, tally):
        self.tally = tally

    def connection_made(self, transport):
        super().connection_made(transport)
        self.tally["made"] += 1
        self.tally["open"] += 1
        self.tally["peak"] = max(self.tally["peak"], self.tally["open"])

    def data_received(self, data):
        self.transport.write(data)

    def connection_lost(self, reason):
        self.tally["open"] -= 1
        self.tally["lost"] += 1
        if reason is not None:
            self.tally["errors"].append(reason)


class Client(twincore.Protocol):
    """Sends its number, checks the echo, closes."""

    def __init__(self, number):
        self.number = number
        self.payload = struct.pack("!I", number)
        self.received = b""
        self.done = twincore.Future()

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.write(self.payload)

    def data_received(self, data):
        self.received += data
        if len(self.received) >= len(self.payload):
            self.transport.close()

    def connection_lost(self, reason):
        self.done.set_result((self.number, self.received, reason))


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_10000_connections(reactor, kind, sock_dir, enough_descriptors):
    tally = {"made": 0, "lost": 0, "open": 0, "peak": 0, "errors": []}
    listener, connect = listen(reactor, kind,
                               twincore.Factory(Server, tally), sock_dir)
    handles_before = reactor.stats()["open_handles"]
    results = {}
    objects = []

    async def main():
        for start in range(0, TOTAL, CONCURRENT):
            numbers = range(start, start + CONCURRENT)
            protos = await twincore.gather(
                *[connect(lambda n=n: Client(n)) for n in numbers],
                reactor=reactor)
            outcomes = await twincore.gather(*[p.done for p in protos],
                                             reactor=reactor)
            for number, received, reason in outcomes:
                results[number] = (received, reason)
            del protos, outcomes
            if start == CONCURRENT:   # after a warm-up batch
                gc.collect()
                objects.append(len(gc.get_objects()))
        # The server side finishes on its own iterations.
        for _ in range(20_000):
            if tally["lost"] == TOTAL:
                break
            await twincore.sleep(0.001, reactor=reactor)

    run_until(reactor, main(), timeout=100)
    assert len(results) == TOTAL
    bad = {n: r for n, r in results.items()
           if r != (struct.pack("!I", n), None)}
    assert not bad, list(bad.items())[:5]
    assert tally["made"] == TOTAL and tally["lost"] == TOTAL
    assert tally["open"] == 0 and tally["errors"] == []
    assert tally["peak"] <= CONCURRENT
    assert listener.accepted == TOTAL
    listener.close()

    async def settle():
        for _ in range(5):
            await twincore.sleep(0, reactor=reactor)
    run_until(reactor, settle())
    # Every handle is gone again (only the listener went, too).
    assert reactor.stats()["open_handles"] == handles_before - 1
    results.clear()
    gc.collect()
    assert abs(len(gc.get_objects()) - objects[0]) < 2000
