"""Flow control: pause_writing/resume_writing from the write buffer's
watermarks with a slow reader, write buffer limits, and pause_reading /
resume_reading without losing data."""

import hashlib
import os

import pytest

import twincore
from conftest import (RecordingProtocol, STREAM_KINDS, ScenarioProtocol,
                      listen, run_scenario, run_until)


async def wait_for(reactor, predicate, what="condition", timeout=20.0):
    """Poll once a millisecond (bounded); `what` may be a callable that
    describes the state for the failure message."""
    deadline = reactor.time() + timeout
    while not predicate():
        if reactor.time() >= deadline:
            raise AssertionError("timed out waiting for " +
                                 (what() if callable(what) else what))
        await twincore.sleep(0.001, reactor=reactor)


def writer_state(client, server=None):
    return lambda: (
        f"writer: sent={client.sent} paused={client.paused} "
        f"buffered={client.transport.get_write_buffer_size()} "
        f"limits={client.transport.get_write_buffer_limits()} "
        f"flow={client.flow[-4:]}; reader: "
        + (f"count={server.count} reading={server.transport.is_reading()}"
           if server is not None else "-"))


class Producer(RecordingProtocol):
    """Writes `total` bytes in `chunk`s, only while not paused; records
    pause/resume with the buffer size seen at each."""

    def __init__(self, total, chunk=64 * 1024, limits=None):
        super().__init__()
        self.total = total
        self.chunk = chunk
        self.limits = limits
        self.sent = 0
        self.flow = []
        self.paused = False
        self.digest = hashlib.sha256()
        self.finished = twincore.Future()

    def connection_made(self, transport):
        super().connection_made(transport)
        if self.limits is not None:
            transport.set_write_buffer_limits(*self.limits)
        transport.reactor.call_soon(self.produce)

    def produce(self):
        t = self.transport
        while not self.paused and self.sent < self.total:
            n = min(self.chunk, self.total - self.sent)
            block = os.urandom(n)
            self.digest.update(block)
            self.sent += n
            t.write(block)
        if self.sent >= self.total and not self.finished.done():
            self.finished.set_result(None)

    def pause_writing(self):
        assert not self.paused, "pause_writing twice in a row"
        self.paused = True
        low, high = self.transport.get_write_buffer_limits()
        size = self.transport.get_write_buffer_size()
        assert size > high, (size, high)
        self.flow.append(("pause", size))

    def resume_writing(self):
        assert self.paused, "resume_writing without pause_writing"
        self.paused = False
        low, high = self.transport.get_write_buffer_limits()
        size = self.transport.get_write_buffer_size()
        assert size <= low, (size, low)
        self.flow.append(("resume", size))
        self.transport.reactor.call_soon(self.produce)


class SlowReader(RecordingProtocol):
    """Starts paused. Once start_bursts() is called it reads `burst` bytes,
    pauses for a moment, and resumes: a slow reader."""

    instances = []

    def __init__(self, burst=256 * 1024, gap=0.002):
        super().__init__()
        self.digest = hashlib.sha256()
        self.count = 0
        self.burst = burst
        self.gap = gap
        self.in_burst = 0
        self.bursts = 0
        type(self).instances.append(self)

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.pause_reading()

    def start_bursts(self):
        self.in_burst = 0
        self.bursts += 1
        if not self.transport.is_closing():
            self.transport.resume_reading()

    def data_received(self, data):
        super().data_received(data)
        del self.data[:]   # keep memory flat; the digest has it
        self.digest.update(data)
        self.count += len(data)
        self.in_burst += len(data)
        if self.in_burst >= self.burst:
            self.transport.pause_reading()
            self.transport.reactor.call_later(self.gap, self.start_bursts)


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_slow_reader_pauses_and_resumes_the_writer(reactor, kind, sock_dir):
    SlowReader.instances = []
    listener, connect = listen(reactor, kind, SlowReader, sock_dir)
    total = 8 << 20

    async def main():
        client = await connect(lambda: Producer(total))
        await wait_for(reactor, lambda: SlowReader.instances, "accept")
        server = SlowReader.instances[0]
        # Let the writer hit its high watermark against a stopped reader.
        await wait_for(reactor, lambda: client.paused, "pause_writing")
        assert client.transport.get_write_buffer_size() > 0
        server.start_bursts()
        await wait_for(reactor, client.finished.done,
                       writer_state(client, server))
        await wait_for(reactor, lambda: server.count >= total,
                       writer_state(client, server))
        client.transport.close()
        await client.done
        await server.done
        return client, server

    client, server = run_until(reactor, main(), timeout=40)
    assert server.count == total
    assert server.digest.digest() == client.digest.digest()
    kinds = [k for k, _ in client.flow]
    assert kinds[0] == "pause" and kinds[-1] == "resume"
    assert kinds == ["pause", "resume"] * (len(kinds) // 2), kinds
    assert server.bursts > 1
    listener.close()


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("limits", [(4096, 1024), (1 << 20, 0), (1, 0)])
def test_custom_limits_keep_pause_resume_paired(reactor, kind, limits,
                                                sock_dir):
    SlowReader.instances = []
    listener, connect = listen(reactor, kind, SlowReader, sock_dir)
    total = 2 << 20

    async def main():
        client = await connect(lambda: Producer(total, chunk=8192,
                                                limits=limits))
        assert client.transport.get_write_buffer_limits() == \
            (limits[1], limits[0])
        await wait_for(reactor, lambda: SlowReader.instances, "accept")
        server = SlowReader.instances[0]
        await wait_for(reactor, lambda: client.paused, "pause_writing")
        server.burst = 1 << 40   # read on, without pauses
        server.start_bursts()
        await wait_for(reactor, client.finished.done,
                       writer_state(client, server))
        await wait_for(reactor, lambda: server.count >= total,
                       writer_state(client, server))
        await wait_for(reactor, lambda: not client.paused, "final resume")
        client.transport.close()
        await server.done
        return client, server

    client, server = run_until(reactor, main(), timeout=40)
    assert server.digest.digest() == client.digest.digest()
    kinds = [k for k, _ in client.flow]
    assert kinds and kinds == ["pause", "resume"] * (len(kinds) // 2), kinds
    listener.close()


def test_write_buffer_size_and_limits(reactor):
    SlowReader.instances = []
    listener = reactor.listen_tcp(0, SlowReader)
    flow = []

    class Client(RecordingProtocol):
        def pause_writing(self):
            flow.append(("pause", self.transport.get_write_buffer_size()))

        def resume_writing(self):
            flow.append(("resume", self.transport.get_write_buffer_size()))

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           Client)
        t = client.transport
        assert t.get_write_buffer_limits() == (16384, 65536)
        assert t.get_write_buffer_size() == 0
        t.write(b"a" * 10)
        t.write(b"b" * 20)
        assert t.get_write_buffer_size() == 30   # queued until the batch
        await wait_for(reactor, lambda: t.get_write_buffer_size() == 0,
                       "flush")
        # Lowering high under what is queued pauses at once.
        t.write(b"c" * 5000)
        assert flow == []
        t.set_write_buffer_limits(high=1000)
        assert t.get_write_buffer_limits() == (250, 1000)
        assert flow == [("pause", 5000)]
        await wait_for(reactor, lambda: len(flow) == 2, "resume")
        assert flow[1][0] == "resume" and flow[1][1] <= 250
        t.set_write_buffer_limits(low=100)
        assert t.get_write_buffer_limits() == (100, 400)
        t.set_write_buffer_limits(high=100, low=0)
        assert t.get_write_buffer_limits() == (0, 100)
        t.set_write_buffer_limits(0, 0)
        assert t.get_write_buffer_limits() == (0, 0)
        t.set_write_buffer_limits()
        assert t.get_write_buffer_limits() == (16384, 65536)
        t.close()
        await client.done
        return t

    run_until(reactor, main())
    listener.close()


def test_set_write_buffer_limits_validation(reactor):
    listener = reactor.listen_tcp(0, RecordingProtocol)

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           RecordingProtocol)
        t = client.transport
        for kwargs in ({"high": -1}, {"low": -1}, {"high": 10, "low": 20},
                       {"high": -5, "low": -10}):
            with pytest.raises(ValueError, match="low|high"):
                t.set_write_buffer_limits(**kwargs)
        with pytest.raises(TypeError, match="high"):
            t.set_write_buffer_limits(high="1")
        with pytest.raises(TypeError, match="low"):
            t.set_write_buffer_limits(low=1.5)
        with pytest.raises(TypeError):
            t.set_write_buffer_limits(1, 2, 3)
        assert t.get_write_buffer_limits() == (16384, 65536)
        t.close()
        await client.done

    run_until(reactor, main())
    listener.close()


# ---- pause_reading / resume_reading ------------------------------------

@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_pause_reading_stops_data_received_and_loses_nothing(reactor, kind,
                                                             sock_dir):
    calls = []

    class Server(RecordingProtocol):
        instances = []

        def connection_made(self, transport):
            super().connection_made(transport)
            Server.instances.append(self)

        def data_received(self, data):
            super().data_received(data)
            calls.append(len(data))
    listener, connect = listen(reactor, kind, Server, sock_dir)
    pieces = [os.urandom(100 + i) for i in range(200)]

    async def main():
        client = await connect(RecordingProtocol)
        await wait_for(reactor, lambda: Server.instances, "accept")
        server = Server.instances[0]
        st = server.transport
        client.transport.write(pieces[0])
        await wait_for(reactor, lambda: calls, "first data")
        st.pause_reading()
        st.pause_reading()   # harmless twice
        assert not st.is_reading()
        seen = len(calls)
        for piece in pieces[1:100]:
            client.transport.write(piece)
            await twincore.sleep(0, reactor=reactor)
        await twincore.sleep(0.05, reactor=reactor)
        assert len(calls) == seen, "data_received while paused"
        st.resume_reading()
        st.resume_reading()
        assert st.is_reading()
        for piece in pieces[100:]:
            client.transport.write(piece)
        client.transport.close()
        await server.done
        return server

    server = run_until(reactor, main())
    assert bytes(server.data) == b"".join(pieces)
    assert server.events == ["made", "data", "eof", "lost"]
    listener.close()


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_eof_waits_for_resume_reading(reactor, kind, sock_dir):
    class Server(RecordingProtocol):
        instances = []

        def connection_made(self, transport):
            super().connection_made(transport)
            Server.instances.append(self)
            transport.pause_reading()
    listener, connect = listen(reactor, kind, Server, sock_dir)

    async def main():
        client = await connect(RecordingProtocol)
        client.transport.write(b"before eof")
        client.transport.write_eof()
        await wait_for(reactor, lambda: Server.instances, "accept")
        server = Server.instances[0]
        await twincore.sleep(0.05, reactor=reactor)
        assert server.events == ["made"]
        server.transport.resume_reading()
        await server.done
        await client.done
        return server

    server = run_until(reactor, main())
    assert bytes(server.data) == b"before eof"
    assert server.events == ["made", "data", "eof", "lost"]
    listener.close()


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_pause_reading_inside_data_received(reactor, kind, sock_dir):
    """A protocol that takes one message per resume_reading()."""
    got = []

    class OneAtATime(RecordingProtocol):
        instances = []

        def connection_made(self, transport):
            super().connection_made(transport)
            OneAtATime.instances.append(self)

        def data_received(self, data):
            super().data_received(data)
            got.append(data)
            self.transport.pause_reading()
    listener, connect = listen(reactor, kind, OneAtATime, sock_dir)
    payload = os.urandom(300_000)

    async def main():
        client = await connect(RecordingProtocol)
        client.transport.write(payload)
        client.transport.close()
        await wait_for(reactor, lambda: OneAtATime.instances, "accept")
        server = OneAtATime.instances[0]
        await wait_for(reactor, lambda: got, "first piece")
        for _ in range(10_000):
            if server.done.done():
                break
            n = len(got)
            await twincore.sleep(0.001, reactor=reactor)
            assert len(got) == n, "data_received while paused"
            server.transport.resume_reading()
            await wait_for(reactor, lambda: len(got) > n or
                           server.done.done(), "next piece")
        await server.done
        return server

    server = run_until(reactor, main(), timeout=40)
    assert b"".join(got) == payload
    assert server.events == ["made", "data", "eof", "lost"]
    listener.close()


# ---- the same flow-control scenario on asyncio (the oracle) ------------

def _flow_scenario(total, shared):
    """A writer against a reader that starts paused and is resumed when
    the writer reports pause_writing; the writer half-closes at the end."""
    block = b"z" * 16384

    def make_server(later, done):
        def on_made(p):
            shared["server"] = p
            p.transport.pause_reading()
        return ScenarioProtocol("server", later, on_made=on_made,
                                on_lost=done)

    def make_client(later, done):
        state = {"sent": 0, "paused": False, "eof": False}

        def produce(p):
            while not state["paused"] and state["sent"] < total:
                state["sent"] += len(block)
                p.transport.write(block)
            if state["sent"] >= total and not state["paused"] and \
                    not state["eof"]:
                state["eof"] = True
                p.transport.write_eof()

        def on_made(p):
            p.transport.set_write_buffer_limits(high=65536, low=16384)
            later(0, produce, p)

        def resume_server():
            # Under load the client can fill its buffer before the server
            # side has run connection_made: try again shortly.
            server = shared.get("server")
            if server is None:
                later(0.005, resume_server)
            else:
                server.transport.resume_reading()

        def on_pause(p):
            state["paused"] = True
            later(0.005, resume_server)

        def on_resume(p):
            state["paused"] = False
            later(0, produce, p)
        return ScenarioProtocol("client", later, on_made=on_made,
                                on_pause=on_pause, on_resume=on_resume,
                                on_lost=done)
    return make_server, make_client


def _collapse_flow(events):
    """Runs of pause/resume become one ("flow",) after checking that they
    alternate, starting with pause and ending with resume."""
    out, run = [], []
    for ev in events + [("end",)]:
        if ev[0] in ("pause", "resume"):
            run.append(ev[0])
            continue
        if run:
            assert run == ["pause", "resume"] * (len(run) // 2), run
            out.append(("flow",))
            run = []
        if ev[0] != "end":
            out.append(ev if ev[0] != "data" else ("data", len(ev[1])))
    return out


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_flow_control_events_match_asyncio(kind, sock_dir):
    total = 16 << 20   # more than the kernel buffers hold
    results = {}
    for impl in ("asyncio", "twincore"):
        shared = {}
        make_server, make_client = _flow_scenario(total, shared)
        server, client = run_scenario(impl, kind, make_server, make_client,
                                      sock_dir, timeout=25)
        assert len(server.received) == total
        results[impl] = (_collapse_flow(server.events),
                         _collapse_flow(client.events))
    assert results["twincore"] == results["asyncio"]
    assert results["asyncio"] == (
        [("made",), ("data", total), ("eof",), ("lost", None)],
        [("made",), ("flow",), ("eof",), ("lost", None)])
