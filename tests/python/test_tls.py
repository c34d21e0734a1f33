"""TLS: TLSContext, Reactor.listen_tls/connect_tls, and what a protocol sees
over TLS. Certificates are made once per module with the openssl command: a
throw-away CA, a server certificate for localhost and 127.0.0.1, a client
certificate, an expired one, one for another host name, and a server and a
client certificate from an unknown CA.

Interoperates both ways with Python's ssl module (a blocking peer on a
thread) and with `openssl s_client` (spawned, bounded, killed by PID);
where behaviour must match asyncio's TLS transports, the same scenario
runs on asyncio as the oracle."""

import asyncio
import hashlib
import logging
import os
import shutil
import socket
import time
import ssl
import subprocess
import tempfile
import threading
import warnings

import pytest

import twincore
from conftest import RecordingProtocol, run_until

pytestmark = pytest.mark.skipif(not twincore.HAVE_TLS,
                                reason="built without TLS")

MAKE_CERTS = r"""
set -e
cd "$1"
cat > ext.cnf <<'EOF'
[srv]
basicConstraints = CA:FALSE
subjectAltName = DNS:localhost,IP:127.0.0.1
[wrong]
basicConstraints = CA:FALSE
subjectAltName = DNS:wrong.example
[cli]
basicConstraints = CA:FALSE
EOF
ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
  -nodes -keyout "$1.key" -out "$1.pem" -days 30 -subj "$2" \
  -addext "keyUsage = critical, keyCertSign, cRLSign"; }
crt() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout "$1.key" -out "$1.csr" -subj "$2" &&
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" \
  -CAcreateserial -out "$1.pem" -days "$4" -extfile ext.cnf \
  -extensions "$5"; }
ca ca '/CN=twincore test CA'
ca rogue_ca '/CN=rogue CA'
crt server '/O=twincore test/CN=localhost' ca 30 srv
crt client '/CN=twincore client' ca 30 cli
crt expired '/CN=localhost' ca -1 srv
crt wrong '/CN=wrong.example' ca 30 wrong
crt rogue '/CN=localhost' rogue_ca 30 srv
crt rogue_client '/CN=rogue client' rogue_ca 30 cli
"""


class Certs:
    def __init__(self, path):
        self.dir = path

    def __call__(self, name):
        return os.path.join(self.dir, name)

    def pair(self, name):
        return self(name + ".pem"), self(name + ".key")


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="tc_tls_")
    subprocess.run(["sh", "-c", MAKE_CERTS, "make_certs", d], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)
    yield Certs(d)
    shutil.rmtree(d, ignore_errors=True)


def server_context(certs, name="server", **kwargs):
    cert, key = certs.pair(name)
    return twincore.TLSContext(server_side=True, certfile=cert, keyfile=key,
                               **kwargs)


def client_context(certs, **kwargs):
    kwargs.setdefault("cafile", certs("ca.pem"))
    return twincore.TLSContext(**kwargs)


async def wait_for(reactor, predicate, what="condition", timeout=20.0):
    deadline = reactor.time() + timeout
    while not predicate():
        assert reactor.time() < deadline, f"timed out waiting for {what}"
        await twincore.sleep(0.001, reactor=reactor)


class Server(RecordingProtocol):
    instances = None

    def connection_made(self, transport):
        # Over TLS the protocol exists only once the handshake is done.
        self.alpn = transport.get_extra_info("alpn_protocol")
        self.version = transport.get_extra_info("tls_version")
        self.peercert = transport.get_extra_info("peercert")
        super().connection_made(transport)
        type(self).instances.append(self)


def server_class(**methods):
    cls = type("TLSServer", (Server,), dict(methods))
    cls.instances = []
    return cls


def echo(self, data):
    RecordingProtocol.data_received(self, data)
    self.transport.write(data)


def thread_result(fn, *args):
    """Run fn(*args) on a thread; returns (thread, result list)."""
    out = []

    def body():
        try:
            out.append(fn(*args))
        except BaseException as exc:   # noqa: B902 - handed back
            out.append(exc)
    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t, out


# ---- TLSContext -------------------------------------------------------------

def test_context_defaults_and_properties(certs):
    c = twincore.TLSContext()
    assert not c.server_side and c.verify and c.check_hostname
    assert c.minimum_version == "TLSv1.2" and c.maximum_version is None
    assert c.alpn == ()
    s = server_context(certs, alpn=["h2", "http/1.1"],
                       require_client_cert=True, cafile=certs("ca.pem"),
                       minimum_version="TLSv1.3")
    assert s.server_side and s.client_cert == "required"
    assert s.alpn == ("h2", "http/1.1") and s.minimum_version == "TLSv1.3"
    insecure = twincore.TLSContext(verify=False)
    assert not insecure.verify and not insecure.check_hostname
    assert "insecure" in repr(insecure)
    assert twincore.TLSContext(
        minimum_version=ssl.TLSVersion.TLSv1_3).minimum_version == "TLSv1.3"


def test_context_argument_errors(certs):
    with pytest.raises(ValueError, match="certfile"):
        twincore.TLSContext(server_side=True)
    with pytest.raises(FileNotFoundError):
        twincore.TLSContext(server_side=True, certfile=certs("nope.pem"))
    with pytest.raises(ValueError, match="key_file"):
        twincore.TLSContext(server_side=True, certfile=certs("server.pem"),
                            keyfile=certs("client.key"))
    with pytest.raises(ValueError, match="minimum_version"):
        twincore.TLSContext(minimum_version="SSLv3")
    with pytest.raises(ValueError):
        twincore.TLSContext(minimum_version="TLSv1.3",
                            maximum_version="TLSv1.2")
    with pytest.raises(TypeError, match="alpn"):
        twincore.TLSContext(alpn="h2")
    with pytest.raises(ValueError, match="alpn"):
        twincore.TLSContext(alpn=["h2", ""])
    with pytest.raises(ValueError, match="ciphers"):
        twincore.TLSContext(ciphers="NOT-A-CIPHER")
    with pytest.raises(ValueError, match="server_side"):
        twincore.TLSContext(require_client_cert=True)
    with pytest.raises(TypeError):
        twincore.TLSContext(True)   # keyword-only
    with pytest.raises(TypeError, match="certfile"):
        twincore.TLSContext(server_side=True, certfile=3)


def test_listen_and_connect_argument_errors(reactor, certs):
    sctx, cctx = server_context(certs), client_context(certs)
    with pytest.raises(TypeError, match="TLSContext"):
        reactor.listen_tls(0, Server, ssl.create_default_context())
    with pytest.raises(ValueError, match="server"):
        reactor.listen_tls(0, Server, cctx)
    with pytest.raises(ValueError, match="handshake_timeout"):
        reactor.listen_tls(0, Server, sctx, handshake_timeout=0)
    with pytest.raises(ValueError, match="client"):
        reactor.connect_tls("127.0.0.1", 9, Server, sctx)
    with pytest.raises(ValueError, match="port"):
        reactor.connect_tls("127.0.0.1", 0, Server, cctx)
    with pytest.raises(TypeError, match="server_hostname"):
        reactor.connect_tls("127.0.0.1", 9, Server, cctx, server_hostname=1)


LISTEN_TLS_BAD = [
    ({"port": "0"}, TypeError, "'port'"),
    ({"port": True}, TypeError, "'port'"),
    ({"port": 1 << 70}, ValueError, "'port'"),
    ({"handshake_timeout": "1"}, TypeError, "'handshake_timeout'"),
    ({"handshake_timeout": None}, TypeError, "'handshake_timeout'"),
    ({"handshake_timeout": True}, TypeError, "'handshake_timeout'"),
    ({"handshake_timeout": 0}, ValueError, "'handshake_timeout'"),
    ({"handshake_timeout": float("nan")}, ValueError, "'handshake_timeout'"),
]


@pytest.mark.parametrize("change, exc, name", LISTEN_TLS_BAD,
                         ids=[repr(c[0]) for c in LISTEN_TLS_BAD])
def test_listen_tls_arguments_checked_in_c(reactor, certs, change, exc,
                                           name):
    """The C method checks them itself; the Python one passes them on."""
    args = {"port": 0, "handshake_timeout": 5}
    args.update(change)
    port = args.pop("port")
    sctx = server_context(certs)
    with pytest.raises(exc, match=r"listen_tls\(\): " + name):
        twincore._twincore.Reactor.listen_tls(
            reactor, port, twincore.Factory(Server), sctx, **args)
    with pytest.raises(exc, match=r"listen_tls\(\): " + name):
        reactor.listen_tls(port, Server, sctx, **args)


CONNECT_TLS_BAD = [
    ({"host": 5}, TypeError, "'host'"),
    ({"host": "a\0b"}, ValueError, "'host'"),
    ({"port": "9"}, TypeError, "'port'"),
    ({"port": True}, TypeError, "'port'"),
    ({"port": 0}, ValueError, "'port'"),
    ({"timeout": True}, TypeError, "'timeout'"),
    ({"timeout": 0}, ValueError, "'timeout'"),
    ({"server_hostname": 1}, TypeError, "'server_hostname'"),
    ({"server_hostname": "a\0b"}, ValueError, "'server_hostname'"),
]


@pytest.mark.parametrize("change, exc, name", CONNECT_TLS_BAD,
                         ids=[repr(c[0]) for c in CONNECT_TLS_BAD])
def test_connect_tls_arguments_checked_in_c(reactor, certs, change, exc,
                                            name):
    args = {"host": "127.0.0.1", "port": 9}
    args.update(change)
    host, port = args.pop("host"), args.pop("port")
    cctx = client_context(certs)
    with pytest.raises(exc, match=r"connect_tls\(\): " + name):
        reactor._connect_tls(host, port, twincore.Factory(Server),
                             lambda protocol, exc: None, cctx, **args)
    with pytest.raises(exc, match=r"connect_tls\(\): " + name):
        reactor.connect_tls(host, port, Server, cctx, **args)


def test_listen_tls_infinite_handshake_timeout(reactor, certs):
    """inf (or more than 1e9 s) is no handshake timeout, as for connect
    timeouts; it was refused with "must be > 0"."""
    for forever in (float("inf"), 1 << 1100):
        listener = reactor.listen_tls(0, Server, server_context(certs),
                                      handshake_timeout=forever)
        listener.close()


# ---- twincore to twincore ---------------------------------------------------

@pytest.mark.parametrize("chunk", [1, 7, 4096, 1 << 20])
def test_echo_in_chunks(reactor, certs, chunk):
    cls = server_class(data_received=echo)
    listener = reactor.listen_tls(
        0, cls, server_context(certs, alpn=["x-test", "http/1.1"]))
    payload = os.urandom(64 * 1024 if chunk < 4096 else 3 << 20)
    if chunk == 1:
        payload = payload[:2000]

    async def main():
        client = await reactor.connect_tls(
            "localhost", listener.port, RecordingProtocol,
            client_context(certs, alpn=["http/1.1", "x-test"]), timeout=10)
        t = client.transport
        assert t.get_extra_info("alpn_protocol") == "x-test"
        assert t.get_extra_info("tls_version") == "TLSv1.3"
        cert = t.get_extra_info("peercert")
        assert (("commonName", "localhost"),) in cert["subject"]
        assert ("DNS", "localhost") in cert["subjectAltName"]
        assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
        assert t.get_extra_info("peercert_der")[:1] == b"\x30"
        assert t.get_extra_info("cipher")
        assert t.get_extra_info("no such thing", 42) == 42
        for i in range(0, len(payload), chunk):
            t.write(payload[i:i + chunk])
        await wait_for(reactor, lambda: len(client.data) >= len(payload),
                       "the echo")
        t.close()
        await client.done
        return client

    client = run_until(reactor, main(), timeout=60)
    assert bytes(client.data) == payload
    assert client.events == ["made", "data", "lost"]
    assert client.lost is None
    server = cls.instances[0]
    assert server.alpn == "x-test" and server.version == "TLSv1.3"
    assert server.peercert is None   # no client certificate asked for
    run_until(reactor, server.done)
    # The client's close_notify is a clean EOF for the server.
    assert server.events == ["made", "data", "eof", "lost"]
    assert server.lost is None
    listener.close()


def test_half_close_and_write_eof(reactor, certs):
    def eof_received(self):
        RecordingProtocol.eof_received(self)
        self.transport.write(b"after your eof")
        self.transport.close()
        return True
    cls = server_class(eof_received=eof_received)
    listener = reactor.listen_tls(0, cls, server_context(certs))

    async def main():
        client = await reactor.connect_tls(
            "127.0.0.1", listener.port, RecordingProtocol,
            client_context(certs))
        client.transport.write(b"question")
        client.transport.write_eof()
        with pytest.raises(BrokenPipeError):
            client.transport.write(b"more")
        await client.done
        return client

    client = run_until(reactor, main())
    assert bytes(client.data) == b"after your eof"
    assert client.events == ["made", "data", "eof", "lost"]
    assert client.lost is None
    assert bytes(cls.instances[0].data) == b"question"
    listener.close()


class Producer(RecordingProtocol):
    def __init__(self, total):
        super().__init__()
        self.total = total
        self.sent = 0
        self.digest = hashlib.sha256()
        self.paused = False
        self.flow = []

    def connection_made(self, transport):
        super().connection_made(transport)
        transport.set_write_buffer_limits(high=64 * 1024, low=16 * 1024)
        self.produce()

    def produce(self):
        while not self.paused and self.sent < self.total:
            block = os.urandom(min(65536, self.total - self.sent))
            self.digest.update(block)
            self.sent += len(block)
            self.transport.write(block)
        if self.sent >= self.total and not self.paused:
            self.transport.close()

    def pause_writing(self):
        assert not self.paused
        self.paused = True
        assert self.transport.get_write_buffer_size() > 64 * 1024
        self.flow.append("pause")

    def resume_writing(self):
        assert self.paused
        self.paused = False
        assert self.transport.get_write_buffer_size() <= 16 * 1024
        self.flow.append("resume")
        self.transport.reactor.call_soon(self.produce)


def test_transfer_under_backpressure_with_a_pausing_reader(reactor, certs):
    total = 16 << 20
    cls = server_class()
    listener = reactor.listen_tls(0, lambda: Producer(total),
                                  server_context(certs))

    class SlowReader(RecordingProtocol):
        def __init__(self):
            super().__init__()
            self.digest = hashlib.sha256()
            self.count = 0
            self.pauses = 0

        def data_received(self, data):
            super().data_received(data)
            del self.data[:]
            self.digest.update(data)
            self.count += len(data)
            if self.count // (1 << 20) > self.pauses:
                self.pauses += 1
                self.transport.pause_reading()
                assert not self.transport.is_reading()
                self.transport.reactor.call_later(
                    0.002, self.transport.resume_reading)

    producers = []
    orig = Producer.connection_made

    def track(self, transport):
        producers.append(self)
        orig(self, transport)

    async def main():
        Producer.connection_made = track
        try:
            client = await reactor.connect_tls(
                "127.0.0.1", listener.port, SlowReader,
                client_context(certs))
            await client.done
        finally:
            Producer.connection_made = orig
        return client

    client = run_until(reactor, main(), timeout=120)
    producer = producers[0]
    assert client.count == total
    assert client.digest.digest() == producer.digest.digest()
    assert client.events == ["made", "data", "eof", "lost"]
    assert client.lost is None and client.pauses >= 10
    assert producer.flow and producer.flow.count("pause") == \
        producer.flow.count("resume")
    assert cls.instances == []
    listener.close()


# ---- failures by name -------------------------------------------------------

@pytest.mark.parametrize("case", [
    ("expired", "localhost", {}, {}, twincore.ETLS_EXPIRED),
    ("rogue", "localhost", {}, {}, twincore.ETLS_UNKNOWN_CA),
    ("wrong", "localhost", {}, {}, twincore.ETLS_HOSTNAME),
    ("wrong", None, {}, {}, twincore.ETLS_HOSTNAME),
    ("server", "localhost", {"minimum_version": "TLSv1.3"},
     {"maximum_version": "TLSv1.2"}, twincore.ETLS_VERSION),
], ids=["expired", "unknown-ca", "hostname", "ip-address", "version"])
def test_handshake_failure_names_its_cause(reactor, certs, caplog, case):
    name, hostname, skw, ckw, code = case
    cls = server_class(data_received=echo)
    listener = reactor.listen_tls(0, cls, server_context(certs, name, **skw))

    async def main():
        with pytest.raises(twincore.Error) as info:
            await reactor.connect_tls("127.0.0.1", listener.port,
                                      RecordingProtocol,
                                      client_context(certs, **ckw),
                                      server_hostname=hostname)
        # The listener goes on serving.
        ok = await reactor.connect_tls(
            "127.0.0.1", listener.port, RecordingProtocol,
            twincore.TLSContext(verify=False))
        ok.transport.write(b"ping")
        await wait_for(reactor, lambda: ok.data == b"ping", "the echo")
        ok.transport.close()
        await ok.done
        return info.value

    with caplog.at_level(logging.WARNING, logger="twincore"):
        exc = run_until(reactor, main())
        assert exc.errno == code, exc
        assert twincore._twincore.strerror(code) in str(exc)
        assert any("TLS handshake" in r.getMessage()
                   for r in caplog.records)
    assert len(cls.instances) == 1   # only the good client got a protocol
    listener.close()


def test_connect_timeout_covers_the_handshake(reactor, certs):
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(4)   # accepts in the kernel, never speaks

    async def main():
        with pytest.raises(TimeoutError):
            await reactor.connect_tls("127.0.0.1", mute.getsockname()[1],
                                      RecordingProtocol,
                                      client_context(certs), timeout=0.1)

    try:
        run_until(reactor, main())
    finally:
        mute.close()


def test_connect_timeout_counts_from_the_call(reactor, certs):
    """A connect begun at the end of a long callback gets its whole
    timeout (issue 11.2's rule for every timer): it used to count from
    the iteration's start and expire at once."""
    mute = socket.socket()
    mute.bind(("127.0.0.1", 0))
    mute.listen(4)
    port = mute.getsockname()[1]

    async def main():
        elapsed = []
        for _ in range(3):
            deadline = time.monotonic() + 0.15
            while time.monotonic() < deadline:   # a long callback
                pass
            t0 = time.monotonic()
            with pytest.raises(TimeoutError):
                await reactor.connect_tls("127.0.0.1", port,
                                          RecordingProtocol,
                                          client_context(certs),
                                          timeout=0.05)
            elapsed.append(time.monotonic() - t0)
        assert min(elapsed) >= 0.05, elapsed

    try:
        run_until(reactor, main())
    finally:
        mute.close()


def test_server_handshake_timeout(reactor, certs, caplog):
    listener = reactor.listen_tls(0, server_class(), server_context(certs),
                                  handshake_timeout=0.05)
    s = socket.create_connection(("127.0.0.1", listener.port))

    async def main():
        await twincore.sleep(0.3, reactor=reactor)

    with caplog.at_level(logging.WARNING, logger="twincore"):
        run_until(reactor, main())
    s.settimeout(5)
    assert s.recv(100) == b""   # closed by the server
    s.close()
    assert any("timed out" in r.getMessage() for r in caplog.records)
    listener.close()


# ---- mutual TLS -------------------------------------------------------------

def test_mutual_tls(reactor, certs):
    cls = server_class(data_received=echo)
    listener = reactor.listen_tls(
        0, cls, server_context(certs, cafile=certs("ca.pem"),
                               require_client_cert=True))

    async def main():
        cert, key = certs.pair("client")
        good = await reactor.connect_tls(
            "localhost", listener.port, RecordingProtocol,
            client_context(certs, certfile=cert, keyfile=key))
        good.transport.write(b"me")
        await wait_for(reactor, lambda: good.data == b"me", "the echo")
        good.transport.close()
        # Without a certificate (TLS 1.3: the client's side of the
        # handshake is over before the server judges it).
        failures = []
        for kw in ({}, dict(zip(("certfile", "keyfile"),
                                certs.pair("rogue_client")))):
            try:
                bad = await reactor.connect_tls(
                    "localhost", listener.port, RecordingProtocol,
                    client_context(certs, **kw))
            except twincore.Error as exc:
                failures.append(exc.errno)
                continue
            await bad.done
            assert bad.data == b""
            failures.append(bad.lost.errno)
        return failures

    failures = run_until(reactor, main())
    assert failures == [twincore.ETLS_CERT, twincore.ETLS_UNKNOWN_CA]
    assert len(cls.instances) == 1
    peer = cls.instances[0].peercert
    assert (("commonName", "twincore client"),) in peer["subject"]
    listener.close()


# ---- hostile clients --------------------------------------------------------

@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    b"\x16\x03\x01\x00\x40" + bytes(range(64)) * 8,
    b"",
], ids=["plaintext-http", "garbage", "silent"])
def test_non_tls_clients_are_closed_and_the_listener_goes_on(reactor, certs,
                                                            garbage):
    cls = server_class(data_received=echo)
    listener = reactor.listen_tls(0, cls, server_context(certs))

    def raw_client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            if garbage:
                s.sendall(garbage)
            else:
                s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                try:
                    chunk = s.recv(4096)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                got += chunk
            return got

    async def main():
        t, out = thread_result(raw_client, listener.port)
        await wait_for(reactor, lambda: out, "the raw client")
        t.join(5)
        ok = await reactor.connect_tls("127.0.0.1", listener.port,
                                       RecordingProtocol,
                                       client_context(certs))
        ok.transport.write(b"still serving")
        await wait_for(reactor, lambda: ok.data == b"still serving", "echo")
        ok.transport.close()
        await ok.done
        return out[0]

    reply = run_until(reactor, main())
    assert not isinstance(reply, BaseException), reply
    assert b"HTTP" not in reply   # at most an alert, never an answer
    assert len(cls.instances) == 1
    listener.close()


# ---- endings ----------------------------------------------------------------

def test_close_notify_is_eof_and_a_vanishing_peer_is_named(reactor, certs):
    cls = server_class()
    listener = reactor.listen_tls(0, cls, server_context(certs))
    ctx = ssl.create_default_context(cafile=certs("ca.pem"))

    def python_client(port, say_goodbye):
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        s.sendall(b"hello")
        if say_goodbye:
            s.unwrap().close()   # close_notify, then close
        else:
            # FIN without close_notify (SSLSocket.shutdown drops TLS).  A
            # plain close() here would reset: the server's session tickets
            # sit unread in this socket.
            s.shutdown(socket.SHUT_WR)
            s.settimeout(5)
            while s.recv(4096):   # plain recv once TLS is dropped
                pass
            s.close()
        return True

    async def main():
        for goodbye in (True, False):
            t, out = thread_result(python_client, listener.port, goodbye)
            await wait_for(reactor, lambda: out, "the ssl client")
            t.join(5)
            assert out == [True], out
        await wait_for(reactor, lambda: len(cls.instances) == 2 and all(
            p.done.done() for p in cls.instances), "both servers")

    run_until(reactor, main())
    clean, vanished = cls.instances
    assert clean.events == ["made", "data", "eof", "lost"]
    assert clean.lost is None and bytes(clean.data) == b"hello"
    assert vanished.events == ["made", "data", "lost"]
    assert isinstance(vanished.lost, twincore.Error)
    assert vanished.lost.errno == twincore.ETLS_NO_CLOSE_NOTIFY
    listener.close()


def test_abort_is_a_reset_for_the_peer(reactor, certs):
    def data_received(self, data):
        RecordingProtocol.data_received(self, data)
        self.transport.abort()
    cls = server_class(data_received=data_received)
    listener = reactor.listen_tls(0, cls, server_context(certs))

    async def main():
        client = await reactor.connect_tls("127.0.0.1", listener.port,
                                           RecordingProtocol,
                                           client_context(certs))
        client.transport.write(b"x")
        await client.done
        return client

    client = run_until(reactor, main())
    assert isinstance(client.lost, ConnectionResetError)
    listener.close()


# ---- interop ----------------------------------------------------------------

def test_python_ssl_client_with_alpn_and_client_cert(reactor, certs):
    cls = server_class(data_received=echo)
    listener = reactor.listen_tls(
        0, cls, server_context(certs, alpn=["h2", "http/1.1"],
                               cafile=certs("ca.pem"),
                               request_client_cert=True))
    ctx = ssl.create_default_context(cafile=certs("ca.pem"))
    ctx.load_cert_chain(*certs.pair("client"))
    ctx.set_alpn_protocols(["http/1.1"])

    def python_client(port):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(b"x" * 100000)
                got = b""
                while len(got) < 100000:
                    got += s.recv(65536)
                info = (s.version(), s.selected_alpn_protocol(),
                        s.getpeercert()["subject"], len(got))
                s.unwrap()
                return info

    async def main():
        t, out = thread_result(python_client, listener.port)
        await wait_for(reactor, lambda: out, "the ssl client")
        t.join(5)
        return out[0]

    info = run_until(reactor, main())
    assert not isinstance(info, BaseException), info
    assert info == ("TLSv1.3", "http/1.1",
                    ((("organizationName", "twincore test"),),
                     (("commonName", "localhost"),)), 100000)
    server = cls.instances[0]
    assert server.alpn == "http/1.1"
    assert (("commonName", "twincore client"),) in \
        server.peercert["subject"]
    listener.close()


def test_twincore_client_to_python_ssl_server(reactor, certs):
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(*certs.pair("server"))
    sctx.set_alpn_protocols(["x-twincore"])
    sctx.maximum_version = ssl.TLSVersion.TLSv1_2
    lsock = socket.create_server(("127.0.0.1", 0))
    lsock.settimeout(10)

    def python_server():
        conn, _ = lsock.accept()
        with sctx.wrap_socket(conn, server_side=True) as s:
            data = s.recv(100)
            s.sendall(data.upper())
            s.unwrap()   # close_notify; ours comes back
            return data

    async def main():
        t, out = thread_result(python_server)
        client = await reactor.connect_tls(
            "127.0.0.1", lsock.getsockname()[1],
            lambda: RecordingProtocol(keep_open_on_eof=False),
            client_context(certs, alpn=["x-twincore"]),
            server_hostname="localhost", timeout=10)
        t_ = client.transport
        assert t_.get_extra_info("tls_version") == "TLSv1.2"
        assert t_.get_extra_info("alpn_protocol") == "x-twincore"
        t_.write(b"shout")
        await client.done
        await wait_for(reactor, lambda: out, "the ssl server")
        t.join(5)
        return client, out[0]

    try:
        client, got = run_until(reactor, main())
    finally:
        lsock.close()
    assert got == b"shout"
    assert bytes(client.data) == b"SHOUT"
    assert client.events == ["made", "data", "eof", "lost"]
    assert client.lost is None


def test_openssl_s_client(reactor, certs):
    cls = server_class(data_received=echo)
    listener = reactor.listen_tls(0, cls, server_context(certs))
    proc = subprocess.Popen(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{listener.port}",
         "-servername", "localhost", "-verify_hostname", "localhost",
         "-CAfile", certs("ca.pem"), "-verify_return_error", "-ign_eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT)
    try:
        proc.stdin.write(b"ping from s_client\n")
        proc.stdin.flush()

        async def main():
            await wait_for(reactor, lambda: cls.instances and
                           cls.instances[0].data == b"ping from s_client\n",
                           "s_client's line")
            await twincore.sleep(0.05, reactor=reactor)
            cls.instances[0].transport.close()   # close_notify ends it
            await cls.instances[0].done

        run_until(reactor, main())
        out, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = out.decode(errors="replace")
    assert text.count("ping from s_client") >= 1, text
    assert "Verify return code: 0 (ok)" in text, text
    listener.close()


# ---- from_ssl_context -------------------------------------------------------

def test_from_ssl_context(reactor, certs):
    sslctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    with pytest.raises(ValueError, match="certfile"):
        twincore.TLSContext.from_ssl_context(sslctx)
    cert, key = certs.pair("server")
    sctx = twincore.TLSContext.from_ssl_context(sslctx, certfile=cert,
                                                keyfile=key)
    assert sctx.server_side and sctx.client_cert == "none"
    cctx = twincore.TLSContext.from_ssl_context(
        ssl.create_default_context(cafile=certs("ca.pem")))
    assert not cctx.server_side and cctx.verify and cctx.check_hostname
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        generic = ssl.SSLContext(ssl.PROTOCOL_TLS)
    with pytest.raises(ValueError, match="server_side"):
        twincore.TLSContext.from_ssl_context(generic)
    odd = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    odd.check_hostname = False
    odd.verify_mode = ssl.CERT_OPTIONAL
    with pytest.raises(ValueError, match="CERT_OPTIONAL"):
        twincore.TLSContext.from_ssl_context(odd)
    # The system store: our CA is not in it.
    system = twincore.TLSContext.from_ssl_context(
        ssl.create_default_context())
    cls = server_class(data_received=echo)
    listener = reactor.listen_tls(0, cls, sctx)

    async def main():
        ok = await reactor.connect_tls("localhost", listener.port,
                                       RecordingProtocol, cctx)
        ok.transport.write(b"mapped")
        await wait_for(reactor, lambda: ok.data == b"mapped", "the echo")
        ok.transport.close()
        with pytest.raises(twincore.Error) as info:
            await reactor.connect_tls("localhost", listener.port,
                                      RecordingProtocol, system)
        return info.value

    exc = run_until(reactor, main())
    assert exc.errno == twincore.ETLS_UNKNOWN_CA
    listener.close()


# ---- asyncio as the oracle --------------------------------------------------

class Recorder(asyncio.Protocol):
    """The same events as RecordingProtocol, for asyncio."""

    def __init__(self, done):
        self.events, self.data, self.lost, self.done = [], b"", None, done

    def connection_made(self, transport):
        self.events.append("made")
        self.transport = transport

    def data_received(self, data):
        if self.events[-1] != "data":
            self.events.append("data")
        self.data += data

    def eof_received(self):
        self.events.append("eof")

    def connection_lost(self, exc):
        self.events.append("lost")
        self.lost = exc
        self.done.set_result(None)


def test_graceful_close_matches_asyncio(reactor, certs):
    """A server that writes and closes: the client sees made, data, eof,
    lost(None) on asyncio and on twincore alike."""
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(*certs.pair("server"))
    cctx = ssl.create_default_context(cafile=certs("ca.pem"))

    class Goodbye(asyncio.Protocol):
        def connection_made(self, transport):
            transport.write(b"bye")
            transport.close()

    recorded = []

    async def oracle_events():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(Goodbye, "127.0.0.1", 0, ssl=sctx)
        port = server.sockets[0].getsockname()[1]
        done = loop.create_future()
        rec = Recorder(done)
        await loop.create_connection(lambda: rec, "127.0.0.1", port,
                                     ssl=cctx, server_hostname="localhost")
        await asyncio.wait_for(done, 10)
        server.close()
        recorded.append((rec.events, rec.data, rec.lost))

    asyncio.run(oracle_events())

    def made(self, transport):
        transport.write(b"bye")
        transport.close()
    cls = server_class(connection_made=lambda self, t: (
        Server.connection_made(self, t), made(self, t)))
    listener = reactor.listen_tls(0, cls, server_context(certs))

    async def main():
        client = await reactor.connect_tls("127.0.0.1", listener.port,
                                           RecordingProtocol,
                                           client_context(certs),
                                           server_hostname="localhost")
        await client.done
        return client

    client = run_until(reactor, main())
    assert (client.events, bytes(client.data), client.lost) == recorded[0]
    listener.close()


def test_connect_tls_after_the_cpu_pool_closed(reactor, certs):
    """The loop resolves host names on the reactor's pool; once that pool
    is closed (its native pool freed), a connect by name is a clear error,
    never a lookup on freed memory (ASan run), and a numeric host works."""
    listener = reactor.listen_tls(0, server_class(data_received=echo),
                                  server_context(certs))
    own = twincore.CpuPool(workers=1)
    reactor.cpu_pool = own
    own.close()
    with pytest.raises(RuntimeError, match="cpu_pool, which is closed"):
        reactor.connect_tls("localhost", listener.port, twincore.Protocol,
                            client_context(certs),
                            server_hostname="localhost")

    async def main():
        proto = await reactor.connect_tls(
            "127.0.0.1", listener.port, twincore.Protocol,
            client_context(certs), server_hostname="localhost")
        proto.transport.close()
    run_until(reactor, main())
    listener.close()
    reactor.cpu_pool = twincore.CpuPool(workers=1)
