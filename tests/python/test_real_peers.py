"""Real peers: programs nobody here wrote (curl, openssl s_client and
s_server, socat) against twincore's listeners, streams and connect_tls,
on loopback.

Each peer runs on a thread (a shell loop of many connections, or one
command) bounded in time, and its process group is killed by PID past
that.  Meanwhile the reactor serves with no timer of its own that would
wake it: issue 11's stall (a TLS 1.3 request that came with the client's
Finished sat decoded inside the stream until some other epoll event) shows
as a connection left unanswered, not as a slow one."""

import os
import selectors
import shutil
import signal
import socket
import subprocess
import tempfile
import threading

import pytest

import twincore
from conftest import RecordingProtocol, run_until

needs_tls = pytest.mark.skipif(not twincore.HAVE_TLS,
                               reason="built without TLS")

MAKE_CERTS = r"""
set -e
cd "$1"
cat > ext.cnf <<'EOF'
[srv]
basicConstraints = CA:FALSE
subjectAltName = DNS:localhost,IP:127.0.0.1
EOF
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout ca.key -out ca.pem -days 30 -subj '/CN=twincore real-peer CA'
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -keyout server.key -out server.csr -subj '/CN=localhost'
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
  -out server.pem -days 30 -extfile ext.cnf -extensions srv
"""

CONNECTIONS = 200

# One curl makes the connections one after another (the URL counts them;
# a new connection and a full handshake each, as the answers close and
# session ids are not kept) and stops at the first failure; the answers
# come out in order.
CURL = ["curl", "-sS", "--no-sessionid", "--fail-early", "--max-time", "10"]

# s_client makes one connection a process: a shell loop runs them one
# after another and stops at the first not answered with its own path.
S_CLIENT_LOOP = r"""
i=0
while [ "$i" -lt "$N" ]; do
  i=$((i + 1))
  printf 'GET /n%d HTTP/1.0\r\n\r\n' "$i" > "$REQ"
  out=$(timeout 10 openssl s_client -quiet -connect "127.0.0.1:$PORT" \
          -servername localhost -verify_hostname localhost -CAfile "$CA" \
          -verify_return_error $VERSION < "$REQ" 2> "$ERR")
  case "$out" in
    *"
hello /n$i") ;;
    *) echo "connection $i: answered '$out'"; cat "$ERR"; exit 1 ;;
  esac
done
echo "answered $i"
"""


@pytest.fixture(scope="module")
def certs():
    d = tempfile.mkdtemp(prefix="tc_peers_")
    subprocess.run(["sh", "-c", MAKE_CERTS, "make_certs", d], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=60)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def run_peer(reactor, argv, timeout, env=None):
    """Run argv to its end on a thread while the reactor runs; returns
    (exit status, output).  Its process group is killed past timeout; the
    reactor wakes only when it is over."""
    done = twincore.Future()
    # The peers are not under test: in the ASan run (scripts/dev.sh) the
    # preloaded libasan would be theirs too, and curl hangs under it.
    env = dict(os.environ if env is None else env)
    env.pop("LD_PRELOAD", None)

    def body():
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
            out += b"\n(killed after %d s)" % timeout
        result = (proc.returncode, out.decode(errors="replace"))
        reactor.call_from_thread(done.set_result, result)

    thread = threading.Thread(target=body)
    thread.start()
    try:
        return run_until(reactor, done, timeout=timeout + 15)
    finally:
        thread.join(timeout + 15)


class Responder(twincore.Protocol):
    """Answers one HTTP/1.0 request with 'hello <path>' and closes, as a
    minimal web server does."""

    answered = None     # paths, per factory class
    versions = None
    resume_late = False

    def connection_made(self, transport):
        self.transport = transport
        self.buf = b""
        type(self).versions.add(transport.get_extra_info("tls_version"))
        if self.resume_late:
            # Reading resumes from a later callback, over whatever came
            # with the handshake's end.
            transport.pause_reading()
            self.reactor.call_soon(transport.resume_reading)

    def data_received(self, data):
        self.buf += data
        if b"\r\n\r\n" not in self.buf:
            return
        path = self.buf.split(b" ", 2)[1]
        body = b"hello " + path + b"\n"
        self.transport.write(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n"
                             b"Connection: close\r\n\r\n%s"
                             % (len(body), body))
        self.transport.close()
        type(self).answered.append(path.decode())


def responder(reactor, resume_late=False):
    cls = type("Responder", (Responder,),
               {"answered": [], "versions": set(), "reactor": reactor,
                "resume_late": resume_late})
    return cls


def check_answers(cls, versions):
    assert cls.answered == [f"/n{i + 1}" for i in range(CONNECTIONS)]
    assert cls.versions == versions


def check_curl(cls, status, out, versions):
    want = "".join(f"hello /n{i + 1}\n" for i in range(CONNECTIONS))
    assert status == 0 and out == want, out[-2000:]
    check_answers(cls, versions)


TLS_VERSIONS = {
    "1.2": ("TLSv1.2", ["--tlsv1.2", "--tls-max", "1.2"], "-tls1_2"),
    "1.3": ("TLSv1.3", ["--tlsv1.3"], "-tls1_3"),
}


def server_context(certs):
    return twincore.TLSContext(server_side=True,
                               certfile=os.path.join(certs, "server.pem"),
                               keyfile=os.path.join(certs, "server.key"))


@needs_tls
@pytest.mark.parametrize("version", sorted(TLS_VERSIONS))
def test_curl_https_many_connections(reactor, certs, version):
    name, curl_opts, _ = TLS_VERSIONS[version]
    cls = responder(reactor)
    listener = reactor.listen_tls(0, cls, server_context(certs),
                                  host="127.0.0.1")
    status, out = run_peer(reactor, CURL + [
        "--cacert", f"{certs}/ca.pem", *curl_opts,
        f"https://localhost:{listener.port}/n[1-{CONNECTIONS}]"], 60)
    listener.close()
    check_curl(cls, status, out, {name})


@needs_tls
def test_curl_https_resume_reading_late(reactor, certs):
    """A responder that pauses reading in connection_made and resumes from
    a later callback still answers every TLS 1.3 request."""
    name, curl_opts, _ = TLS_VERSIONS["1.3"]
    cls = responder(reactor, resume_late=True)
    listener = reactor.listen_tls(0, cls, server_context(certs),
                                  host="127.0.0.1")
    status, out = run_peer(reactor, CURL + [
        "--cacert", f"{certs}/ca.pem", *curl_opts,
        f"https://localhost:{listener.port}/n[1-{CONNECTIONS}]"], 60)
    listener.close()
    check_curl(cls, status, out, {name})


@needs_tls
@pytest.mark.parametrize("version", sorted(TLS_VERSIONS))
def test_openssl_s_client_many_connections(reactor, certs, version):
    name, _, s_client_opt = TLS_VERSIONS[version]
    cls = responder(reactor)
    listener = reactor.listen_tls(0, cls, server_context(certs),
                                  host="127.0.0.1")
    env = dict(os.environ, N=str(CONNECTIONS), PORT=str(listener.port),
               CA=f"{certs}/ca.pem", VERSION=s_client_opt,
               REQ=f"{certs}/s_client_{version}.req",
               ERR=f"{certs}/s_client_{version}.err")
    status, out = run_peer(reactor, ["sh", "-c", S_CLIENT_LOOP], 90, env)
    listener.close()
    assert status == 0 and out.strip() == f"answered {CONNECTIONS}", \
        out[-2000:]
    check_answers(cls, {name})


def test_curl_plain_http_many_connections(reactor):
    cls = responder(reactor)
    listener = reactor.listen_tcp(0, cls, host="127.0.0.1")
    status, out = run_peer(reactor, CURL + [
        f"http://127.0.0.1:{listener.port}/n[1-{CONNECTIONS}]"], 60)
    listener.close()
    check_curl(cls, status, out, {None})


# ---- twincore's connect_tls against openssl s_server -www ----------------

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s_server(certs, version_opt):
    """openssl s_server -www on a free port, once it accepts; (proc, port).
    A port taken meanwhile by someone else: another one (bounded)."""
    for _ in range(5):
        port = free_port()
        proc = subprocess.Popen(
            ["openssl", "s_server", "-accept", str(port), "-www",
             "-cert", os.path.join(certs, "server.pem"),
             "-key", os.path.join(certs, "server.key"), version_opt],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT)
        text = b""
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while b"ACCEPT" not in text and proc.poll() is None:
                if not sel.select(10):
                    break
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break
                text += chunk
        if b"ACCEPT" in text:
            return proc, port
        stop_process(proc)
    pytest.fail("openssl s_server did not start: %r" % text)


def stop_process(proc):
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    proc.stdout.close()


class Fetch(RecordingProtocol):
    def connection_made(self, transport):
        super().connection_made(transport)
        self.version = transport.get_extra_info("tls_version")
        transport.write(b"GET / HTTP/1.0\r\n\r\n")


@needs_tls
@pytest.mark.parametrize("version", sorted(TLS_VERSIONS))
def test_connect_tls_to_openssl_s_server_www(reactor, certs, version):
    name, _, s_opt = TLS_VERSIONS[version]
    proc, port = start_s_server(certs, s_opt)
    ctx = twincore.TLSContext(cafile=os.path.join(certs, "ca.pem"))
    try:
        async def main():
            fetches = []
            # Several in a row, each a full handshake and a whole page.
            for _ in range(5):
                client = await reactor.connect_tls(
                    "127.0.0.1", port, Fetch, ctx,
                    server_hostname="localhost", timeout=10)
                await client.done
                fetches.append(client)
            return fetches

        fetches = run_until(reactor, main(), timeout=60)
    finally:
        stop_process(proc)
    for client in fetches:
        text = bytes(client.data).decode(errors="replace")
        assert client.version == name
        assert text.startswith("HTTP/1.0 200 ok\r\n"), text[:200]
        assert "s_server" in text and f"Protocol  : {name}" in text, \
            text
        assert client.events[0] == "made" and client.events[-1] == "lost"
        assert client.lost is None, client.lost


# A line echo on streams (`async for line in reader`), fed by socat in
# plain TCP and by openssl s_client over TLS: many lines in one write,
# lines split across writes, and (socat: TCP has half-close) a last line
# without its b"\n" at EOF.
LINES_PEER = r"""
{ printf 'one\ntwo\nthr'; sleep 0.2; printf 'ee\n'; i=0
  while [ "$i" -lt 1000 ]; do i=$((i + 1)); echo "line $i"; done
  printf "$TAIL"; sleep 1; } | eval "$CLIENT"
"""


def _line_echo_peer(reactor, tls, client, env, tail):
    async def echo(reader, writer):
        async for line in reader:
            writer.write(line)
            await writer.drain()
        writer.close()

    async def serve():
        return await twincore.start_server(echo, 0, tls=tls)
    listener = run_until(reactor, serve())
    env = dict(os.environ, PORT=str(listener.port), CLIENT=client,
               TAIL=tail, **env)
    status, out = run_peer(reactor, ["sh", "-c", LINES_PEER], 60, env)
    listener.close()
    want = "one\ntwo\nthree\n" + "".join(f"line {i}\n"
                                        for i in range(1, 1001)) + tail
    assert status == 0 and out == want, out[-2000:]


def test_streams_line_echo_with_socat(reactor):
    _line_echo_peer(reactor, None,
                    'socat -t 5 - "TCP:127.0.0.1:$PORT"', {}, "tail")


@needs_tls
def test_streams_line_echo_with_openssl_s_client(reactor, certs):
    # -no_ign_eof: s_client ends at its input's end (close_notify).
    _line_echo_peer(reactor, server_context(certs),
                    'openssl s_client -quiet -no_ign_eof '
                    '-connect "127.0.0.1:$PORT" -servername localhost '
                    '-verify_hostname localhost -CAfile "$CA" 2>/dev/null',
                    {"CA": f"{certs}/ca.pem"}, "")
