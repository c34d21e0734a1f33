"""Streams in the manner of asyncio's: open_connection()/start_server()
give a (StreamReader, StreamWriter) pair per connection, for coroutines
that read lines or exact sizes and write with back-pressure.

The reader's buffer is a bytearray; feed_data(), readline() and
`async for` are C (streamreader.c), the other reads are here and search
the buffer with its C methods (find);
when it holds more than twice ``limit`` bytes the transport stops reading
(``pause_reading``), and it reads again once a read takes the buffer down
to ``limit``: a slow reader holds the peer back through TCP. The writer's
``drain()`` waits while the transport's write buffer is over its high
watermark (``pause_writing`` to ``resume_writing``). Errors are asyncio's
own classes (IncompleteReadError, LimitOverrunError), so code written for
asyncio catches them. Everything runs on the reactor's thread; one
coroutine at a time may wait on a reader.
"""

from asyncio import IncompleteReadError, LimitOverrunError

from ._future import Future
from ._twincore import _StreamReaderBase, _ready
from .protocol import Factory, Protocol

__all__ = ["StreamReader", "StreamWriter", "IncompleteReadError",
           "LimitOverrunError", "open_connection", "start_server",
           "open_unix_connection", "start_unix_server"]

_DEFAULT_LIMIT = 2 ** 16   # asyncio's


def _check_limit(limit, what):
    if isinstance(limit, bool) or not isinstance(limit, int) or limit <= 0:
        raise ValueError(f"{what}(): 'limit' must be an int > 0, got "
                         f"{limit!r}")


class StreamReader(_StreamReaderBase):
    """Bytes read from a connection, for coroutines (asyncio's
    StreamReader). feed_data(), readline() and `async for line in reader`
    are the C base's (streamreader.c); the rest is here."""

    def __init__(self, limit=_DEFAULT_LIMIT):
        _check_limit(limit, "StreamReader")
        # The fields are the base's slots, made empty by it (_buffer is
        # its bytearray, for good).
        self._limit = limit

    def __repr__(self):
        info = [f"{len(self._buffer)} bytes"]
        if self._eof:
            info.append("eof")
        if self._exception is not None:
            info.append(f"exception={self._exception!r}")
        if self._paused:
            info.append("paused")
        return f"<StreamReader {' '.join(info)}>"

    def exception(self):
        return self._exception

    def set_exception(self, exc):
        self._exception = exc
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def set_transport(self, transport):
        self._transport = transport
        self._reactor = transport.reactor

    def _wakeup_waiter(self):
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _maybe_resume_transport(self):
        if self._paused and len(self._buffer) <= self._limit:
            self._paused = False
            self._transport.resume_reading()

    def feed_eof(self):
        self._eof = True
        self._wakeup_waiter()

    def at_eof(self):
        """True once EOF came and the buffer is empty."""
        return self._eof and not self._buffer

    def _new_waiter(self, what):
        """The Future a read awaits until data, EOF or an error comes."""
        if self._waiter is not None:
            raise RuntimeError(
                f"{what}() called while another coroutine is already "
                "waiting for incoming data")
        if self._paused:   # the caller needs more than the buffer holds
            self._paused = False
            self._transport.resume_reading()
        if self._reactor is None:
            self._reactor = _reactor(None)
        self._waiter = waiter = Future(self._reactor)
        return waiter

    async def _wait_for_data(self, what):
        waiter = self._new_waiter(what)
        try:
            await waiter
        finally:
            self._waiter = None

    async def _readline_slow(self):
        """readline() when no whole line is at hand: EOF, an error, a
        line over the limit (the C readline() hands these here)."""
        try:
            return await self.readuntil(b"\n")
        except IncompleteReadError as e:
            return e.partial
        except LimitOverrunError as e:
            if self._buffer.startswith(b"\n", e.consumed):
                del self._buffer[:e.consumed + 1]
            else:
                self._buffer.clear()
            self._maybe_resume_transport()
            raise ValueError(e.args[0])

    async def _anext_slow(self):
        line = await self._readline_slow()
        if line == b"":
            raise StopAsyncIteration
        return line

    async def readuntil(self, separator=b"\n"):
        """Up to and including separator. IncompleteReadError at EOF
        (.partial: what came), LimitOverrunError when the limit passes
        first (the data stays)."""
        seplen = len(separator)
        if seplen == 0:
            raise ValueError("readuntil(): 'separator' must not be empty")
        if self._exception is not None:
            raise self._exception
        buf = self._buffer
        offset = 0
        while True:
            n = len(buf)
            if n - offset >= seplen:
                i = buf.find(separator, offset)
                if i != -1:
                    break
                offset = n + 1 - seplen
                if offset > self._limit:
                    raise LimitOverrunError(
                        "Separator is not found, and chunk exceed the limit",
                        offset)
            if self._eof:
                chunk = bytes(buf)
                buf.clear()
                raise IncompleteReadError(chunk, None)
            await self._wait_for_data("readuntil")
            if self._exception is not None:
                raise self._exception
        if i > self._limit:
            raise LimitOverrunError(
                "Separator is found, but chunk is longer than limit", i)
        end = i + seplen
        chunk = bytes(buf[:end])
        del buf[:end]
        self._maybe_resume_transport()
        return chunk

    async def read(self, n=-1):
        """Up to n bytes (n < 0: until EOF); b"" at EOF."""
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        if n < 0:
            blocks = []
            while True:
                block = await self.read(self._limit)
                if not block:
                    break
                blocks.append(block)
            return b"".join(blocks)
        if not self._buffer and not self._eof:
            await self._wait_for_data("read")
            if self._exception is not None:
                raise self._exception
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        self._maybe_resume_transport()
        return data

    async def readexactly(self, n):
        """Exactly n bytes; IncompleteReadError (with .partial) when EOF
        comes first."""
        if n < 0:
            raise ValueError("readexactly(): 'n' must be >= 0, got "
                             f"{n!r}")
        if self._exception is not None:
            raise self._exception
        if n == 0:
            return b""
        while len(self._buffer) < n:
            if self._eof:
                incomplete = bytes(self._buffer)
                self._buffer.clear()
                raise IncompleteReadError(incomplete, n)
            await self._wait_for_data("readexactly")
            if self._exception is not None:
                raise self._exception
        if len(self._buffer) == n:
            data = bytes(self._buffer)
            self._buffer.clear()
        else:
            data = bytes(self._buffer[:n])
            del self._buffer[:n]
        self._maybe_resume_transport()
        return data


class _StreamProtocol(Protocol):
    """Feeds a StreamReader; tells StreamWriter.drain() about the write
    buffer; on a server, starts the handler per connection."""

    def __init__(self, reader, handler=None, spawn=None):
        self._reader = reader
        self.data_received = reader.feed_data   # no frame in between
        self._handler = handler
        self._spawn = spawn
        self._paused = False
        self._drain_waiters = []
        self._lost = False
        self._lost_exc = None
        self._closed = None
        self._writer = None
        self._eof_sent = False

    def connection_made(self, transport):
        self.transport = transport
        self._reader.set_transport(transport)
        if self._handler is not None:
            self._writer = StreamWriter(transport, self, self._reader)
            res = self._handler(self._reader, self._writer)
            if hasattr(res, "send"):   # a coroutine: run it as a task
                self._spawn(res)

    def data_received(self, data):
        self._reader.feed_data(data)

    def eof_received(self):
        self._reader.feed_eof()
        # Half-open: the writer may still write, unless it is done too.
        return not self._eof_sent

    def connection_lost(self, exc):
        self._lost = True
        self._lost_exc = exc
        if exc is None:
            self._reader.feed_eof()
        else:
            self._reader.set_exception(exc)
        self._wake_drain(exc)
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)
        self._handler = None

    def pause_writing(self):
        self._paused = True

    def resume_writing(self):
        self._paused = False
        self._wake_drain(None)

    def _wake_drain(self, exc):
        waiters, self._drain_waiters = self._drain_waiters, []
        for w in waiters:
            if not w.done():
                if exc is None:
                    w.set_result(None)
                else:
                    w.set_exception(exc)

    async def _drain_helper(self):
        if self._lost:
            raise ConnectionResetError("Connection lost")
        if not self._paused:
            return
        waiter = Future(self.transport.reactor)
        self._drain_waiters.append(waiter)
        await waiter

    def _wait_closed(self):
        if self._closed is None:
            self._closed = Future(self.transport.reactor)
            if self._lost:
                self._closed.set_result(None)
        return self._closed


class StreamWriter:
    """Writes to a connection (asyncio's StreamWriter)."""

    def __init__(self, transport, protocol, reader):
        self._transport = transport
        self._protocol = protocol
        self._reader = reader
        # The transport's own methods: no frame in between.
        self.write = transport.write
        self.writelines = transport.writelines

    def __repr__(self):
        return f"<StreamWriter transport={self._transport!r}>"

    @property
    def transport(self):
        return self._transport

    def write(self, data):
        self._transport.write(data)

    def writelines(self, data):
        self._transport.writelines(data)

    def write_eof(self):
        """Shut down the write side (the peer reads EOF); the connection
        closes once the peer's EOF comes too."""
        self._protocol._eof_sent = True
        return self._transport.write_eof()

    def can_write_eof(self):
        return True

    def close(self):
        return self._transport.close()

    def is_closing(self):
        return self._transport.is_closing()

    async def wait_closed(self):
        """Until connection_lost (after close(), or the peer leaving)."""
        await self._protocol._wait_closed()

    def get_extra_info(self, name, default=None):
        return self._transport.get_extra_info(name, default)

    def drain(self):
        """Awaitable: until the write buffer is down to its low watermark;
        raises the connection's error once it is lost."""
        protocol = self._protocol
        if self._reader._exception is None and not protocol._paused and \
                not protocol._lost:
            return _ready   # done already: no coroutine per write
        return self._drain_slow()

    async def _drain_slow(self):
        exc = self._reader._exception
        if exc is not None:
            raise exc
        protocol = self._protocol
        if protocol._paused or protocol._lost:
            await protocol._drain_helper()


def _reactor(reactor):
    import twincore
    return reactor if reactor is not None else twincore._current_reactor()


class _OneProtocol(Factory):
    def __init__(self, proto):
        super().__init__()
        self._proto = proto

    def build_protocol(self, addr):
        proto, self._proto = self._proto, None
        return proto


class _ServerFactory(Factory):
    def __init__(self, handler, limit, reactor):
        super().__init__()
        self._handler = handler
        self._limit = limit
        self._spawn = reactor.spawn

    def build_protocol(self, addr):
        return _StreamProtocol(StreamReader(self._limit), self._handler,
                               self._spawn)


async def open_connection(host, port, *, tls=None, server_hostname=None,
                          limit=_DEFAULT_LIMIT, timeout=None, reactor=None):
    """Connect over TCP (TLS with tls=TLSContext); returns (reader,
    writer)."""
    _check_limit(limit, "open_connection")
    r = _reactor(reactor)
    reader = StreamReader(limit)
    proto = _StreamProtocol(reader)
    if tls is not None:
        await r.connect_tls(host, port, _OneProtocol(proto), tls,
                            server_hostname=server_hostname, timeout=timeout)
    else:
        await r.connect_tcp(host, port, _OneProtocol(proto), timeout=timeout)
    return reader, StreamWriter(proto.transport, proto, reader)


async def open_unix_connection(path, *, limit=_DEFAULT_LIMIT, reactor=None):
    """Connect to a Unix socket; returns (reader, writer)."""
    _check_limit(limit, "open_unix_connection")
    r = _reactor(reactor)
    reader = StreamReader(limit)
    proto = _StreamProtocol(reader)
    await r.connect_unix(path, _OneProtocol(proto))
    return reader, StreamWriter(proto.transport, proto, reader)


def _check_handler(handler, what):
    if not callable(handler):
        raise TypeError(f"{what}(): 'handler' must be callable, got "
                        f"{type(handler).__name__}")


async def start_server(handler, port, host="127.0.0.1", *, tls=None,
                       limit=_DEFAULT_LIMIT, backlog=0, reuse_port=False,
                       reactor=None):
    """Listen on host:port (0: any free port; see the Listener's .port);
    handler(reader, writer) runs per connection (a coroutine function's
    coroutine runs as a task). Returns the Listener."""
    _check_handler(handler, "start_server")
    _check_limit(limit, "start_server")
    r = _reactor(reactor)
    factory = _ServerFactory(handler, limit, r)
    if tls is not None:
        return r.listen_tls(port, factory, tls, host=host, backlog=backlog,
                            reuse_port=reuse_port)
    return r.listen_tcp(port, factory, host=host, backlog=backlog,
                        reuse_port=reuse_port)


async def start_unix_server(handler, path, *, limit=_DEFAULT_LIMIT,
                            backlog=0, reactor=None):
    """Listen on a Unix socket path; as start_server()."""
    _check_handler(handler, "start_unix_server")
    _check_limit(limit, "start_unix_server")
    r = _reactor(reactor)
    return r.listen_unix(path, _ServerFactory(handler, limit, r),
                         backlog=backlog)
