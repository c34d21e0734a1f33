"""Reactor: the C event loop with the methods that take Python-level
arguments (factories, Unix paths, host names, processes), connects that
settle a Future, and the running-reactor bookkeeping of run()."""

import inspect

from . import _twincore
from ._twincore import PRIORITY_NORMAL
from ._future import Future
from ._current import _running, _take_over
from ._pools import _default_pool_lock, _get_default_pool
from ._task import _Task
from ._validate import (PIPE, STDOUT, _as_factory, _fs_arg,
                        _is_numeric_host, _listen_host, _stdio_code)


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
        return super().listen_tcp(port, _as_factory(factory, "listen_tcp"),
                                  _listen_host(host), backlog,
                                  reuse_port)

    def listen_udp(self, port, protocol, host="127.0.0.1"):
        """Bind a UDP socket on host:port (0: any free port); the protocol
        gets connection_made(transport), then datagram_received(data,
        addr) per datagram."""
        return super().listen_udp(port, protocol, host)

    def listen_unix(self, path, factory, backlog=0):
        """Listen on a Unix socket path, or an abstract name ('\\0name' or
        '@name').  A stale socket file is replaced; one a live server
        listens on raises OSError(EADDRINUSE).  Closing unlinks the file
        if it is still the one this listener made."""
        return super().listen_unix(path, _as_factory(factory, "listen_unix"),
                                   backlog)

    def connect_tcp(self, host, port, factory, timeout=None, bind=None):
        """Connect; returns a Future of the protocol (after its
        connection_made). Host names are resolved on the CPU pool.
        bind=(host, port) binds the local end first (numeric host, "" for
        any; port 0 for any)."""
        self._check_thread()
        factory = _as_factory(factory, "connect_tcp")
        # The C method checks host, port, timeout and bind.
        if isinstance(host, str) and not _is_numeric_host(host) and \
                self.cpu_pool.closed:
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
        there already. A failed or timed-out handshake (handshake_timeout
        seconds; inf: no limit) is logged (logger 'twincore', warning) and
        closed; the listener goes on."""
        return super().listen_tls(port, _as_factory(factory, "listen_tls"),
                                  context, _listen_host(host), backlog,
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
        # The C method checks host, port, timeout and server_hostname.
        if isinstance(host, str) and not _is_numeric_host(host) and \
                self.cpu_pool.closed:
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
        its result. It may await twincore Futures. Another awaitable (a
        stream's readline(), say) runs inside a coroutine of its own."""
        if not inspect.iscoroutine(coro) and not inspect.isgenerator(coro):
            if not hasattr(type(coro), "__await__") or \
                    isinstance(coro, Future):   # already a result
                raise TypeError("spawn(): expected a coroutine, got "
                                f"{type(coro).__name__}")
            coro = _await(coro)
        return _Task(self, coro)


async def _await(awaitable):
    return await awaitable
