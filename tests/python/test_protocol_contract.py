"""The protocol contract over TCP, Unix sockets and TLS (issue 11): nothing
reaches a protocol after its transport was closed; .transport is set before
connection_made, as Twisted's makeConnection does; a protocol method that
raises drops its connection and connection_lost gets the exception; writes
after the peer left are dropped quietly, as asyncio and Twisted drop them."""

import asyncio
import logging
import os

import pytest

import twincore
from conftest import RecordingProtocol, listen, run_until
from test_tls import certs, client_context, server_context  # noqa: F401

KINDS = ["tcp", "unix", "tls"]


class Boom(Exception):
    pass


@pytest.fixture
def connector(reactor, sock_dir, request):
    """listen(kind, factory) -> (listener, connect) for tcp, unix and tls;
    connect(client_factory) is a Future of the client protocol."""
    def make(kind, factory):
        if kind != "tls":
            return listen(reactor, kind, factory, sock_dir)
        if not twincore.HAVE_TLS:
            pytest.skip("built without TLS")
        c = request.getfixturevalue("certs")
        listener = reactor.listen_tls(0, factory, server_context(c))

        def connect(client_factory):
            return reactor.connect_tls("127.0.0.1", listener.port,
                                       client_factory, client_context(c))
        return listener, connect
    return make


async def wait_for(reactor, pred, what, timeout=20.0):
    for _ in range(int(timeout / 0.002)):
        if pred():
            return
        await twincore.sleep(0.002, reactor=reactor)
    raise AssertionError(f"timed out waiting for {what}")


# ---- defect 3: no input after close() or abort() ------------------------

@pytest.mark.parametrize("how", ["close", "abort"])
@pytest.mark.parametrize("kind", KINDS)
def test_no_input_after_close_in_data_received(reactor, connector, kind,
                                               how):
    """The server closes in its first data_received while the client goes
    on sending; it hears connection_lost and nothing else."""
    servers = []

    class Server(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            servers.append(self)

        def data_received(self, data):
            super().data_received(data)
            self.calls = getattr(self, "calls", 0) + 1
            # A reply the peer does not read yet keeps a close pending.
            self.transport.write(b"r" * (4 << 20))
            getattr(self.transport, how)()

    class Client(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()

    listener, connect = connector(kind, Server)

    async def main():
        client = await connect(Client)
        t = client.transport
        for i in range(40):
            if t.is_closing() or (servers and servers[0].done.done()):
                break
            t.write(b"chunk %d;" % i)
            await twincore.sleep(0.002, reactor=reactor)
        if not t.is_closing():
            t.write_eof()
        # Now read the reply: the server's pending close completes.
        t.resume_reading()
        await wait_for(reactor, lambda: servers and servers[0].done.done(),
                       "server lost")
        t.abort()
        await client.done
        return servers[0]

    server = run_until(reactor, main())
    assert server.calls == 1
    assert server.events == ["made", "data", "lost"]
    listener.close()


@pytest.mark.parametrize("kind", KINDS)
def test_no_input_after_close_from_the_same_batch(reactor, connector, kind):
    """Two connections whose data arrive in one batch: the first
    data_received closes the other connection, whose data, queued in the
    same batch, must not reach its protocol."""
    servers = []

    class Server(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.pause_reading()
            servers.append(self)

        def data_received(self, data):
            super().data_received(data)
            for other in servers:
                if other is not self:
                    other.transport.close()

    listener, connect = connector(kind, Server)

    async def main():
        a = await connect(RecordingProtocol)
        b = await connect(RecordingProtocol)
        await wait_for(reactor, lambda: len(servers) == 2, "accepts")
        a.transport.write(b"to a")
        b.transport.write(b"to b")
        # Both wait in the server's socket buffers; one resume, one batch.
        await twincore.sleep(0.1, reactor=reactor)
        for server in servers:
            server.transport.resume_reading()
        await wait_for(reactor, lambda: any(s.done.done() for s in servers),
                       "a server closed")
        a.transport.close()
        b.transport.close()
        await a.done
        await b.done
        await wait_for(reactor, lambda: all(s.done.done() for s in servers),
                       "servers lost")

    run_until(reactor, main())
    # The one that read closed the other, which then heard only the end.
    assert sorted(s.events for s in servers) == [
        ["made", "data", "eof", "lost"], ["made", "lost"]]
    listener.close()


@pytest.mark.parametrize("kind", KINDS)
def test_no_eof_received_after_close_in_data_received(reactor, connector,
                                                      kind):
    """The peer's last data and its EOF (over TLS: one record and the
    close_notify, often decoded from one read) : close() in data_received
    means no eof_received."""
    servers = []

    class Server(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            servers.append(self)

        def data_received(self, data):
            super().data_received(data)
            self.transport.close()

    listener, connect = connector(kind, Server)

    async def main():
        for _ in range(5):
            client = await connect(RecordingProtocol)
            client.transport.write(b"last words")
            client.transport.close()
            await client.done
        await wait_for(reactor, lambda: len(servers) == 5 and
                       all(s.done.done() for s in servers), "servers lost")

    run_until(reactor, main())
    for server in servers:
        assert server.events == ["made", "data", "lost"]
    listener.close()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_close_in_data_received_matches_asyncio(kind, sock_dir):
    """The oracle: after close() in data_received asyncio calls only
    connection_lost(None), however the client goes on."""
    from conftest import ScenarioProtocol, run_scenario
    results = {}
    for impl in ("asyncio", "twincore"):
        def make_server(later, done):
            return ScenarioProtocol(
                "server", later, on_data=lambda p, d: p.transport.close(),
                on_lost=lambda p: done())

        def make_client(later, done):
            def on_made(p):
                p.transport.write(b"one")
                later(0.02, lambda: p.transport.is_closing() or
                      p.transport.write(b"two"))
                later(0.04, lambda: p.transport.is_closing() or
                      p.transport.write_eof())
            return ScenarioProtocol("client", later, on_made=on_made,
                                    keep_open_on_eof=False,
                                    on_lost=lambda p: done())
        server, _ = run_scenario(impl, kind, make_server, make_client,
                                 sock_dir)
        results[impl] = server.events
    assert results["twincore"] == results["asyncio"] == [
        ("made",), ("data", b"one"), ("lost", None)]


@pytest.mark.callback_errors
@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_data_received_raising_matches_asyncio(kind, sock_dir, caplog):
    """The oracle: asyncio, too, drops the connection of a data_received
    that raised and hands the exception to connection_lost."""
    from conftest import ScenarioProtocol, run_scenario
    results = {}

    def bad(p, data):
        raise Boom("bad input")
    for impl in ("asyncio", "twincore"):
        def make_server(later, done):
            return ScenarioProtocol("server", later, on_data=bad,
                                    on_lost=lambda p: done())

        def make_client(later, done):
            return ScenarioProtocol(
                "client", later,
                on_made=lambda p: p.transport.write(b"input"),
                on_lost=lambda p: done())
        with caplog.at_level(logging.ERROR):
            server, _ = run_scenario(impl, kind, make_server, make_client,
                                     sock_dir)
        results[impl] = server.events
    assert results["twincore"] == results["asyncio"] == [
        ("made",), ("data", b"input"), ("lost", Boom)]


# ---- defect 4: .transport before connection_made ------------------------

class NoSuper(twincore.Protocol):
    """Overrides connection_made without calling super()."""
    seen = None

    def connection_made(self, transport):
        NoSuper.seen.append((self.transport is transport,
                             self.factory is not None))

    def data_received(self, data):
        self.transport.write(data)


class Slotted:
    """asyncio-style, no __dict__: the attribute cannot be set."""
    __slots__ = ("got",)
    seen = None

    def connection_made(self, transport):
        self.got = transport
        Slotted.seen.append(transport)

    def data_received(self, data):
        self.got.write(data)

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        pass


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("cls", [NoSuper, Slotted])
def test_transport_is_set_before_connection_made(reactor, connector, kind,
                                                 cls):
    cls.seen = []
    listener, connect = connector(kind, cls)

    class Client(RecordingProtocol):
        def connection_made(self, transport):
            # Recording protocol calls super(); check before it.
            self.early = self.transport is transport
            super().connection_made(transport)

    async def main():
        client = await connect(Client)
        client.transport.write(b"echo")
        await wait_for(reactor, lambda: bytes(client.data) == b"echo",
                       "echo")
        client.transport.close()
        await client.done
        return client

    client = run_until(reactor, main())
    assert client.early
    if cls is NoSuper:
        assert NoSuper.seen == [(True, True)]
    else:
        assert len(Slotted.seen) == 1
    listener.close()


def test_datagram_transport_is_set_before_connection_made(reactor):
    seen = []

    class Proto(twincore.DatagramProtocol):
        def connection_made(self, transport):
            seen.append(self.transport is transport)

    class SlottedDatagram:
        __slots__ = ()

        def connection_made(self, transport):
            seen.append("slotted")

        def datagram_received(self, data, addr):
            pass

        def connection_lost(self, exc):
            pass
    a = reactor.listen_udp(0, Proto())
    b = reactor.listen_udp(0, SlottedDatagram())
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))
    assert sorted(seen, key=str) == [True, "slotted"]
    a.close()
    b.close()
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))


# ---- defect 6: a raising protocol method drops the connection -----------

@pytest.mark.callback_errors
@pytest.mark.parametrize("kind", KINDS)
def test_data_received_raising_aborts_with_the_exception(reactor, connector,
                                                         kind, caplog):
    servers = []

    class Server(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            servers.append(self)

        def data_received(self, data):
            super().data_received(data)
            raise Boom("bad input")

    listener, connect = connector(kind, Server)

    async def main():
        client = await connect(RecordingProtocol)
        for i in range(5):
            if client.transport.is_closing():
                break
            client.transport.write(b"x%d" % i)
            await twincore.sleep(0.005, reactor=reactor)
        await client.done
        await wait_for(reactor, lambda: servers[0].done.done(),
                       "server lost")
        return client

    with caplog.at_level(logging.ERROR, logger="twincore"):
        client = run_until(reactor, main())
    server, = servers
    assert server.events == ["made", "data", "lost"]
    assert isinstance(server.lost, Boom)
    # The peer saw the connection dropped (a reset, or a TLS alert).
    assert client.events[-1] == "lost"
    assert client.lost is not None or kind == "unix"
    recs = [r for r in caplog.records if r.exc_info and
            r.exc_info[0] is Boom]
    assert len(recs) == 1 and "data_received" in recs[0].getMessage()
    listener.close()


@pytest.mark.callback_errors
@pytest.mark.parametrize("kind", KINDS)
def test_client_connection_made_raising_fails_the_connect(reactor, connector,
                                                          kind, caplog):
    lost = []

    class Client(twincore.Protocol):
        def connection_made(self, transport):
            raise Boom("client made")

        def connection_lost(self, exc):
            lost.append(exc)
    listener, connect = connector(kind, RecordingProtocol)
    with caplog.at_level(logging.ERROR, logger="twincore"):
        with pytest.raises(Boom):
            run_until(reactor, connect(Client))
        run_until(reactor, twincore.sleep(0.05, reactor=reactor))
    assert len(lost) == 1 and isinstance(lost[0], Boom)
    listener.close()


# ---- defect 10: writes after the peer left ------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_a_late_result_for_a_client_that_left_is_dropped(reactor, connector,
                                                         kind, caplog):
    """README's Hasher: the result comes after the client disconnected;
    the write is dropped without an error (the conftest fails the test on
    any logged one)."""
    servers = []
    outcome = []

    class Hasher(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            servers.append(self)

        def data_received(self, data):
            super().data_received(data)
            fut = reactor.defer_to_cpu(bytes.upper, data)
            # A result ready only once the client has gone.
            fut.add_callback(lambda h: self.done.add_callback(
                lambda _: self.reply(h)))

        def reply(self, h):
            try:
                self.transport.write(h)
                self.transport.writelines([h, h])
                outcome.append("dropped")
            except Exception as exc:   # noqa: B902 - the defect
                outcome.append(exc)

    listener, connect = connector(kind, Hasher)

    async def main():
        client = await connect(RecordingProtocol)
        client.transport.write(b"hash me")
        await wait_for(reactor, lambda: servers and servers[0].data,
                       "server data")
        client.transport.close()
        await client.done
        await wait_for(reactor, lambda: outcome, "the late write")

    with caplog.at_level(logging.WARNING, logger="twincore"):
        run_until(reactor, main())
    assert outcome == ["dropped"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    listener.close()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_late_writes_match_asyncio(kind, sock_dir):
    """The oracle: asyncio drops a write to a transport whose peer left."""
    from conftest import ScenarioProtocol, run_scenario
    results = {}
    for impl in ("asyncio", "twincore"):
        outcome = []

        def make_server(later, done):
            def on_lost(p):
                try:
                    p.transport.write(b"late")
                    outcome.append("dropped")
                except Exception as exc:   # noqa: B902
                    outcome.append(type(exc).__name__)
                done()
            return ScenarioProtocol("server", later, on_lost=on_lost)

        def make_client(later, done):
            def on_made(p):
                p.transport.write(b"hello")
                p.transport.close()
            return ScenarioProtocol("client", later, on_made=on_made,
                                    on_lost=lambda p: done())
        run_scenario(impl, kind, make_server, make_client, sock_dir)
        results[impl] = outcome
    assert results["twincore"] == results["asyncio"] == ["dropped"]


def test_many_dropped_writes_warn_once(reactor, caplog):
    servers = []

    class Server(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            servers.append(self)
    listener = reactor.listen_tcp(0, Server)

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           RecordingProtocol)
        await wait_for(reactor, lambda: servers, "accept")
        client.transport.abort()
        await client.done
        await wait_for(reactor, lambda: servers[0].done.done(),
                       "server lost")
        for _ in range(20):
            servers[0].transport.write(b"into the void")

    with caplog.at_level(logging.WARNING, logger="twincore"):
        run_until(reactor, main())
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped" in warnings[0].getMessage()
    # The program's own close() still makes write() raise.
    with pytest.raises(BrokenPipeError):
        servers[0].transport.close()
        servers[0].transport.write(b"x")
    listener.close()


# ---- defect 11: errors name the address ---------------------------------

def asyncio_bind_error(host, port):
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(loop.create_server(asyncio.Protocol, host,
                                                   port))
    except OSError as exc:
        return exc
    finally:
        loop.close()
    raise AssertionError("asyncio could bind")


def test_bind_errors_name_the_address_as_asyncio_does(reactor, sock_dir,
                                                      request):
    taken = reactor.listen_tcp(0, RecordingProtocol)
    port = taken.port
    oracle = asyncio_bind_error("127.0.0.1", port)
    with pytest.raises(OSError) as info:
        reactor.listen_tcp(port, RecordingProtocol)
    assert type(info.value) is type(oracle) and info.value.errno == 98
    assert str(info.value) == str(oracle)
    assert "('127.0.0.1', %d)" % port in str(info.value)
    if twincore.HAVE_TLS:
        with pytest.raises(OSError) as info:
            reactor.listen_tls(port, RecordingProtocol, server_context(
                request.getfixturevalue("certs")))
        assert str(info.value) == str(oracle)
    udp = reactor.listen_udp(0, twincore.DatagramProtocol())
    udp_port = udp.get_host()[1]
    with pytest.raises(OSError) as info:
        reactor.listen_udp(udp_port, twincore.DatagramProtocol())
    assert info.value.errno == 98
    assert "('127.0.0.1', %d)" % udp_port in str(info.value)
    path = os.path.join(sock_dir, "no", "such", "dir.sock")
    with pytest.raises(FileNotFoundError) as info:
        reactor.listen_unix(path, RecordingProtocol)
    assert info.value.errno == 2 and repr(path) in str(info.value)
    taken.close()
    udp.close()
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.mark.parametrize("kind", ["tcp", "unix", "tls"])
def test_connect_errors_name_the_address(reactor, sock_dir, kind):
    if kind == "tls" and not twincore.HAVE_TLS:
        pytest.skip("built without TLS")
    port = free_port()
    if kind == "tcp":
        fut = reactor.connect_tcp("127.0.0.1", port, RecordingProtocol)
        where = "('127.0.0.1', %d)" % port
    elif kind == "tls":
        fut = reactor.connect_tls("127.0.0.1", port, RecordingProtocol,
                                  twincore.TLSContext(verify=False))
        where = "('127.0.0.1', %d)" % port
    else:
        path = os.path.join(sock_dir, "nobody.sock")
        fut = reactor.connect_unix(path, RecordingProtocol)
        where = repr(path)
    with pytest.raises(OSError) as info:
        run_until(reactor, fut)
    if kind == "unix":
        assert isinstance(info.value, FileNotFoundError)
    else:
        assert isinstance(info.value, ConnectionRefusedError)
        assert info.value.errno == 111
    assert where in str(info.value), str(info.value)
    assert "error while attempting to connect to" in str(info.value)


def test_host_names_resolve_in_c_and_failures_name_the_address(reactor):
    """connect_tcp and connect_tls share one resolver, in C on the
    reactor's pool (issue 13); a name that does not resolve fails with
    twincore.Error naming the address (issue 11.11)."""
    listener = reactor.listen_tcp(0, twincore.Protocol)

    async def main():
        proto = await reactor.connect_tcp("localhost", listener.port,
                                          twincore.Protocol)
        assert proto.transport.get_peer()[1] == listener.port
        proto.transport.close()
        with pytest.raises(twincore.Error) as info:
            await reactor.connect_tcp("no-such-host.invalid", 80,
                                      twincore.Protocol)
        assert "('no-such-host.invalid', 80)" in str(info.value)
        assert "host name" in str(info.value)
    run_until(reactor, main())
    listener.close()
    own = twincore.CpuPool(workers=1)
    reactor.cpu_pool = own
    own.close()
    with pytest.raises(RuntimeError, match="cpu_pool, which is closed"):
        reactor.connect_tcp("localhost", 80, twincore.Protocol)
    reactor.cpu_pool = twincore.CpuPool(workers=1)
