"""Sockets from elsewhere and the finer points of addresses: adopt a
connected or listening socket (both ways: a twincore peer on the other
end, and a plain socket), Transport.fileno(), connect_tcp(bind=),
listen_tcp on every interface or a host name, Listener.pause()/resume()
and wait_closed()."""
import os
import socket

import pytest

import twincore
from conftest import RecordingProtocol, run_until


class Echo(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)


def _sleep(reactor, delay):
    fut = twincore.Future(reactor)
    reactor.call_later(delay, fut.set_result, None)
    return fut


@pytest.mark.parametrize("family", ["unix", "tcp"])
def test_adopt_stream_with_plain_peer(reactor, family):
    if family == "unix":
        ours, theirs = socket.socketpair()
    else:
        srv = socket.create_server(("127.0.0.1", 0))
        theirs = socket.create_connection(srv.getsockname())
        ours, _ = srv.accept()
        srv.close()
    try:
        proto = run_until(reactor, reactor.adopt_stream(ours, Echo))
        # twincore has its own duplicate: ours may go.
        ours.close()
        assert proto.transport.fileno() >= 0
        theirs.settimeout(10)
        theirs.sendall(b"ping")
        got = b""
        for _ in range(1000):   # bounded: 10 s at most
            if len(got) >= 4:
                break
            run_until(reactor, _sleep(reactor, 0.01))
            try:
                theirs.setblocking(False)
                got += theirs.recv(100)
            except BlockingIOError:
                pass
        assert got == b"ping"
        proto.transport.close()
        run_until(reactor, _sleep(reactor, 0.05))
        theirs.setblocking(True)
        theirs.settimeout(10)
        assert theirs.recv(10) == b""   # closed: the peer sees EOF
    finally:
        theirs.close()


def test_adopt_stream_twincore_on_both_ends(reactor):
    """An adopted socket whose peer is a twincore connection: protocol
    order holds on both sides."""
    listener = reactor.listen_tcp(0, Echo)
    sock = socket.create_connection(("127.0.0.1", listener.port))
    try:
        proto = run_until(reactor, reactor.adopt_stream(
            sock, RecordingProtocol))
        sock.close()
        proto.transport.write(b"hello")
        async def wait():
            for _ in range(1000):
                if len(proto.data) >= 5:
                    return
                await _sleep(reactor, 0.01)
        run_until(reactor, wait())
        assert bytes(proto.data) == b"hello"
        proto.transport.close()
        run_until(reactor, proto.done)
        assert proto.events == ["made", "data", "lost"]
    finally:
        listener.close()


def test_adopt_stream_bad_input(reactor):
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    lst = socket.create_server(("127.0.0.1", 0))
    fresh = socket.socket()
    try:
        with pytest.raises(ValueError, match="adopt_stream.*connected"):
            reactor.adopt_stream(fresh, Echo)
        with pytest.raises(ValueError, match="adopt_stream.*connected"):
            reactor.adopt_stream(lst, Echo)
        udp.connect(("127.0.0.1", 9))
        with pytest.raises(ValueError, match="adopt_stream.*stream"):
            reactor.adopt_stream(udp, Echo)
        with pytest.raises(TypeError, match="adopt_stream.*'fd'"):
            reactor.adopt_stream("sock", Echo)
        with pytest.raises(TypeError, match="factory"):
            reactor.adopt_stream(lst, 42)
        r, w = os.pipe()
        try:
            with pytest.raises(OSError):
                reactor.adopt_stream(r, Echo)   # not a socket
        finally:
            os.close(r)
            os.close(w)
        with pytest.raises(ValueError, match="adopt_listener.*listening"):
            reactor.adopt_listener(fresh, Echo)
        with pytest.raises(ValueError, match="adopt_listener.*listening"):
            reactor.adopt_listener(udp, Echo)
    finally:
        udp.close()
        lst.close()
        fresh.close()


@pytest.mark.parametrize("family", ["tcp", "unix"])
def test_adopt_listener(reactor, family, sock_dir):
    if family == "tcp":
        lsock = socket.create_server(("127.0.0.1", 0))
        port = lsock.getsockname()[1]
        connect = lambda f: reactor.connect_tcp("127.0.0.1", port, f)
    else:
        path = os.path.join(sock_dir, "adopt.sock")
        lsock = socket.socket(socket.AF_UNIX)
        lsock.bind(path)
        lsock.listen()
        connect = lambda f: reactor.connect_unix(path, f)
    listener = reactor.adopt_listener(lsock, Echo)
    lsock.close()   # ours; twincore listens on its duplicate
    try:
        if family == "tcp":
            assert listener.port == listener.get_host()[1]
        client = run_until(reactor, connect(RecordingProtocol))
        client.transport.write(b"abc")

        async def wait():
            for _ in range(1000):
                if len(client.data) >= 3:
                    return
                await _sleep(reactor, 0.01)
        run_until(reactor, wait())
        assert bytes(client.data) == b"abc"
        assert listener.accepted == 1
        client.transport.close()
        run_until(reactor, client.done)
    finally:
        listener.close()


def test_transport_fileno(reactor):
    listener = reactor.listen_tcp(0, Echo)
    try:
        proto = run_until(reactor, reactor.connect_tcp(
            "127.0.0.1", listener.port, RecordingProtocol))
        fd = proto.transport.fileno()
        s = socket.socket(fileno=os.dup(fd))
        try:
            assert s.getsockname() == proto.transport.get_host()
            # Socket options through it are the transport's.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        finally:
            s.close()
        proto.transport.close()
        run_until(reactor, proto.done)
        assert proto.transport.fileno() == -1
    finally:
        listener.close()


def test_connect_tcp_bind(reactor):
    peers = []

    class Server(twincore.Protocol):
        def connection_made(self, transport):
            peers.append(transport.get_peer())
    listener = reactor.listen_tcp(0, Server)
    probe = socket.create_server(("127.0.0.1", 0))
    local_port = probe.getsockname()[1]
    probe.close()
    try:
        proto = run_until(reactor, reactor.connect_tcp(
            "127.0.0.1", listener.port, twincore.Protocol,
            bind=("127.0.0.1", local_port)))
        assert proto.transport.get_host() == ("127.0.0.1", local_port)

        async def wait():
            for _ in range(1000):
                if peers:
                    return
                await _sleep(reactor, 0.01)
        run_until(reactor, wait())
        assert peers == [("127.0.0.1", local_port)]
        # Any address, any port: still bound before connecting.
        proto2 = run_until(reactor, reactor.connect_tcp(
            "127.0.0.1", listener.port, twincore.Protocol, bind=("", 0)))
        assert proto2.transport.get_host()[0] == "127.0.0.1"
        # The same local address while in use fails the Future.
        with pytest.raises(OSError) as info:
            run_until(reactor, reactor.connect_tcp(
                "127.0.0.1", listener.port, twincore.Protocol,
                bind=("127.0.0.1", local_port)))
        assert info.value.errno == 98   # EADDRINUSE
        proto.transport.close()
        proto2.transport.close()
    finally:
        listener.close()


def test_connect_tcp_bind_bad_input(reactor):
    for bad, exc in [(("127.0.0.1",), TypeError), ("127.0.0.1", TypeError),
                     (("127.0.0.1", "80"), TypeError),
                     (("localhost", 0), ValueError),
                     (("127.0.0.1", 70000), ValueError)]:
        with pytest.raises(exc, match="connect_tcp.*'bind'"):
            reactor.connect_tcp("127.0.0.1", 9, twincore.Protocol, bind=bad)


def _have_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def test_listen_tcp_every_interface(reactor):
    listener = reactor.listen_tcp(0, Echo, host="")
    try:
        port = listener.port
        p4 = run_until(reactor, reactor.connect_tcp("127.0.0.1", port,
                                                    twincore.Protocol))
        p4.transport.close()
        if _have_ipv6():
            p6 = run_until(reactor, reactor.connect_tcp("::1", port,
                                                        twincore.Protocol))
            p6.transport.close()
    finally:
        listener.close()


def test_listen_tcp_host_name(reactor):
    listener = reactor.listen_tcp(0, Echo, host="localhost")
    try:
        host = listener.get_host()[0]
        assert host in ("127.0.0.1", "::1")
        p = run_until(reactor, reactor.connect_tcp(host, listener.port,
                                                   twincore.Protocol))
        p.transport.close()
    finally:
        listener.close()
    with pytest.raises(OSError):
        reactor.listen_tcp(0, Echo, host="no-such-host.invalid")


def test_listener_pause_resume(reactor):
    built = []

    class Counting(twincore.Factory):
        protocol = twincore.Protocol

        def build_protocol(self, addr):
            built.append(addr)
            return super().build_protocol(addr)
    listener = reactor.listen_tcp(0, Counting())
    try:
        listener.pause()
        # The kernel completes the handshake (backlog); nobody accepts.
        sock = socket.create_connection(("127.0.0.1", listener.port),
                                        timeout=10)
        run_until(reactor, _sleep(reactor, 0.05))
        assert built == []
        listener.resume()

        async def wait():
            for _ in range(1000):
                if built:
                    return
                await _sleep(reactor, 0.01)
        run_until(reactor, wait())
        assert len(built) == 1
        sock.close()
    finally:
        listener.close()
    listener.pause()    # closed: harmless
    listener.resume()


def test_listener_wait_closed(reactor, sock_dir):
    path = os.path.join(sock_dir, "wc.sock")
    listener = reactor.listen_unix(path, Echo)
    fut = listener.wait_closed()
    assert listener.wait_closed() is fut
    run_until(reactor, _sleep(reactor, 0.02))
    assert not fut.done()
    listener.close()
    assert not fut.done()   # fully closed on a later iteration
    assert run_until(reactor, fut) is None
    assert not os.path.exists(path)
    late = listener.wait_closed()
    assert late.done() and late.result() is None
