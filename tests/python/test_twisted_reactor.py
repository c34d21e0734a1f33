"""twincore.twisted: Twisted's reactor API on twincore's loop. Each test
makes its own TwincoreReactor (Twisted's global reactor is installed only
in child processes, as it cannot be uninstalled); Twisted's full
conformance suites run from tests/twisted/run_conformance.py."""

import os
import socket
import subprocess
import sys
import threading
import textwrap

import pytest

import twincore

from conftest import import_debian                     # noqa: E402

import_debian("twisted.internet.posixbase")   # must import on 3.11

from twisted.internet import defer, protocol          # noqa: E402
from twisted.python import log                        # noqa: E402

from twincore.twisted import TwincoreReactor          # noqa: E402


@pytest.fixture
def treactor():
    r = TwincoreReactor()
    yield r
    r.disconnectAll()
    for call in r.getDelayedCalls():
        call.cancel()
    r.twincore_reactor.close()


def run_reactor(r, timeout=20.0):
    """Run r until something stops it; fail (not hang) after timeout."""
    timed_out = []

    def expire():
        timed_out.append(True)
        r.stop()
    call = r.callLater(timeout, expire)
    r.run(installSignalHandlers=False)
    assert not timed_out, f"the reactor still ran after {timeout} s"
    call.cancel()


def child(code, timeout=60):
    """Run code in a fresh interpreter with this twincore on its path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)],
                          capture_output=True, text=True, env=env,
                          timeout=timeout)


class Echo(protocol.Protocol):
    def dataReceived(self, data):
        self.transport.write(data)


class Collect(protocol.Protocol):
    def __init__(self, want, done):
        self.want = want
        self.done = done
        self.data = b""

    def connectionMade(self):
        for i in range(0, len(self.want), 1000):
            self.transport.write(self.want[i:i + 1000])

    def dataReceived(self, data):
        self.data += data
        if len(self.data) >= len(self.want):
            self.transport.loseConnection()

    def connectionLost(self, reason):
        self.done.callback(self.data)


def test_install_makes_it_the_global_reactor():
    res = child("""
        import twincore.twisted
        r = twincore.twisted.install()
        from twisted.internet import reactor, error
        assert reactor is r and isinstance(r, twincore.twisted.TwincoreReactor)
        try:
            twincore.twisted.install()
        except error.ReactorAlreadyInstalledError:
            pass
        else:
            raise AssertionError("a second install() succeeded")
        d = twincore.twisted.deferToCpu(sum, [1, 2, 3])
        got = []
        d.addCallback(got.append).addBoth(lambda _: reactor.stop())
        reactor.callLater(20, reactor.stop)
        reactor.run()
        print("result", got)
    """)
    assert res.returncode == 0, res.stderr
    assert "result [6]" in res.stdout


def test_install_after_the_default_reactor_is_refused():
    res = child("""
        from twisted.internet import reactor, error
        import twincore.twisted
        try:
            twincore.twisted.install()
        except error.ReactorAlreadyInstalledError:
            print("refused")
    """)
    assert res.returncode == 0, res.stderr
    assert "refused" in res.stdout


def test_defer_to_cpu_needs_the_twincore_reactor_installed():
    res = child("""
        from twisted.internet import reactor
        import twincore.twisted
        try:
            twincore.twisted.deferToCpu(sum, [1])
        except RuntimeError as exc:
            print("refused:", exc)
    """)
    assert res.returncode == 0, res.stderr
    assert "refused:" in res.stdout and "install()" in res.stdout


def test_trial_runs_on_the_plugin(tmp_path):
    # The plugin (twisted/plugins/twincore_reactor.py beside the package)
    # makes trial --reactor=twincore install our reactor.
    (tmp_path / "test_on_twincore.py").write_text(textwrap.dedent("""
        from twisted.internet import reactor, task
        from twisted.trial import unittest
        import twincore.twisted

        class T(unittest.TestCase):
            def test_reactor(self):
                self.assertIsInstance(reactor,
                                      twincore.twisted.TwincoreReactor)
                return task.deferLater(reactor, 0.01, lambda: None)
    """))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path)] + sys.path)
    res = subprocess.run([sys.executable, "-m", "twisted.trial",
                          "--reactor=twincore", "test_on_twincore"],
                         capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASSED (successes=1)" in res.stdout


def test_tcp_echo_with_twisted_protocols(treactor):
    payload = os.urandom(200_000)
    port = treactor.listenTCP(0, protocol.Factory.forProtocol(Echo),
                              interface="127.0.0.1")
    assert treactor.getReaders() == [port]
    done = defer.Deferred()
    got = []
    done.addCallback(got.append)
    done.addBoth(lambda _: treactor.stop())
    creator = protocol.ClientCreator(treactor, Collect, payload, done)
    creator.connectTCP("127.0.0.1", port.getHost().port)
    run_reactor(treactor)
    assert got == [payload]
    # Shutting down disconnected the port (Twisted's disconnectAll).
    assert treactor.getReaders() == []


def test_large_write_waits_for_a_slow_reader(treactor):
    # 8 MiB at once cannot fit the socket: the write tried at the end of
    # the batch leaves data, the transport is then watched for writing
    # (getWriters) and the rest goes out as the reader pauses and resumes.
    payload = os.urandom(8 << 20)
    seen = {}

    class Sender(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(payload)
            self.transport.loseConnection()
            treactor.callLater(0, self.check)

        def check(self):
            seen["writers"] = list(treactor.getWriters())
            seen["transport"] = self.transport

    class SlowReader(protocol.Protocol):
        def __init__(self):
            self.data = []
            self.size = 0

        def dataReceived(self, data):
            self.data.append(data)
            self.size += len(data)
            self.transport.pauseProducing()
            treactor.callLater(0.001, self.transport.resumeProducing)

        def connectionLost(self, reason):
            seen["data"] = b"".join(self.data)
            treactor.stop()
    port = treactor.listenTCP(0, protocol.Factory.forProtocol(Sender),
                              interface="127.0.0.1")
    protocol.ClientCreator(treactor, SlowReader).connectTCP(
        "127.0.0.1", port.getHost().port)
    run_reactor(treactor, timeout=60)
    assert seen["transport"] in seen["writers"]
    assert seen["data"] == payload


def test_write_then_lose_connection_in_one_callback(treactor):
    # Each reply is tried at the end of the batch; loseConnection right
    # after write must still send everything, then close.
    got = []

    class Reply(protocol.Protocol):
        def dataReceived(self, data):
            self.transport.write(data.upper())
            self.transport.write(b"!")
            self.transport.loseConnection()

    class Ask(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"hello")

        def dataReceived(self, data):
            got.append(data)

        def connectionLost(self, reason):
            treactor.stop()
    port = treactor.listenTCP(0, protocol.Factory.forProtocol(Reply),
                              interface="127.0.0.1")
    protocol.ClientCreator(treactor, Ask).connectTCP(
        "127.0.0.1", port.getHost().port)
    run_reactor(treactor)
    assert b"".join(got) == b"HELLO!"


def test_call_later_order_cancel_and_delay(treactor):
    seen = []
    treactor.callLater(0.03, seen.append, "c")
    treactor.callLater(0.01, seen.append, "a")
    late = treactor.callLater(0.02, seen.append, "never")
    moved = treactor.callLater(0.0, seen.append, "b")
    moved.delay(0.015)
    late.cancel()
    treactor.callLater(0.05, treactor.stop)
    start = treactor.seconds()
    run_reactor(treactor)
    assert seen == ["a", "b", "c"]
    assert treactor.seconds() - start >= 0.05


def test_timed_calls_made_in_twincore_callbacks(treactor):
    # A twincore timer's callback (no Twisted event around it) schedules a
    # Twisted call and moves another sooner: twincore's loop, blocked
    # until Twisted's earliest call, must wake for both.
    seen = []
    tc = treactor.twincore_reactor
    far = treactor.callLater(30, seen.append, "far")

    def from_twincore():
        treactor.callLater(0.01, seen.append, "new")
        far.reset(0.02)
    treactor.callWhenRunning(tc.call_later, 0.01, from_twincore)
    treactor.callLater(0.5, treactor.stop)
    start = treactor.seconds()
    run_reactor(treactor, timeout=10)
    assert seen == ["new", "far"]
    assert treactor.seconds() - start < 5


def test_stop_and_crash_from_twincore_callbacks(treactor):
    tc = treactor.twincore_reactor
    treactor.callWhenRunning(tc.call_later, 0.01, treactor.stop)
    run_reactor(treactor, timeout=10)
    other = TwincoreReactor()
    try:
        other.callWhenRunning(other.twincore_reactor.call_soon, other.crash)
        run_reactor(other, timeout=10)
    finally:
        other.twincore_reactor.close()


def test_call_from_thread_wakes_a_blocked_reactor(treactor):
    seen = []

    def worker():
        treactor.callFromThread(seen.append, threading.get_ident())
        treactor.callFromThread(treactor.stop)
    treactor.callWhenRunning(threading.Thread(target=worker).start)
    run_reactor(treactor)   # nothing else is scheduled: only the wake-up
    assert seen and seen[0] != threading.get_ident()


def test_defer_to_cpu_result_and_failure(treactor):
    results = []

    def start():
        ok = treactor.deferToCpu(pow, 3, 4)
        bad = treactor.deferToCpu(int, "x")
        ok.addCallback(results.append)
        bad.addErrback(lambda f: results.append(f.type))
        defer.gatherResults([ok, bad]).addBoth(lambda _: treactor.stop())
    treactor.callWhenRunning(start)
    run_reactor(treactor)
    # Two workers: each may take one task, and either may get the GIL first.
    assert sorted(results, key=repr) == sorted([81, ValueError], key=repr)


def test_twincore_calls_in_twisted_callbacks_use_this_loop(treactor):
    # defer_to_cpu without reactor= inside the Twisted reactor means its
    # twincore loop, not twincore's default reactor (never run here).
    got = []

    def start():
        fut = twincore.defer_to_cpu(len, "abcd")
        twincore.to_deferred(fut).addCallback(got.append).addBoth(
            lambda _: treactor.stop())
    treactor.callWhenRunning(start)
    run_reactor(treactor)
    assert got == [4]


def test_process_and_interpreter_lanes_as_deferreds(treactor):
    """deferToProcess runs on the reactor's process lane (a worker process
    of its own); deferToInterpreter on the interpreter lane, which needs
    3.12 and says so on 3.11."""
    results = []

    def start():
        ok = treactor.deferToProcess(pow, 2, 10)
        bad = treactor.deferToProcess(int, "x")
        ok.addCallback(results.append)
        bad.addErrback(lambda f: results.append(f.type))
        defer.gatherResults([ok, bad]).addBoth(lambda _: treactor.stop())
    treactor.callWhenRunning(start)
    try:
        run_reactor(treactor, timeout=60)
    finally:
        twincore.default_process_pool(treactor.twincore_reactor).close()
    # Two workers: either may answer first.
    assert sorted(results, key=repr) == sorted([1024, ValueError], key=repr)
    if sys.version_info < (3, 12):
        with pytest.raises(RuntimeError, match="3.12"):
            treactor.deferToInterpreter(pow, 2, 3)


def test_exception_in_do_read_goes_to_twisted_log(treactor):
    # Not to twincore's logger (conftest fails the test on that): to
    # Twisted's log.err, where trial looks, and the selectable is dropped.
    errors = []

    def observer(event):
        if event.get("isError"):
            errors.append(event)
    log.addObserver(observer)
    rfd, wfd = os.pipe()

    class Bad:
        def fileno(self):
            return rfd

        def doRead(self):
            raise ZeroDivisionError("from doRead")

        def connectionLost(self, reason):
            treactor.stop()

        def logPrefix(self):
            return "Bad"
    try:
        treactor.addReader(Bad())
        os.write(wfd, b"x")
        run_reactor(treactor)
    finally:
        log.removeObserver(observer)
        os.close(rfd)
        os.close(wfd)
    assert any(e.get("failure") is not None and
               e["failure"].check(ZeroDivisionError) for e in errors)
    assert treactor.getReaders() == []


def test_fd_set_bookkeeping(treactor):
    a, b = os.pipe()

    class Sel:
        def __init__(self, fd):
            self.fd = fd

        def fileno(self):
            return self.fd

        def doRead(self):
            pass

        def doWrite(self):
            pass

        def connectionLost(self, reason):
            pass
    r, w = Sel(a), Sel(b)
    try:
        treactor.addReader(r)
        treactor.addWriter(w)
        treactor.addReader(r)   # twice: one entry
        assert treactor.getReaders() == [r]
        assert treactor.getWriters() == [w]
        assert set(treactor.removeAll()) == {r, w}
        assert treactor.getReaders() == [] and treactor.getWriters() == []
        assert treactor.twincore_reactor.remove_reader(a) is False
    finally:
        os.close(a)
        os.close(b)


# ---- the native fast path: install(native_tcp=True) ------------------------

@pytest.fixture
def nreactor():
    r = TwincoreReactor(native_tcp=True)
    yield r
    for call in r.getDelayedCalls():
        call.cancel()
    r.twincore_reactor.close()


def connect_and_run(r, server_factory, client_proto, timeout=20.0):
    port = r.listenTCP(0, server_factory, interface="127.0.0.1")
    protocol.ClientCreator(r, client_proto).connectTCP(
        "127.0.0.1", port.getHost().port)
    run_reactor(r, timeout)
    return port


def test_native_echo_and_addresses(nreactor):
    payload = os.urandom(300_000)
    seen = {}

    class NativeEcho(Echo):
        def connectionMade(self):
            seen["peer"] = self.transport.getPeer()
            seen["host"] = self.transport.getHost()
            self.transport.setTcpNoDelay(True)
            seen["nodelay"] = self.transport.getTcpNoDelay()

        def connectionLost(self, reason):
            seen["server_lost"] = reason.type

    done = defer.Deferred()
    done.addCallback(lambda data: seen.setdefault("echoed", data))
    done.addBoth(lambda _: nreactor.callLater(0.05, nreactor.stop))
    port = nreactor.listenTCP(0, protocol.Factory.forProtocol(NativeEcho),
                              interface="127.0.0.1")
    assert type(port).__name__ == "_NativePort"
    assert nreactor.getReaders() == []   # not a Twisted selectable
    protocol.ClientCreator(nreactor, Collect, payload, done).connectTCP(
        "127.0.0.1", port.getHost().port)
    run_reactor(nreactor)
    assert seen["echoed"] == payload
    assert seen["host"].port == port.getHost().port
    assert seen["peer"].host == "127.0.0.1" and seen["nodelay"] is True
    assert seen["server_lost"] is error_mod().ConnectionDone


def error_mod():
    from twisted.internet import error
    return error


def test_native_half_close(nreactor):
    # IHalfCloseableProtocol: readConnectionLost on the client's EOF, the
    # reply still goes out, then loseConnection.
    from zope.interface import implementer
    from twisted.internet.interfaces import IHalfCloseableProtocol
    got = []

    @implementer(IHalfCloseableProtocol)
    class Summer(protocol.Protocol):
        def connectionMade(self):
            self.data = b""

        def dataReceived(self, data):
            self.data += data

        def readConnectionLost(self):
            self.transport.write(str(len(self.data)).encode())
            self.transport.loseConnection()

        def writeConnectionLost(self):
            pass

    @implementer(IHalfCloseableProtocol)
    class Client(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"x" * 5000)
            self.transport.loseWriteConnection()

        def dataReceived(self, data):
            got.append(data)

        def readConnectionLost(self):
            self.transport.loseConnection()

        def writeConnectionLost(self):
            pass

        def connectionLost(self, reason):
            nreactor.stop()
    connect_and_run(nreactor, protocol.Factory.forProtocol(Summer), Client)
    assert b"".join(got) == b"5000"


def test_native_streaming_producer_is_paused_and_resumed(nreactor):
    # The transport's watermarks pause and resume a streaming producer;
    # the slow client still gets every byte.
    from zope.interface import implementer
    from twisted.internet.interfaces import IPushProducer
    chunk = b"y" * 65536
    total = 200
    events = []

    @implementer(IPushProducer)
    class Producer:
        def __init__(self, transport):
            self.transport = transport
            self.sent = 0
            self.paused = False

        def pauseProducing(self):
            events.append("pause")
            self.paused = True

        def resumeProducing(self):
            events.append("resume")
            self.paused = False
            nreactor.callLater(0, self.produce)

        def stopProducing(self):
            self.paused = True

        def produce(self):
            while not self.paused and self.sent < total:
                self.sent += 1
                self.transport.write(chunk)
            if self.sent == total:
                self.transport.unregisterProducer()
                self.transport.loseConnection()

    class Source(protocol.Protocol):
        def connectionMade(self):
            p = Producer(self.transport)
            self.transport.registerProducer(p, True)
            p.produce()

    class Sink(protocol.Protocol):
        size = 0

        def dataReceived(self, data):
            self.size += len(data)
            got["size"] = self.size
            self.transport.pauseProducing()
            nreactor.callLater(0.0005, self.transport.resumeProducing)

        def connectionLost(self, reason):
            nreactor.stop()
    got = {}
    connect_and_run(nreactor, protocol.Factory.forProtocol(Source), Sink,
                    timeout=60)
    assert got["size"] == total * len(chunk)
    assert "pause" in events and "resume" in events


def test_native_exception_in_data_received(nreactor):
    # As Twisted: log.err, and connectionLost gets that failure.
    errors = []
    lost = []

    def observer(event):
        if event.get("isError"):
            errors.append(event)
    log.addObserver(observer)

    class Bad(protocol.Protocol):
        def dataReceived(self, data):
            raise ZeroDivisionError("in dataReceived")

        def connectionLost(self, reason):
            lost.append(reason)

    class Poke(protocol.Protocol):
        def connectionMade(self):
            self.transport.write(b"x")

        def connectionLost(self, reason):
            nreactor.callLater(0.05, nreactor.stop)
    try:
        connect_and_run(nreactor, protocol.Factory.forProtocol(Bad), Poke)
    finally:
        log.removeObserver(observer)
    assert lost and lost[0].check(ZeroDivisionError)
    assert any(e.get("failure") is not None and
               e["failure"].check(ZeroDivisionError) for e in errors)


def test_native_port_stop_listening(nreactor):
    port = nreactor.listenTCP(0, protocol.Factory.forProtocol(Echo),
                              interface="127.0.0.1")
    number = port.getHost().port
    results = []
    port.stopListening().addCallback(results.append)
    assert results == [None]
    refused = []
    d = protocol.ClientCreator(nreactor, protocol.Protocol).connectTCP(
        "127.0.0.1", number)
    d.addErrback(lambda f: refused.append(f.type)).addBoth(
        lambda _: nreactor.stop())
    run_reactor(nreactor)
    assert refused == [error_mod().ConnectionRefusedError]


def test_native_connect_tcp_client_factory_calls(nreactor):
    """connectTCP with native_tcp: a twincore transport behind Twisted's
    connector; the client factory hears of a refused connect and of a lost
    connection in Twisted's own terms."""
    err = error_mod()
    events = []

    class Client(protocol.Protocol):
        def connectionMade(self):
            events.append(("made", type(self.transport).__name__))
            self.transport.write(b"ping")

        def dataReceived(self, data):
            events.append(("data", data))
            self.transport.loseConnection()

    class ClientFactory(protocol.ClientFactory):
        protocol = Client

        def startedConnecting(self, connector):
            events.append(("started", connector.getDestination().port))

        def clientConnectionFailed(self, connector, reason):
            events.append(("failed", reason.type))
            # The second connect goes to the live port.
            connector.port = live.getHost().port
            connector.connect()

        def clientConnectionLost(self, connector, reason):
            events.append(("lost", reason.type))
            nreactor.stop()

    live = nreactor.listenTCP(0, protocol.Factory.forProtocol(Echo),
                              interface="127.0.0.1")
    dead = socket.socket()
    dead.bind(("127.0.0.1", 0))
    dead_port = dead.getsockname()[1]
    dead.close()   # nothing listens there: refused
    connector = nreactor.connectTCP("127.0.0.1", dead_port, ClientFactory())
    assert type(connector).__name__ == "_NativeConnector"
    run_reactor(nreactor)
    assert events == [
        ("started", dead_port), ("failed", err.ConnectionRefusedError),
        ("started", live.getHost().port), ("made", "_NativeTransport"),
        ("data", b"ping"), ("lost", err.ConnectionDone)]
    assert connector.state == "disconnected"
