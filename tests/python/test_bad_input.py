"""Bad input to the API, swept: every public entry point called with every
kind of wrong value in each argument, and protocols and factories that
break their contract.

The per-argument tests (what each message says) live beside their types in
test_reactor.py, test_timers.py, test_tcp.py, test_udp.py, test_future.py,
test_cpu_pool.py and test_defer_to_cpu.py.  This sweep asks the one thing
they cannot ask of every combination: the call raises an ordinary
exception or succeeds, and never crashes, hangs or raises SystemError (a C
function that failed without setting an exception, or set one and
returned a value).  It runs under the ASan build of the extension too."""

import math
import socket

import pytest

import twincore
from conftest import RecordingProtocol, run_until

WEIRD = [
    None, True, -1, 0, 1 << 31, 1 << 63, -(1 << 63), 1 << 64, 10 ** 100,
    -0.0, 0.5, 1e308, math.inf, -math.inf, math.nan, 1j, "", "x" * 4096,
    "\0", "\udcff", b"", b"\0" * 8, bytearray(b"abc"), memoryview(b"mv"),
    [], [b"a", 1], {}, (), object(), type, print, ValueError("not me"),
]


def ids(values):
    return [f"{type(v).__name__}:{str(v)[:12]!r}" for v in values]


def tidy(result):
    """Close whatever a call that succeeded made."""
    if isinstance(result, twincore.Future):
        result.cancel()
        result._handled = True
    for name in ("close", "cancel"):
        fn = getattr(result, name, None)
        if callable(fn) and not isinstance(result, (type, twincore.Reactor)):
            try:
                fn()
            except Exception:   # noqa: BLE001 - best effort
                pass
            break


def call_once(fn, *args, **kwargs):
    """fn must return or raise an Exception that is not SystemError."""
    try:
        result = fn(*args, **kwargs)
    except SystemError as exc:
        pytest.fail(f"SystemError from {fn!r}{args}{kwargs}: {exc!r}")
    except Exception:   # noqa: BLE001 - any ordinary exception is fine
        return None
    tidy(result)
    return result


class Echo(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)


class Datagrams(twincore.DatagramProtocol):
    pass


def noop(*args):
    return None


# Each entry: (name, function of (reactor, value) making the call).
CALLS = [
    ("call_soon fn", lambda r, v: r.call_soon(v)),
    ("call_later delay", lambda r, v: r.call_later(v, noop)),
    ("call_later fn", lambda r, v: r.call_later(0.01, v)),
    ("call_from_thread fn", lambda r, v: r.call_from_thread(v)),
    ("listen_tcp port", lambda r, v: r.listen_tcp(v, Echo)),
    ("listen_tcp factory", lambda r, v: r.listen_tcp(0, v)),
    ("listen_tcp host", lambda r, v: r.listen_tcp(0, Echo, host=v)),
    ("listen_tcp backlog", lambda r, v: r.listen_tcp(0, Echo, backlog=v)),
    ("listen_tcp reuse_port",
     lambda r, v: r.listen_tcp(0, Echo, reuse_port=v)),
    ("listen_unix path", lambda r, v: r.listen_unix(v, Echo)),
    ("connect_tcp host", lambda r, v: r.connect_tcp(v, 9, Echo)),
    ("connect_tcp port", lambda r, v: r.connect_tcp("127.0.0.1", v, Echo)),
    ("connect_tcp factory",
     lambda r, v: r.connect_tcp("127.0.0.1", 9, v)),
    ("connect_tcp timeout",
     lambda r, v: r.connect_tcp("127.0.0.1", 9, Echo, timeout=v)),
    ("connect_unix path", lambda r, v: r.connect_unix(v, Echo)),
    ("listen_udp port", lambda r, v: r.listen_udp(v, Datagrams())),
    ("listen_udp protocol", lambda r, v: r.listen_udp(0, v)),
    ("listen_udp host",
     lambda r, v: r.listen_udp(0, Datagrams(), host=v)),
    ("add_signal_handler signum",
     lambda r, v: r.add_signal_handler(v, noop)),
    ("remove_signal_handler signum",
     lambda r, v: r.remove_signal_handler(v)),
    ("defer_to_cpu fn", lambda r, v: r.defer_to_cpu(v)),
    ("defer_to_cpu priority",
     lambda r, v: r.defer_to_cpu(noop, priority=v)),
    ("defer_to_cpu timeout", lambda r, v: r.defer_to_cpu(noop, timeout=v)),
    ("spawn coro", lambda r, v: r.spawn(v)),
    ("CpuPool workers", lambda r, v: twincore.CpuPool(workers=v)),
    ("CpuPool max_queued", lambda r, v: twincore.CpuPool(max_queued=v)),
    ("Future reactor", lambda r, v: twincore.Future(v)),
    ("Future set_exception",
     lambda r, v: twincore.Future(r).set_exception(v)),
    ("Future add_callbacks",
     lambda r, v: twincore.Future(r).add_callbacks(v)),
    ("Future add_done_callback",
     lambda r, v: twincore.Future(r).add_done_callback(v)),
    ("Future cancel msg", lambda r, v: twincore.Future(r).cancel(v)),
    ("gather aw", lambda r, v: twincore.gather(v, reactor=r)),
    ("sleep seconds", lambda r, v: r.spawn(twincore.sleep(v, reactor=r))),
    ("run main", lambda r, v: twincore.run(v, reactor=r)),
    ("Factory protocol", lambda r, v: twincore.Factory(v).build_protocol(
        ("127.0.0.1", 1))),
]


@pytest.mark.callback_errors
@pytest.mark.parametrize("name, call", CALLS, ids=[c[0] for c in CALLS])
def test_reactor_level_calls_with_any_value(reactor, name, call):
    for v in WEIRD:
        call_once(call, reactor, v)
    # The reactor still works afterwards: callbacks queued by the sweep
    # (call_soon(print) and the like) run, and it stops when asked.
    reactor.call_soon(reactor.stop)
    reactor.call_later(5, reactor.stop)
    reactor.run()


def test_timer_handle_methods_with_any_value(reactor):
    t = reactor.call_later(100, noop)
    for v in WEIRD:
        call_once(t.reset, v)
    t.cancel()
    for v in WEIRD:
        call_once(t.reset, v)
        t.cancel()


def test_transport_methods_with_any_value_open_and_closed(reactor):
    listener = reactor.listen_tcp(0, Echo)

    def sweep(t):
        for v in WEIRD:
            call_once(t.write, v)
            call_once(t.writelines, v)
            call_once(t.writelines, [v])
            call_once(t.set_write_buffer_limits, v)
            call_once(t.set_write_buffer_limits, None, v)
            call_once(t.set_write_buffer_limits, high=v, low=v)
            call_once(t.get_extra_info, v)
            call_once(t.get_extra_info, "peername", v)

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           RecordingProtocol)
        t = client.transport
        sweep(t)                    # open
        t.close()
        sweep(t)                    # closing
        await client.done
        sweep(t)                    # closed
        for op in (t.close, t.abort, t.write_eof, t.pause_reading,
                   t.resume_reading, t.get_peer, t.get_host,
                   t.get_write_buffer_size, t.is_reading, t.is_closing):
            call_once(op)
        return client
    client = run_until(reactor, main())
    assert client.events[0] == "made" and client.events[-1] == "lost"
    listener.close()


def test_datagram_transport_methods_with_any_value(reactor):
    t = reactor.listen_udp(0, Datagrams())
    port = t.get_host()[1]
    for v in WEIRD:
        call_once(t.sendto, v, ("127.0.0.1", port))
        call_once(t.sendto, b"x", v)
        call_once(t.sendto, b"x", ("127.0.0.1", v))
        call_once(t.sendto, b"x", (v, port))
        call_once(t.write, v)
    t.close()
    for v in WEIRD:
        call_once(t.sendto, v, ("127.0.0.1", port))
    reactor.call_soon(reactor.stop)
    reactor.run()


# ---- protocols and factories that break their contract ------------------

class NotCallableHooks(twincore.Protocol):
    data_received = 5
    eof_received = "no"
    connection_lost = None


class WrongSignatures(twincore.Protocol):
    def connection_made(self):            # missing the transport
        pass

    def data_received(self, a, b, c):     # too many
        pass


class ReturnsGarbage(twincore.Protocol):
    def eof_received(self):
        return object()                   # truthy: keep open

    def data_received(self, data):
        return 42


@pytest.mark.parametrize("factory", [
    lambda: None, lambda: 42, lambda: object(), lambda: Echo,
    NotCallableHooks, WrongSignatures, ReturnsGarbage,
], ids=["None", "int", "object", "class", "not-callable-hooks",
        "wrong-signatures", "returns-garbage"])
@pytest.mark.callback_errors
def test_broken_server_protocols_do_not_take_the_server_down(reactor,
                                                             factory,
                                                             caplog):
    """A connection whose protocol is broken may be dropped or kept; the
    listener goes on, and the next well-behaved connection is served."""
    bad = reactor.listen_tcp(0, twincore.Factory(factory))
    good = reactor.listen_tcp(0, Echo)

    async def main():
        # Raw sockets, so that nothing on the client side depends on it.
        s = socket.create_connection(("127.0.0.1", bad.port), timeout=5)
        s.setblocking(False)
        try:
            s.sendall(b"hello")
        except OSError:
            pass
        s.shutdown(socket.SHUT_WR)
        await twincore.sleep(0.1, reactor=reactor)
        s.close()
        client = await reactor.connect_tcp("127.0.0.1", good.port,
                                           RecordingProtocol)
        client.transport.write(b"still serving")
        for _ in range(200):
            if bytes(client.data) == b"still serving":
                break
            await twincore.sleep(0.01, reactor=reactor)
        client.transport.close()
        await client.done
        return bytes(client.data)
    assert run_until(reactor, main()) == b"still serving"
    bad.close()
    good.close()


def test_write_copies_the_buffer(reactor):
    """Bytes are taken at write() time: changing the bytearray afterwards,
    even before the flush, changes nothing on the wire."""
    listener = reactor.listen_tcp(0, Echo)

    async def main():
        client = await reactor.connect_tcp("127.0.0.1", listener.port,
                                           RecordingProtocol)
        buf = bytearray(b"original")
        client.transport.write(buf)
        buf[:] = b"CHANGED!" * 1000         # same batch, before the flush
        view = memoryview(bytearray(b"view-data"))
        client.transport.write(view)
        view[:4] = b"XXXX"
        for _ in range(200):
            if len(client.data) >= len(b"originalview-data"):
                break
            await twincore.sleep(0.01, reactor=reactor)
        client.transport.close()
        await client.done
        return bytes(client.data)
    assert run_until(reactor, main()) == b"originalview-data"
    listener.close()
