"""Transport.sendfile: file ranges go out in the order of the writes around
them (TCP, Unix, and TLS, where the file is read and encoded), the Future
gives the bytes sent, the file position ends after the range, bad
arguments raise, and a range cut short by an abort fails its Future."""
import hashlib
import os
import shutil
import subprocess
import tempfile

import pytest

import twincore
from conftest import STREAM_KINDS, listen, run_until

MiB = 1024 * 1024


class Sink(twincore.Protocol):
    """Hashes what arrives; done on connection_lost."""

    def __init__(self):
        self.hash = hashlib.sha256()
        self.received = 0
        self.done = twincore.Future()

    def data_received(self, data):
        self.hash.update(data)
        self.received += len(data)

    def connection_lost(self, reason):
        self.done.set_result(reason)


@pytest.fixture
def big_file(tmp_path):
    path = tmp_path / "data.bin"
    with open(path, "wb") as f:
        for _ in range(16):
            f.write(os.urandom(4 * MiB))
    with open(path, "rb") as f:
        yield f, path.read_bytes()


def interleaved(reactor, connect, server_protocols, f, data):
    """Client: a write, a range, a write, the rest of the file, a write,
    close.  Returns (server protocol, the Futures, expected bytes)."""
    mid = 10 * MiB + 17
    futs = []

    class Client(twincore.Protocol):
        def connection_made(self, transport):
            transport.write(b"A" * 1000)
            futs.append(transport.sendfile(f, 0, mid))
            transport.write(b"B" * 3000)
            futs.append(transport.sendfile(f, mid))
            transport.write(b"C")
            transport.close()
    run_until(reactor, connect(twincore.Factory(Client)))

    async def wait():
        for fut in futs:
            await fut
        while not server_protocols or not server_protocols[0].done.done():
            await twincore.sleep(0.01, reactor=reactor)
    run_until(reactor, reactor.spawn(wait()), timeout=120)
    want = b"A" * 1000 + data[:mid] + b"B" * 3000 + data[mid:] + b"C"
    return server_protocols[0], futs, want, mid


@pytest.mark.parametrize("kind", STREAM_KINDS)
def test_sendfile_in_order(reactor, kind, sock_dir, big_file):
    f, data = big_file
    servers = []

    def build():
        p = Sink()
        servers.append(p)
        return p
    listener, connect = listen(reactor, kind, twincore.Factory(build),
                               sock_dir)
    server, futs, want, mid = interleaved(reactor, connect, servers, f,
                                          data)
    listener.close()
    assert server.received == len(want)
    assert server.hash.hexdigest() == hashlib.sha256(want).hexdigest()
    assert futs[0].result() == mid
    assert futs[1].result() == len(data) - mid
    assert f.tell() == len(data)   # as asyncio: after the range
    assert server.done.result() is None


MAKE_CERT = r"""
set -e
cd "$1"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout key.pem -out cert.pem -days 2 -subj /CN=localhost \
  -addext subjectAltName=DNS:localhost,IP:127.0.0.1
"""


@pytest.fixture(scope="module")
def cert_dir():
    d = tempfile.mkdtemp(prefix="tc_sf_")
    subprocess.run(["sh", "-c", MAKE_CERT, "make_cert", d], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.skipif(not twincore.HAVE_TLS, reason="built without TLS")
def test_sendfile_over_tls_reads_and_encodes(reactor, cert_dir, big_file):
    f, data = big_file
    sctx = twincore.TLSContext(server_side=True,
                               certfile=os.path.join(cert_dir, "cert.pem"),
                               keyfile=os.path.join(cert_dir, "key.pem"))
    cctx = twincore.TLSContext(cafile=os.path.join(cert_dir, "cert.pem"))
    servers = []

    def build():
        p = Sink()
        servers.append(p)
        return p
    listener = reactor.listen_tls(0, twincore.Factory(build), sctx)

    def connect(factory):
        return reactor.connect_tls("127.0.0.1", listener.port, factory, cctx,
                                   server_hostname="localhost")
    server, futs, want, mid = interleaved(reactor, connect, servers, f,
                                          data)
    listener.close()
    assert server.received == len(want)
    assert server.hash.hexdigest() == hashlib.sha256(want).hexdigest()
    assert [fut.result() for fut in futs] == [mid, len(data) - mid]


def test_sendfile_bad_arguments(reactor, sock_dir, tmp_path):
    path = tmp_path / "small"
    path.write_bytes(b"0123456789")
    servers = []

    def build():
        p = Sink()
        servers.append(p)
        return p
    listener, connect = listen(reactor, "unix", twincore.Factory(build),
                               sock_dir)
    proto = run_until(reactor, connect(twincore.Factory(twincore.Protocol)))
    t = proto.transport
    r, w = os.pipe()
    try:
        with open(path, "rb") as f:
            with pytest.raises(ValueError, match="regular file"):
                t.sendfile(r)
            with pytest.raises(ValueError, match="offset"):
                t.sendfile(f, -1)
            with pytest.raises(ValueError, match="count"):
                t.sendfile(f, 0, 0)
            with pytest.raises(TypeError):
                t.sendfile("not a file")
            with pytest.raises(ValueError):   # a closed file: no fileno
                closed = open(path, "rb")
                closed.close()
                t.sendfile(closed)
            # A count past the end sends what there is; an int fd works.
            fut = t.sendfile(f.fileno(), 4, 100)
            assert run_until(reactor, fut) == 6
            t.close()
            with pytest.raises(BrokenPipeError):
                t.sendfile(f)
    finally:
        os.close(r)
        os.close(w)

    async def wait():
        while not servers or not servers[0].done.done():
            await twincore.sleep(0.01, reactor=reactor)
    run_until(reactor, reactor.spawn(wait()))
    assert servers[0].received == 6
    listener.close()


def test_sendfile_cut_short_by_abort(reactor, sock_dir, big_file):
    f, data = big_file
    servers = []

    class Stalled(Sink):
        def connection_made(self, transport):
            self.transport = transport
            transport.pause_reading()   # nobody reads: the range waits
            servers.append(self)
    listener, connect = listen(reactor, "unix", twincore.Factory(Stalled),
                               sock_dir)
    proto = run_until(reactor, connect(twincore.Factory(twincore.Protocol)))
    fut = proto.transport.sendfile(f)

    async def abort_later():
        await twincore.sleep(0.05, reactor=reactor)
        assert not fut.done()
        proto.transport.abort()
        try:
            await fut
        except OSError as exc:
            return exc
    exc = run_until(reactor, reactor.spawn(abort_later()))
    assert isinstance(exc, OSError)
    assert f.tell() < len(data)
    listener.close()
    for s in servers:
        s.transport.abort()


def test_small_range_sent_at_once_settles_without_other_events(reactor,
                                                               sock_dir,
                                                               tmp_path):
    """A range the socket takes inside the call is reported from the loop;
    nothing else happens on the loop (the peer does not read), so the
    report itself must keep the next poll from blocking."""
    path = tmp_path / "small"
    path.write_bytes(b"0123456789")

    class Idle(Sink):
        def connection_made(self, transport):
            self.transport = transport
            transport.pause_reading()
    listener, connect = listen(reactor, "unix", twincore.Factory(Idle),
                               sock_dir)
    proto = run_until(reactor, connect(twincore.Factory(twincore.Protocol)))
    with open(path, "rb") as f:
        fut = proto.transport.sendfile(f)
        assert run_until(reactor, fut, timeout=5) == 10
        assert f.tell() == 10
    proto.transport.abort()
    listener.close()
