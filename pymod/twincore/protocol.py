"""Twisted-style protocols and factories, in snake_case.

The reactor calls a stream protocol's methods in this order, on its own
thread: ``connection_made(transport)``, then ``data_received(data)`` any
number of times, then at most one ``eof_received()``, then exactly one
``connection_lost(reason)`` (None for a clean close, else the exception).
``pause_writing()``/``resume_writing()`` come from the transport's write
buffer watermarks (see ``Transport.set_write_buffer_limits``).

As Twisted's ``makeConnection`` does, the reactor sets ``protocol.transport``
(and ``protocol.factory``, when still unset) before ``connection_made``; a
protocol that cannot take the attribute (``__slots__``) is left alone.
After ``transport.close()`` or ``abort()`` no ``data_received`` or
``eof_received`` follows, only ``connection_lost``. A stream protocol
method that raises (``connection_made``, ``data_received``,
``eof_received``, ``pause_writing``, ``resume_writing``) is logged (logger
"twincore") and drops its connection: ``connection_lost`` gets that
exception, and a client's connect Future fails with it when
``connection_made`` raised. An exception in ``connection_lost`` is only
logged, and so is one in any DatagramProtocol method (one bad datagram does
not close a UDP socket, as in asyncio).
``Reactor.close()`` calls ``connection_lost`` for every open transport.
"""

__all__ = ["BaseProtocol", "Protocol", "DatagramProtocol", "Factory",
           "ClientFactory", "ProcessProtocol"]


class BaseProtocol:
    """Connection events shared by stream and datagram protocols."""

    transport = None
    factory = None

    def connection_made(self, transport):
        """The transport is ready (``self.transport`` is already set)."""
        self.transport = transport

    def connection_lost(self, reason):
        """Called once, last. reason: None for a clean close, else the
        exception (e.g. ConnectionResetError)."""

    def pause_writing(self):
        """The transport's write buffer went over its high watermark."""

    def resume_writing(self):
        """The write buffer drained to its low watermark."""


class Protocol(BaseProtocol):
    """A stream (TCP, Unix) protocol."""

    def data_received(self, data):
        """Bytes arrived (any chunking: a message may span calls)."""

    def eof_received(self):
        """The peer shut down its write side. Return True to keep the
        connection half-open (you may still write); otherwise the
        transport closes itself."""
        return None


class DatagramProtocol(BaseProtocol):
    """A UDP protocol."""

    def datagram_received(self, data, addr):
        """One datagram from addr (host, port)."""

    def error_received(self, exc):
        """A send or receive failed (e.g. ConnectionRefusedError)."""


class ProcessProtocol(BaseProtocol):
    """A child process (Reactor.spawn_process). Calls, in this order:
    ``connection_made(transport)`` (a ProcessTransport), then for each
    output pipe any number of ``pipe_data_received(fd, data)`` and one
    ``pipe_connection_lost(fd)`` (also for stdin, 0, once closed);
    ``process_exited(returncode)`` when the exit is noticed (output may
    still follow it); last, once it exited and every pipe closed,
    ``connection_lost(None)``. ``pause_writing``/``resume_writing`` follow
    the stdin queue."""

    def pipe_data_received(self, fd, data):
        """Bytes from the child's fd (1: stdout, 2: stderr)."""

    def pipe_connection_lost(self, fd):
        """Pipe fd is closed (EOF, close_stdin(), or the child went
        away)."""

    def process_exited(self, returncode):
        """The child ended: its exit status, or -N if signal N ended
        it."""


class Factory:
    """Builds one protocol per connection: set ``protocol`` to a class, or
    override ``build_protocol``."""

    protocol = None

    def __init__(self, protocol=None, *args, **kwargs):
        if protocol is not None:
            self.protocol = protocol
        self._args = args
        self._kwargs = kwargs

    @classmethod
    def for_protocol(cls, protocol, *args, **kwargs):
        """A factory calling protocol(*args, **kwargs) per connection."""
        return cls(protocol, *args, **kwargs)

    def build_protocol(self, addr):
        """Return a protocol for a connection from addr, or None to refuse
        it (the connection is then closed)."""
        if self.protocol is None:
            raise TypeError(
                f"{type(self).__name__}.build_protocol(): set the factory's "
                "'protocol' or override build_protocol()")
        proto = self.protocol(*self._args, **self._kwargs)
        try:
            proto.factory = self
        except (AttributeError, TypeError):
            pass   # __slots__ or a read-only property: not Twisted-style
        return proto


class ClientFactory(Factory):
    """A factory for outgoing connections."""
