"""Streams: open_connection/start_server (and the Unix pair),
StreamReader's reads and its limit, StreamWriter's drain and half-close;
asyncio's StreamReader as the oracle for what the reads return."""

import asyncio
import hashlib
import os
import random

import pytest

import twincore
from conftest import run_until


async def serve(kind, handler, sock_dir, **kw):
    """A server on loopback TCP or a Unix path; returns (listener,
    open()) where open() connects a (reader, writer) pair."""
    if kind == "tcp":
        listener = await twincore.start_server(handler, 0, **kw)

        def connect(**ckw):
            return twincore.open_connection("127.0.0.1", listener.port,
                                            **ckw)
    else:
        path = os.path.join(sock_dir, "s.sock")
        listener = await twincore.start_unix_server(handler, path, **kw)

        def connect(**ckw):
            return twincore.open_unix_connection(path, **ckw)
    return listener, connect


async def echo_lines(reader, writer):
    async for line in reader:
        writer.write(line)
        await writer.drain()
    writer.close()


@pytest.mark.parametrize("kind", ["tcp", "unix"])
def test_lines_across_and_within_chunks(reactor, sock_dir, kind):
    async def main():
        listener, connect = await serve(kind, echo_lines, sock_dir)
        reader, writer = await connect()
        writer.write(b"one\ntw")
        await twincore.sleep(0.01)
        writer.write(b"o\nthree\nfour\n")
        got = [await reader.readline() for _ in range(4)]
        writer.writelines([b"a", b"b\n", b"c\n"])
        got += [await reader.readline(), await reader.readline()]
        writer.write_eof()
        assert await reader.readline() == b""
        assert reader.at_eof()
        writer.close()
        await writer.wait_closed()
        listener.close()
        return got
    assert run_until(reactor, main()) == [b"one\n", b"two\n", b"three\n",
                                          b"four\n", b"ab\n", b"c\n"]


def test_readexactly_readuntil_and_eof(reactor):
    async def handler(reader, writer):
        writer.write(b"head|er||body12345")
        await twincore.sleep(0.01)
        writer.write(b"67trailing")
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        out = [await r.readuntil(b"||"), await r.readexactly(4),
               await r.readexactly(7)]
        with pytest.raises(twincore.IncompleteReadError) as info:
            await r.readexactly(100)
        assert info.value.partial == b"trailing"
        assert info.value.expected == 100
        assert await r.read() == b""
        assert await r.readexactly(0) == b""
        w.close()
        listener.close()
        return out
    assert run_until(reactor, main()) == [b"head|er||", b"body",
                                          b"1234567"]


def test_readuntil_separator_split_across_chunks(reactor):
    async def handler(reader, writer):
        for piece in (b"abc<S", b"EP", b">def<SEP>"):
            writer.write(piece)
            await twincore.sleep(0.005)
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        out = [await r.readuntil(b"<SEP>"), await r.readuntil(b"<SEP>")]
        with pytest.raises(twincore.IncompleteReadError) as info:
            await r.readuntil(b"<SEP>")
        assert info.value.partial == b""
        w.close()
        listener.close()
        return out
    assert run_until(reactor, main()) == [b"abc<SEP>", b"def<SEP>"]


def test_limit_overrun(reactor):
    async def handler(reader, writer):
        writer.write(b"x" * 300 + b"\nshort\n" + b"y" * 300 + b"SEP")
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port,
                                              limit=100)
        with pytest.raises(ValueError):
            await r.readline()   # the long line is dropped
        assert await r.readline() == b"short\n"
        with pytest.raises(twincore.LimitOverrunError) as info:
            await r.readuntil(b"SEP")
        assert info.value.consumed > 100
        assert len(await r.readexactly(303)) == 303   # the data stayed
        w.close()
        listener.close()
    run_until(reactor, main())


@pytest.mark.parametrize("chunks", [[b"a\nbb\r\nccc"], [b"a", b"\nb", b"b\r",
                                    b"\nc", b"cc"]])
def test_reads_match_asyncio(chunks):
    """The same feed and the same reads on both StreamReaders."""
    async def script(reader, feed):
        out = []
        feed(chunks)
        out.append(await reader.readline())
        out.append(await reader.readuntil(b"\r\n"))
        out.append(await reader.read(2))
        try:
            await reader.readexactly(5)
        except asyncio.IncompleteReadError as e:
            out.append(("incomplete", e.partial, e.expected))
        out.append(await reader.read())
        out.append(reader.at_eof())
        return out

    def feeder(reader):
        def feed(chs):
            for c in chs:
                reader.feed_data(c)
            reader.feed_eof()
        return feed

    async def with_asyncio():
        reader = asyncio.StreamReader()
        return await script(reader, feeder(reader))

    async def with_twincore():
        reader = twincore.StreamReader()
        return await script(reader, feeder(reader))
    expected = asyncio.run(with_asyncio())
    assert twincore.run(with_twincore(), reactor=twincore.Reactor()) == \
        expected


def test_read_limit_pauses_and_resumes_the_peer(reactor):
    """A server that does not read: its transport stops reading past
    twice the limit, the client's drain() then waits on the full socket;
    reading resumes and everything arrives."""
    state = {}
    total = 8 * 1024 * 1024

    async def handler(reader, writer):
        state["reader"] = reader
        state["transport"] = writer.transport
        await state["go"]
        got = hashlib.sha256()
        n = 0
        while n < total:
            data = await reader.read(65536)
            assert data
            got.update(data)
            n += len(data)
        writer.write(got.hexdigest().encode())
        writer.close()

    async def main():
        state["go"] = twincore.Future(reactor)
        listener = await twincore.start_server(handler, 0, limit=4096)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        rnd = random.Random(1)
        payload = bytes(rnd.randrange(256) for _ in range(65536))
        blocked = False
        for i in range(total // len(payload)):
            w.write(payload)
            drain = twincore.spawn(w.drain())
            for _ in range(5):
                await twincore.sleep(0)
            if not drain.done():
                blocked = True
                break
            await drain
        assert blocked, "drain() never waited"
        reader = state["reader"]
        assert reader._paused and not state["transport"].is_reading()
        # Past 2 * limit by at most what one iteration read.
        assert 2 * 4096 < len(reader._buffer) <= 2 * 4096 + 1024 * 1024
        state["go"].set_result(None)
        await drain
        for _ in range(i + 1, total // len(payload)):
            w.write(payload)
            await w.drain()
        digest = await r.read()
        w.close()
        listener.close()
        want = hashlib.sha256(payload * (total // len(payload)))
        return digest == want.hexdigest().encode()
    assert run_until(reactor, main(), timeout=60)


def test_drain_waits_on_the_high_watermark(reactor):
    async def handler(reader, writer):
        await twincore.sleep(float("inf"))

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        w.transport.set_write_buffer_limits(high=1024)
        w.write(b"x" * 100)
        await w.drain()   # under the watermark: at once
        w.write(b"x" * 50 * 1024 * 1024)
        drain = twincore.spawn(w.drain())
        await twincore.sleep(0.05)
        assert not drain.done()
        assert w.transport.get_write_buffer_size() > 1024
        w.transport.abort()
        await w.wait_closed()
        assert drain.done()   # woken by connection_lost, as asyncio's
        with pytest.raises(ConnectionResetError):
            await w.drain()
        listener.close()
    run_until(reactor, main())


def test_half_close_through_streams(reactor):
    async def handler(reader, writer):
        data = await reader.read()   # until the client's EOF
        writer.write(b"got %d bytes\n" % len(data))
        await writer.drain()
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        w.write(b"z" * 100000)
        w.write_eof()
        assert w.can_write_eof()
        line = await r.readline()
        assert await r.read() == b""
        await w.wait_closed()
        listener.close()
        return line
    assert run_until(reactor, main()) == b"got 100000 bytes\n"


def test_slow_reader_and_100_mib_of_lines_checksummed(reactor, sock_dir):
    """A reader that sleeps now and then; 100 MiB of 1 KiB lines arrive
    whole and in order (sha256 on both sides)."""
    line_len = 1023
    n = 100 * 1024 * 1024 // (line_len + 1)
    rnd = random.Random(2)
    block = [bytes(rnd.choice(b"0123456789abcdef") for _ in range(line_len))
             + b"\n" for _ in range(64)]

    async def handler(reader, writer):
        sha = hashlib.sha256()
        count = 0
        async for line in reader:
            sha.update(line)
            count += 1
            if count % 10000 == 0:
                await twincore.sleep(0.001)   # slow now and then
        writer.write(b"%d %s\n" % (count, sha.hexdigest().encode()))
        writer.close()

    async def main():
        listener, connect = await serve("unix", handler, sock_dir)
        r, w = await connect()
        want = hashlib.sha256()
        for i in range(0, n, 64):
            chunk = block[:min(64, n - i)]
            w.writelines(chunk)
            for b in chunk:
                want.update(b)
            await w.drain()
        w.write_eof()
        answer = await r.readline()
        w.close()
        listener.close()
        return answer, b"%d %s\n" % (n, want.hexdigest().encode())
    got, want = run_until(reactor, main(), timeout=120)
    assert got == want


def test_errors(reactor):
    async def main():
        with pytest.raises(ValueError):
            await twincore.open_connection("127.0.0.1", 1, limit=0)
        with pytest.raises(TypeError):
            await twincore.start_server(None, 0)
        with pytest.raises(ConnectionRefusedError):
            listener = await twincore.start_server(echo_lines, 0)
            port = listener.port
            listener.close()
            await listener.wait_closed()
            await twincore.open_connection("127.0.0.1", port)
        reader = twincore.StreamReader()
        first = twincore.spawn(reader.readline())
        await twincore.sleep(0)
        with pytest.raises(RuntimeError, match="already waiting"):
            await reader.read(1)
        with pytest.raises(ValueError):
            await reader.readuntil(b"")
        reader.set_exception(ConnectionResetError("gone"))
        with pytest.raises(ConnectionResetError):
            await first
        with pytest.raises(ConnectionResetError):
            await reader.read(1)
    run_until(reactor, main())


def test_get_extra_info_and_lost_connection(reactor):
    async def handler(reader, writer):
        writer.transport.abort()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        assert w.get_extra_info("peername")[1] == listener.port
        assert w.get_extra_info("nonsense", 7) == 7
        # The peer aborts: a read ends (reset or EOF), drain() then raises.
        try:
            assert await r.read() == b""
        except ConnectionResetError:
            pass
        await w.wait_closed()
        with pytest.raises(ConnectionError):
            await w.drain()
        listener.close()
    run_until(reactor, main())


EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples",
                        "python")


@pytest.mark.parametrize("example", ["chat_streams.py", "chat_lines.py"])
def test_chat_examples(example):
    """Both chat servers: two clients, names, a line each way, a leave."""
    import socket
    import subprocess
    import sys
    env = dict(os.environ)
    proc = subprocess.Popen([sys.executable, os.path.join(EXAMPLES, example),
                             "0"], stdout=subprocess.PIPE, env=env)
    try:
        first = proc.stdout.readline().decode()
        port = int(first.rsplit(":", 1)[1])

        def client(name):
            s = socket.create_connection(("127.0.0.1", port), timeout=20)
            f = s.makefile("rwb")
            assert f.read(6) == b"name? "
            f.write(name + b"\n")
            f.flush()
            return s, f
        a, fa = client(b"ann")
        b, fb = client(b"bob")
        assert fa.readline() == b"* bob joined\n"
        fb.write(b"hi ann\n")
        fb.flush()
        assert fa.readline() == b"bob: hi ann\n"
        fa.write(b"hello\n")
        fa.flush()
        assert fb.readline() == b"ann: hello\n"
        fb.close()
        b.close()
        assert fa.readline() == b"* bob left\n"
        fa.close()
        a.close()
    finally:
        proc.terminate()
        assert proc.wait(timeout=20) is not None
        proc.stdout.close()



def test_waiting_reads_get_lines_split_across_chunks(reactor):
    got = []

    async def handler(reader, writer):
        me = twincore._current_task()
        async for line in reader:
            assert twincore._current_task() is me
            got.append(line)
            writer.write(line)
            await writer.drain()
        got.append(await reader.readline())   # at EOF: b""
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        for chunk in (b"ab", b"c\nd", b"e\nf\ng", b"\n"):
            w.write(chunk)
            await twincore.sleep(0.01)
        echoed = [await r.readline() for _ in range(4)]
        w.write_eof()
        assert await r.read() == b""
        w.close()
        listener.close()
        return echoed
    assert run_until(reactor, main()) == [b"abc\n", b"de\n", b"f\n", b"g\n"]
    assert got == [b"abc\n", b"de\n", b"f\n", b"g\n", b""]


def test_waiting_reads_limit_overrun_and_eof(reactor):
    async def handler(reader, writer):
        out = []
        try:
            await reader.readline()
        except ValueError:
            out.append("overrun")
        # The long line's tail, if it came in a later chunk, reads as
        # a line of its own (asyncio's behaviour); then b"ok\n".
        line = await reader.readline()
        while line != b"ok\n" and line.endswith(b"\n"):
            line = await reader.readline()
        out.append(line)
        out.append(await reader.readline())   # the partial line at EOF
        out.append(await reader.readline())
        writer.write(repr(out).encode())
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0, limit=8)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        for chunk in (b"0123", b"456789abcdefghij", b"kl\nok\n", b"part"):
            w.write(chunk)
            await twincore.sleep(0.01)
        w.write_eof()
        out = await r.read()
        w.close()
        listener.close()
        return out
    assert run_until(reactor, main()) == \
        repr(["overrun", b"ok\n", b"part", b""]).encode()


def test_read_after_a_timed_out_read(reactor):
    """A read cancelled by its timeout leaves no waiter behind: the next
    read gets the data that comes later, and the cancelled one nothing."""
    async def handler(reader, writer):
        with pytest.raises(TimeoutError):
            await twincore.wait_for(reader.readline(), 0.01)
        writer.write(b"ready\n")
        line = await reader.readline()
        writer.write(b"got " + line)
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        assert await r.readline() == b"ready\n"
        w.write(b"li")
        await twincore.sleep(0.01)
        w.write(b"ne\n")
        out = await r.read()
        w.close()
        listener.close()
        return out
    assert run_until(reactor, main()) == b"got line\n"


# ---- the C half of the reader (streamreader.c) and drain()'s fast path ----

def test_readline_awaitable_by_hand():
    """readline() is an awaitable made in C; driven by hand (as 3.12's
    await drives it) it returns a buffered line, waits on the reader's
    Future, and hands EOF to the Python slow path."""
    reader = twincore.StreamReader()
    reader.feed_data(b"one\ntwo")
    it = reader.readline().__await__()
    with pytest.raises(StopIteration) as stop:
        it.send(None)
    assert stop.value.value == b"one\n"
    with pytest.raises(RuntimeError, match="reuse"):
        it.send(None)
    # No whole line: the read waits on a Future of the reader's reactor.
    reader._reactor = twincore.Reactor()
    it = reader.readline().__await__()
    waiter = it.send(None)
    assert isinstance(waiter, twincore.Future)
    assert reader._waiter is waiter and not waiter.done()
    reader.feed_data(b"\nthree")   # settles the waiter
    assert waiter.done() and reader._waiter is None
    with pytest.raises(StopIteration) as stop:
        it.send(None)
    assert stop.value.value == b"two\n"
    reader.feed_eof()
    it = reader.readline().__await__()
    with pytest.raises(StopIteration) as stop:
        next(it)
    assert stop.value.value == b"three"
    it = reader.readline().__await__()
    with pytest.raises(StopIteration) as stop:
        next(it)
    assert stop.value.value == b""
    reader._reactor.close()


def test_dropped_or_closed_reads_leave_no_waiter():
    """A read that stops waiting (closed, thrown into, or dropped) takes
    its waiter off the reader, so the next read may wait."""
    r = twincore.Reactor()
    reader = twincore.StreamReader()
    reader.set_transport(type("T", (), {"reactor": r})())
    for stop in ("close", "throw", "drop"):
        it = reader.readline().__await__()
        assert isinstance(it.send(None), twincore.Future)
        assert reader._waiter is not None
        if stop == "close":
            it.close()
        elif stop == "throw":
            with pytest.raises(twincore.CancelledError):
                it.throw(twincore.CancelledError())
        else:
            del it
        assert reader._waiter is None, stop
    aiter = reader.__aiter__()
    assert aiter is reader
    it = reader.__anext__().__await__()
    it.send(None)
    with pytest.raises(RuntimeError, match="already waiting"):
        reader.readline().__await__().send(None)
    reader.feed_data(b"x\n")
    with pytest.raises(StopIteration) as stop:
        it.send(None)
    assert stop.value.value == b"x\n"
    reader.feed_eof()
    with pytest.raises(StopAsyncIteration):
        reader.__anext__().__await__().send(None)
    r.close()


def test_feed_data_takes_any_bytes_like_and_refuses_the_rest():
    reader = twincore.StreamReader(limit=4)
    reader.feed_data(memoryview(b"ab"))
    reader.feed_data(bytearray(b"c"))
    reader.feed_data(b"")
    assert bytes(reader._buffer) == b"abc"
    with pytest.raises(TypeError):
        reader.feed_data("text")
    with pytest.raises(TypeError):
        reader.feed_data(None)
    assert bytes(reader._buffer) == b"abc"
    with pytest.raises(AttributeError):
        reader._buffer = bytearray()


def test_feed_data_pauses_and_a_read_resumes(reactor):
    calls = []

    class Transport:
        def __init__(self):
            self.reactor = reactor

        def pause_reading(self):
            calls.append("pause")

        def resume_reading(self):
            calls.append("resume")

    async def main():
        reader = twincore.StreamReader(limit=4)
        reader.set_transport(Transport())
        reader.feed_data(b"ab\ncd\nefgh")   # 10 > 2 * 4
        assert calls == ["pause"] and reader._paused
        assert await reader.readline() == b"ab\n"   # 7 left: still over
        assert calls == ["pause"]
        assert await reader.readline() == b"cd\n"   # 4 left: resumes
        assert calls == ["pause", "resume"] and not reader._paused
        return True
    assert run_until(reactor, main())


def test_drain_needs_no_coroutine_until_it_must_wait(reactor):
    """drain() returns one shared ready awaitable while the write buffer
    is below its high watermark; a paused or lost connection gets the
    coroutine that waits or raises."""
    async def handler(reader, writer):
        with pytest.raises(ConnectionResetError):   # the client's abort
            async for line in reader:
                writer.write(line)
                ready = writer.drain()
                assert ready is twincore.streams._ready
                assert await ready is None
        writer.close()

    async def main():
        listener = await twincore.start_server(handler, 0)
        r, w = await twincore.open_connection("127.0.0.1", listener.port)
        assert await twincore.spawn(w.drain()) is None   # any awaitable
        with pytest.raises(TypeError, match="expected a coroutine"):
            twincore.spawn(twincore.Future(reactor))   # but not a Future
        w.write(b"hi\n")
        assert await r.readline() == b"hi\n"
        w.transport.abort()
        await twincore.sleep(0.01)
        slow = w.drain()
        assert slow is not twincore.streams._ready
        with pytest.raises(ConnectionResetError):
            await slow
        listener.close()
        return True
    assert run_until(reactor, main())


def test_many_reads_leave_nothing_behind(reactor):
    """100,000 lines through readline() and `async for`, waiting and
    not: the live objects stay flat."""
    import gc

    async def batch():
        reader = twincore.StreamReader()
        reader._reactor = reactor
        got = 0
        for i in range(500):
            reader.feed_data(b"line %d\n" % i)
            got += len(await reader.readline())
        feeder = reactor.call_soon

        async def lines():
            n = 0
            async for _ in reader:
                n += 1
            return n
        task = twincore.spawn(lines())
        for i in range(500):
            feeder(reader.feed_data, b"x\n")
        feeder(reader.feed_eof)
        assert await task == 500
        return got

    def count():
        for _ in range(3):
            gc.collect()
        return len(gc.get_objects())
    for _ in range(5):
        run_until(reactor, batch())
    before = count()
    for _ in range(100):
        run_until(reactor, batch())
    assert abs(count() - before) < 1000


def test_a_huge_limit_is_no_overflow():
    reader = twincore.StreamReader(limit=2 ** 63 - 1)
    reader.set_transport(type("T", (), {"reactor": None,
                                        "pause_reading": None})())
    reader.feed_data(b"x" * 10)   # nowhere near twice the limit
    assert not reader._paused
    with pytest.raises(OverflowError):
        twincore.StreamReader(limit=2 ** 64)


def test_feed_data_from_another_thread_is_refused(reactor):
    """Fed off the reactor's thread while a read waits: the caller gets
    the RuntimeError a Future's set_result() raises there, the read goes
    on waiting, and the next feed on the reactor's thread delivers."""
    import threading
    reader = twincore.StreamReader()
    reader._reactor = reactor
    errors = []

    def other():
        try:
            reader.feed_data(b"x\n")
        except RuntimeError as e:
            errors.append(str(e))

    async def main():
        read = twincore.spawn(reader.readline())
        await twincore.sleep(0.01)
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert errors and "thread other than its reactor" in errors[0]
        assert not read.done() and reader._waiter is not None
        reactor.call_soon(reader.feed_data, b"")
        return await twincore.wait_for(read, 5)
    assert run_until(reactor, main()) == b"x\n"
