"""twincore: one thread runs the event loop for all network IO; CPU work
goes to a pool of native threads and comes back as Futures.

    import twincore

    class Echo(twincore.Protocol):
        def data_received(self, data):
            self.transport.write(data)

    twincore.reactor.listen_tcp(8000, twincore.Factory(Echo))
    twincore.reactor.run()

Everything here runs on the reactor's thread unless it says otherwise;
``Reactor.call_from_thread`` is the thread-safe way in. Importing twincore
creates no reactor, opens no descriptor and starts no thread: the default
reactor ``twincore.reactor`` is made on first use and belongs to the thread
that runs it. Where a ``reactor=`` argument is left out, inside a running
reactor it means that one (``get_running_reactor()``), elsewhere the
default one.
"""

import atexit
import inspect
import ipaddress
import logging
import os
import socket
import sys
import threading
import types
import weakref

from . import _twincore
from ._twincore import (CpuPool as _CCpuPool, Error, PRIORITY_HIGH,
                        PRIORITY_LOW, PRIORITY_NORMAL, Transport, Listener,
                        TimerHandle, DatagramTransport, ProcessTransport)
from ._twincore import (HAVE_TLS, ETLS, ETLS_CERT, ETLS_HOSTNAME,
                        ETLS_EXPIRED, ETLS_UNKNOWN_CA, ETLS_VERSION,
                        ETLS_NO_CLOSE_NOTIFY)
from ._future import (Future, CancelledError, InvalidStateError, PENDING,
                      RUNNING, DONE, FAILED, CANCELLED)
from .protocol import (BaseProtocol, Protocol, DatagramProtocol, Factory,
                       ClientFactory, ProcessProtocol)
from ._interop import to_asyncio, from_asyncio, to_deferred, from_deferred
from ._lane import PoolLifecycle, closed_future, join_on_thread
from ._timeouts import wait_for, timeout, Timeout
from .framing import (LineReceiver, IntNStringReceiver, Int8StringReceiver,
                      Int16StringReceiver, Int32StringReceiver,
                      StringTooLongError)
from .streams import (StreamReader, StreamWriter, IncompleteReadError,
                      LimitOverrunError, open_connection, start_server,
                      open_unix_connection, start_unix_server)
from ._process_pool import (ProcessPool, WorkerDied, BrokenProcessPool,
                            RemoteTraceback, defer_to_process, defer_to,
                            default_process_pool)
from ._interp_pool import InterpreterPool, defer_to_interpreter

__all__ = [
    "Reactor", "reactor", "get_running_reactor", "CpuPool", "Future",
    "CancelledError", "InvalidStateError", "Error", "Protocol", "BaseProtocol",
    "DatagramProtocol", "Factory", "ClientFactory", "Transport", "Listener",
    "TimerHandle", "DatagramTransport", "defer_to_cpu", "run", "gather",
    "sleep", "spawn", "inline_callbacks", "PRIORITY_HIGH", "PRIORITY_NORMAL",
    "PRIORITY_LOW", "to_asyncio", "from_asyncio", "to_deferred",
    "from_deferred", "PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED",
    "get_include", "TLSContext", "HAVE_TLS", "ETLS", "ETLS_CERT",
    "ETLS_HOSTNAME", "ETLS_EXPIRED", "ETLS_UNKNOWN_CA", "ETLS_VERSION",
    "ETLS_NO_CLOSE_NOTIFY", "ProcessProtocol", "ProcessTransport", "PIPE",
    "STDOUT", "DEVNULL",
    "wait_for", "timeout", "Timeout", "LineReceiver",
    "IntNStringReceiver", "Int8StringReceiver", "Int16StringReceiver",
    "Int32StringReceiver", "StringTooLongError", "StreamReader",
    "StreamWriter", "IncompleteReadError", "LimitOverrunError",
    "open_connection", "start_server", "open_unix_connection",
    "start_unix_server",
    "ProcessPool", "WorkerDied", "BrokenProcessPool",
    "RemoteTraceback", "defer_to_process", "defer_to", "default_process_pool",
    "InterpreterPool", "defer_to_interpreter",
]

# spawn_process() stdio values: subprocess's own, so either module's work.
PIPE = -1
STDOUT = -2
DEVNULL = -3



class CpuPool(_CCpuPool, PoolLifecycle):
    """Native worker threads for CPU work: ``CpuPool(workers=N)`` (0: one
    per CPU). A worker takes the GIL only for the call itself, so callables
    that release it (hashlib, zlib, numpy) run on every core at once.
    A pool nobody closed is closed at interpreter exit, as
    ``close(cancel_queued=True)``; one nobody holds stays open until its
    queued and running tasks are delivered.

    ``close()`` joins the workers, so on a reactor's thread it would stall
    the loop: there it raises RuntimeError while tasks for that reactor
    still run. In a coroutine use ``await pool.aclose()`` or
    ``async with CpuPool() as pool:``. After ``fork()`` the child's pool
    starts new workers; tasks queued or running in the parent never run in
    the child."""

    def __new__(cls, *args, **kwargs):
        self = super().__new__(cls, *args, **kwargs)
        _open_pools.add(self)
        return self

    def defer(self, fn, /, *args, priority=PRIORITY_NORMAL, timeout=None,
              reactor=None, **kwargs):
        """Run fn(*args, **kwargs) on a worker; returns a Future settled on
        the reactor's thread with the result or the exception (traceback
        kept). ``timeout`` (seconds) fails it with TimeoutError."""
        r = reactor if reactor is not None else _current_reactor()
        # Before submitting: a bad timeout must not leave the task running.
        _check_timeout(timeout, "defer_to_cpu")
        fut = self._defer(r, fn, args, kwargs or None, priority)
        if timeout is not None:
            _apply_timeout(r, fut, timeout, "defer_to_cpu")
        return fut

    def aclose(self, cancel_queued=False, *, reactor=None):
        """Close without blocking the reactor: new tasks are refused at
        once (``closed`` is True), queued ones run (or, with cancel_queued,
        complete as cancelled), and the workers are joined on a helper
        thread. Returns a Future, settled on the reactor's thread once
        they are; ``await pool.aclose()`` in a coroutine. reactor: the one
        to settle it on (default: the reactor running on this thread that
        tasks of this pool still run for; with none, nothing here waits for
        the pool and it closes at once, as close() does)."""
        r = reactor
        if r is None:
            r = self._reactor_here(cancel_queued)
        if r is None:
            self.close(cancel_queued)
            return closed_future()
        self._begin_close(cancel_queued)
        return join_on_thread(r, self._join_workers, "twincore-pool-close")


def _apply_timeout(r, fut, timeout, what):
    if not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"{what}(): 'timeout' must be a number > 0, "
                         f"got {timeout!r}")

    def expire():
        if not fut.done():
            task = fut._task
            if task is not None:
                task.cancel()   # still queued: it never runs
            hook, fut._cancel_hook = fut._cancel_hook, None
            if hook is not None:
                hook()
            if not fut.done():
                fut.set_exception(TimeoutError(
                    f"{what}() timed out after {timeout} s"))
    handle = r.call_later(timeout, expire)
    fut.add_done_callback(lambda _: handle.cancel())


_default_pool = None
# Made on first use, maybe by a thread other than the reactor's.
_default_pool_lock = threading.RLock()
# Every CpuPool made, the default one too, for the exit and fork hooks.
_open_pools = weakref.WeakSet()


def _get_default_pool():
    global _default_pool
    with _default_pool_lock:
        if _default_pool is None or _default_pool.closed:
            workers = os.environ.get("TWINCORE_CPU_WORKERS", "0")
            try:
                n = int(workers)
            except ValueError:
                raise ValueError("TWINCORE_CPU_WORKERS must be an integer, "
                                 f"got {workers!r}") from None
            _default_pool = CpuPool(workers=n)
        return _default_pool


@atexit.register
def _close_pools():
    # Join the workers while the interpreter is whole: a worker taking the
    # GIL during finalization would hang (or be ended by pthread_exit).
    # Tasks running now finish; queued ones are cancelled. No loop runs any
    # more, so close() need not refuse to block one.
    for pool in list(_open_pools):
        pool._begin_close(True)
        pool._join_workers()


def _pools_after_fork():
    # The native pools forgot their workers and queued work in the child;
    # the Python bookkeeping (queues, drainer counts) must follow.
    for pool in list(_open_pools):
        pool._after_fork()


os.register_at_fork(after_in_child=_pools_after_fork)


def _check_port(port, what, low=0):
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{what}(): 'port' must be an int, got "
                        f"{type(port).__name__}")
    if not low <= port <= 65535:
        raise ValueError(f"{what}(): 'port' must be in {low}..65535, "
                         f"got {port}")


def _unix_path(path, what):
    """A Unix socket path for the C layer.  A leading NUL names Linux's
    abstract namespace, as in the socket module; the C API spells it
    '@name', which is accepted too (and what get_host() reports)."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{what}(): 'path' must be str, bytes or "
                        f"os.PathLike, got {type(path).__name__}") from None
    if path[:1] == "\0":
        path = "@" + path[1:]
    elif path[:1] == b"\0":
        path = b"@" + path[1:]
    if ("\0" if isinstance(path, str) else b"\0") in path:
        raise ValueError(f"{what}(): 'path' may hold a null byte only "
                         f"first (an abstract name), got {path!r}")
    return path


def _check_timeout(timeout, what):
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what}(): 'timeout' must be a number or None, "
                        f"got {type(timeout).__name__}")
    if not timeout > 0:   # also NaN
        raise ValueError(f"{what}(): 'timeout' must be > 0, got {timeout!r}")


class TLSContext(_twincore.TLSContext):
    __doc__ = _twincore.TLSContext.__doc__

    @classmethod
    def from_ssl_context(cls, ctx, *, server_side=None, certfile=None,
                         keyfile=None, alpn=None):
        """A TLSContext with the settings of an ssl.SSLContext that map
        cleanly: its side, verify_mode, check_hostname, minimum/maximum
        version, enabled ciphers and the CA certificates loaded into it
        (none loaded, as after ssl.create_default_context(): the system
        store). What ssl cannot give back is passed again: certfile and
        keyfile (a server's chain, a client's certificate) and alpn.
        Raises ValueError for what does not map."""
        import ssl
        if not isinstance(ctx, ssl.SSLContext):
            raise TypeError("from_ssl_context(): expected an ssl.SSLContext, "
                            f"got {type(ctx).__name__}")
        if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:
            side = True
        elif ctx.protocol == ssl.PROTOCOL_TLS_CLIENT:
            side = False
        elif server_side is None:
            raise ValueError("from_ssl_context(): a generic PROTOCOL_TLS "
                             "context has no side: pass server_side=")
        else:
            side = bool(server_side)
        if server_side is not None and bool(server_side) != side:
            raise ValueError("from_ssl_context(): server_side contradicts "
                             "the context's protocol")
        if side and certfile is None:
            raise ValueError("from_ssl_context(): ssl.SSLContext does not "
                             "give back its certificate chain: pass "
                             "certfile= (and keyfile=)")
        kwargs = {"server_side": side, "certfile": certfile,
                  "keyfile": keyfile, "alpn": alpn}
        mode = ctx.verify_mode
        if side:
            kwargs["require_client_cert"] = mode == ssl.CERT_REQUIRED
            kwargs["request_client_cert"] = mode == ssl.CERT_OPTIONAL
        else:
            if mode == ssl.CERT_OPTIONAL:
                raise ValueError("from_ssl_context(): CERT_OPTIONAL has no "
                                 "meaning for a client; use CERT_REQUIRED "
                                 "or CERT_NONE")
            kwargs["verify"] = mode == ssl.CERT_REQUIRED
            kwargs["check_hostname"] = ctx.check_hostname
        low, high = ctx.minimum_version, ctx.maximum_version
        if low not in (ssl.TLSVersion.MINIMUM_SUPPORTED,):
            kwargs["minimum_version"] = int(low)
        if high not in (ssl.TLSVersion.MAXIMUM_SUPPORTED,):
            kwargs["maximum_version"] = int(high)
        cas = ctx.get_ca_certs(binary_form=True)
        if cas:
            kwargs["cadata"] = "".join(ssl.DER_cert_to_PEM_cert(der)
                                       for der in cas)
        ciphers = ctx.get_ciphers()
        old = [c["name"] for c in ciphers if c["protocol"] != "TLSv1.3"]
        new = [c["name"] for c in ciphers if c["protocol"] == "TLSv1.3"]
        if old:
            kwargs["ciphers"] = ":".join(old)
        if new:
            kwargs["ciphersuites"] = ":".join(new)
        return cls(**kwargs)


def _settle_on_connect(fut):
    """The on_connect(protocol, exc) callback that settles fut."""
    def on_connect(protocol, exc):
        if fut.done():
            if protocol is not None:
                protocol.transport.abort()
            return
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(protocol)
    return on_connect


def _settle_with_connect(fut, connect, *args, **kwargs):
    """Start a low-level connect (Reactor._connect_tcp/_tls/_unix) whose
    outcome settles fut; cancelling fut aborts the connection. An OSError
    from starting it (refused at once, no such socket, no descriptors)
    fails fut, as a later failure would."""
    on_connect = _settle_on_connect(fut)
    try:
        transport = connect(*args, on_connect=on_connect, **kwargs)
    except OSError as exc:
        fut.set_exception(exc)
        return
    fut._cancel_hook = transport.abort


def _fs_arg(value, what):
    if isinstance(value, (str, bytes, os.PathLike)):
        b = os.fsencode(value)
        if b"\0" in b:
            raise ValueError(f"spawn_process(): {what!r} must not contain "
                             "NUL characters")
        return b
    raise TypeError(f"spawn_process(): {what!r} items must be str, bytes "
                    f"or os.PathLike, got {type(value).__name__}")


def _stdio_code(value, what):
    if value is None:
        return -4
    if value in (PIPE, STDOUT, DEVNULL) and isinstance(value, int) \
            and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise TypeError(f"spawn_process(): {what!r} must be PIPE, DEVNULL, "
                        "None, a descriptor or a file")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"spawn_process(): {what!r} must be PIPE, "
                             f"DEVNULL, None or a descriptor, got {value}")
        return value
    if hasattr(value, "fileno"):
        return value.fileno()
    raise TypeError(f"spawn_process(): {what!r} must be PIPE, DEVNULL, None, "
                    f"a descriptor or a file, got {type(value).__name__}")


def _is_numeric_host(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _is_host_name(host):
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return 0 < len(host) <= 253 and all(
        0 < len(label) <= 63 and label.isascii() and
        label.replace("-", "").isalnum() and
        not label.startswith("-") and not label.endswith("-")
        for label in labels)


def _listen_host(host, port):
    """listen_*'s host: None, "" (every interface) and numeric addresses
    go to C as they are (which refuses what is neither); a host name is
    resolved here, at once, as bind() would (its first address)."""
    if not isinstance(host, str) or host == "" or _is_numeric_host(host) \
            or not _is_host_name(host):
        return host
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    return infos[0][4][0]


def _as_factory(factory, what):
    if hasattr(factory, "build_protocol"):
        return factory
    if callable(factory):
        return Factory(factory)
    raise TypeError(f"{what}(): 'factory' must be a Factory or a protocol "
                    f"class, got {type(factory).__name__}")


class Reactor(_twincore.Reactor):
    """An event loop. ``twincore.reactor`` is the default one; others
    belong to the thread that creates them, or that runs them first."""

    def run(self):
        """Run until stop(). Ctrl-C stops the reactor and raises
        KeyboardInterrupt from run(). While it runs, get_running_reactor()
        on this thread returns it, and twincore's functions called without
        reactor= use it."""
        _take_over(self)
        prev = getattr(_running, "reactor", None)
        _running.reactor = self
        try:
            super().run()
        finally:
            _running.reactor = prev

    @property
    def cpu_pool(self):
        """The CpuPool of defer_to_cpu() and name lookups; the default
        pool unless one was set. Any thread may read it (a monitoring
        thread reading stats())."""
        pool = _twincore.Reactor.cpu_pool.__get__(self)
        if pool is None:
            with _default_pool_lock:
                pool = _twincore.Reactor.cpu_pool.__get__(self)
                if pool is None:
                    pool = _get_default_pool()
                    _twincore.Reactor.cpu_pool.__set__(self, pool)
        return pool

    @cpu_pool.setter
    def cpu_pool(self, pool):
        _twincore.Reactor.cpu_pool.__set__(self, pool)

    def listen_tcp(self, port, factory, host="127.0.0.1", backlog=0,
                   reuse_port=False):
        """Listen on host:port (port 0: any free port, see .port); returns
        a Listener. factory.build_protocol(addr) runs per connection.
        host "" is every interface (IPv6 and IPv4 on one dual-stack
        socket), None every IPv4 one; a host name is resolved at once."""
        _check_port(port, "listen_tcp")
        return super().listen_tcp(port, _as_factory(factory, "listen_tcp"),
                                  _listen_host(host, port), backlog,
                                  reuse_port)

    def listen_udp(self, port, protocol, host="127.0.0.1"):
        """Bind a UDP socket on host:port (0: any free port); the protocol
        gets connection_made(transport), then datagram_received(data,
        addr) per datagram."""
        _check_port(port, "listen_udp")
        return super().listen_udp(port, protocol, host)

    def listen_unix(self, path, factory, backlog=0):
        """Listen on a Unix socket path, or an abstract name ('\\0name' or
        '@name').  A stale socket file is replaced; one a live server
        listens on raises OSError(EADDRINUSE).  Closing unlinks the file
        if it is still the one this listener made."""
        path = _unix_path(path, "listen_unix")
        return super().listen_unix(path, _as_factory(factory, "listen_unix"),
                                   backlog)

    def connect_tcp(self, host, port, factory, timeout=None, bind=None):
        """Connect; returns a Future of the protocol (after its
        connection_made). Host names are resolved on the CPU pool.
        bind=(host, port) binds the local end first (numeric host, "" for
        any; port 0 for any)."""
        self._check_thread()
        factory = _as_factory(factory, "connect_tcp")
        if not isinstance(host, str):
            raise TypeError("connect_tcp(): 'host' must be a str, got "
                            f"{type(host).__name__}")
        if isinstance(port, bool) or not isinstance(port, int) or \
                not 0 < port < 65536:
            raise ValueError("connect_tcp(): 'port' must be an int in "
                             f"1..65535, got {port!r}")
        _check_timeout(timeout, "connect_tcp")
        if bind is not None:
            if not isinstance(bind, tuple) or len(bind) != 2 or \
                    not isinstance(bind[0], (str, type(None))) or \
                    isinstance(bind[1], bool) or not isinstance(bind[1], int):
                raise TypeError("connect_tcp(): 'bind' must be a (host, "
                                f"port) tuple, got {bind!r}")
            if bind[0] and not _is_numeric_host(bind[0]):
                raise ValueError("connect_tcp(): the host of 'bind' must be "
                                 "a numeric IPv4 or IPv6 address, got "
                                 f"{bind[0]!r}")
            if not 0 <= bind[1] <= 65535:
                raise ValueError("connect_tcp(): the port of 'bind' must be "
                                 f"in 0..65535, got {bind[1]!r}")
            bind = (bind[0].strip("[]") if bind[0] else None, bind[1])
        host = host.strip("[]")
        if not _is_numeric_host(host) and self.cpu_pool.closed:
            raise RuntimeError("connect_tcp(): host names are resolved on "
                               "the reactor's cpu_pool, which is closed; "
                               "set another or pass an IP address")
        fut = Future(self)
        # A host name is resolved in C, on the pool (as for connect_tls).
        self._start_connect(fut, host, port, factory, timeout, bind)
        return fut

    def _start_connect(self, fut, host, port, factory, timeout, bind=None):
        _settle_with_connect(fut, self._connect_tcp, host, port, factory,
                             timeout=timeout, bind=bind)

    def adopt_stream(self, sock, factory):
        """Take on a connected stream socket made elsewhere (TCP or Unix;
        an object with fileno() or a descriptor): returns a Future of the
        protocol, built by factory and given connection_made() in the next
        batch. twincore works on a duplicate of the descriptor: close your
        own socket when you like (the connection ends when both are
        closed)."""
        self._check_thread()
        factory = _as_factory(factory, "adopt_stream")
        fut = Future(self)
        transport = self._adopt_stream(sock, factory,
                                       on_connect=_settle_on_connect(fut))
        fut._cancel_hook = transport.abort
        return fut

    def adopt_listener(self, sock, factory):
        """Accept connections on a listening socket made elsewhere (TCP or
        Unix; an object with fileno() or a descriptor); returns a Listener.
        twincore works on a duplicate: close your own socket when you
        like."""
        return super().adopt_listener(sock,
                                      _as_factory(factory, "adopt_listener"))

    def listen_tls(self, port, factory, context, host="127.0.0.1", backlog=0,
                   reuse_port=False, handshake_timeout=60.0):
        """Listen for TLS on host:port with a server TLSContext; returns a
        Listener. Each handshake runs in C without the GIL; then
        factory.build_protocol(addr) and connection_made() follow, so
        get_extra_info('alpn_protocol', 'tls_version', 'peercert') answer
        there already. A failed or timed-out handshake is logged (logger
        'twincore', warning) and closed; the listener goes on."""
        _check_port(port, "listen_tls")
        if handshake_timeout is None or isinstance(handshake_timeout, bool) \
                or not isinstance(handshake_timeout, (int, float)) \
                or not handshake_timeout > 0:
            raise ValueError("listen_tls(): 'handshake_timeout' must be a "
                             f"number > 0, got {handshake_timeout!r}")
        return super().listen_tls(port, _as_factory(factory, "listen_tls"),
                                  context, _listen_host(host, port), backlog,
                                  reuse_port, handshake_timeout)

    def connect_tls(self, host, port, factory, context, server_hostname=None,
                    timeout=None):
        """Connect with TLS; returns a Future of the protocol, set after
        the handshake and its connection_made(). server_hostname (default:
        host) is sent as SNI and checked against the certificate; an IP
        address is checked, not sent. Names are resolved on the CPU pool.
        timeout covers the connect and the handshake. A failed handshake
        fails the Future with twincore.Error whose errno names the cause:
        ETLS_EXPIRED, ETLS_UNKNOWN_CA, ETLS_HOSTNAME, ETLS_VERSION,
        ETLS_CERT or ETLS."""
        self._check_thread()
        factory = _as_factory(factory, "connect_tls")
        if not isinstance(host, str):
            raise TypeError("connect_tls(): 'host' must be a str, got "
                            f"{type(host).__name__}")
        _check_port(port, "connect_tls", low=1)
        _check_timeout(timeout, "connect_tls")
        if server_hostname is not None and \
                not isinstance(server_hostname, str):
            raise TypeError("connect_tls(): 'server_hostname' must be a str "
                            f"or None, got {type(server_hostname).__name__}")
        host = host.strip("[]")
        if not _is_numeric_host(host) and self.cpu_pool.closed:
            raise RuntimeError("connect_tls(): host names are resolved on "
                               "the reactor's cpu_pool, which is closed; "
                               "set another or pass an IP address")
        fut = Future(self)
        _settle_with_connect(fut, self._connect_tls, host, port, factory,
                             context=context, server_hostname=server_hostname,
                             timeout=timeout)
        return fut

    def connect_unix(self, path, factory):
        """Connect to a Unix socket path or abstract name ('\\0name' or
        '@name'); returns a Future of the protocol."""
        self._check_thread()
        path = _unix_path(path, "connect_unix")
        factory = _as_factory(factory, "connect_unix")
        fut = Future(self)
        _settle_with_connect(fut, self._connect_unix, path, factory)
        return fut

    def defer_to_cpu(self, fn, /, *args, priority=PRIORITY_NORMAL,
                     timeout=None, **kwargs):
        """fn(*args, **kwargs) on this reactor's CPU pool; a Future."""
        self._check_thread()
        return self.cpu_pool.defer(fn, *args, priority=priority,
                                   timeout=timeout, reactor=self, **kwargs)

    def spawn_process(self, protocol_factory, argv, *, env=None, cwd=None,
                      stdin=PIPE, stdout=PIPE, stderr=PIPE,
                      process_group=None, start_new_session=False,
                      close_fds=True):
        """Start argv[0] (searched in PATH without a '/') with argv;
        returns a Future of the protocol (protocol_factory()), settled
        after its connection_made(transport). stdin/stdout/stderr: PIPE,
        DEVNULL, None (inherit), a descriptor or a file; stderr may be
        STDOUT. env: a mapping (None: this process's environment); cwd;
        process_group: a group to join (0: a new one); close_fds: close
        the other inheritable descriptors in the child. A program that
        cannot be run raises here (FileNotFoundError, PermissionError).
        The protocol gets pipe_data_received(fd, data),
        pipe_connection_lost(fd), process_exited(returncode) (-N after
        signal N) and, once it exited and every pipe closed,
        connection_lost(None)."""
        self._check_thread()
        if isinstance(argv, (str, bytes)) or not hasattr(argv, "__iter__"):
            raise TypeError("spawn_process(): 'argv' must be a list of "
                            f"strings, got {type(argv).__name__}")
        args = [_fs_arg(a, "argv") for a in argv]
        if not args:
            raise ValueError("spawn_process(): 'argv' must not be empty")
        envp = None
        if env is not None:
            envp = []
            for k, v in env.items():
                kb, vb = _fs_arg(k, "env"), _fs_arg(v, "env")
                if b"=" in kb or not kb:
                    raise ValueError("spawn_process(): bad 'env' name "
                                     f"{k!r}")
                envp.append(kb + b"=" + vb)
        cwdb = None if cwd is None else _fs_arg(cwd, "cwd")
        codes = [_stdio_code(stdin, "stdin"), _stdio_code(stdout, "stdout"),
                 _stdio_code(stderr, "stderr")]
        if STDOUT in codes[:2]:
            raise ValueError("spawn_process(): only 'stderr' may be STDOUT")
        if process_group is None:
            pgid = -1
        elif isinstance(process_group, bool) or \
                not isinstance(process_group, int) or process_group < 0:
            raise ValueError("spawn_process(): 'process_group' must be an "
                             f"int >= 0 or None, got {process_group!r}")
        else:
            pgid = process_group
        if not callable(protocol_factory):
            raise TypeError("spawn_process(): 'protocol_factory' must be "
                            "callable")
        protocol = protocol_factory()
        fut = Future(self)
        try:
            self._spawn_process(protocol, fut, args, envp, cwdb, *codes,
                                pgid, bool(start_new_session),
                                bool(close_fds))
        except OSError as exc:
            if exc.filename is None:
                exc.filename = argv[0]
            raise
        return fut

    def spawn(self, coro):
        """Run a coroutine (async def) on this reactor; returns a Future of
        its result. It may await twincore Futures."""
        if not inspect.iscoroutine(coro) and not inspect.isgenerator(coro):
            raise TypeError("spawn(): expected a coroutine, got "
                            f"{type(coro).__name__}")
        return _Task(self, coro)


# Every task not yet collected, for run()'s clean-up (as asyncio's).
_live_tasks = weakref.WeakSet()
_log = logging.getLogger("twincore")


def _tasks_on(r):
    return [t for t in list(_live_tasks) if t._reactor is r and not t.done()]


def _deferred_module():
    """twisted.internet.defer if something imported it, else None."""
    return sys.modules.get("twisted.internet.defer")


class _Task(Future):
    """Drives a coroutine: each awaited Future resumes it on a later
    reactor iteration (never recursively)."""

    __slots__ = ("_coro", "_waiting", "_must_cancel", "_step")

    def __init__(self, reactor, coro):
        super().__init__(reactor)
        self._coro = coro
        self._waiting = None
        self._must_cancel = False
        # _step(value, exc): one step, in C (taskstep.c); it waits on a
        # twincore Future itself and leaves other awaitables to _wait_for.
        self._step = _twincore._TaskStep(self, coro, _running)
        reactor.call_soon(self._step, None, None)
        _live_tasks.add(self)

    def cancel(self, msg=None):
        if self.done():
            return False
        waiting = self._waiting
        if isinstance(waiting, Future):
            if waiting.cancel(msg):
                return True
        elif waiting is not None and not waiting.called:
            waiting.cancel()   # a Deferred: it fails with Twisted's
            return True        # CancelledError, thrown in as ours
        # Not waiting, or what it awaited is done and its resume queued.
        self._must_cancel = True
        return True

    def _abandon(self):
        """run() gives up on this task: settle it cancelled and close its
        coroutine (a finally block that awaits cannot run any more)."""
        waiting, self._waiting = self._waiting, None
        self._must_cancel = False
        try:
            if isinstance(waiting, Future):
                waiting.cancel()   # a sleep's timer, a connect
            if not self.done():
                Future.cancel(self)
            self._coro.close()
        except Exception:
            _log.warning("twincore.run(): %r could not finish its clean-up",
                         self._coro, exc_info=True)

    def _wait_for(self, yielded):
        r = self._reactor
        if isinstance(yielded, Future):
            owner = yielded._reactor
            if owner is not None and owner is not r:
                # Its callbacks would run on the other reactor's thread:
                # refuse at once, as asyncio does.
                r.call_soon(self._step, None, RuntimeError(
                    f"a task of {r!r} awaited {yielded!r}, a Future attached "
                    "to a different reactor; settle a Future of this "
                    "reactor from there with call_from_thread()"))
                return
            self._waiting = yielded

            def resume(result):
                r.call_soon(self._step, result, None)
                return result

            def resume_failure(exc):
                r.call_soon(self._step, None, exc)
                raise exc
            yielded.add_callbacks(resume, resume_failure)
            # The coroutine sees the failure: it is handled there.
            yielded._handled = True
            return
        if hasattr(yielded, "add_done_callback") and \
                hasattr(yielded, "get_loop"):   # an asyncio future
            self._wait_for(from_asyncio(yielded, r))
            return
        defer = _deferred_module()
        if defer is not None and isinstance(yielded, defer.Deferred):
            self._wait_deferred(yielded, defer)
            return
        r.call_soon(self._step, None, TypeError(
            f"a twincore coroutine awaited {yielded!r}; await twincore "
            "Futures, asyncio futures or Twisted Deferreds"))

    def _wait_deferred(self, d, defer):
        """`await d` delegates to the Deferred itself, which gives the
        coroutine its result when sent anything; `yield d` (inline
        callbacks) takes the value sent. Both get the result; a failure
        is thrown in, Twisted's CancelledError as twincore's."""
        r = self._reactor
        self._waiting = d

        def fired(result):
            if not isinstance(result, defer.Failure):
                r.call_soon(self._step, result, None)
                return result
            exc = result.value
            if isinstance(exc, defer.CancelledError):
                cancelled = CancelledError()
                cancelled.__cause__ = exc
                exc = cancelled
            r.call_soon(self._step, None, exc)
            return None   # the coroutine has taken the failure
        d.addBoth(fired)


def inline_callbacks(fn):
    """Decorator for generator functions, in the manner of Twisted's
    inlineCallbacks: ``result = yield future`` suspends until the future is
    done. Calling the function returns a Future of its return value."""
    if not inspect.isgeneratorfunction(fn):
        raise TypeError("inline_callbacks(): expected a generator function")

    def wrapper(*args, **kwargs):
        r = kwargs.pop("_reactor", None) or _current_reactor()
        return _Task(r, fn(*args, **kwargs))
    wrapper.__name__ = fn.__name__
    wrapper.__qualname__ = fn.__qualname__
    wrapper.__doc__ = fn.__doc__
    wrapper.__wrapped__ = fn
    return wrapper


# The default reactor, made on first use (module __getattr__): importing
# twincore costs no descriptor and no thread.
_default_reactor = None
_default_lock = threading.Lock()
# .reactor: the reactor whose run() runs on this thread.
_running = threading.local()


def _get_default_reactor():
    global _default_reactor
    with _default_lock:
        if _default_reactor is None:
            _default_reactor = Reactor()
            globals()["reactor"] = _default_reactor
        return _default_reactor


def __getattr__(name):
    if name == "reactor":
        return _get_default_reactor()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"reactor"})


def _take_over(r):
    """The default reactor belongs to the thread that runs it: an idle one
    made (first used) on another thread moves to this one."""
    if r is _default_reactor and not r.running:
        r._adopt()


def get_running_reactor():
    """The reactor whose run() is running on this thread, as asyncio's
    get_running_loop(); RuntimeError outside one (in a reactor callback or
    a coroutine it is always there)."""
    r = getattr(_running, "reactor", None)
    if r is None:
        raise RuntimeError("no running reactor on this thread")
    return r


def _current_task():
    """The task whose coroutine runs now on this thread, or None."""
    return getattr(_running, "task", None)


def _current_reactor():
    """What reactor=None means: the running reactor, else the default."""
    r = getattr(_running, "reactor", None)
    return r if r is not None else _get_default_reactor()


def get_include():
    """The directory of twincore_capi.h, for C extensions that hand native
    work to twincore's CPU pool (see that header)."""
    return os.path.dirname(os.path.abspath(__file__))


def defer_to_cpu(fn, /, *args, priority=PRIORITY_NORMAL, timeout=None,
                 **kwargs):
    """Run fn(*args, **kwargs) on the CPU pool of the running reactor (of
    the default one outside a running reactor); returns a Future delivered
    on the reactor thread. Arguments are passed explicitly (nothing is
    shared implicitly). A failure nobody observes is logged."""
    return _current_reactor().defer_to_cpu(fn, *args, priority=priority,
                                           timeout=timeout, **kwargs)


def spawn(coro):
    """reactor.spawn(coro) on the running reactor (outside one, on the
    default reactor)."""
    return _current_reactor().spawn(coro)


async def sleep(seconds, result=None, *, reactor=None):
    """Suspend a coroutine for seconds (float('inf'): until cancelled);
    returns result. The reactor is the running one unless given."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise TypeError(f"sleep(): 'seconds' must be a number, got "
                        f"{type(seconds).__name__}")
    if not seconds >= 0:   # also NaN
        raise ValueError(f"sleep(): 'seconds' must be >= 0, got {seconds!r}")
    r = reactor if reactor is not None else _current_reactor()
    fut = Future(r)
    handle = r.call_later(seconds, _set_if_pending, fut, result)
    fut._cancel_hook = handle.cancel
    return await fut


def _set_if_pending(fut, value):
    if not fut.done():
        fut.set_result(value)


def _ensure_future(aw, r):
    if isinstance(aw, Future):
        return aw
    if inspect.iscoroutine(aw) or inspect.isgenerator(aw):
        return r.spawn(aw)
    if hasattr(aw, "__await__"):
        async def wrap():
            return await aw
        return r.spawn(wrap())
    raise TypeError(f"expected an awaitable, got {type(aw).__name__}")


def gather(*aws, return_exceptions=False, reactor=None):
    """A Future of the list of results of aws, in order. The first failure
    fails it (cancelling the rest), unless return_exceptions."""
    r = reactor if reactor is not None else _current_reactor()
    futs = [_ensure_future(a, r) for a in aws]
    out = Future(r)
    results = [None] * len(futs)
    left = [len(futs)]
    cancelling = []
    if not futs:
        out.set_result([])
        return out

    def one_done(i, f):
        if out.done():
            return
        if cancelling:   # out.cancel() is cancelling the children
            out.cancel()
            return
        exc = f.exception()
        if exc is not None and not return_exceptions:
            out.set_exception(exc)
            for other in futs:
                other.cancel()
            return
        results[i] = exc if exc is not None else f.result()
        left[0] -= 1
        if left[0] == 0:
            out.set_result(results)

    for i, f in enumerate(futs):
        f.add_done_callback(lambda f, i=i: one_done(i, f))

    def cancel_children():
        cancelling.append(True)
        for f in futs:
            f.cancel()
    out._cancel_hook = cancel_children
    return out


def run(main, *, reactor=None):
    """Start the reactor (the default one unless given), run the coroutine
    main to completion, stop the reactor and return main's result (or
    raise its exception), as asyncio.run() and Twisted's task.react() do.

    When run() ends, for whatever reason, no task of the reactor is left
    running: on Ctrl-C (KeyboardInterrupt), SystemExit or a callback that
    raised one, and when something stopped the reactor early (RuntimeError),
    main is cancelled; then every task still pending on the reactor is
    cancelled too, and the reactor runs until they have finished, so their
    finally blocks run (and may await) on the live reactor. Another
    interruption meanwhile gives up: the tasks left are marked cancelled
    and their coroutines closed. Then the exception is raised. Timers,
    listeners and transports stay as they are, to be used by the next
    run(). RuntimeError when a reactor already runs on this thread."""
    r = reactor if reactor is not None else _get_default_reactor()
    if getattr(_running, "reactor", None) is not None or r.running:
        if inspect.iscoroutine(main):
            main.close()   # never started: no "never awaited" warning
        if r.running and r is not getattr(_running, "reactor", None):
            raise RuntimeError("run(): the reactor runs on another thread; "
                               "use call_from_thread()")
        raise RuntimeError("run() cannot be called while a reactor runs on "
                           "this thread; await the coroutine instead")
    if isinstance(main, Future):
        fut = main
    elif inspect.iscoroutine(main) or inspect.isgenerator(main):
        _take_over(r)
        fut = r.spawn(main)
    else:
        raise TypeError(f"run(): expected a coroutine, got "
                        f"{type(main).__name__}")
    try:
        finished = _run_until_done(r, fut)
    except BaseException:
        _shut_down(r, fut)
        raise
    _shut_down(r, fut)
    if not finished:
        raise RuntimeError("run(): the reactor stopped before main finished")
    return fut.result()


def _run_until_done(r, fut):
    """Run r until fut is done; False when something stopped r first."""
    if fut.done():
        return True

    def stop(_):
        if r.running:
            r.stop()
    fut.add_done_callback(stop)
    r.run()
    return fut.done()


def _shut_down(r, main):
    """asyncio.run()'s clean-up: cancel main and every task pending on r
    and run r until they are done; what is left then is abandoned."""
    try:
        tasks = _tasks_on(r)
        if not main.done() and main not in tasks:
            tasks.append(main)
        if tasks:
            for t in tasks:
                t.cancel()
            _run_until_done(r, gather(*tasks, return_exceptions=True,
                                      reactor=r))
            for t in tasks:
                # gather() saw these failures: nobody else will.
                if t is not main and t.done() and not t.cancelled() and \
                        t.exception() is not None:
                    exc = t.exception()
                    _log.error("twincore.run(): %r failed while being "
                               "cancelled", t, exc_info=(type(exc), exc,
                                                         exc.__traceback__))
    finally:
        for t in _tasks_on(r):
            t._abandon()
        if not main.done():
            main.cancel()   # a Future, not a task, that nobody settled
