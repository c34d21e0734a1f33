"""Reactor.spawn_process and ProcessProtocol: 64 MiB through cat with
backpressure, exit codes and signals (asyncio as the oracle), kill, a child
that closes stdout early, stdio choices, env and cwd, bad argv reported by
the call, and 200 short children leaving no zombie and no descriptor."""
import asyncio
import hashlib
import os
import signal
import subprocess
import sys

import pytest

import twincore
from conftest import run_until


class Recorder(twincore.ProcessProtocol):
    """Records the calls and checks their order: connection_made first,
    no data on a pipe after its pipe_connection_lost, process_exited once,
    connection_lost last and once."""

    def __init__(self):
        self.events = []
        self.out = {1: bytearray(), 2: bytearray()}
        self.lost_pipes = []
        self.returncode = None
        self.done = twincore.Future()
        self.pauses = 0
        self.paused = False

    def connection_made(self, transport):
        assert self.events == []
        self.transport = transport
        self.events.append("made")

    def pipe_data_received(self, fd, data):
        assert self.events[0] == "made" and "lost" not in self.events
        assert fd not in self.lost_pipes
        assert isinstance(data, bytes) and data
        self.out[fd] += data

    def pipe_connection_lost(self, fd):
        assert fd not in self.lost_pipes
        self.lost_pipes.append(fd)

    def process_exited(self, returncode):
        assert "exited" not in self.events
        self.events.append("exited")
        self.returncode = returncode
        assert self.transport.returncode == returncode

    def pause_writing(self):
        self.pauses += 1
        self.paused = True

    def resume_writing(self):
        self.paused = False

    def connection_lost(self, exc):
        assert "lost" not in self.events and "exited" in self.events
        assert exc is None
        self.events.append("lost")
        self.done.set_result(self)


def run_child(reactor, argv, **kwargs):
    fut = reactor.spawn_process(Recorder, argv, **kwargs)
    proto = run_until(reactor, fut)
    return run_until(reactor, proto.done)


def open_fds():
    # listdir's own descriptor of /proc/self/fd is listed too, and is gone
    # by the time we look again.
    listed = {int(n) for n in os.listdir("/proc/self/fd")}
    return {fd for fd in listed if os.path.exists("/proc/self/fd/%d" % fd)}


def assert_no_new_fds(before):
    # Descriptors of earlier tests may close meanwhile; none may appear.
    assert open_fds() - before == set()


def assert_no_children():
    with pytest.raises(ChildProcessError):
        os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)


def asyncio_returncode(argv):
    async def main():
        proc = await asyncio.create_subprocess_exec(*argv)
        return await proc.wait()
    return asyncio.run(main())


@pytest.mark.parametrize("argv", [
    ["sh", "-c", "exit 0"],
    ["sh", "-c", "exit 3"],
    ["sh", "-c", "exit 255"],
    ["sh", "-c", "kill -TERM $$"],
    ["sh", "-c", "kill -KILL $$"],
])
def test_returncode_as_asyncio(reactor, argv):
    p = run_child(reactor, argv, stdin=twincore.DEVNULL)
    assert p.returncode == asyncio_returncode(argv)
    assert p.transport.returncode == p.returncode
    assert p.events == ["made", "exited", "lost"]
    assert sorted(p.lost_pipes) == [1, 2]


def test_output_and_order(reactor):
    p = run_child(reactor, ["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert bytes(p.out[1]) == b"out\n"
    assert bytes(p.out[2]) == b"err\n"
    assert p.returncode == 7
    assert sorted(p.lost_pipes) == [0, 1, 2]


def test_cat_64mib_with_backpressure(reactor):
    total = 64 * 1024 * 1024
    block = os.urandom(256 * 1024)
    want = hashlib.sha256()

    class Feeder(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            self.sent = 0
            self.max_queue = 0
            self.got = hashlib.sha256()
            self.received = 0
            self.feed()

        def feed(self):
            while not self.paused and self.sent < total:
                self.transport.write(block)
                self.sent += len(block)
                self.max_queue = max(self.max_queue,
                                     self.transport.get_write_buffer_size())
            if self.sent == total:
                self.transport.close_stdin()
                with pytest.raises(BrokenPipeError):
                    self.transport.write(b"late")

        def resume_writing(self):
            super().resume_writing()
            if self.sent < total:
                self.feed()

        def pipe_data_received(self, fd, data):
            self.got.update(data)
            self.received += len(data)

    for _ in range(total // len(block)):
        want.update(block)
    fut = reactor.spawn_process(Feeder, ["cat"], stderr=None)
    proto = run_until(reactor, fut)
    p = run_until(reactor, proto.done, timeout=120)
    assert p.received == total
    assert p.got.hexdigest() == want.hexdigest()
    assert p.returncode == 0
    assert p.pauses > 0
    # Backpressure held the queue near the watermark, not at 64 MiB.
    assert p.max_queue < 2 * 1024 * 1024


def test_kill_and_signals(reactor):
    fut = reactor.spawn_process(Recorder, ["sleep", "30"],
                                stdin=twincore.DEVNULL)
    p = run_until(reactor, fut)
    assert p.transport.returncode is None
    assert p.transport.pid > 0
    with pytest.raises(ValueError):
        p.transport.send_signal(-1)
    p.transport.send_signal(0)   # alive
    p.transport.kill()
    run_until(reactor, p.done)
    assert p.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        p.transport.kill()
    with pytest.raises(ProcessLookupError):
        p.transport.terminate()
    assert "returncode=-9" in repr(p.transport)


def test_close_kills_a_running_child(reactor):
    fut = reactor.spawn_process(Recorder, ["sleep", "30"])
    p = run_until(reactor, fut)
    pid = p.transport.pid
    p.transport.close()
    assert p.transport.is_closing()
    run_until(reactor, p.done)
    assert p.returncode == -signal.SIGKILL
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)   # gone and reaped: no zombie
    assert sorted(p.lost_pipes) == [0, 1, 2]


def test_child_closes_stdout_early(reactor):
    fut = reactor.spawn_process(
        Recorder, ["sh", "-c", "echo bye; exec 1>&- 0<&-; sleep 0.3"])
    p = run_until(reactor, fut)

    async def until_stdout_closed():
        # The child closing its end of stdin is noticed too (as asyncio's
        # pipe transports do), before it exits.
        while 1 not in p.lost_pipes or 0 not in p.lost_pipes:
            await twincore.sleep(0.01, reactor=reactor)
        assert p.returncode is None
        with pytest.raises(BrokenPipeError, match="stdin is closed"):
            p.transport.write(b"x")
    run_until(reactor, reactor.spawn(until_stdout_closed()))
    run_until(reactor, p.done)
    assert bytes(p.out[1]) == b"bye\n"
    assert p.returncode == 0


def test_stdio_env_cwd(reactor, tmp_path):
    log = open(tmp_path / "log", "wb")
    try:
        p = run_child(reactor, ["sh", "-c", "echo $FOO; pwd; echo e >&2"],
                      env={"FOO": "bar baz", "PATH": os.environ["PATH"]},
                      cwd=tmp_path, stdin=None, stderr=twincore.STDOUT)
        assert bytes(p.out[1]) == b"bar baz\n%s\ne\n" % os.fsencode(tmp_path)
        assert p.lost_pipes == [1]
        p = run_child(reactor, ["sh", "-c", "echo to-file"], stdout=log,
                      stderr=twincore.DEVNULL)
        assert p.lost_pipes == [0]
    finally:
        log.close()
    assert (tmp_path / "log").read_bytes() == b"to-file\n"


def test_close_fds_and_process_group(reactor):
    r, w = os.pipe()   # inheritable write end
    os.set_inheritable(w, True)
    try:
        script = f"[ -e /proc/self/fd/{w} ] && echo open || echo closed"
        p = run_child(reactor, ["sh", "-c", script])
        assert bytes(p.out[1]) == b"closed\n"
        p = run_child(reactor, ["sh", "-c", script], close_fds=False)
        assert bytes(p.out[1]) == b"open\n"
        pgid_of_sh = "echo $$; cut -d' ' -f5 /proc/$$/stat"
        p = run_child(reactor, ["sh", "-c", pgid_of_sh], process_group=0)
        pid, pgid = p.out[1].split()
        assert pid == pgid
    finally:
        os.close(r)
        os.close(w)


def test_bad_argv_and_arguments(reactor):
    reactor.run_once(0)   # a reactor's own descriptors come with its first run
    before = open_fds()
    with pytest.raises(FileNotFoundError) as info:
        reactor.spawn_process(Recorder, ["twincore-no-such-program"])
    assert info.value.filename == "twincore-no-such-program"
    with pytest.raises(FileNotFoundError):
        reactor.spawn_process(Recorder, ["/nonexistent/prog", "x"])
    with pytest.raises(FileNotFoundError):
        reactor.spawn_process(Recorder, ["true"], cwd="/nonexistent/dir")
    with pytest.raises(PermissionError):
        reactor.spawn_process(Recorder, ["/etc/passwd"])
    with pytest.raises(ValueError, match="argv"):
        reactor.spawn_process(Recorder, [])
    with pytest.raises(TypeError, match="argv"):
        reactor.spawn_process(Recorder, "true")
    with pytest.raises(TypeError, match="argv"):
        reactor.spawn_process(Recorder, ["true", 3])
    with pytest.raises(ValueError, match="NUL"):
        reactor.spawn_process(Recorder, ["true", "a\0b"])
    with pytest.raises(ValueError, match="env"):
        reactor.spawn_process(Recorder, ["true"], env={"A=B": "c"})
    with pytest.raises(ValueError, match="stdin"):
        reactor.spawn_process(Recorder, ["true"], stdin=-7)
    with pytest.raises(ValueError, match="STDOUT"):
        reactor.spawn_process(Recorder, ["true"], stdout=twincore.STDOUT)
    with pytest.raises(TypeError, match="stdout"):
        reactor.spawn_process(Recorder, ["true"], stdout=True)
    with pytest.raises(ValueError, match="process_group"):
        reactor.spawn_process(Recorder, ["true"], process_group=-2)
    with pytest.raises(OSError):   # EBADF
        reactor.spawn_process(Recorder, ["true"], stdout=999)
    assert_no_new_fds(before)
    assert_no_children()


def test_200_short_children(reactor):
    """No zombie and no descriptor left; every exit reported once."""
    reactor.run_once(0)   # a reactor's own descriptors come with its first run
    before = open_fds()
    results = []

    async def main():
        for _ in range(10):
            futs = [reactor.spawn_process(Recorder, ["true"],
                                          stdin=twincore.DEVNULL)
                    for _ in range(20)]
            for fut in futs:
                proto = await fut
                await proto.done
                results.append(proto.returncode)
    run_until(reactor, reactor.spawn(main()), timeout=120)
    assert results == [0] * 200

    async def settle():   # the handles' close callbacks
        await twincore.sleep(0.05, reactor=reactor)
    run_until(reactor, reactor.spawn(settle()))
    assert_no_children()
    assert_no_new_fds(before)


def test_spawn_with_threads_running(reactor):
    """A process with busy threads (the CPU pool) spawns safely."""
    import time

    def busy():
        end = time.monotonic() + 0.3
        while time.monotonic() < end:
            pass
        return True
    work = [reactor.defer_to_cpu(busy) for _ in range(2)]

    async def main():
        codes = []
        for _ in range(20):
            proto = await reactor.spawn_process(Recorder, ["true"])
            await proto.done
            codes.append(proto.returncode)
        for w in work:
            assert await w
        return codes
    assert run_until(reactor, reactor.spawn(main())) == [0] * 20


def test_python_child_reads_stdin_to_eof(reactor):
    code = ("import sys; d = sys.stdin.buffer.read(); "
            "sys.stdout.buffer.write(d[::-1])")

    class P(Recorder):
        def connection_made(self, transport):
            super().connection_made(transport)
            transport.write(b"abc")
            transport.close_stdin()
    fut = reactor.spawn_process(P, [sys.executable, "-c", code])
    p = run_until(reactor, run_until(reactor, fut).done)
    assert bytes(p.out[1]) == b"cba"
    assert p.returncode == 0


def test_sigpipe_is_default_in_the_child(reactor):
    """This process ignores SIGPIPE (Python does); the child must not
    inherit that: `yes` then dies quietly instead of reporting EPIPE."""
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    p = run_child(reactor, ["sh", "-c", "yes | head -c 10 >/dev/null"])
    assert bytes(p.out[2]) == b""
    assert p.returncode == 0


def test_subprocess_constants_match():
    assert (twincore.PIPE, twincore.STDOUT, twincore.DEVNULL) == \
        (subprocess.PIPE, subprocess.STDOUT, subprocess.DEVNULL)


def test_reactor_close_kills_and_reaps_a_running_child():
    r = twincore.Reactor()
    fut = r.spawn_process(Recorder, ["sleep", "30"])
    proto = run_until(r, fut)
    pid = proto.transport.pid
    r.close()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)   # killed and reaped: no zombie left
    assert proto.events == ["made"]   # no calls after the reactor closed
