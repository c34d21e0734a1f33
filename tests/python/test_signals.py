"""Signals: add_signal_handler/remove_signal_handler, the previous Python
handler coming back, and KeyboardInterrupt/SystemExit stopping run()."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

import twincore
from conftest import run_until


@pytest.fixture
def py_handlers():
    """Python-level handlers for SIGUSR1/SIGUSR2 (so a stray signal can
    never kill the test run), restored afterwards."""
    hits = []

    def handler(signum, frame):
        hits.append(signum)
    saved = {s: signal.getsignal(s) for s in (signal.SIGUSR1,
                                              signal.SIGUSR2)}
    for s in saved:
        signal.signal(s, handler)
    handler.hits = hits
    yield handler
    for s, h in saved.items():
        signal.signal(s, h)


@pytest.fixture
def sigint_default():
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, saved)


def run_python_signal_handlers():
    """Give the main thread a few chances to run Python signal handlers."""
    for _ in range(50):
        time.sleep(0.001)


def kill_soon(signum, delay=0.02):
    """Send signum to this process from another thread after delay."""
    t = threading.Timer(delay, os.kill, (os.getpid(), signum))
    t.start()
    return t


def test_handler_runs_on_the_reactor_thread(reactor, py_handlers):
    seen = []
    done = twincore.Future()

    def on_usr1(*args):
        seen.append((args, threading.get_ident()))
        done.set_result(None)
    reactor.add_signal_handler(signal.SIGUSR1, on_usr1, "a", 2)
    try:
        t = kill_soon(signal.SIGUSR1)
        run_until(reactor, done, timeout=10)
        t.join()
    finally:
        assert reactor.remove_signal_handler(signal.SIGUSR1) is True
    assert seen == [(("a", 2), threading.get_ident())]
    assert py_handlers.hits == []   # the reactor's handler took it


def test_signal_sent_from_a_reactor_callback(reactor, py_handlers):
    seen = []
    reactor.add_signal_handler(signal.SIGUSR2, seen.append, "usr2")
    try:
        reactor.call_soon(os.kill, os.getpid(), signal.SIGUSR2)
        run_until(reactor, twincore.sleep(0.1, reactor=reactor))
    finally:
        reactor.remove_signal_handler(signal.SIGUSR2)
    assert seen == ["usr2"]


def test_signal_before_run_is_delivered_by_run(reactor, py_handlers):
    seen = []
    reactor.add_signal_handler(signal.SIGUSR1, seen.append, 1)
    try:
        os.kill(os.getpid(), signal.SIGUSR1)
        run_until(reactor, twincore.sleep(0.1, reactor=reactor))
    finally:
        reactor.remove_signal_handler(signal.SIGUSR1)
    assert seen == [1]


def test_two_signals(reactor, py_handlers):
    seen = []
    reactor.add_signal_handler(signal.SIGUSR1, seen.append, "usr1")
    reactor.add_signal_handler(signal.SIGUSR2, seen.append, "usr2")
    try:
        t1 = kill_soon(signal.SIGUSR1, 0.01)
        t2 = kill_soon(signal.SIGUSR2, 0.05)
        run_until(reactor, twincore.sleep(0.2, reactor=reactor))
        t1.join()
        t2.join()
    finally:
        reactor.remove_signal_handler(signal.SIGUSR1)
        reactor.remove_signal_handler(signal.SIGUSR2)
    assert sorted(seen) == ["usr1", "usr2"]


def test_adding_again_replaces_the_handler(reactor, py_handlers):
    seen = []
    reactor.add_signal_handler(signal.SIGUSR1, seen.append, "first")
    reactor.add_signal_handler(signal.SIGUSR1, seen.append, "second")
    try:
        kill_soon(signal.SIGUSR1).join()
        run_until(reactor, twincore.sleep(0.1, reactor=reactor))
    finally:
        assert reactor.remove_signal_handler(signal.SIGUSR1) is True
    assert seen == ["second"]


def test_remove_restores_the_previous_python_handler(reactor, py_handlers):
    assert signal.getsignal(signal.SIGUSR1) is py_handlers
    seen = []
    reactor.add_signal_handler(signal.SIGUSR1, seen.append, "reactor")
    kill_soon(signal.SIGUSR1).join()
    run_until(reactor, twincore.sleep(0.1, reactor=reactor))
    assert seen == ["reactor"] and py_handlers.hits == []

    assert reactor.remove_signal_handler(signal.SIGUSR1) is True
    assert reactor.remove_signal_handler(signal.SIGUSR1) is False
    assert signal.getsignal(signal.SIGUSR1) is py_handlers
    os.kill(os.getpid(), signal.SIGUSR1)
    run_python_signal_handlers()
    assert py_handlers.hits == [signal.SIGUSR1]
    run_until(reactor, twincore.sleep(0.05, reactor=reactor))
    assert seen == ["reactor"]   # the reactor no longer sees it


def test_remove_without_a_handler(reactor):
    assert reactor.remove_signal_handler(signal.SIGUSR1) is False
    assert reactor.remove_signal_handler(signal.SIGUSR2) is False


@pytest.mark.parametrize("signum", [0, -1, signal.NSIG, 1000,
                                    signal.SIGKILL, signal.SIGSTOP])
def test_invalid_signal_numbers(reactor, signum):
    with pytest.raises(ValueError, match="signal"):
        reactor.add_signal_handler(signum, print)


def test_argument_errors(reactor):
    with pytest.raises(TypeError, match="signum"):
        reactor.add_signal_handler("SIGUSR1", print)
    with pytest.raises(TypeError, match="fn"):
        reactor.add_signal_handler(signal.SIGUSR1, "not callable")
    with pytest.raises(TypeError):
        reactor.add_signal_handler(signal.SIGUSR1)
    with pytest.raises(TypeError):
        reactor.remove_signal_handler()


@pytest.mark.callback_errors
def test_signal_handler_exception_is_logged(reactor, py_handlers, caplog):
    def bad():
        raise RuntimeError("in a signal handler")
    reactor.add_signal_handler(signal.SIGUSR1, bad)
    try:
        with caplog.at_level("ERROR", logger="twincore"):
            kill_soon(signal.SIGUSR1).join()
            run_until(reactor, twincore.sleep(0.1, reactor=reactor))
    finally:
        reactor.remove_signal_handler(signal.SIGUSR1)
    recs = [r for r in caplog.records if r.exc_info and
            r.exc_info[0] is RuntimeError]
    assert len(recs) == 1


# ---- KeyboardInterrupt and SystemExit -----------------------------------

def test_keyboard_interrupt_from_a_timer_stops_run(reactor):
    def interrupt():
        raise KeyboardInterrupt
    reactor.call_later(0.01, interrupt)
    watchdog = reactor.call_later(30, reactor.stop)
    with pytest.raises(KeyboardInterrupt):
        reactor.run()
    assert not reactor.running
    assert watchdog.active()
    watchdog.cancel()
    # And the reactor runs again afterwards.
    out = []
    reactor.call_soon(out.append, "again")
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert out == ["again"]


@pytest.mark.parametrize("where", ["call_soon", "call_from_thread",
                                   "future callback"])
def test_keyboard_interrupt_from_other_callbacks(reactor, where):
    def interrupt(*_):
        raise KeyboardInterrupt
    if where == "call_soon":
        reactor.call_soon(interrupt)
    elif where == "call_from_thread":
        threading.Thread(target=reactor.call_from_thread,
                         args=(interrupt,)).start()
    else:
        f = twincore.Future(reactor)
        f.add_callback(interrupt)
        reactor.call_later(0.01, f.set_result, None)
    watchdog = reactor.call_later(30, reactor.stop)
    with pytest.raises(KeyboardInterrupt):
        reactor.run()
    assert watchdog.active()
    watchdog.cancel()
    reactor.call_soon(reactor.stop)
    reactor.run()


def test_sigint_with_pythons_default_handler(reactor, sigint_default):
    watchdog = reactor.call_later(30, reactor.stop)
    t = kill_soon(signal.SIGINT, 0.05)   # Ctrl-C while epoll waits
    with pytest.raises(KeyboardInterrupt):
        reactor.run()
    t.join()
    assert not reactor.running
    assert watchdog.active(), "run() returned only at the watchdog"
    watchdog.cancel()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    out = []
    reactor.call_soon(out.append, 1)
    reactor.call_soon(reactor.stop)
    reactor.run()
    assert out == [1]


def test_sigint_sent_from_a_callback(reactor, sigint_default):
    reactor.call_later(0.01, os.kill, os.getpid(), signal.SIGINT)
    watchdog = reactor.call_later(30, reactor.stop)
    with pytest.raises(KeyboardInterrupt):
        reactor.run()
    assert watchdog.active()
    watchdog.cancel()


def test_twincore_run_raises_keyboard_interrupt(reactor, sigint_default):
    async def main():
        await twincore.sleep(30, reactor=reactor)
    t = kill_soon(signal.SIGINT, 0.05)
    with pytest.raises(KeyboardInterrupt):
        twincore.run(main(), reactor=reactor)
    t.join()
    assert not reactor.running


def test_system_exit_stops_run(reactor):
    def leave():
        raise SystemExit(3)
    reactor.call_later(0.01, leave)
    watchdog = reactor.call_later(30, reactor.stop)
    with pytest.raises(SystemExit) as info:
        reactor.run()
    assert info.value.code == 3
    assert watchdog.active()
    watchdog.cancel()


def test_sigint_handled_by_the_reactor(reactor, sigint_default):
    seen = []
    reactor.add_signal_handler(signal.SIGINT, seen.append, "ctrl-c")
    try:
        kill_soon(signal.SIGINT).join()
        run_until(reactor, twincore.sleep(0.1, reactor=reactor))
    finally:
        reactor.remove_signal_handler(signal.SIGINT)
    assert seen == ["ctrl-c"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        run_python_signal_handlers()


# ---- twincore.run() and Ctrl-C (issue 12.3) -----------------------------

CTRL_C_SCRIPT = r"""
import sys
import twincore

async def helper():
    try:
        await twincore.sleep(60)
    finally:
        print("helper cleaned", flush=True)

def ready():
    print("ready", flush=True)

async def main():
    twincore.spawn(helper())
    # Said from a timer once main waits: SIGINT then finds the reactor in
    # epoll (or, at worst, in this callback: KeyboardInterrupt from a
    # callback, which must end the same).
    twincore.get_running_reactor().call_later(0.05, ready)
    try:
        await twincore.sleep(60)
    finally:
        await twincore.sleep(0.01)   # an await in the clean-up works
        print("main cleaned", flush=True)

try:
    twincore.run(main())
except KeyboardInterrupt:
    print("interrupted", flush=True)

async def again():
    await twincore.sleep(0.01)
    return "again"
print(twincore.run(again()), flush=True)
"""


def test_ctrl_c_cancels_main_cleans_up_and_run_works_again():
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert sorted(lines[:2]) == ["helper cleaned", "main cleaned"], out
    assert lines[2:] == ["interrupted", "again"], out
    assert err == ""


async def _sleep_then(reactor, log, name, seconds=30):
    try:
        await twincore.sleep(seconds, reactor=reactor)
    finally:
        await twincore.sleep(0, reactor=reactor)
        log.append(name + " cleaned")


@pytest.mark.parametrize("how", ["call_soon", "timer", "coroutine"])
def test_keyboard_interrupt_in_twincore_run_then_run_again(reactor, how):
    """A callback (or main itself) raising KeyboardInterrupt: main and the
    other tasks are cancelled and clean up on the live reactor before run()
    raises, and nothing of that run() runs into the next."""
    log = []

    def interrupt():
        raise KeyboardInterrupt

    async def main():
        reactor.spawn(_sleep_then(reactor, log, "helper"))
        if how == "call_soon":
            reactor.call_soon(interrupt)
        elif how == "timer":
            reactor.call_later(0.01, interrupt)
        else:
            await twincore.sleep(0, reactor=reactor)
            raise KeyboardInterrupt
        await _sleep_then(reactor, log, "main")

    watchdog = reactor.call_later(30, reactor.stop)
    with pytest.raises(KeyboardInterrupt):
        twincore.run(main(), reactor=reactor)
    assert not reactor.running
    expected = ["helper cleaned"] if how == "coroutine" else \
        ["helper cleaned", "main cleaned"]
    assert sorted(log) == sorted(expected)
    del log[:]

    async def again():
        await twincore.sleep(0.02, reactor=reactor)
        return "again"
    assert twincore.run(again(), reactor=reactor) == "again"
    assert log == []
    assert watchdog.active()
    watchdog.cancel()


def test_a_second_interrupt_during_the_clean_up_gives_up(reactor):
    """Ctrl-C twice: the clean-up is abandoned, the tasks end cancelled,
    and the reactor is fit for the next run()."""
    log = []

    def interrupt():
        raise KeyboardInterrupt

    async def main():
        try:
            reactor.call_soon(interrupt)
            await twincore.sleep(30, reactor=reactor)
        finally:
            log.append("cleaning")
            reactor.call_soon(interrupt)
            await twincore.sleep(30, reactor=reactor)
            log.append("not reached")

    tasks = []

    def spawn_main():
        tasks.append(reactor.spawn(main()))
        return tasks[0]
    watchdog = reactor.call_later(30, reactor.stop)
    with pytest.raises(KeyboardInterrupt):
        twincore.run(spawn_main(), reactor=reactor)
    assert log == ["cleaning"]
    assert tasks[0].cancelled()

    async def again():
        await twincore.sleep(0.02, reactor=reactor)
        return "again"
    assert twincore.run(again(), reactor=reactor) == "again"
    assert log == ["cleaning"]
    assert watchdog.active()
    watchdog.cancel()


@pytest.mark.callback_errors
def test_a_clean_up_that_cannot_finish_is_logged(reactor, caplog):
    """An abandoned task whose finally awaits again after the first
    interruption of its clean-up: closing it fails, and that is said."""
    def interrupt():
        raise KeyboardInterrupt

    async def main():
        try:
            reactor.call_soon(interrupt)
            await twincore.sleep(30, reactor=reactor)
        finally:
            try:
                reactor.call_soon(interrupt)
                await twincore.sleep(30, reactor=reactor)
            finally:
                await twincore.sleep(0, reactor=reactor)
    with caplog.at_level("WARNING", logger="twincore"):
        with pytest.raises(KeyboardInterrupt):
            twincore.run(main(), reactor=reactor)
    assert any("clean-up" in r.getMessage() for r in caplog.records)
    reactor.call_soon(reactor.stop)
    reactor.run()
