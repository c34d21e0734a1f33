"""Reactor.add_reader/remove_reader/add_writer/remove_writer: asyncio's
signatures, level-triggered readiness of descriptors the caller owns
(pipes, sockets, eventfds, pidfds), delivered in the reactor's batch."""
import gc
import logging
import os
import socket
import subprocess
import sys
import weakref

import pytest

import twincore


def _pipe():
    r, w = os.pipe()
    os.set_blocking(r, False)
    return r, w


def _run_until(reactor, cond, timeout=10.0):
    """Bounded: run_once() until cond() holds or timeout passes."""
    deadline = reactor.time() + timeout
    while not cond():
        assert reactor.time() < deadline, "timed out"
        reactor.run_once(0.1)


def test_pipe_reader_level_triggered(reactor):
    r, w = _pipe()
    calls = []
    try:
        reactor.add_reader(r, calls.append, "ready")
        for _ in range(3):
            reactor.run_once(0)
        assert calls == []
        os.write(w, b"x")
        _run_until(reactor, lambda: calls)
        # Not read: reported again on each iteration.
        n = len(calls)
        for _ in range(3):
            reactor.run_once(0)
        assert len(calls) == n + 3
        assert set(calls) == {"ready"}
        assert reactor.remove_reader(r) is True
        assert reactor.remove_reader(r) is False
        n = len(calls)
        for _ in range(3):
            reactor.run_once(0)
        assert len(calls) == n
    finally:
        os.close(r)
        os.close(w)


def test_socket_object_writer_and_reader(reactor):
    a, b = socket.socketpair()
    events = []
    try:
        # An object with fileno() is accepted, as in asyncio.
        reactor.add_writer(a, events.append, "w")
        _run_until(reactor, lambda: "w" in events)
        reactor.add_reader(a, events.append, "r")
        assert reactor.remove_writer(a.fileno()) is True
        events.clear()
        for _ in range(3):
            reactor.run_once(0)
        assert events == []   # the reader stays, nothing to read
        b.send(b"hi")
        _run_until(reactor, lambda: events)
        assert set(events) == {"r"}
        assert a.recv(10) == b"hi"
        assert reactor.remove_reader(a) is True
        assert reactor.remove_writer(a) is False
    finally:
        a.close()
        b.close()


def test_replace_reader_and_both_in_one_batch(reactor):
    a, b = socket.socketpair()
    seen = []
    try:
        reactor.add_reader(a, seen.append, "old")
        reactor.add_reader(a, seen.append, "new")
        reactor.add_writer(a, seen.append, "w")
        b.send(b"x")
        _run_until(reactor, lambda: "new" in seen and "w" in seen)
        assert "old" not in seen
        # Both callbacks of one descriptor ran in the same iteration,
        # reader first.
        assert seen[:2] == ["new", "w"]
    finally:
        reactor.remove_reader(a)
        reactor.remove_writer(a)
        a.close()
        b.close()


def test_readiness_joins_the_batch(reactor):
    """A descriptor ready and a timer due in the same iteration are run
    in one batch (the same iteration number)."""
    r, w = _pipe()
    seen = {}
    try:
        os.write(w, b"x")
        reactor.add_reader(
            r, lambda: seen.setdefault("fd", reactor.stats()["iterations"]))
        reactor.call_later(
            0, lambda: seen.setdefault("timer",
                                       reactor.stats()["iterations"]))
        _run_until(reactor, lambda: len(seen) == 2)
        assert seen["fd"] == seen["timer"]
    finally:
        reactor.remove_reader(r)
        os.close(r)
        os.close(w)


def test_eventfd(reactor):
    efd = os.eventfd(0, os.EFD_NONBLOCK)
    got = []

    def on_ready():
        got.append(os.eventfd_read(efd))
        reactor.remove_reader(efd)
    try:
        reactor.add_reader(efd, on_ready)
        os.eventfd_write(efd, 5)
        _run_until(reactor, lambda: got)
        assert got == [5]
    finally:
        os.close(efd)


def test_pidfd_readable_when_process_exits(reactor):
    proc = subprocess.Popen([sys.executable, "-c",
                             "import sys; sys.stdin.read()"],
                            stdin=subprocess.PIPE)
    pidfd = os.pidfd_open(proc.pid)
    exited = []
    try:
        reactor.add_reader(pidfd, exited.append, True)
        for _ in range(3):
            reactor.run_once(0)
        assert exited == []   # it waits for its stdin to close
        proc.stdin.close()
        _run_until(reactor, lambda: exited)
        assert proc.wait(10) == 0
    finally:
        reactor.remove_reader(pidfd)
        os.close(pidfd)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_closed_while_watched_no_crash_no_spin(reactor):
    r, w = _pipe()
    calls = []

    def on_ready():
        calls.append(1)
        try:
            os.read(r, 1)
        except OSError as exc:
            calls.append(exc.errno)
    # A first run makes the reactor's own descriptors now: they would
    # otherwise take the closed number before the loop looks at it.
    reactor.run_once(0)
    reactor.add_reader(r, on_ready)
    os.close(r)   # on purpose, without remove_reader() first
    os.close(w)
    # The reader hears of it once (its own read then fails), then nothing:
    # the loop neither aborts nor spins.
    _run_until(reactor, lambda: calls)
    before = reactor.stats()["iterations"]
    for _ in range(5):
        reactor.run_once(0.02)
    assert reactor.stats()["iterations"] - before <= 5
    assert calls == [1, 9]   # EBADF
    assert reactor.remove_reader(r) is True
    assert reactor.remove_reader(r) is False


def test_bad_arguments(reactor):
    r, w = _pipe()
    try:
        with pytest.raises(TypeError, match="add_reader.*'fd'"):
            reactor.add_reader("3", print)
        with pytest.raises(ValueError, match="add_reader.*invalid file"):
            reactor.add_reader(-1, print)
        with pytest.raises(TypeError, match="callable"):
            reactor.add_reader(r, None)
        with pytest.raises(TypeError):
            reactor.add_writer(r)
        with pytest.raises(TypeError, match="remove_writer.*'fd'"):
            reactor.remove_writer(1.5)
        bad = os.dup(r)
        os.close(bad)
        with pytest.raises(OSError) as info:
            reactor.add_reader(bad, print)
        assert info.value.errno == 9
        assert reactor.remove_reader(bad) is False
    finally:
        os.close(r)
        os.close(w)


def test_descriptor_number_reused(reactor):
    """Removed, closed, and the number taken by a new pipe: the new one is
    watched, not the old one."""
    r, w = _pipe()
    calls = []
    reactor.add_reader(r, calls.append, "old")
    reactor.run_once(0)
    assert reactor.remove_reader(r)
    os.close(r)
    os.close(w)
    r2, w2 = _pipe()
    try:
        reactor.add_reader(r2, calls.append, "new")
        for _ in range(3):
            reactor.run_once(0)
        assert calls == []
        os.write(w2, b"x")
        _run_until(reactor, lambda: calls)
        assert set(calls) == {"new"}
    finally:
        reactor.remove_reader(r2)
        os.close(r2)
        os.close(w2)


def test_a_thousand_descriptors(reactor):
    efds = [os.eventfd(0, os.EFD_NONBLOCK) for _ in range(1000)]
    ready = []

    def on_ready(fd):
        ready.append(fd)
        os.eventfd_read(fd)
        reactor.remove_reader(fd)
    try:
        for fd in efds:
            reactor.add_reader(fd, on_ready, fd)
        reactor.run_once(0)
        assert ready == []
        for fd in efds[::2]:
            os.eventfd_write(fd, 1)
        _run_until(reactor, lambda: len(ready) >= 500)
        for _ in range(3):
            reactor.run_once(0)
        assert sorted(ready) == sorted(efds[::2])
    finally:
        for fd in efds:
            reactor.remove_reader(fd)
            os.close(fd)


@pytest.mark.callback_errors
def test_exception_in_reader_is_logged(reactor, caplog):
    r, w = _pipe()

    def boom():
        reactor.remove_reader(r)
        raise ValueError("boom")
    try:
        reactor.add_reader(r, boom)
        os.write(w, b"x")
        with caplog.at_level(logging.ERROR, logger="twincore"):
            _run_until(reactor, lambda: "boom" in caplog.text)
        assert "reader callback" in caplog.text
    finally:
        os.close(r)
        os.close(w)


def test_callbacks_visible_to_gc():
    """A reader that refers to its reactor makes a cycle through C; the GC
    sees it: a dropped reactor is collected, and the descriptor (ours)
    stays open."""
    r, w = _pipe()
    try:
        reactor = twincore.Reactor()

        class Reader:
            def __init__(self):
                self.reactor = reactor

            def __call__(self):
                pass
        reader = Reader()
        reactor.add_reader(r, reader)
        reactor.add_writer(w, reader)
        ref = weakref.ref(reactor)
        reader_ref = weakref.ref(reader)
        del reactor, reader
        gc.collect()
        assert ref() is None
        assert reader_ref() is None
        os.fstat(r)
        os.fstat(w)
    finally:
        os.close(r)
        os.close(w)


def test_closed_reactor():
    reactor = twincore.Reactor()
    r, w = _pipe()
    try:
        reactor.add_reader(r, print)
        reactor.close()
        assert reactor.remove_reader(r) is False
        with pytest.raises(RuntimeError, match="closed"):
            reactor.add_reader(r, print)
        os.fstat(r)   # still open: the caller's
    finally:
        os.close(r)
        os.close(w)


def test_same_as_asyncio_signatures():
    import asyncio
    import inspect
    for name in ("add_reader", "add_writer", "remove_reader",
                 "remove_writer"):
        ours = inspect.signature(getattr(twincore.Reactor, name))
        theirs = inspect.signature(getattr(asyncio.AbstractEventLoop, name))
        assert [p.name for p in ours.parameters.values()] == \
            [p.name for p in theirs.parameters.values()], name
