"""Unix socket paths and names: a path a live server uses is refused, a
closing listener unlinks only the file it made (a rolling restart keeps
the new server reachable), and Linux's abstract names work given as
'\\0name' (str or bytes, as in the socket module) or '@name'."""

import errno
import os
import pathlib
import socket

import pytest

import twincore
from conftest import RecordingProtocol, run_until


def settle(reactor, turns=3):
    """Let a few iterations pass (close callbacks run on a later one)."""
    async def turns_():
        for _ in range(turns):
            await twincore.sleep(0, reactor=reactor)
    run_until(reactor, turns_())


class Echo(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)


class EchoRecorder(RecordingProtocol):
    def data_received(self, data):
        super().data_received(data)
        self.transport.write(data)


def echo_once(reactor, path, payload=b"ping"):
    """Connect with connect_unix, send payload, return what came back."""
    async def main():
        client = await reactor.connect_unix(path, RecordingProtocol)
        client.transport.write(payload)
        while len(client.data) < len(payload) and not client.lost:
            await twincore.sleep(0.001, reactor=reactor)
        client.transport.close()
        await client.done
        return bytes(client.data)
    return run_until(reactor, main())


def raw_reaches(path, timeout=5.0):
    """Whether a plain socket connects to path (a listener answers)."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    try:
        s.connect(path)
        return True
    except OSError:
        return False
    finally:
        s.close()


# ---- a path in use ------------------------------------------------------

def test_listen_unix_refuses_a_path_a_live_listener_uses(reactor, sock_dir):
    path = os.path.join(sock_dir, "live.sock")
    first = reactor.listen_unix(path, Echo)
    inode = os.stat(path).st_ino
    with pytest.raises(OSError) as info:
        reactor.listen_unix(path, Echo)
    assert info.value.errno == errno.EADDRINUSE
    assert os.stat(path).st_ino == inode
    assert echo_once(reactor, path) == b"ping"
    first.close()
    settle(reactor)
    assert not os.path.exists(path)


def test_listen_unix_refuses_a_path_another_process_serves(reactor,
                                                           sock_dir):
    path = os.path.join(sock_dir, "other.sock")
    other = socket.socket(socket.AF_UNIX)
    other.bind(path)
    other.listen(4)
    try:
        with pytest.raises(OSError) as info:
            reactor.listen_unix(path, Echo)
        assert info.value.errno == errno.EADDRINUSE
        assert os.path.exists(path)
        assert raw_reaches(path)
    finally:
        other.close()


def test_listen_unix_still_replaces_a_stale_socket_file(reactor, sock_dir):
    path = os.path.join(sock_dir, "stale.sock")
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    listener = reactor.listen_unix(path, Echo)
    assert echo_once(reactor, path) == b"ping"
    listener.close()


def test_listen_unix_never_removes_a_regular_file(reactor, sock_dir):
    path = os.path.join(sock_dir, "file")
    with open(path, "wb") as f:
        f.write(b"keep")
    with pytest.raises(OSError):
        reactor.listen_unix(path, Echo)
    with open(path, "rb") as f:
        assert f.read() == b"keep"


# ---- rolling restart ----------------------------------------------------

def test_closing_the_old_listener_keeps_a_renamed_in_successor(reactor,
                                                              sock_dir):
    path = os.path.join(sock_dir, "svc.sock")
    old = reactor.listen_unix(path, Echo)
    # The new server binds a temporary name and renames it over the path,
    # the usual atomic hand-over.
    new = socket.socket(socket.AF_UNIX)
    new.bind(path + ".new")
    new.listen(4)
    os.replace(path + ".new", path)
    try:
        old.close()
        settle(reactor)
        assert os.path.exists(path)
        assert raw_reaches(path)
    finally:
        new.close()


def test_closing_the_old_listener_keeps_a_rebound_successor(reactor,
                                                           sock_dir):
    path = os.path.join(sock_dir, "svc.sock")
    old = reactor.listen_unix(path, Echo)
    os.unlink(path)                       # removed by hand or a deployer
    new = reactor.listen_unix(path, Echo)
    old.close()
    settle(reactor)
    assert os.path.exists(path)
    assert echo_once(reactor, path) == b"ping"
    new.close()
    settle(reactor)
    assert not os.path.exists(path)


# ---- abstract names -----------------------------------------------------

def abstract_name(tag):
    return "twincore-test-%d-%s" % (os.getpid(), tag)


FORMS = {
    "str-nul": lambda n: "\0" + n,
    "bytes-nul": lambda n: b"\0" + n.encode(),
    "str-at": lambda n: "@" + n,
    "bytes-at": lambda n: b"@" + n.encode(),
}


@pytest.mark.parametrize("listen_form", sorted(FORMS))
def test_abstract_names_in_every_form(reactor, listen_form):
    name = abstract_name(listen_form)
    servers = []

    class Factory(twincore.Factory):
        def build_protocol(self, addr):
            servers.append(EchoRecorder())
            return servers[-1]

    listener = reactor.listen_unix(FORMS[listen_form](name), Factory())
    assert listener.get_host() == "@" + name
    # No file appears for an abstract name.
    assert not os.path.exists("@" + name)
    for form in sorted(FORMS):
        assert echo_once(reactor, FORMS[form](name), form.encode()) == \
            form.encode()
    # The kernel name is the socket module's '\0name'.
    assert raw_reaches("\0" + name)

    async def peer_names():
        client = await reactor.connect_unix("\0" + name, RecordingProtocol)
        while len(servers) < len(FORMS) + 2:
            await twincore.sleep(0.001, reactor=reactor)
        peer = client.transport.get_peer()
        host = servers[-1].transport.get_host()
        client.transport.close()
        await client.done
        return peer, host
    peer, host = run_until(reactor, peer_names())
    assert peer == "@" + name
    assert host == "@" + name
    listener.close()
    settle(reactor)
    # Closed: the name is free again.
    listener = reactor.listen_unix("\0" + name, Echo)
    listener.close()


def test_abstract_name_in_use_is_refused(reactor):
    name = abstract_name("busy")
    first = reactor.listen_unix("\0" + name, Echo)
    with pytest.raises(OSError) as info:
        reactor.listen_unix(b"\0" + name.encode(), Echo)
    assert info.value.errno == errno.EADDRINUSE
    first.close()


def test_connect_unix_to_an_abstract_name_nobody_serves(reactor):
    fut = reactor.connect_unix("\0" + abstract_name("nobody"),
                               RecordingProtocol)
    with pytest.raises(ConnectionRefusedError):
        run_until(reactor, fut)


@pytest.mark.parametrize("bad", ["\0a\0b", b"\0a\0b", "a\0b", b"a\0"])
def test_a_null_byte_past_the_first_is_refused(reactor, bad):
    with pytest.raises(ValueError, match="listen_unix.*path"):
        reactor.listen_unix(bad, Echo)
    with pytest.raises(ValueError, match="connect_unix.*path"):
        reactor.connect_unix(bad, RecordingProtocol)


@pytest.mark.parametrize("bad, exc", [
    (42, TypeError), (None, TypeError), ("a\0b", ValueError),
    (b"\0a\0", ValueError), ("\udcff\0", ValueError)])
def test_unix_path_checked_in_c(reactor, bad, exc):
    """The C methods check and convert the path themselves; the Python ones
    pass it on."""
    C = twincore._twincore.Reactor
    factory = twincore.Factory(Echo)
    with pytest.raises(exc, match=r"listen_unix\(\): 'path'"):
        C.listen_unix(reactor, bad, factory)
    with pytest.raises(exc, match=r"connect_unix\(\): 'path'"):
        reactor._connect_unix(bad, factory, lambda protocol, exc: None)


def test_abstract_name_converted_in_c(reactor):
    """'\0name' reaches the C method as it is, and means '@name' there."""
    name = abstract_name("c-method")
    listener = twincore._twincore.Reactor.listen_unix(
        reactor, "\0" + name, twincore.Factory(Echo))
    assert listener.get_host() == "@" + name
    assert echo_once(reactor, b"\0" + name.encode()) == b"ping"
    listener.close()
    # A one-byte path: the '@' is written into a copy, never into the
    # interpreter's shared one-byte bytes object.
    for path in ("\0", b"\0"):
        try:
            twincore._twincore.Reactor.listen_unix(
                reactor, path, twincore.Factory(Echo)).close()
        except OSError:
            pass
    assert "\0".encode()[0] == 0 and b"\0"[0] == 0


def test_unix_path_types(reactor, sock_dir):
    with pytest.raises(TypeError, match="listen_unix.*path"):
        reactor.listen_unix(42, Echo)
    with pytest.raises(TypeError, match="connect_unix.*path"):
        reactor.connect_unix(None, RecordingProtocol)
    path = pathlib.Path(sock_dir) / "p.sock"
    listener = reactor.listen_unix(path, Echo)
    assert listener.get_host() == str(path)
    assert echo_once(reactor, bytes(path)) == b"ping"
    listener.close()
