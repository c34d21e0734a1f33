"""The reactor in a shared process: one bounded iteration (run_once), a
host's signal wakeup fd left alone, no descriptor per run(), stop()
before run(), and a reactor handed to the thread that runs it."""
import gc
import os
import signal
import socket
import threading
import time
import weakref

import pytest

import twincore


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_run_once_returns_after_timeout_without_events(reactor):
    t0 = time.monotonic()
    reactor.run_once(0.05)
    # It returned, and not before the timeout (loosely: clocks round).
    assert time.monotonic() - t0 >= 0.045


def test_run_once_returns_when_an_event_arrives(reactor):
    """A call from another thread ends the wait long before the
    timeout; bounded by a count of iterations, not by timing."""
    got = []

    def later():
        time.sleep(0.02)
        reactor.call_from_thread(got.append, 1)
    t = threading.Thread(target=later)
    t.start()
    for _ in range(50):
        reactor.run_once(60)
        if got:
            break
    t.join()
    assert got == [1]


def test_run_once_runs_due_callbacks_without_waiting(reactor):
    ran = []
    reactor.call_soon(ran.append, "soon")
    reactor.call_later(3600, ran.append, "late")
    t0 = time.monotonic()
    reactor.run_once()          # None: until something happens
    assert ran == ["soon"]
    reactor.run_once(0)         # 0: never waits
    assert ran == ["soon"]
    assert time.monotonic() - t0 < 3600


def test_run_once_bad_timeout(reactor):
    with pytest.raises(ValueError, match="run_once.*'timeout'"):
        reactor.run_once(-1)
    with pytest.raises(ValueError, match="run_once.*'timeout'"):
        reactor.run_once(float("nan"))
    with pytest.raises(TypeError, match="run_once.*'timeout'"):
        reactor.run_once("1")


def test_run_once_inside_run_raises(reactor):
    errors = []

    def nested():
        try:
            reactor.run_once(0)
        except RuntimeError as exc:
            errors.append(exc)
        reactor.stop()
    reactor.call_soon(nested)
    reactor.run()
    assert len(errors) == 1 and "already running" in str(errors[0])


def test_host_wakeup_fd_survives_run(reactor):
    """asyncio and Twisted install their own signal.set_wakeup_fd(); run()
    must neither replace it for good nor close it."""
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    old = signal.set_wakeup_fd(b.fileno())
    try:
        for _ in range(2):
            reactor.call_soon(
                lambda: seen.append(signal.set_wakeup_fd(b.fileno())))
            reactor.call_soon(reactor.stop)
            seen = []
            reactor.run()
            # During the run it was the host's, not replaced.
            assert seen == [b.fileno()]
            assert signal.set_wakeup_fd(b.fileno()) == b.fileno()
        reactor.run_once(0)
        assert signal.set_wakeup_fd(b.fileno()) == b.fileno()
        os.fstat(b.fileno())
    finally:
        signal.set_wakeup_fd(old)
        a.close()
        b.close()


def test_own_wakeup_fd_removed_after_run(reactor):
    old = signal.set_wakeup_fd(-1)
    try:
        during = []
        reactor.call_soon(
            lambda: during.append(signal.set_wakeup_fd(-1)))
        reactor.call_soon(reactor.stop)
        reactor.run()
        # Ours was installed while running (the callback took it out)...
        assert during and during[0] >= 0
        # ...and after run() nothing is left behind.
        assert signal.set_wakeup_fd(-1) == -1
    finally:
        signal.set_wakeup_fd(old)


def test_run_allocates_no_descriptor_per_call(reactor):
    def one_run():
        reactor.call_soon(reactor.stop)
        reactor.run()
    one_run()
    before = _open_fds()
    for _ in range(20):
        one_run()
        reactor.run_once(0)
    assert _open_fds() == before


def test_ctrl_c_still_interrupts_run(reactor):
    """With no host wakeup fd, a signal still wakes a blocked run()."""
    got = []

    def handler(signum, frame):
        got.append(signum)
        reactor.stop()
    old = signal.signal(signal.SIGUSR1, handler)
    try:
        t = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGUSR1))
        t.start()
        guard = reactor.call_later(30, reactor.stop)
        reactor.run()
        guard.cancel()
        t.join()
        assert got == [signal.SIGUSR1]
    finally:
        signal.signal(signal.SIGUSR1, old)


def test_stop_before_run_matches_asyncio(reactor):
    import asyncio
    loop = asyncio.new_event_loop()
    try:
        theirs = []
        loop.stop()
        loop.call_soon(theirs.append, 1)
        loop.call_later(3600, theirs.append, 2)
        loop.run_forever()
    finally:
        loop.close()
    ours = []
    reactor.stop()
    reactor.call_soon(ours.append, 1)
    reactor.call_later(3600, ours.append, 2)
    reactor.run()
    assert ours == theirs == [1]


def test_reactor_handed_to_another_thread():
    """Created here, run there: the first run() adopts it."""
    reactor = twincore.Reactor()
    ran = []
    reactor.call_soon(lambda: ran.append(threading.get_ident()))
    reactor.call_soon(reactor.stop)
    t = threading.Thread(target=reactor.run)
    t.start()
    t.join(30)
    assert not t.is_alive()
    assert ran == [t.ident]
    # It is that thread's now: this one may not use it.
    with pytest.raises(RuntimeError, match="thread"):
        reactor.call_soon(print)
    with pytest.raises(RuntimeError, match="thread"):
        reactor.run()
    # Its thread is gone: the collector frees it (adopting the idle loop).
    ref = weakref.ref(reactor)
    del reactor
    gc.collect()
    assert ref() is None


def test_handed_over_reactor_runs_its_handles():
    reactor = twincore.Reactor()
    r, w = os.pipe()
    got = []
    try:
        reactor.add_reader(r, lambda: (got.append(os.read(r, 10)),
                                       reactor.stop()))
        os.write(w, b"hi")
        guard = reactor.call_later(30, reactor.stop)

        def run_and_close():
            reactor.run()
            guard_active.append(guard.active())
            reactor.remove_reader(r)
            reactor.close()
        guard_active = []
        t = threading.Thread(target=run_and_close)
        t.start()
        t.join(30)
        assert not t.is_alive()
        assert got == [b"hi"]
        assert guard_active == [True]
    finally:
        os.close(r)
        os.close(w)
