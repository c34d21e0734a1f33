"""Framing protocols in the manner of Twisted's twisted.protocols.basic, in
snake_case: LineReceiver and the length-prefixed Int8/Int16/Int32
StringReceiver.

On a twincore transport the split runs in C on the bytes already in the
transport's input buffer (``Transport.set_framing``): a chunk of n lines
costs n calls of ``line_received`` and no copy of the chunk in Python. The
framing is installed when the reactor sets ``self.transport`` (before
``connection_made``), and again by ``set_line_mode()``/``set_raw_mode()``;
``delimiter`` and ``max_length`` are read then. On any other transport
(one calling ``data_received`` itself, e.g. a test's) the same split runs
in Python. Either way the bytes delivered are the ones Twisted's classes
deliver (the tests hold them to Twisted's own). On a twincore transport
``data_received`` is called only in raw mode: an override of it sees no
lines. A new ``delimiter`` or ``max_length`` takes effect at the next
``set_line_mode()``.

Flow control is the transport's: ``transport.pause_reading()`` in a
callback stops delivery after that frame; ``resume_reading()`` goes on
with the next. After ``transport.close()`` no frame follows. An exception
in a callback aborts the connection (``connection_lost`` gets it), as for
any protocol method.
"""

import struct

from .protocol import Protocol

__all__ = ["LineReceiver", "IntNStringReceiver", "Int8StringReceiver",
           "Int16StringReceiver", "Int32StringReceiver",
           "StringTooLongError"]


class StringTooLongError(ValueError):
    """send_string() of a string whose length does not fit the prefix."""


class _Framed(Protocol):
    """Installs the C framing when a twincore transport is set."""

    _transport = None
    _framed = False     # the transport splits in C
    paused = False      # the Python split only: stop after this frame

    @property
    def transport(self):
        return self._transport

    @transport.setter
    def transport(self, value):
        self._transport = value
        self._framed = hasattr(value, "set_framing")
        if self._framed:
            self._install(b"")

    def _install(self, extra):
        raise NotImplementedError


class LineReceiver(_Framed):
    """Receives lines (``line_received(line)``, the delimiter removed) or,
    after ``set_raw_mode()``, raw data (``raw_data_received(data)``).

    ``delimiter`` (default b"\\r\\n") ends a line; a line longer than
    ``max_length`` (default 16384), or that many bytes plus the
    delimiter's length with no delimiter, goes to
    ``line_length_exceeded(data)`` with everything after it (the default
    closes the connection)."""

    delimiter = b"\r\n"
    max_length = 16384
    line_mode = True
    _buffer = b""
    _busy_receiving = False

    def _install(self, extra):
        t = self._transport
        if self.line_mode:
            t.set_framing(self.line_received, delimiter=self.delimiter,
                          max_length=self.max_length,
                          on_too_long=self.line_length_exceeded,
                          unread=extra)
            if type(self).send_line is LineReceiver.send_line:
                # The same bytes, written in C without a Python frame.
                self.send_line = t.write_line
        else:
            self.__dict__.pop("send_line", None)
            t.set_framing(None, unread=extra)

    def set_line_mode(self, extra=b""):
        """Back to lines. extra (bytes a raw_data_received callback did not
        use) is split into lines first."""
        self.line_mode = True
        if self._framed:
            self._install(extra)
        elif extra:
            return self.data_received(extra)
        return None

    def set_raw_mode(self):
        """What follows goes to raw_data_received() as it comes."""
        self.line_mode = False
        if self._framed:
            self._install(b"")

    def clear_line_buffer(self):
        """Drop and return the bytes buffered in Python (the Python split
        only; the C split keeps its partial line in the transport)."""
        b, self._buffer = self._buffer, b""
        return b

    def line_received(self, line):
        """One line, without the delimiter. Override this."""
        raise NotImplementedError

    def raw_data_received(self, data):
        """Raw mode: bytes as they arrive. Override this to use raw mode."""
        raise NotImplementedError

    def send_line(self, line):
        """Write line and the delimiter."""
        return self._transport.write(line + self.delimiter)

    def line_length_exceeded(self, line):
        """A line over max_length: line holds the rest of the buffer,
        starting with (part of) that line. Closes the connection."""
        return self._transport.close()

    def data_received(self, data):
        if self._framed:   # the C split gives only raw data here
            return self.raw_data_received(data)
        # Twisted's LineReceiver.dataReceived, for other transports.
        if self._busy_receiving:
            self._buffer += data
            return None
        try:
            self._busy_receiving = True
            self._buffer += data
            while self._buffer and not self.paused:
                if self.line_mode:
                    try:
                        line, self._buffer = self._buffer.split(
                            self.delimiter, 1)
                    except ValueError:
                        if len(self._buffer) >= (self.max_length +
                                                 len(self.delimiter)):
                            line, self._buffer = self._buffer, b""
                            return self.line_length_exceeded(line)
                        return None
                    if len(line) > self.max_length:
                        exceeded = line + self.delimiter + self._buffer
                        self._buffer = b""
                        return self.line_length_exceeded(exceeded)
                    why = self.line_received(line)
                    t = self._transport
                    if why or (t is not None and _closing(t)):
                        return why
                else:
                    data, self._buffer = self._buffer, b""
                    why = self.raw_data_received(data)
                    if why:
                        return why
        finally:
            self._busy_receiving = False
        return None


def _closing(t):
    closing = getattr(t, "is_closing", None)
    if closing is not None:
        return closing()
    return bool(getattr(t, "disconnecting", False))


class IntNStringReceiver(_Framed):
    """Strings each after its length, an unsigned big-endian integer of
    ``prefix_length`` bytes: ``string_received(string)`` per string,
    ``send_string(string)`` to send one. A length over ``max_length``
    (default 99999) goes to ``length_limit_exceeded(length)`` (the
    default closes the connection)."""

    struct_format = None
    prefix_length = None
    max_length = 99999
    _unprocessed = b""

    def _install(self, extra):
        self._transport.set_framing(
            self.string_received, prefix=self.prefix_length,
            max_length=self.max_length,
            on_too_long=self.length_limit_exceeded, unread=extra)

    def string_received(self, string):
        """One complete string. Override this."""
        raise NotImplementedError

    def length_limit_exceeded(self, length):
        """A prefix announced more than max_length bytes. Closes the
        connection."""
        return self._transport.close()

    def send_string(self, string):
        """Write the length prefix and string; StringTooLongError when its
        length does not fit the prefix."""
        if len(string) >= 2 ** (8 * self.prefix_length):
            raise StringTooLongError(
                f"send_string(): a string of {len(string)} bytes does not "
                f"fit a {self.prefix_length}-byte length prefix")
        self._transport.write(struct.pack(self.struct_format, len(string)) +
                              string)

    def data_received(self, data):
        if self._framed:
            raise RuntimeError("data_received() on a framed transport")
        # Twisted's IntNStringReceiver.dataReceived, for other transports.
        alldata = self._unprocessed + data
        offset = 0
        n = self.prefix_length
        fmt = self.struct_format
        self._unprocessed = alldata
        while len(alldata) >= offset + n and not self.paused:
            start = offset + n
            (length,) = struct.unpack(fmt, alldata[offset:start])
            if length > self.max_length:
                self._unprocessed = alldata[offset:]
                self.length_limit_exceeded(length)
                return None
            end = start + length
            if len(alldata) < end:
                break
            offset = end
            self._unprocessed = alldata[offset:]
            self.string_received(alldata[start:end])
        self._unprocessed = alldata[offset:]
        return None


class Int32StringReceiver(IntNStringReceiver):
    """Strings after a 4-byte big-endian length."""
    struct_format = "!I"
    prefix_length = 4


class Int16StringReceiver(IntNStringReceiver):
    """Strings after a 2-byte big-endian length."""
    struct_format = "!H"
    prefix_length = 2


class Int8StringReceiver(IntNStringReceiver):
    """Strings after a 1-byte length."""
    struct_format = "!B"
    prefix_length = 1
