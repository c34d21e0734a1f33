"""UDP: a DatagramProtocol's lifecycle, datagrams of every size,
pause/resume, and DatagramTransport errors."""

import os
import socket

import pytest

import twincore
from conftest import in_thread, run_until


class RecordingDatagram(twincore.DatagramProtocol):
    """Asserts connection_made -> datagram_received* -> connection_lost
    (exactly once)."""

    def __init__(self, expect=None, reactor=None):
        self.events = []
        self.datagrams = []
        self.errors = []
        self.expect = expect
        self.got_all = twincore.Future()
        self.done = twincore.Future()
        self.made = twincore.Future()

    def connection_made(self, transport):
        assert self.events == []
        super().connection_made(transport)
        self.events.append("made")
        self.made.set_result(transport)

    def datagram_received(self, data, addr):
        assert self.events and self.events[0] == "made"
        assert "lost" not in self.events
        assert isinstance(data, bytes)
        if self.events[-1] != "datagram":
            self.events.append("datagram")
        self.datagrams.append((data, addr))
        if self.expect is not None and len(self.datagrams) == self.expect \
                and not self.got_all.done():
            self.got_all.set_result(self.datagrams)

    def error_received(self, exc):
        self.errors.append(exc)

    def connection_lost(self, reason):
        assert "lost" not in self.events
        self.events.append("lost")
        self.lost = reason
        self.done.set_result(None)


def test_lifecycle_and_addresses(reactor):
    a = RecordingDatagram(expect=3)
    b = RecordingDatagram(expect=1)
    ta = reactor.listen_udp(0, a)
    tb = reactor.listen_udp(0, b)
    assert isinstance(ta, twincore.DatagramTransport)
    # connection_made comes on the next batch, as in asyncio.
    assert a.events == [] and b.events == []
    host_a, host_b = ta.get_host(), tb.get_host()
    assert host_a[0] == "127.0.0.1" and host_a[1] > 0
    assert host_a != host_b

    async def main():
        await a.made
        await b.made
        assert a.transport is ta and b.transport is tb
        tb.sendto(b"one", host_a)
        tb.sendto(bytearray(b"two"), host_a)
        tb.write(memoryview(b"three"), addr=host_a)
        await a.got_all
        ta.sendto(b"back", a.datagrams[0][1])
        await b.got_all
        assert not ta.is_closing()
        ta.close()
        ta.close()   # harmless twice
        assert ta.is_closing()
        tb.close()
        await a.done
        await b.done

    run_until(reactor, main())
    assert [d for d, _ in a.datagrams] == [b"one", b"two", b"three"]
    assert all(addr == host_b for _, addr in a.datagrams)
    assert b.datagrams == [(b"back", host_a)]
    assert a.events == ["made", "datagram", "lost"]
    assert b.events == ["made", "datagram", "lost"]
    assert a.lost is None and b.lost is None
    assert a.errors == [] and b.errors == []


def test_datagram_sizes_including_empty_and_one_byte(reactor):
    sizes = [0, 1, 2, 100, 1472, 9000, 65507]
    recv = RecordingDatagram(expect=len(sizes))
    tr = reactor.listen_udp(0, recv)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sender.bind(("127.0.0.1", 0))
    payloads = [os.urandom(n) for n in sizes]
    try:
        for p in payloads:
            sender.sendto(p, tr.get_host())
        run_until(reactor, recv.got_all)
        assert [d for d, _ in recv.datagrams] == payloads
        assert recv.datagrams[0][1] == sender.getsockname()
    finally:
        sender.close()
        tr.close()
    run_until(reactor, recv.done)


def test_many_datagrams_from_twincore_to_a_plain_socket(reactor):
    proto = RecordingDatagram()
    tr = reactor.listen_udp(0, proto)
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sink.bind(("127.0.0.1", 0))
    sink.settimeout(10)
    n = 500
    try:
        for i in range(n):
            tr.sendto(b"%d" % i, sink.getsockname())
        assert tr.get_write_buffer_size() >= 0
        got = []

        async def drain():
            for _ in range(20):
                await twincore.sleep(0.001, reactor=reactor)
        run_until(reactor, drain())
        for _ in range(n):
            data, addr = sink.recvfrom(100)
            got.append(int(data))
            assert addr == tr.get_host()
        assert got == list(range(n))   # loopback UDP keeps order
    finally:
        sink.close()
        tr.close()
    run_until(reactor, proto.done)


def test_pause_and_resume_reading(reactor):
    proto = RecordingDatagram(expect=4)
    tr = reactor.listen_udp(0, proto)
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        async def main():
            await proto.made
            sender.sendto(b"1", tr.get_host())
            await twincore.sleep(0.05, reactor=reactor)
            assert len(proto.datagrams) == 1
            tr.pause_reading()
            sender.sendto(b"2", tr.get_host())
            sender.sendto(b"3", tr.get_host())
            await twincore.sleep(0.1, reactor=reactor)
            assert len(proto.datagrams) == 1   # nothing while paused
            tr.resume_reading()
            sender.sendto(b"4", tr.get_host())
            await proto.got_all
        run_until(reactor, main())
        assert [d for d, _ in proto.datagrams] == [b"1", b"2", b"3", b"4"]
    finally:
        sender.close()
        tr.close()
    run_until(reactor, proto.done)


def test_ipv6_loopback(reactor):
    a, b = RecordingDatagram(expect=1), RecordingDatagram()
    try:
        ta = reactor.listen_udp(0, a, host="::1")
    except OSError as exc:   # pragma: no cover
        pytest.skip(f"no IPv6 loopback: {exc}")
    tb = reactor.listen_udp(0, b, host="::1")
    tb.sendto(b"v6", ("::1", ta.get_host()[1]))
    run_until(reactor, a.got_all)
    data, addr = a.datagrams[0]
    assert data == b"v6" and addr[0] == "::1" and addr[1] == tb.get_host()[1]
    ta.close()
    tb.close()
    run_until(reactor, b.done)


@pytest.mark.callback_errors
def test_exception_in_datagram_received_is_logged(reactor, caplog):
    class Bad(RecordingDatagram):
        def datagram_received(self, data, addr):
            super().datagram_received(data, addr)
            if data == b"boom":
                raise ValueError("bad datagram")
    proto = Bad(expect=2)
    tr = reactor.listen_udp(0, proto)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.sendto(b"boom", tr.get_host())
        s.sendto(b"fine", tr.get_host())
        with caplog.at_level("ERROR", logger="twincore"):
            run_until(reactor, proto.got_all)
    finally:
        s.close()
        tr.close()
    run_until(reactor, proto.done)
    recs = [r for r in caplog.records if r.exc_info and
            r.exc_info[0] is ValueError]
    assert len(recs) == 1
    assert "datagram_received" in recs[0].getMessage()


@pytest.mark.parametrize("port, exc", [
    ("0", TypeError), (True, TypeError), (0.0, TypeError),
    (-1, ValueError), (1 << 70, ValueError)])
def test_listen_udp_port_checked_in_c(reactor, port, exc):
    """The C method checks the port itself; the Python one passes it on."""
    for listen in (reactor.listen_udp, lambda port, proto:
                   twincore._twincore.Reactor.listen_udp(reactor, port,
                                                         proto)):
        with pytest.raises(exc, match=r"listen_udp\(\): 'port'"):
            listen(port, RecordingDatagram())


def test_argument_errors(reactor):
    proto = RecordingDatagram()
    with pytest.raises(ValueError, match="port"):
        reactor.listen_udp(-1, proto)
    with pytest.raises(ValueError, match="port"):
        reactor.listen_udp(70000, proto)
    with pytest.raises(TypeError, match="port"):
        reactor.listen_udp("0", proto)
    with pytest.raises(ValueError, match="host"):
        reactor.listen_udp(0, proto, host="not-an-ip")
    tr = reactor.listen_udp(0, proto)
    try:
        with pytest.raises(TypeError, match="addr"):
            tr.sendto(b"x", "127.0.0.1:9")
        with pytest.raises(TypeError, match="addr"):
            tr.sendto(b"x", ("127.0.0.1",))
        with pytest.raises(ValueError, match="addr"):
            tr.sendto(b"x", ("not-an-ip", 9))
        with pytest.raises(ValueError, match="addr"):
            tr.sendto(b"x", ("127.0.0.1", 70000))
        with pytest.raises(TypeError, match="data"):
            tr.sendto("text", ("127.0.0.1", 9))
        with pytest.raises(OSError):
            tr.sendto(b"x")   # not connected: no destination
    finally:
        tr.close()
    run_until(reactor, proto.done)


def test_use_after_close_raises_broken_pipe(reactor):
    proto = RecordingDatagram()
    tr = reactor.listen_udp(0, proto)
    tr.close()
    for op in (lambda: tr.sendto(b"x", ("127.0.0.1", 9)),
               lambda: tr.write(b"x", ("127.0.0.1", 9)),
               tr.get_host, tr.pause_reading, tr.resume_reading):
        with pytest.raises(BrokenPipeError):
            op()
    assert tr.is_closing()
    assert tr.get_write_buffer_size() == 0
    run_until(reactor, proto.done)
    assert proto.events == ["made", "lost"]


def test_close_before_connection_made(reactor):
    proto = RecordingDatagram()
    tr = reactor.listen_udp(0, proto)
    tr.close()
    run_until(reactor, proto.done)
    # connection_made still comes first, then connection_lost once.
    assert proto.events == ["made", "lost"]


def test_not_instantiable():
    with pytest.raises(TypeError):
        twincore.DatagramTransport()


def test_foreign_thread(reactor):
    proto = RecordingDatagram()
    tr = reactor.listen_udp(0, proto)
    try:
        for op in (lambda: tr.sendto(b"x", ("127.0.0.1", 9)), tr.close,
                   tr.pause_reading, tr.resume_reading):
            err = in_thread(op)
            assert isinstance(err, RuntimeError), err
    finally:
        tr.close()
    run_until(reactor, proto.done)
