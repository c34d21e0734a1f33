"""A reactor's end: a dropped Reactor is collected with everything its loop
holds (transports and listeners whose close was never delivered, open
connections, armed timers, UDP sockets, finished CPU tasks on their way
back), and Reactor.close() frees it all at once, calling connection_lost
once for every open transport.  Both give back every descriptor the
reactor opened."""

import gc
import logging
import os
import socket
import time
import warnings
import weakref

import pytest

import twincore
from conftest import run_until


def open_fds():
    """This process's descriptors, without the one listdir uses."""
    fds = set()
    for n in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{n}")
        except FileNotFoundError:
            continue
        fds.add(int(n))
    return fds


def fd_kinds(fds):
    kinds = []
    for fd in sorted(fds):
        try:
            kinds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except FileNotFoundError:
            pass
    return kinds


class Server(twincore.Protocol):
    made = None   # a Future, set per test

    def connection_made(self, transport):
        super().connection_made(transport)
        Server.made.set_result(transport)


class Recorder(twincore.DatagramProtocol):
    def __init__(self):
        self.events = []

    def connection_made(self, transport):
        self.events.append("made")

    def connection_lost(self, exc):
        self.events.append("lost")


def serve_one(r):
    """A listener and one accepted connection from a plain socket: returns
    (listener, server transport, client socket)."""
    Server.made = twincore.Future(r)
    listener = r.listen_tcp(0, Server)
    client = socket.create_connection(("127.0.0.1", listener.port))
    transport = run_until(r, Server.made, timeout=10)
    Server.made = None      # it holds the reactor
    return listener, transport, client


def what_is_left(r, kind):
    """Set up `kind` on r without running it afterwards; returns objects
    the caller drops with the reactor, and a client socket to close."""
    if kind == "closed-listener-and-transport":
        listener, transport, client = serve_one(r)
        listener.close()
        transport.close()       # its connection_lost is never delivered
        return [listener, transport], client
    if kind == "aborted-transport":
        listener, transport, client = serve_one(r)
        transport.abort()
        return [listener, transport], client
    if kind == "open-connection":
        listener, transport, client = serve_one(r)
        return [transport.protocol], client
    if kind == "armed-timer":
        return [r.call_later(3600, print)], None
    if kind == "udp":
        return [r.listen_udp(0, Recorder())], None
    if kind == "cpu-task-sent-back":
        # pool.close() waits for the task: its completion then waits in
        # the loop's cross-thread queue, holding the reactor.
        pool = twincore.CpuPool(workers=1)
        r.cpu_pool = pool
        fut = r.defer_to_cpu(time.sleep, 0.01)
        pool.close()
        return [fut], None
    raise ValueError(kind)


KINDS = ["closed-listener-and-transport", "aborted-transport",
         "open-connection", "armed-timer", "udp", "cpu-task-sent-back"]


@pytest.mark.parametrize("kind", KINDS)
def test_a_dropped_reactor_is_collected_with_what_its_loop_holds(kind):
    gc.collect()
    base = open_fds()
    r = twincore.Reactor()
    left, client = what_is_left(r, kind)
    assert open_fds() - base, "the reactor opened no descriptor"
    ref = weakref.ref(r)
    if client is not None:
        client.close()
    del r, left
    gc.collect()
    assert ref() is None, gc.get_referrers(ref())
    leaked = open_fds() - base
    assert not leaked, fd_kinds(leaked)


def test_a_collected_reactor_calls_no_protocol():
    """The loop is freed without running: a transport whose close was
    queued never hears connection_lost, and nothing crashes later.  The GC
    cannot run protocol code safely while it tears a cycle down (the
    protocols may be half cleared): Reactor.close() is the documented way
    to end a reactor with its connection_lost calls."""
    r = twincore.Reactor()
    listener, transport, client = serve_one(r)
    events = []
    transport.protocol.connection_lost = lambda exc: events.append(exc)
    transport.close()
    ref = weakref.ref(r)
    del r, listener, transport
    gc.collect()
    assert ref() is None
    client.close()
    # Another reactor runs fine after the collected one.
    r2 = twincore.Reactor()
    r2.call_soon(r2.stop)
    r2.run()
    r2.close()
    assert events == []


# ---- Reactor.close() ----------------------------------------------------

def test_close_closes_everything_and_frees_the_descriptors():
    """Everything closed at once; the protocols hear connection_lost
    once, but a UDP socket whose connection_made never ran (the loop never
    ran) hears nothing."""
    gc.collect()
    base = open_fds()
    r = twincore.Reactor()
    listener, transport, client = serve_one(r)
    proto = Recorder()
    udp = r.listen_udp(0, proto)
    timer = r.call_later(3600, print)
    r.add_signal_handler(1, print)
    assert r.stats()["open_handles"] >= 5
    r.close()
    assert listener.port is None
    assert transport.is_closing() and not transport.is_reading()
    assert udp.is_closing()
    assert not timer.active()
    assert proto.events == []          # no callbacks: the loop never ran
    client.settimeout(5)
    try:
        assert client.recv(10) == b"", "the server side sent data"
    except ConnectionResetError:
        pass        # aborted: a reset, not a timeout
    client.close()
    leaked = open_fds() - base
    assert not leaked, fd_kinds(leaked)
    # Closing what is already closed is harmless.
    listener.close()
    transport.close()
    transport.abort()
    udp.close()
    timer.cancel()


class Lost(twincore.Protocol):
    """Records connection_lost calls; made/lost sets live on the class."""
    made = None

    def __init__(self):
        self.lost = []

    def connection_made(self, transport):
        super().connection_made(transport)
        if Lost.made is not None:
            Lost.made.append(self)

    def connection_lost(self, exc):
        self.lost.append(exc)


class LostDatagram(twincore.DatagramProtocol):
    def __init__(self):
        self.lost = []

    def connection_lost(self, exc):
        self.lost.append(exc)


def test_close_calls_connection_lost_once_per_open_transport(sock_dir):
    """The contract's exactly-once connection_lost holds through close():
    open connections (both ends, TCP and Unix) hear ConnectionAbortedError,
    a closed one whose close was not delivered yet hears None, a UDP
    socket None; then nothing more."""
    r = twincore.Reactor()
    r.cpu_pool = pool = twincore.CpuPool(workers=1)
    Lost.made = servers = []
    tcp = r.listen_tcp(0, Lost)
    unix = r.listen_unix(os.path.join(sock_dir, "c.sock"), Lost)

    async def main():
        a = await r.connect_tcp("127.0.0.1", tcp.port, Lost)
        b = await r.connect_unix(os.path.join(sock_dir, "c.sock"), Lost)
        for _ in range(2000):
            if len(servers) == 4:
                break
            await twincore.sleep(0.001, reactor=r)
        return a, b
    a, b = run_until(r, main())
    udp_proto = LostDatagram()
    r.listen_udp(0, udp_proto)
    run_until(r, twincore.sleep(0.01, reactor=r))   # its connection_made
    closed = [p for p in servers if p is not a and p is not b][0]
    closed.transport.close()          # its connection_lost is not run yet
    protos = servers
    Lost.made = None
    r.close()
    assert len(protos) == 4
    for p in protos:
        if p is closed:
            assert p.lost == [None]
        else:
            assert len(p.lost) == 1, p.lost
            assert isinstance(p.lost[0], ConnectionAbortedError)
            assert "reactor was closed" in str(p.lost[0])
    assert udp_proto.lost == [None]
    r.close()                         # nothing more
    assert all(len(p.lost) == 1 for p in protos)
    assert udp_proto.lost == [None]
    pool.close()


@pytest.mark.callback_errors
def test_connection_lost_raising_during_close_is_logged(caplog):
    r = twincore.Reactor()
    listener, transport, client = serve_one(r)

    def boom(exc):
        raise ValueError("in connection_lost")
    transport.protocol.connection_lost = boom
    with caplog.at_level(logging.ERROR, logger="twincore"):
        r.close()
    client.close()
    recs = [x for x in caplog.records if x.exc_info and
            x.exc_info[0] is ValueError]
    assert len(recs) == 1 and "connection_lost" in recs[0].getMessage()


def test_close_twice_is_harmless():
    r = twincore.Reactor()
    r.close()
    r.close()


@pytest.mark.parametrize("use", [
    lambda r: r.run(),
    lambda r: r.stop(),
    lambda r: r.time(),
    lambda r: r.stats(),
    lambda r: r.call_soon(print),
    lambda r: r.call_later(1, print),
    lambda r: r.call_from_thread(print),
    lambda r: r.listen_tcp(0, twincore.Protocol),
    lambda r: r.listen_udp(0, twincore.DatagramProtocol()),
    lambda r: r.connect_tcp("127.0.0.1", 9, twincore.Protocol),
    lambda r: r.add_signal_handler(1, print),
    lambda r: r.defer_to_cpu(print),
], ids=["run", "stop", "time", "stats", "call_soon", "call_later",
        "call_from_thread", "listen_tcp", "listen_udp", "connect_tcp",
        "add_signal_handler", "defer_to_cpu"])
def test_use_after_close_raises(use):
    r = twincore.Reactor()
    r.cpu_pool = pool = twincore.CpuPool(workers=1)
    r.close()
    with pytest.raises(RuntimeError, match="the reactor is closed"):
        use(r)
    pool.close()


def test_timers_and_transports_made_before_close_raise_after_it():
    r = twincore.Reactor()
    listener, transport, client = serve_one(r)
    timer = r.call_later(3600, print)
    timer.cancel()
    r.close()
    client.close()
    with pytest.raises(RuntimeError, match="the reactor is closed"):
        timer.reset(1)
    with pytest.raises(RuntimeError, match="the reactor is closed"):
        transport.write(b"x")


def test_close_while_running_raises_and_the_reactor_goes_on():
    r = twincore.Reactor()
    errors = []

    def try_close():
        try:
            r.close()
        except RuntimeError as exc:
            errors.append(str(exc))
        r.stop()
    r.call_soon(try_close)
    r.run()
    assert len(errors) == 1 and "running" in errors[0], errors
    # Still usable, then closed for good.
    ran = []
    r.call_soon(ran.append, 1)
    r.call_soon(r.stop)
    r.run()
    assert ran == [1]
    r.close()


def test_close_drops_queued_callbacks_without_running_them():
    r = twincore.Reactor()
    ran = []
    r.call_soon(ran.append, "soon")
    r.call_later(0, ran.append, "later")
    r.close()
    assert ran == []


def test_close_with_cpu_work_sent_back_frees_the_loop():
    gc.collect()
    base = open_fds()
    r = twincore.Reactor()
    pool = twincore.CpuPool(workers=1)
    r.cpu_pool = pool
    futs = [r.defer_to_cpu(time.sleep, 0.01) for _ in range(3)]
    pool.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r.close()
    assert [str(w.message) for w in caught] == []   # no leaked loop
    assert all(not f.done() for f in futs)   # never settled
    del r, pool
    gc.collect()
    leaked = open_fds() - base
    assert not leaked, fd_kinds(leaked)
