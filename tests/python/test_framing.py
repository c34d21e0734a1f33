"""LineReceiver and Int*StringReceiver: the split in C (a twincore
transport) and in Python (any other transport), held to Twisted's own
classes (Debian's python3-twisted) as the oracle for the same bytes."""

import hashlib
import random
import struct

import pytest

import twincore
from conftest import STREAM_KINDS, import_debian, listen, run_until

StringTransport = import_debian("twisted.internet.testing").StringTransport
tbasic = import_debian("twisted.protocols.basic")


# ---- the oracle and the two twincore paths ---------------------------------

def twisted_events(base, chunks, attrs, raw_at=None):
    """Feed chunks to Twisted's class; the events it delivers. raw_at:
    after that line, take raw bytes until a b'|' then lines again."""
    events = []

    class P(base):
        def lineReceived(self, line):
            events.append(("line", line))
            if raw_at is not None and line == raw_at:
                self.setRawMode()

        def rawDataReceived(self, data):
            i = data.find(b"|")
            if i < 0:
                events.append(("raw", data))
                return
            events.append(("raw", data[:i]))
            self.setLineMode(data[i + 1:])

        def lineLengthExceeded(self, line):
            events.append(("too_long", line))
            self.transport.loseConnection()

        def stringReceived(self, s):
            events.append(("string", s))

        def lengthLimitExceeded(self, length):
            events.append(("too_long", length))
            self.transport.loseConnection()

    p = P()
    for k, v in attrs.items():
        setattr(p, {"max_length": "MAX_LENGTH"}.get(k, k), v)
    tr = StringTransport()
    p.makeConnection(tr)
    for c in chunks:
        if tr.disconnecting:
            break
        p.dataReceived(c)
    return merge_raw(events)


def merge_raw(events):
    """Raw data arrives in any chunks: join adjacent raw events."""
    out = []
    for kind, v in events:
        if kind == "raw" and out and out[-1][0] == "raw":
            out[-1] = ("raw", out[-1][1] + v)
        elif not (kind == "raw" and v == b""):
            out.append((kind, v))
    return out


def recorder(base, attrs, raw_at=None):
    """A twincore protocol class recording what Twisted's above records."""
    class R(base):
        def __init__(self):
            self.events = []
            self.done = twincore.Future()
            for k, v in attrs.items():
                setattr(self, k, v)

        def line_received(self, line):
            self.events.append(("line", line))
            if raw_at is not None and line == raw_at:
                self.set_raw_mode()

        def raw_data_received(self, data):
            i = data.find(b"|")
            if i < 0:
                self.events.append(("raw", data))
                return
            self.events.append(("raw", data[:i]))
            self.set_line_mode(data[i + 1:])

        def line_length_exceeded(self, line):
            self.events.append(("too_long", line))
            self.transport.close()

        def string_received(self, s):
            self.events.append(("string", s))

        def length_limit_exceeded(self, length):
            self.events.append(("too_long", length))
            self.transport.close()

        def connection_lost(self, reason):
            self.events.append(("lost", reason))
            if not self.done.done():
                self.done.set_result(self)
    return R


class FakeTransport:
    """Not a twincore transport: the Python split runs."""

    def __init__(self):
        self.written = bytearray()
        self.closed = False

    def write(self, data):
        self.written += data

    def close(self):
        self.closed = True

    def is_closing(self):
        return self.closed


def python_events(base, chunks, attrs, raw_at=None):
    p = recorder(base, attrs, raw_at)()
    t = FakeTransport()
    p.connection_made(t)
    p.transport = t
    assert p.transport is t and not p._framed
    for c in chunks:
        if t.closed:
            break
        p.data_received(c)
    return merge_raw(p.events)


def c_events(reactor, kind, sock_dir, base, chunks, attrs, raw_at=None):
    """Send chunks (each a write of its own) to a twincore server running
    the class, then close; the events it delivered (the C split)."""
    protos = []

    def build():
        p = recorder(base, attrs, raw_at)()
        protos.append(p)
        return p
    listener, connect = listen(reactor, kind, build, sock_dir)

    async def main():
        client = await connect(twincore.Protocol)
        for c in chunks:
            client.transport.write(c)
            await twincore.sleep(0)
        client.transport.close()
        while not protos:
            await twincore.sleep(0.01)
        await protos[0].done
        return protos[0]
    p = run_until(reactor, main())
    listener.close()
    assert p._framed
    lost = p.events.pop()
    assert lost == ("lost", None)
    return merge_raw(p.events)


def chunkings(data, seed):
    rnd = random.Random(seed)
    out = [[data], [data[i:i + 1] for i in range(len(data))]]
    cuts = sorted(rnd.sample(range(1, len(data)), min(40, len(data) - 1)))
    out.append([data[a:b] for a, b in zip([0] + cuts, cuts + [len(data)])])
    return out


def line_stream(delimiter, n, seed):
    rnd = random.Random(seed)
    alphabet = b"ab \t" + delimiter[:1] + delimiter[-1:]
    lines = []
    for _ in range(n):
        line = bytes(rnd.choice(alphabet) for _ in range(rnd.randrange(40)))
        while delimiter in line + delimiter[:-1]:
            line = line.replace(delimiter[:1], b"a")
        lines.append(line)
    return lines, b"".join(x + delimiter for x in lines) + b"tail"


def oracle(base, data, attrs, seed, raw_at=None):
    """Twisted's events for data, the same under every chunking tried."""
    results = [twisted_events(base, c, attrs, raw_at)
               for c in chunkings(data, seed)]
    assert all(r == results[0] for r in results), "chunking-dependent input"
    return results[0]


# ---- lines ----------------------------------------------------------------

@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("delimiter", [b"\r\n", b"\n", b"<END>"])
def test_lines_match_twisted(reactor, sock_dir, kind, delimiter):
    lines, data = line_stream(delimiter, 300, seed=len(delimiter))
    attrs = {"delimiter": delimiter}
    expected = oracle(tbasic.LineReceiver, data, attrs, seed=1)
    assert expected == [("line", x) for x in lines]
    for chunks in chunkings(data, seed=2):
        assert python_events(twincore.LineReceiver, chunks, attrs) == \
            expected
    for chunks in chunkings(data, seed=3)[::2]:   # whole, then 41 pieces
        assert c_events(reactor, kind, sock_dir, twincore.LineReceiver,
                        chunks, attrs) == expected


def test_raw_mode_and_back_match_twisted(reactor, sock_dir):
    data = (b"HEAD\r\nraw\r\n" + b"r" * 5000 + b"|a\r\nb\r\nraw\r\nxyz|"
            b"c\r\n" * 3)
    attrs = {}
    expected = oracle(tbasic.LineReceiver, data, attrs, seed=4,
                      raw_at=b"raw")
    assert expected[:2] == [("line", b"HEAD"), ("line", b"raw")]
    assert ("raw", b"r" * 5000) in expected
    for chunks in chunkings(data, seed=5):
        assert python_events(twincore.LineReceiver, chunks, attrs,
                             raw_at=b"raw") == expected
        assert c_events(reactor, "unix", sock_dir, twincore.LineReceiver,
                        chunks, attrs, raw_at=b"raw") == expected


def test_lines_at_max_length_match_twisted(reactor, sock_dir):
    # A line of exactly max_length is fine; the limit is on longer ones.
    attrs = {"max_length": 10, "delimiter": b"\n"}
    data = b"0123456789\nabc\n" * 20
    expected = oracle(tbasic.LineReceiver, data, attrs, seed=6)
    assert ("too_long", b"") not in expected and len(expected) == 40
    for chunks in chunkings(data, seed=7):
        assert python_events(twincore.LineReceiver, chunks, attrs) == \
            expected
    assert c_events(reactor, "tcp", sock_dir, twincore.LineReceiver,
                    [data], attrs) == expected


@pytest.mark.parametrize("path", ["c", "python"])
@pytest.mark.parametrize("with_delimiter", [True, False])
def test_line_longer_than_max_length(reactor, sock_dir, path,
                                     with_delimiter):
    # How much of the rest comes with the long line depends on the
    # chunking (in Twisted too); the lines before it, the one call and
    # the close do not.
    attrs = {"max_length": 16, "delimiter": b"\r\n"}
    long = b"x" * 40 + (b"\r\n" if with_delimiter else b"")
    data = b"ok\r\n" + long + b"never\r\n" * 3
    for chunks in chunkings(data, seed=8):
        tw = twisted_events(tbasic.LineReceiver, chunks, attrs)
        if path == "python":
            ours = python_events(twincore.LineReceiver, chunks, attrs)
        else:
            ours = c_events(reactor, "unix", sock_dir,
                            twincore.LineReceiver, chunks, attrs)
        for events in (tw, ours):
            assert events[0] == ("line", b"ok")
            assert len(events) == 2 and events[1][0] == "too_long"
            assert events[1][1].startswith(b"x" * 18)
            assert data[4:].startswith(events[1][1])
        if len(chunks) == 1:
            assert ours == tw


# ---- length-prefixed strings ---------------------------------------------

STRING_CLASSES = [
    (tbasic.Int8StringReceiver, twincore.Int8StringReceiver, 255),
    (tbasic.Int16StringReceiver, twincore.Int16StringReceiver, 3000),
    (tbasic.Int32StringReceiver, twincore.Int32StringReceiver, 70000),
]


@pytest.mark.parametrize("kind", STREAM_KINDS)
@pytest.mark.parametrize("tcls,ocls,biggest", STRING_CLASSES)
def test_strings_match_twisted(reactor, sock_dir, kind, tcls, ocls,
                               biggest):
    rnd = random.Random(biggest)
    strings = [b"", b"\x00", b"z" * biggest] + [
        bytes(rnd.randrange(256) for _ in range(rnd.randrange(60)))
        for _ in range(200)]
    t = StringTransport()
    sender = tcls()
    sender.makeConnection(t)
    for s in strings:
        sender.sendString(s)
    data = t.value() + b"\x00"   # a partial prefix (or an empty string)
    attrs = {"max_length": 100000}
    expected = oracle(tcls, data, attrs, seed=9)
    assert [v for _, v in expected][:len(strings)] == strings
    for chunks in chunkings(data, seed=10):
        assert python_events(ocls, chunks, attrs) == expected
    for chunks in chunkings(data, seed=11)[::2]:
        assert c_events(reactor, kind, sock_dir, ocls, chunks, attrs) == \
            expected


@pytest.mark.parametrize("tcls,ocls,biggest", STRING_CLASSES)
def test_send_bytes_match_twisted(tcls, ocls, biggest):
    strings = [b"", b"a", b"q" * biggest]
    t = StringTransport()
    theirs = tcls()
    theirs.makeConnection(t)
    ours = ocls()
    ours.transport = FakeTransport()
    for s in strings:
        theirs.sendString(s)
        ours.send_string(s)
    assert bytes(ours.transport.written) == t.value()
    limit = 2 ** (8 * ocls.prefix_length)
    if limit <= 1 << 16:
        with pytest.raises(twincore.StringTooLongError):
            ours.send_string(b"x" * limit)

    t = StringTransport()
    theirs = tbasic.LineReceiver()
    theirs.makeConnection(t)
    ours = twincore.LineReceiver()
    ours.transport = FakeTransport()
    for line in (b"", b"one", b"two words"):
        theirs.sendLine(line)
        ours.send_line(line)
    assert bytes(ours.transport.written) == t.value()


@pytest.mark.parametrize("path", ["c", "python"])
def test_length_limit_exceeded(reactor, sock_dir, path):
    attrs = {"max_length": 100}
    data = (struct.pack("!I", 3) + b"abc" + struct.pack("!I", 101) +
            b"y" * 101 + struct.pack("!I", 1) + b"z")
    expected = oracle(tbasic.Int32StringReceiver, data, attrs, seed=12)
    assert expected == [("string", b"abc"), ("too_long", 101)]
    if path == "python":
        assert python_events(twincore.Int32StringReceiver, [data],
                             attrs) == expected
    else:
        assert c_events(reactor, "tcp", sock_dir,
                        twincore.Int32StringReceiver, [data, b"more"],
                        attrs) == expected


# ---- the C split's own contract ------------------------------------------

class Counting(twincore.LineReceiver):
    delimiter = b"\n"

    def __init__(self):
        self.lines = []
        self.done = twincore.Future()

    def line_received(self, line):
        self.lines.append(line)

    def connection_lost(self, reason):
        self.reason = reason
        self.done.set_result(self)


def serve_one(reactor, cls, chunks, sock_dir, kind="unix", eof=True):
    protos = []

    def build():
        p = cls()
        protos.append(p)
        return p
    listener, connect = listen(reactor, kind, build, sock_dir)

    async def main():
        client = await connect(twincore.Protocol)
        for c in chunks:
            client.transport.write(c)
        if eof:
            client.transport.close()
        while not protos:
            await twincore.sleep(0.01)
        return await protos[0].done
    p = run_until(reactor, main())
    listener.close()
    return p


def test_thousand_lines_in_one_chunk_one_call_each(reactor, sock_dir):
    lines = [b"line %d" % i for i in range(1000)]
    p = serve_one(reactor, Counting, [b"\n".join(lines) + b"\npartial"],
                  sock_dir)
    assert p.lines == lines   # the partial line at EOF is dropped
    assert p.reason is None


def test_pause_reading_stops_after_the_line(reactor, sock_dir):
    class Pausing(Counting):
        paused = False

        def line_received(self, line):
            assert not self.paused, "a line came while paused"
            self.lines.append(line)
            self.paused = True
            self.transport.pause_reading()
            self.transport.reactor.call_later(0.001, self.resume)

        def resume(self):
            self.paused = False
            self.transport.resume_reading()

    lines = [b"%d" % i for i in range(50)]
    p = serve_one(reactor, Pausing, [b"\n".join(lines) + b"\n"], sock_dir)
    assert p.lines == lines


def test_close_in_line_received_ends_delivery(reactor, sock_dir):
    class Closing(Counting):
        def line_received(self, line):
            self.lines.append(line)
            if line == b"stop":
                self.transport.close()

    p = serve_one(reactor, Closing, [b"a\nstop\nb\nc\n"], sock_dir,
                  eof=False)
    assert p.lines == [b"a", b"stop"]
    assert p.reason is None


@pytest.mark.callback_errors
def test_raising_line_received_aborts(reactor, sock_dir, caplog):
    class Raising(Counting):
        def line_received(self, line):
            self.lines.append(line)
            raise ValueError("bad line " + line.decode())

    p = serve_one(reactor, Raising, [b"a\nb\n"], sock_dir, eof=False)
    assert p.lines == [b"a"]
    assert isinstance(p.reason, ValueError)
    assert "bad line a" in caplog.text


def test_switching_to_raw_in_line_received(reactor, sock_dir):
    class Switch(Counting):
        raw = b""

        def line_received(self, line):
            self.lines.append(line)
            if line == b"raw":
                self.set_raw_mode()

        def raw_data_received(self, data):
            self.raw += data

    p = serve_one(reactor, Switch, [b"a\nraw\nb\nc\n", b"d\n"], sock_dir)
    assert p.lines == [b"a", b"raw"]
    assert p.raw == b"b\nc\nd\n"


def test_100_mib_of_lines_checksummed(reactor, sock_dir):
    class Summing(twincore.LineReceiver):
        delimiter = b"\n"

        def __init__(self):
            self.sha = hashlib.sha256()
            self.count = 0
            self.done = twincore.Future()

        def line_received(self, line):
            self.sha.update(line)
            self.count += 1

        def connection_lost(self, reason):
            self.done.set_result(self)

    line_len = 1023
    n = 100 * 1024 * 1024 // (line_len + 1)
    rnd = random.Random(13)
    block = [bytes(rnd.choice(b"abcdefgh") for _ in range(line_len))
             for _ in range(64)]
    want = hashlib.sha256()
    for i in range(n):
        want.update(block[i % 64])
    protos = []

    def build():
        p = Summing()
        protos.append(p)
        return p
    listener, connect = listen(reactor, "unix", build, sock_dir)

    class Sender(twincore.Protocol):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.i = 0
            self.paused = False
            self.pump()

        def pump(self):
            while self.i < n and not self.paused:
                self.transport.writelines(
                    [block[(self.i + k) % 64] + b"\n"
                     for k in range(min(64, n - self.i))])
                self.i += 64
            if self.i >= n:
                self.transport.close()

        def pause_writing(self):
            self.paused = True

        def resume_writing(self):
            self.paused = False
            self.pump()

    async def main():
        await connect(Sender)
        while not protos:
            await twincore.sleep(0.01)
        return await protos[0].done
    p = run_until(reactor, main(), timeout=120)
    listener.close()
    assert p.count == n
    assert p.sha.hexdigest() == want.hexdigest()


def test_send_line_on_a_twincore_transport(reactor, sock_dir):
    """send_line writes line + delimiter (in C while framed, in Python in
    raw mode); write_line without a line framing raises."""
    class Answer(twincore.LineReceiver):
        delimiter = b"<>"

        def line_received(self, line):
            self.send_line(b"re:" + line)
            if line == b"raw":
                self.set_raw_mode()
                self.send_line(b"now raw")

        def raw_data_received(self, data):
            self.send_line(data)

    protos = []

    def build():
        p = Answer()
        protos.append(p)
        return p
    listener, connect = listen(reactor, "unix", build, sock_dir)

    class Client(twincore.Protocol):
        def __init__(self):
            self.data = b""
            self.done = twincore.Future()

        def data_received(self, data):
            self.data += data
            if self.data.endswith(b"tail<>"):
                self.done.set_result(self.data)

    async def main():
        client = await connect(Client)
        client.transport.write(b"a<>raw<>")
        await twincore.sleep(0.05)
        client.transport.write(b"tail")
        got = await client.done
        with pytest.raises(RuntimeError, match="no line framing"):
            protos[0].transport.write_line(b"x")
        client.transport.close()
        return got
    got = run_until(reactor, main())
    listener.close()
    assert got == b"re:a<>re:raw<>now raw<>tail<>"


def test_new_delimiter_from_line_received_matches_twisted(reactor, sock_dir):
    """A callback that installs another framing (here a new delimiter)
    ends the running split; the rest goes the new way, as in Twisted."""
    data = b"a\nb;c;d\ne;" * 3

    class T(tbasic.LineReceiver):
        delimiter = b"\n"

        def connectionMade(self):
            self.got = []

        def lineReceived(self, line):
            self.got.append(line)
            self.delimiter = b";" if self.delimiter == b"\n" else b"\n"

    class O(Counting):
        def line_received(self, line):
            self.lines.append(line)
            self.delimiter = b";" if self.delimiter == b"\n" else b"\n"
            self.set_line_mode()

    theirs = T()
    theirs.makeConnection(StringTransport())
    theirs.dataReceived(data)
    for chunks in ([data], [data[i:i + 1] for i in range(len(data))]):
        p = serve_one(reactor, O, chunks, sock_dir)
        assert p.lines == theirs.got
