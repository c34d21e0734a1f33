"""Exceptions raised by user code on the reactor (protocol methods,
factories, timers, call_soon and call_from_thread callbacks) are logged
through logging (logger "twincore") with their traceback, and the reactor
carries on.  A stream protocol method that raises (but connection_lost)
also drops its connection, as Twisted does: connection_lost gets the
exception.  Also the error types."""

import logging
import threading

import pytest

import twincore
from conftest import RecordingProtocol, run_until

# Every test here provokes callback exceptions on purpose and asserts on the
# log itself.
pytestmark = pytest.mark.callback_errors


class Boom(Exception):
    pass


def boom_records(caplog):
    return [r for r in caplog.records if r.name == "twincore" and
            r.levelno == logging.ERROR and r.exc_info and
            r.exc_info[0] is Boom]


def assert_logged(caplog, context, func_name, count=1):
    recs = boom_records(caplog)
    assert len(recs) == count, caplog.text
    for rec in recs:
        assert context in rec.getMessage()
        tb_text = logging.Formatter().formatException(rec.exc_info)
        assert func_name in tb_text   # the traceback is kept
        assert "Boom" in tb_text


def assert_reactor_carries_on(reactor):
    out = []
    reactor.call_soon(out.append, "still running")
    run_until(reactor, twincore.sleep(0.01, reactor=reactor))
    assert out == ["still running"]


def test_call_soon_callback(reactor, caplog):
    out = []

    def raising_call_soon():
        raise Boom("soon")
    reactor.call_soon(out.append, 1)
    reactor.call_soon(raising_call_soon)
    reactor.call_soon(out.append, 2)   # same batch, still runs
    reactor.call_soon(reactor.stop)
    with caplog.at_level(logging.ERROR, logger="twincore"):
        reactor.run()   # returns normally
    assert out == [1, 2]
    assert_logged(caplog, "call_soon", "raising_call_soon")
    assert_reactor_carries_on(reactor)


def test_timer_callback(reactor, caplog):
    out = []

    def raising_timer():
        raise Boom("timer")
    reactor.call_later(0.01, raising_timer)
    reactor.call_later(0.02, out.append, "later timer")
    with caplog.at_level(logging.ERROR, logger="twincore"):
        run_until(reactor, twincore.sleep(0.05, reactor=reactor))
    assert out == ["later timer"]
    assert_logged(caplog, "call_later", "raising_timer")


def test_call_from_thread_callback(reactor, caplog):
    out = []

    def raising_from_thread():
        raise Boom("thread")
    t = threading.Thread(target=lambda: (
        reactor.call_from_thread(raising_from_thread),
        reactor.call_from_thread(out.append, "next")))
    t.start()
    t.join()
    with caplog.at_level(logging.ERROR, logger="twincore"):
        run_until(reactor, twincore.sleep(0.05, reactor=reactor))
    assert out == ["next"]
    assert_logged(caplog, "call_from_thread", "raising_from_thread")


def test_many_failures_are_each_logged(reactor, caplog):
    def fail(i):
        raise Boom(i)
    for i in range(200):
        reactor.call_soon(fail, i)
    with caplog.at_level(logging.ERROR, logger="twincore"):
        run_until(reactor, twincore.sleep(0.01, reactor=reactor))
    assert len(boom_records(caplog)) == 200


# ---- protocol methods ---------------------------------------------------

PROTOCOL_METHODS = ["connection_made", "data_received", "eof_received",
                    "connection_lost"]


@pytest.mark.parametrize("method", PROTOCOL_METHODS)
def test_protocol_method_raising_is_logged(reactor, caplog, method):
    """Logged with its traceback; a raising connection_made, data_received
    or eof_received aborts the connection and connection_lost gets the
    exception (a raising connection_lost is only logged)."""
    servers = []

    class Server(RecordingProtocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            servers.append(self)
            if method == "connection_made":
                raise Boom(method)

        def data_received(self, data):
            super().data_received(data)
            if method == "data_received":
                raise Boom(method)

        def eof_received(self):
            super().eof_received()
            if method == "eof_received":
                raise Boom(method)

        def connection_lost(self, reason):
            super().connection_lost(reason)
            if method == "connection_lost":
                raise Boom(method)
    listener = reactor.listen_tcp(0, Server)

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           RecordingProtocol)
        client.transport.write(b"data")
        client.transport.write_eof()
        await client.done
        for _ in range(1000):
            if servers and servers[0].done.done():
                break
            await twincore.sleep(0.001, reactor=reactor)
        return client

    with caplog.at_level(logging.ERROR, logger="twincore"):
        client = run_until(reactor, main())
    server, = servers
    # The connection still ends in order, exactly once; nothing reaches
    # the protocol after the method that raised.
    expected = {"connection_made": ["made", "lost"],
                "data_received": ["made", "data", "lost"],
                "eof_received": ["made", "data", "eof", "lost"],
                "connection_lost": ["made", "data", "eof", "lost"]}[method]
    assert server.events == expected
    if method == "connection_lost":
        assert server.lost is None
    else:
        assert isinstance(server.lost, Boom) and server.lost.args == (method,)
        # Aborted: the peer sees a reset (or, if it finished first, its
        # own clean close).
        assert client.lost is None or \
            isinstance(client.lost, ConnectionResetError), client.lost
    assert client.events[0] == "made" and client.events[-1] == "lost"
    assert_logged(caplog, method, method)
    assert_reactor_carries_on(reactor)
    listener.close()


@pytest.mark.parametrize("method", ["pause_writing", "resume_writing"])
def test_flow_control_callbacks_raising_abort_the_connection(
        reactor, caplog, method):
    class Client(RecordingProtocol):
        def pause_writing(self):
            if method == "pause_writing":
                raise Boom("pause_writing")

        def resume_writing(self):
            raise Boom("resume_writing")
    listener = reactor.listen_tcp(0, RecordingProtocol)

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           Client)
        client.transport.set_write_buffer_limits(high=10, low=0)
        client.transport.write(b"x" * 100)   # pause_writing, at once
        await client.done
        return client

    with caplog.at_level(logging.ERROR, logger="twincore"):
        client = run_until(reactor, main())
    recs = boom_records(caplog)
    assert [r.exc_info[1].args[0] for r in recs] == [method]
    assert client.events == ["made", "lost"]
    assert isinstance(client.lost, Boom) and client.lost.args == (method,)
    listener.close()


def test_build_protocol_raising_is_logged_and_the_listener_goes_on(
        reactor, caplog):
    calls = []

    class Flaky(twincore.Factory):
        def build_protocol(self, addr):
            calls.append(addr)
            if len(calls) == 1:
                raise Boom("build_protocol")
            return RecordingProtocol()
    listener = reactor.listen_tcp(0, Flaky())

    async def main():
        first = await reactor.connect_tcp("127.0.0.1", listener.port,
                                          RecordingProtocol)
        await first.done   # refused: closed by the server
        second = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           RecordingProtocol)
        second.transport.close()
        await second.done
        return first

    with caplog.at_level(logging.ERROR, logger="twincore"):
        first = run_until(reactor, main())
    assert "data" not in first.events
    assert len(calls) == 2
    assert_logged(caplog, "build_protocol", "build_protocol")
    listener.close()


def test_client_factory_raising_fails_the_connect_future(reactor, caplog):
    listener = reactor.listen_tcp(0, RecordingProtocol)

    def factory():
        raise Boom("client factory")
    with caplog.at_level(logging.ERROR, logger="twincore"):
        fut = reactor.connect_tcp("127.0.0.1", listener.port, factory)
        with pytest.raises(ConnectionAbortedError):
            run_until(reactor, fut)
    assert_logged(caplog, "build_protocol", "factory")
    listener.close()


# ---- error types --------------------------------------------------------

def test_error_type():
    assert issubclass(twincore.Error, OSError)
    err = twincore.Error(-3001, "message")
    assert err.args[0] == -3001


def test_errno_errors_become_oserror_subclasses(reactor):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    fut = reactor.connect_tcp("127.0.0.1", port, RecordingProtocol)
    with pytest.raises(ConnectionRefusedError) as info:
        run_until(reactor, fut)
    assert info.value.errno == 111 and info.value.strerror
