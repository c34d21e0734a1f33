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
unchanged. Twisted's main loop stays in charge (``runUntilCurrent`` then
``doIteration``), so timed calls keep Twisted's heap and its exact order;
``doIteration(t)`` is one twincore iteration that blocks at most t seconds
(``Reactor.run_once``), during which twincore's own events (CPU pool
results, its timers, its transports) run too. Wake-ups from other threads
(``callFromThread``) go through twincore's ``call_from_thread``: one
eventfd write, no pipe. Exceptions from ``doRead``/``doWrite`` go to
Twisted's ``log.err`` and disconnect the selectable, as in Twisted's poll
reactors.
"""

import sys

from zope.interface import implementer

from twisted.internet import posixbase, tcp
from twisted.internet.interfaces import IReactorFDSet
from twisted.python import log

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

    def __init__(self):
        self.twincore_reactor = twincore.Reactor()
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


def install():
    """Install a TwincoreReactor as Twisted's global reactor; returns it.
    Call it before anything imports twisted.internet.reactor (Twisted's
    ReactorAlreadyInstalledError otherwise)."""
    from twisted.internet.main import installReactor
    reactor = TwincoreReactor()
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
