"""A Twisted reactor on twincore's loop: unmodified Twisted programs
(protocols, Deferreds, twistd plugins, trial suites) run on twincore's C
event loop and reach its CPU pool in one line.

    from twincore.twisted import install
    install()                      # before twisted.internet.reactor
    from twisted.internet import reactor

or ``twistd --reactor=twincore`` / ``trial --reactor=twincore``.

``TwincoreReactor`` is Twisted's ``PosixReactorBase`` with ``IReactorFDSet``
on twincore's descriptor watchers (``add_reader``/``add_writer``), so
Twisted's own TCP, UDP, Unix, TLS, process and resolver code runs on it
unchanged. ``run()`` runs twincore's loop; Twisted's ``runUntilCurrent``
(its timed-call heap, calls from threads, shutdown) runs in a "tick" when
one twincore timer armed for the earliest timed call fires, or after
something changed what it would do (see "the loop" below); ``iterate()``
is one bounded twincore iteration (``Reactor.run_once``). twincore's own
events (CPU pool results, its timers, its transports) run in the same
loop. Wake-ups from other threads (``callFromThread``) go through
twincore's ``call_from_thread``: one eventfd write, no pipe. Exceptions
from ``doRead``/``doWrite`` go to Twisted's ``log.err`` and disconnect the
selectable, as in Twisted's poll reactors.
"""

import os
import socket
import sys

from zope.interface import implementer

from twisted.internet import defer, error, interfaces, posixbase, tcp
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.interfaces import IReactorFDSet
from twisted.python import failure, log

import twincore

__all__ = ["TwincoreReactor", "install", "deferToCpu", "deferToProcess",
           "deferToInterpreter"]


class _Waker:
    """Wakes the loop from any thread through twincore's call_from_thread
    (Twisted's own waker is a pipe watched as an internal reader)."""

    def __init__(self, tc, tick):
        self._tc = tc
        self._tick = tick

    def wakeUp(self):
        try:
            self._tc.call_from_thread(self._tick)
        except RuntimeError:
            pass   # twincore's reactor is closed: nothing runs to wake

    def connectionLost(self, reason):
        pass


@implementer(IReactorFDSet)
class TwincoreReactor(posixbase.PosixReactorBase):
    """A Twisted reactor whose loop is a twincore Reactor
    (``twincore_reactor``). It belongs to the thread that runs it, as any
    Twisted reactor; other threads use ``callFromThread``."""

    def __init__(self, native_tcp=False):
        self.twincore_reactor = twincore.Reactor()
        self._nativeTCP = bool(native_tcp)
        # As EPollReactor: fd -> selectable, and which fds read or write.
        self._selectables = {}
        self._reads = set()
        self._writes = set()
        self._tcWrites = set()        # fds of _writes twincore watches
        self._pendingWrites = {}      # fd -> writer, for _flushWrites
        self._flushPending = False
        self._looping = False       # mainLoop runs twincore's loop
        self._tickPending = False   # a _tick is queued (call_soon)
        self._timer = None          # twincore's timer for Twisted's heap
        posixbase.PosixReactorBase.__init__(self)

    def installWaker(self):
        if not self.waker:
            self.waker = _Waker(self.twincore_reactor, self._wantTick)

    # ---- IReactorFDSet --------------------------------------------------

    def addReader(self, reader):
        fd = reader.fileno()
        if fd not in self._reads:
            self.twincore_reactor.add_reader(fd, self._ready, reader, True)
            self._reads.add(fd)
            self._selectables[fd] = reader

    def addWriter(self, writer):
        fd = writer.fileno()
        if fd not in self._writes:
            if isinstance(writer, tcp.Connection):
                # Most writes fit the socket at once: try at the end of
                # this batch, and watch only if data is left (a reply
                # then costs no watch change: epoll_ctl, fcntl).
                self._pendingWrites[fd] = writer
                if not self._flushPending:
                    self._flushPending = True
                    self.twincore_reactor.call_soon(self._flushWrites)
            else:
                self.twincore_reactor.add_writer(fd, self._ready, writer,
                                                 False)
                self._tcWrites.add(fd)
            self._writes.add(fd)
            self._selectables[fd] = writer

    def _flushWrites(self):
        self._flushPending = False
        pending, self._pendingWrites = self._pendingWrites, {}
        for fd, writer in pending.items():
            if fd not in self._writes or fd in self._tcWrites or \
                    self._selectables.get(fd) is not writer:
                continue   # removed (or replaced) since
            self._ready(writer, False)
            # Still writing (the socket was full, or a connect is under
            # way): now watch it, unless doWrite started it afresh.
            if fd in self._writes and fd not in self._tcWrites and \
                    fd not in self._pendingWrites and \
                    self._selectables.get(fd) is writer:
                try:
                    self.twincore_reactor.add_writer(fd, self._ready,
                                                     writer, False)
                    self._tcWrites.add(fd)
                except OSError:
                    log.err(None, "watching a descriptor for writing")
                    self._disconnectSelectable(writer,
                                               posixbase._NO_FILEDESC, False)

    def _remove(self, xer, primary, other, remove, registered):
        fd = xer.fileno()
        if fd == -1:
            # Closed already: find it by identity, as EPollReactor does.
            for fd, fdes in self._selectables.items():
                if xer is fdes:
                    break
            else:
                return
        if fd in primary:
            if registered is None:
                remove(fd)
            elif fd in registered:
                remove(fd)
                registered.discard(fd)
            primary.remove(fd)
            if fd not in other:
                del self._selectables[fd]

    def removeReader(self, reader):
        self._remove(reader, self._reads, self._writes,
                     self.twincore_reactor.remove_reader, None)

    def removeWriter(self, writer):
        self._remove(writer, self._writes, self._reads,
                     self.twincore_reactor.remove_writer, self._tcWrites)

    def removeAll(self):
        return self._removeAll(
            [self._selectables[fd] for fd in self._reads],
            [self._selectables[fd] for fd in self._writes])

    def getReaders(self):
        return [self._selectables[fd] for fd in self._reads]

    def getWriters(self):
        return [self._selectables[fd] for fd in self._writes]

    # ---- dispatch ---------------------------------------------------------

    def _ready(self, selectable, isRead):
        # twincore's callback: nothing may escape to its logger, Twisted's
        # log.err is where trial looks.
        try:
            log.callWithLogger(selectable, self._doReadOrWrite, selectable,
                               isRead)
        except BaseException:
            log.err()

    def _doReadOrWrite(self, selectable, isRead):
        try:
            # fileno() may raise, or say the descriptor is gone.
            if selectable.fileno() == -1:
                why = posixbase._NO_FILEDESC
            elif isRead:
                why = selectable.doRead()
            else:
                why = selectable.doWrite()
        except BaseException:
            why = sys.exc_info()[1]
            log.err()
        if why:
            self._disconnectSelectable(selectable, why, isRead)

    # ---- the loop -----------------------------------------------------------
    #
    # run() runs twincore's loop without a break (Reactor.run: no Python
    # between iterations). Twisted's runUntilCurrent() (timed calls, calls
    # from threads, the shutdown that stop() begins) runs in a "tick": when
    # one twincore timer, armed for Twisted's earliest timed call, fires,
    # and after anything that changes what runUntilCurrent would do:
    # callLater, a call moved sooner, stop(), crash(), callFromThread (the
    # waker). Descriptor events need no tick: they go straight to
    # doRead/doWrite.

    def _wantTick(self):
        if self._looping and not self._tickPending:
            self._tickPending = True
            self.twincore_reactor.call_soon(self._tick)

    def _tick(self):
        self._tickPending = False
        if not self._looping:
            return   # iterate(): Twisted's own loop calls runUntilCurrent
        try:
            self.runUntilCurrent()
            if self._started:
                self._rearm()
            elif self.twincore_reactor.running:
                self.twincore_reactor.stop()
        except BaseException:
            log.err()

    def _rearm(self):
        # Twisted's mainLoop: t = self.running and self.timeout()
        t = self.timeout() if self.running else 0
        timer = self._timer
        if t is None:
            if timer is not None:
                timer.cancel()
        elif timer is None:
            self._timer = self.twincore_reactor.call_later(t, self._tick)
        else:
            timer.reset(t)

    def callLater(self, delay, callable, *args, **kw):
        call = super().callLater(delay, callable, *args, **kw)
        self._wantTick()
        return call

    def _moveCallLaterSooner(self, delayedCall):
        super()._moveCallLaterSooner(delayedCall)
        self._wantTick()

    def stop(self):
        super().stop()
        self._wantTick()

    def crash(self):
        super().crash()
        self._wantTick()

    def mainLoop(self):
        tc = self.twincore_reactor
        # While it runs, twincore's functions called without reactor=
        # (defer_to_cpu in a Twisted callback) mean this twincore loop.
        with _RunningAs(tc):
            while self._started:
                try:
                    self._looping = True
                    self._tick()
                    if self._started:
                        tc.run()
                except BaseException:
                    log.msg("Unexpected error in main loop.")
                    log.err()
                finally:
                    self._looping = False
                    self._tickPending = False
                    if self._timer is not None:
                        self._timer.cancel()

    # run() fires the startup triggers before mainLoop().
    def run(self, installSignalHandlers=True):
        with _RunningAs(self.twincore_reactor):
            super().run(installSignalHandlers)

    def doIteration(self, timeout):
        """One twincore iteration, blocking at most timeout seconds (None:
        until something happens): iterate()'s."""
        if timeout is not None and timeout < 0:
            timeout = 0
        self.twincore_reactor.run_once(timeout)

    def iterate(self, delay=0.0):
        with _RunningAs(self.twincore_reactor):
            super().iterate(delay)

    def listenTCP(self, port, factory, backlog=50, interface=""):
        """Twisted's listenTCP; with native_tcp, connections are served
        by twincore's C transports behind Twisted's ITCPTransport."""
        if not self._nativeTCP:
            return super().listenTCP(port, factory, backlog, interface)
        p = _NativePort(self, port, factory, backlog, interface)
        p.startListening()
        return p

    def connectTCP(self, host, port, factory, timeout=30, bindAddress=None):
        """Twisted's connectTCP; with native_tcp, the connection is a
        twincore C transport behind Twisted's ITCPTransport."""
        if not self._nativeTCP:
            return super().connectTCP(host, port, factory, timeout,
                                      bindAddress)
        c = _NativeConnector(self, host, port, factory, timeout, bindAddress)
        c.connect()
        return c

    # ---- twincore's lanes ---------------------------------------------------

    def deferToCpu(self, f, *args, **kwargs):
        """f(*args, **kwargs) on twincore's CPU pool (native threads);
        returns a Deferred fired on this reactor's thread. Call it on the
        reactor's thread."""
        return twincore.to_deferred(
            self.twincore_reactor.defer_to_cpu(f, *args, **kwargs))

    def deferToProcess(self, f, *args, **kwargs):
        """f(*args, **kwargs) in twincore's process lane; a Deferred.
        NotImplementedError where this twincore has no process lane."""
        return self._lane("defer_to_process", "process lane (ProcessPool)",
                          f, args, kwargs)

    def deferToInterpreter(self, f, *args, **kwargs):
        """f(*args, **kwargs) in twincore's interpreter lane; a Deferred.
        NotImplementedError where this twincore has no interpreter lane."""
        return self._lane("defer_to_interpreter", "interpreter lane",
                          f, args, kwargs)

    def _lane(self, name, what, f, args, kwargs):
        # Looked up at call time: the lanes are optional parts of twincore.
        tc = self.twincore_reactor
        method = getattr(tc, name, None)
        if method is not None:
            return twincore.to_deferred(method(f, *args, **kwargs))
        function = getattr(twincore, name, None)
        if function is None:
            raise NotImplementedError(
                f"this twincore has no {what}: twincore.{name} is missing")
        with _RunningAs(tc):
            return twincore.to_deferred(function(f, *args, **kwargs))


class _RunningAs:
    """Makes tc the running twincore reactor of this thread meanwhile."""

    def __init__(self, tc):
        self._tc = tc

    def __enter__(self):
        state = twincore._running
        self._prev = getattr(state, "reactor", None)
        state.reactor = self._tc

    def __exit__(self, *exc_info):
        twincore._running.reactor = self._prev
        return False


def install(native_tcp=False):
    """Install a TwincoreReactor as Twisted's global reactor; returns it.
    Call it before anything imports twisted.internet.reactor (Twisted's
    ReactorAlreadyInstalledError otherwise). native_tcp=True: listenTCP's
    and connectTCP's connections use twincore's C transports (see _NativeTransport); off
    by default, as code that inspects getReaders()/getWriters() or the
    socket objects of Twisted's transports does not see them."""
    from twisted.internet.main import installReactor
    reactor = TwincoreReactor(native_tcp=native_tcp)
    installReactor(reactor)
    return reactor


def _global_reactor():
    from twisted.internet import reactor
    if not isinstance(reactor, TwincoreReactor):
        raise RuntimeError(
            "the installed Twisted reactor is "
            f"{type(reactor).__module__}.{type(reactor).__qualname__}, not "
            "twincore's: call twincore.twisted.install() first (or "
            "twistd/trial --reactor=twincore)")
    return reactor


def deferToCpu(f, *args, **kwargs):
    """f(*args, **kwargs) on twincore's CPU pool, as Twisted's
    deferToThread; returns a Deferred fired on the reactor's thread with
    the result or the failure. Needs twincore's reactor installed."""
    return _global_reactor().deferToCpu(f, *args, **kwargs)


def deferToProcess(f, *args, **kwargs):
    """f(*args, **kwargs) in twincore's process lane; a Deferred
    (NotImplementedError where twincore has no process lane)."""
    return _global_reactor().deferToProcess(f, *args, **kwargs)


def deferToInterpreter(f, *args, **kwargs):
    """f(*args, **kwargs) in twincore's interpreter lane; a Deferred
    (NotImplementedError where twincore has no interpreter lane)."""
    return _global_reactor().deferToInterpreter(f, *args, **kwargs)


# ---- the native fast path (install(native_tcp=True)) -----------------------
#
# listenTCP's and connectTCP's connections are twincore Transports (C:
# buffering, writev, watermarks, half-close, without the GIL) seen by the
# Twisted protocol through _NativeTransport, an ITCPTransport.

def _tw_address(addr):
    if not isinstance(addr, tuple) or len(addr) < 2:
        return None
    host, port = addr[0], addr[1]
    if ":" in host:
        return IPv6Address("TCP", host, port)
    return IPv4Address("TCP", host, port)


@implementer(interfaces.ITCPTransport, interfaces.ISystemHandle,
             interfaces.IPushProducer)
class _NativeTransport:
    """Twisted's ITCPTransport over a twincore Transport."""

    def __init__(self, reactor, tc_transport, protocol):
        self.reactor = reactor
        self._t = tc_transport
        self.protocol = protocol
        self.connected = 1
        self.disconnecting = 0
        self.disconnected = 0
        self.producer = None
        self.streamingProducer = False
        self._writeDisconnected = False
        self._pullScheduled = False
        self.logstr = f"{protocol.__class__.__name__},native"

    def logPrefix(self):
        return self.logstr

    # ITransport
    def write(self, data):
        if self.connected and not self.disconnecting and \
                not self._writeDisconnected and data:
            self._t.write(data)

    def writeSequence(self, seq):
        if self.connected and not self.disconnecting and \
                not self._writeDisconnected:
            self._t.writelines(seq)

    def loseConnection(self, _connDone=None):
        if self.connected and not self.disconnecting:
            self.disconnecting = 1
            self._t.close()   # flushes first

    def abortConnection(self):
        if self.connected:
            self.disconnecting = 1
            self._t.abort()

    def loseWriteConnection(self):
        if self.connected and not self._writeDisconnected:
            self._writeDisconnected = True
            self._t.write_eof()
            if interfaces.IHalfCloseableProtocol.providedBy(self.protocol):
                self.reactor.callLater(0, _call_protocol, self,
                                       "writeConnectionLost")

    def getPeer(self):
        return _tw_address(self._t.get_peer())

    def getHost(self):
        return _tw_address(self._t.get_host())

    # ITCPTransport's socket options, on a duplicate of the descriptor
    def _sockopt(self, level, name, value=None):
        fd = self._t.fileno()
        if fd < 0:
            return 0
        sock = socket.socket(fileno=os.dup(fd))
        try:
            if value is None:
                return sock.getsockopt(level, name)
            sock.setsockopt(level, name, value)
        finally:
            sock.close()

    def getTcpNoDelay(self):
        return bool(self._sockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    def setTcpNoDelay(self, enabled):
        self._sockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, int(enabled))

    def getTcpKeepAlive(self):
        return bool(self._sockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE))

    def setTcpKeepAlive(self, enabled):
        self._sockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, int(enabled))

    def getHandle(self):
        return self._t

    # IPushProducer (this transport produces the protocol's input)
    def pauseProducing(self):
        if self.connected:
            self._t.pause_reading()

    def resumeProducing(self):
        if self.connected:
            self._t.resume_reading()

    def stopProducing(self):
        self.loseConnection()

    # IConsumer
    def registerProducer(self, producer, streaming):
        if self.producer is not None:
            raise RuntimeError(
                f"Cannot register producer {producer}, because producer "
                f"{self.producer} was never unregistered.")
        if not self.connected:
            producer.stopProducing()
            return
        self.producer = producer
        self.streamingProducer = streaming
        if not streaming:
            self._schedulePull()

    def unregisterProducer(self):
        self.producer = None

    def _schedulePull(self):
        if not self._pullScheduled:
            self._pullScheduled = True
            self.reactor.callLater(0, self._pull)

    def _pull(self):
        # A pull producer writes once per resumeProducing(); ask again
        # while the write buffer is below its low watermark.
        self._pullScheduled = False
        producer = self.producer
        if producer is None or self.streamingProducer or not self.connected:
            return
        low = self._t.get_write_buffer_limits()[1]
        if self._t.get_write_buffer_size() <= low:
            producer.resumeProducing()
        self._schedulePull()


def _call_protocol(transport, name, *args):
    """A Twisted protocol method; an exception is logged (log.err) and
    drops the connection, as in Twisted."""
    try:
        getattr(transport.protocol, name)(*args)
    except BaseException:
        f = failure.Failure()
        log.err(f, f"Unhandled error in {name}")
        transport._failure = f
        transport.connected and transport.abortConnection()
        return False
    return True


class _NativeProtocol(twincore.Protocol):
    """twincore's side of a native connection: its callbacks become the
    Twisted protocol's."""

    def __init__(self, port, protocol, peer):
        self._port = port
        self._proto = protocol
        self._peer = peer
        self._tw = None

    def connection_made(self, transport):
        self.transport = transport
        tw = self._tw = _NativeTransport(self._port.reactor, transport,
                                         self._proto)
        tw._failure = None
        self._port._connections.add(tw)
        _call_protocol(tw, "makeConnection", tw)

    def data_received(self, data):
        tw = self._tw
        if not tw.disconnected:
            _call_protocol(tw, "dataReceived", data)

    def eof_received(self):
        tw = self._tw
        if interfaces.IHalfCloseableProtocol.providedBy(self._proto):
            _call_protocol(tw, "readConnectionLost")
            return True   # the write side stays open
        return False

    def connection_lost(self, exc):
        tw = self._tw
        if tw is None or tw.disconnected:
            return
        self._port._connections.discard(tw)
        tw.connected = 0
        tw.disconnected = 1
        if tw._failure is not None:
            reason = tw._failure
        elif exc is None:
            reason = failure.Failure(error.ConnectionDone())
        else:
            reason = failure.Failure(error.ConnectionLost(str(exc)))
        producer, tw.producer = tw.producer, None
        if producer is not None:
            try:
                producer.stopProducing()
            except BaseException:
                log.err()
        _call_protocol(tw, "connectionLost", reason)
        lost = getattr(self._port, "_connectionLost", None)
        if lost is not None:   # a connector tells its client factory
            lost(reason)

    def pause_writing(self):
        producer = self._tw.producer if self._tw else None
        if producer is not None and self._tw.streamingProducer:
            try:
                producer.pauseProducing()
            except BaseException:
                log.err()

    def resume_writing(self):
        producer = self._tw.producer if self._tw else None
        if producer is not None and self._tw.streamingProducer:
            try:
                producer.resumeProducing()
            except BaseException:
                log.err()


class _NativeFactory:
    """twincore's factory for a _NativePort."""

    def __init__(self, port):
        self._port = port

    def build_protocol(self, addr):
        peer = _tw_address(addr)
        try:
            proto = self._port.factory.buildProtocol(peer)
        except BaseException:
            log.err(None, "Unhandled error in buildProtocol")
            return None
        if proto is None:
            return None
        return _NativeProtocol(self._port, proto, peer)


@implementer(interfaces.IListeningPort)
class _NativePort:
    """listenTCP's port with native_tcp: a twincore Listener."""

    def __init__(self, reactor, port, factory, backlog, interface):
        self.reactor = reactor
        self.port = port
        self.factory = factory
        self.backlog = backlog
        self.interface = interface
        self._listener = None
        self._host = None
        self._connections = set()
        self._shutdownTrigger = None

    def startListening(self):
        # Twisted's "" is every IPv4 interface: twincore's None.
        host = None if self.interface in ("", "0.0.0.0") else self.interface
        try:
            self._listener = self.reactor.twincore_reactor.listen_tcp(
                self.port, _NativeFactory(self), host=host,
                backlog=self.backlog)
        except OSError as exc:
            raise error.CannotListenError(self.interface, self.port, exc)
        self._host = _tw_address(self._listener.get_host())
        self.factory.doStart()
        self._shutdownTrigger = self.reactor.addSystemEventTrigger(
            "during", "shutdown", self._dropAll)
        log.msg(f"{self.factory.__class__.__name__} starting on "
                f"{self.getHost().port} (twincore native)")

    def _dropAll(self):
        # As disconnectAll does for Twisted's own transports.
        self._shutdownTrigger = None
        for tw in list(self._connections):
            tw.abortConnection()
        return self.stopListening()

    def stopListening(self):
        if self._listener is None:
            return defer.succeed(None)
        listener, self._listener = self._listener, None
        if self._shutdownTrigger is not None:
            self.reactor.removeSystemEventTrigger(self._shutdownTrigger)
            self._shutdownTrigger = None
        listener.close()
        self.factory.doStop()
        return defer.succeed(None)

    loseConnection = stopListening

    def getHost(self):
        """The bound address (also after stopListening, as Twisted's)."""
        return self._host


@implementer(interfaces.IConnector)
class _NativeConnector:
    """connectTCP's connector with native_tcp: Twisted's connector states
    and client-factory calls over twincore's connect_tcp (a host name is
    resolved in C on the CPU pool). ReconnectingClientFactory works: it
    calls connect() again from clientConnectionLost/Failed."""

    def __init__(self, reactor, host, port, factory, timeout, bindAddress):
        self.reactor = reactor
        self.host = host
        self.port = port
        self.factory = factory
        self.timeout = timeout
        self.bindAddress = bindAddress
        self.state = "disconnected"
        self.factoryStarted = False
        self._connections = set()
        self._fut = None

    def connect(self):
        if self.state != "disconnected":
            raise RuntimeError("can't connect in this state")
        self.state = "connecting"
        if not self.factoryStarted:
            self.factory.doStart()
            self.factoryStarted = True
        self.factory.startedConnecting(self)
        if self.state != "connecting":   # stopConnecting() in there
            return
        bind = None
        if self.bindAddress is not None:
            bind = (self.bindAddress[0] or None, self.bindAddress[1])
        try:
            fut = self.reactor.twincore_reactor.connect_tcp(
                self.host, self.port, _ConnectorFactory(self),
                timeout=self.timeout or None, bind=bind)
        except Exception as exc:
            # Twisted reports every connect failure later, from the loop.
            self.reactor.callLater(0, self._failed, _connect_error(exc))
            return
        self._fut = fut
        fut.add_done_callback(self._connect_done)

    def _connect_done(self, fut):
        self._fut = None
        if fut.cancelled():
            self._failed(error.UserError(string="stopConnecting() called"))
        elif fut.exception() is not None:
            self._failed(_connect_error(fut.exception()))
        else:
            self.state = "connected"

    def _failed(self, exc):
        if self.state != "connecting":
            return
        self.state = "disconnected"
        self.factory.clientConnectionFailed(self, failure.Failure(exc))
        self._maybe_stop_factory()

    def _connectionLost(self, reason):
        self.state = "disconnected"
        self.factory.clientConnectionLost(self, reason)
        self._maybe_stop_factory()

    def _maybe_stop_factory(self):
        if self.state == "disconnected" and self.factoryStarted:
            self.factoryStarted = False
            self.factory.doStop()

    def stopConnecting(self):
        if self.state != "connecting":
            raise error.NotConnectingError("we're not trying to connect")
        if self._fut is not None:
            self._fut.cancel()
        else:
            self._failed(error.UserError(string="stopConnecting() called"))

    def disconnect(self):
        if self.state == "connecting":
            self.stopConnecting()
        elif self.state == "connected":
            for tw in list(self._connections):
                tw.loseConnection()

    def getDestination(self):
        return _tw_address((self.host, self.port)) or \
            IPv4Address("TCP", self.host, self.port)


class _ConnectorFactory(_NativeFactory):
    """twincore's factory for a _NativeConnector: the client factory's
    buildProtocol, whose protocol then sees a _NativeTransport."""

    def build_protocol(self, addr):
        proto = super().build_protocol(addr)
        if proto is None:
            raise error.ConnectError(string="buildProtocol returned None")
        return proto


def _connect_error(exc):
    """twincore's connect exceptions as Twisted's."""
    if isinstance(exc, error.ConnectError):
        return exc
    if isinstance(exc, ConnectionRefusedError):
        return error.ConnectionRefusedError(string=str(exc))
    if isinstance(exc, TimeoutError):
        return error.TimeoutError(string=str(exc))
    if isinstance(exc, twincore.Error) or isinstance(exc, socket.gaierror):
        return error.DNSLookupError(string=str(exc))
    return error.ConnectError(string=str(exc))
