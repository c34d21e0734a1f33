"""Faults: descriptor exhaustion at accept and connect, a slow-loris
client, a client that never reads, hostile offloaded tasks, stopping the
reactor with work in flight, Ctrl-C, and interpreter exit while pool
workers are inside Python.

Whatever changes process-wide state (RLIMIT_NOFILE, signals, interpreter
exit) or is measured per process (RSS, descriptors) runs in a subprocess
with a hard timeout, so a hang fails the test instead of blocking it.
Loopback only."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import twincore
from conftest import run_until

TIMEOUT = 60


def script(code):
    return PRELUDE + textwrap.dedent(code)


def run_script(code, *args, timeout=TIMEOUT):
    """Run PRELUDE + code in a new interpreter (the suite's PYTHONPATH, and
    under the ASan stage its LD_PRELOAD, carry over)."""
    return subprocess.run([sys.executable, "-c", script(code),
                           *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def start_script(code, *args):
    return subprocess.Popen([sys.executable, "-c", script(code),
                             *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def finish(proc, timeout=TIMEOUT):
    """Wait for a started script; kill it (by its PID) on timeout."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"subprocess hung; stderr:\n{err[-3000:]}")
    return out, err


def assert_clean_exit(proc_or_result, err):
    rc = proc_or_result.returncode
    assert "Fatal Python error" not in err, err[-3000:]
    assert "AddressSanitizer" not in err, err[-3000:]
    assert rc == 0, f"exit status {rc}; stderr:\n{err[-3000:]}"


# A prelude for the subprocesses: an echo protocol, descriptor counting and
# a helper that leaves exactly `spare` descriptors free.
PRELUDE = """
import gc, json, os, resource, signal, sys, time
import twincore

class Echo(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)

def open_fds():
    # Without the descriptor listdir itself uses for a moment.
    fds = []
    for n in os.listdir("/proc/self/fd"):
        try:
            os.readlink(f"/proc/self/fd/{n}")
        except FileNotFoundError:
            continue
        fds.append(int(n))
    return sorted(fds)

def fd_kind(fd):
    # "socket:", "anon_inode:[eventpoll]", "pipe:"...
    link = os.readlink(f"/proc/self/fd/{fd}")
    return link if link.startswith("anon_inode:") else link.split("[")[0]

def leave_spare(spare):
    # RLIMIT_NOFILE bounds descriptor numbers: allow `spare` past the
    # highest one open now (run() adds its signal wakeup pair: 2 more).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = max(open_fds()) + 1 + spare
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
"""


# ---- EMFILE ---------------------------------------------------------------

def test_emfile_at_accept_the_listener_survives_and_serves_everyone():
    """20 clients against a server with room for about 3 connections at
    once: the others wait in the backlog, the listener logs the EMFILE
    and accepts them as descriptors come free; nobody is dropped."""
    proc = start_script("""
    r = twincore.Reactor()
    listener = r.listen_tcp(0, Echo, backlog=64)
    leave_spare(2 + 3)
    r.add_signal_handler(signal.SIGTERM, r.stop)
    print(listener.port, flush=True)
    r.run()
    print(json.dumps({"accepted": listener.accepted}), flush=True)
    """)
    try:
        port = int(proc.stdout.readline())
        socks = []
        for i in range(20):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"ping %02d\n" % i)
            socks.append((i, s))
        served = []
        deadline = time.monotonic() + 30
        while socks and time.monotonic() < deadline:
            for i, s in list(socks):
                s.setblocking(False)
                try:
                    data = s.recv(64)
                except BlockingIOError:
                    continue
                assert data == b"ping %02d\n" % i
                s.close()   # frees the server's descriptor
                socks.remove((i, s))
                served.append(i)
            time.sleep(0.01)
        for _, s in socks:
            s.close()
        proc.send_signal(signal.SIGTERM)
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sorted(served) == list(range(20)), f"unserved: {socks}"
    assert_clean_exit(proc, err)
    assert json.loads(out.splitlines()[-1])["accepted"] == 20
    # Proof that descriptors ran out at accept, reported once per episode.
    assert "accept failed" in err and "Too many open files" in err, err


def test_emfile_at_connect_fails_the_future_and_recovers():
    res = run_script("""
    r = twincore.Reactor()
    listener = r.listen_tcp(0, Echo)

    class Client(twincore.Protocol):
        def data_received(self, data):
            self.got = getattr(self, "got", b"") + data

    async def main():
        leave_spare(2 + 6)
        clients, errors = [], []
        for _ in range(50):
            try:
                clients.append(await r.connect_tcp("127.0.0.1",
                                                   listener.port, Client))
            except OSError as exc:
                errors.append([type(exc).__name__, exc.errno])
                break
        for c in clients:
            c.transport.close()
        await twincore.sleep(0.3, reactor=r)
        # Descriptors are back: connecting (and echoing) works again.
        c = await r.connect_tcp("127.0.0.1", listener.port, Client)
        c.transport.write(b"again")
        for _ in range(100):
            if getattr(c, "got", b"") == b"again":
                break
            await twincore.sleep(0.01, reactor=r)
        c.transport.close()
        return {"connected": len(clients), "errors": errors,
                "echo": getattr(c, "got", b"").decode()}

    print(json.dumps(twincore.run(main(), reactor=r)))
    """)
    assert_clean_exit(res, res.stderr)
    out = json.loads(res.stdout.splitlines()[-1])
    import errno
    assert out["errors"] == [["OSError", errno.EMFILE]], out
    assert 1 <= out["connected"] < 50
    assert out["echo"] == "again"


# ---- slow and stuck clients -----------------------------------------------

class EchoThenClose(twincore.Protocol):
    def data_received(self, data):
        self.transport.write(data)


def test_slow_loris_does_not_hold_up_other_clients(reactor):
    """One client sends a byte a second; meanwhile others connect, send
    1 KiB and get it back, each within a generous bound."""
    listener = reactor.listen_tcp(0, EchoThenClose)
    port = listener.port
    done = twincore.Future(reactor)
    results = {}

    def loris():
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            for b in b"SLOW":
                s.sendall(bytes([b]))
                time.sleep(1.0)
            s.shutdown(socket.SHUT_WR)
            got = b""
            while True:
                chunk = s.recv(64)
                if not chunk:
                    break
                got += chunk
        results["loris"] = got

    def others(stop):
        lat = []
        payload = os.urandom(1024)
        while not stop.is_set() and len(lat) < 500:
            t0 = time.monotonic()
            with socket.create_connection(("127.0.0.1", port),
                                          timeout=10) as s:
                s.sendall(payload)
                got = b""
                while len(got) < len(payload):
                    got += s.recv(4096)
            assert got == payload
            lat.append(time.monotonic() - t0)
            time.sleep(0.02)
        results["latencies"] = lat

    stop = threading.Event()

    def body():
        t1 = threading.Thread(target=loris)
        t2 = threading.Thread(target=others, args=(stop,))
        t1.start()
        t2.start()
        t1.join(30)
        stop.set()
        t2.join(30)
        reactor.call_from_thread(done.set_result, None)
    threading.Thread(target=body, daemon=True).start()
    run_until(reactor, done, timeout=45)
    listener.close()
    assert results["loris"] == b"SLOW"
    lat = results["latencies"]
    assert len(lat) >= 20, lat
    assert max(lat) < 1.0, f"max round trip {max(lat):.3f} s"


def test_client_that_never_reads_backpressure_caps_server_memory():
    """A server that honours pause_writing offers up to 1 GiB to a client
    that never reads: it must pause, and its RSS must stay put."""
    proc = start_script("""
    BLOCK = b"x" * 65536
    LIMIT = 1 << 30
    r = twincore.Reactor()

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024

    st = {"offered": 0, "pauses": 0, "max_buffer": 0, "rss0": rss(),
          "rss_max": 0}

    class Firehose(twincore.Protocol):
        paused = False

        def connection_made(self, transport):
            super().connection_made(transport)
            self.pump()

        def pump(self):
            while not self.paused and st["offered"] < LIMIT:
                self.transport.write(BLOCK)
                st["offered"] += len(BLOCK)
                st["max_buffer"] = max(st["max_buffer"],
                                       self.transport.get_write_buffer_size())

        def pause_writing(self):
            self.paused = True
            st["pauses"] += 1

        def resume_writing(self):
            self.paused = False
            r.call_soon(self.pump)

        def connection_lost(self, exc):
            r.stop()

    def sample():
        st["rss_max"] = max(st["rss_max"], rss())
        r.call_later(0.05, sample)

    listener = r.listen_tcp(0, Firehose)
    st["high"] = 64 * 1024
    sample()
    print(listener.port, flush=True)
    r.run()
    print(json.dumps(st), flush=True)
    """)
    try:
        port = int(proc.stdout.readline())
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.connect(("127.0.0.1", port))
        time.sleep(3.0)     # never read
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()           # a reset: the server's write fails
        out, err = finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_clean_exit(proc, err)
    st = json.loads(out.splitlines()[-1])
    assert st["pauses"] >= 1
    # It stopped: what the kernel buffers took plus one watermark's worth.
    assert st["offered"] < 64 << 20, st
    assert st["max_buffer"] <= st["high"] + 65536, st
    assert st["rss_max"] - st["rss0"] < 32 << 20, st


# ---- hostile offloaded tasks ----------------------------------------------

class Unusual(BaseException):
    pass


def deep(n):
    return deep(n + 1)


def raise_unusual():
    raise Unusual("not an Exception")


def raise_memory():
    raise MemoryError


def huge():
    return bytearray(1 << 62)   # MemoryError, not a crash


@pytest.mark.parametrize("fn, args, exc", [
    (deep, (0,), RecursionError), (raise_unusual, (), Unusual),
    (raise_memory, (), MemoryError), (huge, (), MemoryError),
])
def test_any_exception_in_a_task_fails_its_future_only(reactor, fn, args,
                                                       exc):
    """A BaseException that is no Exception, a recursion blow-up on a
    worker's stack, an allocation of 4 EiB: each comes back as the
    future's exception, to the coroutine awaiting it; the pool goes on
    working."""
    fut = reactor.defer_to_cpu(fn, *args)
    ok = reactor.defer_to_cpu(sum, [1, 2, 3])

    async def main():
        try:
            await fut
        except BaseException as e:      # noqa: B902 - the point
            got = e
        else:
            got = None
        return got, await ok
    got, total = run_until(reactor, main())
    assert isinstance(got, exc), repr(got)
    assert total == 6
    assert fut.state == twincore.FAILED


EXIT_IN_TASK = """
exc_name, order = sys.argv[1], sys.argv[2]
EXC = {"SystemExit": SystemExit,
       "KeyboardInterrupt": KeyboardInterrupt}[exc_name]
r = twincore.Reactor()
r.cpu_pool = twincore.CpuPool(workers=2)

def boom(delay):
    time.sleep(delay)
    raise EXC("from a worker")

async def main():
    fut = r.defer_to_cpu(boom, 0.2 if order == "await-first" else 0.0)
    if order == "fail-first":
        await twincore.sleep(0.3, reactor=r)
    try:
        await fut
    except EXC:
        return "caught"

try:
    print(twincore.run(main(), reactor=r))
except BaseException as e:
    print("escaped", repr(e))
r.cpu_pool.close()
"""

@pytest.mark.parametrize("exc_name", ["SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("order", ["fail-first", "await-first"])
def test_exit_exceptions_in_a_task_reach_the_awaiting_coroutine(exc_name,
                                                               order):
    """SystemExit or KeyboardInterrupt raised by a task on a worker is a
    failed task, not a request to stop this program (in a subprocess: if
    it escapes, it must not take the test run with it)."""
    res = run_script(EXIT_IN_TASK, exc_name, order)
    assert_clean_exit(res, res.stderr)
    assert res.stdout.split() == ["caught"], res.stdout


# ---- stopping with work in flight -----------------------------------------

STOP_SCRIPT = """
def main(rerun):
    base = open_fds()
    r = twincore.Reactor()
    pool = twincore.CpuPool(workers=1)
    r.cpu_pool = pool
    listener = r.listen_tcp(0, Echo)
    clients, futs = [], []

    async def start():
        for _ in range(5):
            clients.append(await r.connect_tcp("127.0.0.1", listener.port,
                                               twincore.Protocol))
        futs.extend(r.defer_to_cpu(time.sleep, 0.2) for _ in range(10))
        r.call_soon(r.stop)     # 1 task running, 9 queued, 10 sockets open
        await twincore.sleep(100, reactor=r)

    task = r.spawn(start())
    r.run()
    states = sorted(f.state for f in futs)
    listener.close()
    for client in clients:
        client.transport.abort()
    del client
    pool.close(cancel_queued=True)
    if rerun:
        # What a program that stops and tidies up does: let the closes
        # and the cancellations be delivered.
        task.cancel()
        r.call_later(0.2, r.stop)
        r.run()
    after = sorted(f.state for f in futs)
    del r, pool, listener, clients, futs, task
    gc.collect()
    leaked = sorted(set(open_fds()) - set(base))
    return {"states_at_stop": states, "states_after": after,
            "leaked_fds": leaked,
            "leaked_kinds": [fd_kind(n) for n in leaked]}

import warnings
warnings.simplefilter("always")
print(json.dumps(main(sys.argv[1] == "1")), flush=True)
"""


def test_stop_with_tasks_queued_and_connections_open_then_tidy_up():
    res = run_script(STOP_SCRIPT, 1)
    assert_clean_exit(res, res.stderr)
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["leaked_fds"] == [], out
    assert "pending" in out["states_at_stop"]
    # Every future settled: ran, or cancelled by pool.close().
    assert set(out["states_after"]) <= {"done", "cancelled"}, out
    assert "ResourceWarning" not in res.stderr, res.stderr[-2000:]


def test_stop_with_work_in_flight_then_drop_it_all_exits_cleanly():
    """Nothing run after stop(): closing and dropping the reactor, the pool
    and every transport exits cleanly (no crash, no hang)."""
    res = run_script(STOP_SCRIPT, 0)
    assert_clean_exit(res, res.stderr)


def test_stop_with_work_in_flight_then_drop_it_all_frees_the_reactor():
    """A closed Listener or Transport whose close was never delivered, the
    sleeping task's timer and the pool's finished tasks on their way back
    all hold the reactor through its loop: the GC sees that cycle and
    collecting it closes everything, the loop's epoll and eventfd and the
    server side's sockets too."""
    res = run_script(STOP_SCRIPT, 0)
    assert_clean_exit(res, res.stderr)
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["leaked_fds"] == [], out
    assert "ResourceWarning" not in res.stderr, res.stderr[-2000:]


# ---- Ctrl-C ---------------------------------------------------------------

def test_sigint_to_a_running_server_raises_keyboard_interrupt():
    """SIGINT to a process in reactor.run() with connections open and a
    pool worker busy in Python: run() raises KeyboardInterrupt promptly
    and the process exits cleanly."""
    proc = start_script("""
    r = twincore.Reactor()
    r.cpu_pool = twincore.CpuPool(workers=2)
    listener = r.listen_tcp(0, Echo)

    def spin(seconds):
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            n += 1          # pure Python: holds the GIL in turns
        return n

    async def main():
        c = await r.connect_tcp("127.0.0.1", listener.port,
                                twincore.Protocol)
        c.transport.write(b"x" * 100000)
        r.defer_to_cpu(spin, 2.0)
        print("ready", flush=True)
        await twincore.sleep(60, reactor=r)

    r.spawn(main())
    t0 = time.monotonic()
    try:
        r.run()
    except KeyboardInterrupt:
        print("KeyboardInterrupt after %.2f s" % (time.monotonic() - t0),
              flush=True)
    else:
        print("run() returned", flush=True)
    r.cpu_pool.close(cancel_queued=True)
    """)
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(0.3)
        proc.send_signal(signal.SIGINT)
        out, err = finish(proc, timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert_clean_exit(proc, err)
    assert "KeyboardInterrupt after" in out, (out, err)


# ---- interpreter exit with workers inside Python --------------------------

EXIT_SCRIPT = """
import threading
mode = sys.argv[1]

def spin(seconds):
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        n += 1
    return n

def sleepy(seconds):
    for _ in range(int(seconds * 100)):
        time.sleep(0.01)
    return seconds

r = twincore.reactor
if mode == "default-pool":
    futs = [twincore.defer_to_cpu(f, 1.0) for f in (spin, sleepy) * 3]
elif mode == "own-pool-never-closed":
    pool = twincore.CpuPool(workers=2)
    futs = [pool.defer(f, 1.0, reactor=r) for f in (spin, sleepy) * 3]
elif mode == "sys-exit-from-callback":
    futs = [twincore.defer_to_cpu(f, 1.0) for f in (spin, sleepy) * 3]
    r.call_later(0.2, sys.exit, 0)
    r.run()
elif mode == "exit-from-a-task":
    # A worker asks the interpreter to exit: a failed future, no exit.
    futs = [twincore.defer_to_cpu(sys.exit, 5)]
    futs[0].add_done_callback(lambda _: r.stop())
    r.run()
    assert isinstance(futs[0].exception(), SystemExit)
elif mode == "thread-submits-while-exiting":
    pool = twincore.CpuPool(workers=2)
    def submitter():
        while True:
            try:
                pool.defer(spin, 0.05, reactor=r)
            except Exception:
                return
            time.sleep(0.01)
    threading.Thread(target=submitter, daemon=True).start()
    time.sleep(0.3)
print("main done", flush=True)
"""


@pytest.mark.parametrize("mode", [
    "default-pool", "own-pool-never-closed", "sys-exit-from-callback",
    "exit-from-a-task", "thread-submits-while-exiting",
])
def test_interpreter_exit_while_workers_run_python(mode):
    t0 = time.monotonic()
    res = run_script(EXIT_SCRIPT, mode, timeout=45)
    took = time.monotonic() - t0
    err = res.stderr
    assert_clean_exit(res, err)
    assert "main done" in res.stdout or mode == "sys-exit-from-callback"
    assert took < 30, f"exit took {took:.1f} s"


def test_a_pool_nobody_closed_is_joined_at_exit():
    """A CpuPool of the user's, never closed, with a task running and more
    queued at exit: the exit hook closes it like the default pool, so the
    running task finishes (no worker is ended inside Python by
    finalization), the queued ones are cancelled, and the process exits 0
    promptly with nothing on stderr."""
    t0 = time.monotonic()
    res = run_script("""
    import threading
    started = threading.Event()

    def work(n):
        started.set()
        time.sleep(0.5)
        os.write(1, b"task %d finished\\n" % n)
        return n

    pool = twincore.CpuPool(workers=1)
    futs = [pool.defer(work, n, reactor=twincore.reactor) for n in range(5)]
    assert started.wait(10)
    print("main done", flush=True)
    """, timeout=45)
    took = time.monotonic() - t0
    assert_clean_exit(res, res.stderr)
    assert res.stderr == "", res.stderr[-3000:]
    assert res.stdout.splitlines() == ["main done", "task 0 finished"], \
        res.stdout
    assert took < 10, f"exit took {took:.1f} s"


# ---- fork while every worker of the default pool is busy (issue 12.4) -----

FORK_SCRIPT = """
import multiprocessing, threading
mode = sys.argv[1]
r = twincore.reactor
pool = r.cpu_pool
started = threading.Semaphore(0)
release = threading.Event()

def block():
    started.release()
    assert release.wait(30)
    return os.getpid()

def queued(i):
    os.write(1, b"queued %d ran in %d\\n" % (i, os.getpid()))
    return i

def run_until(fut, timeout=20):
    fut.add_done_callback(lambda _: r.stop())
    handle = r.call_later(timeout, r.stop)
    r.run()
    handle.cancel()
    return fut.result() if fut.done() else "timed out"

def child():
    # New tasks complete; the parent's never run here.
    got = run_until(twincore.defer_to_cpu(pow, 2, 10))
    os.write(1, b"child %d got %r\\n" % (os.getpid(), got))
    os._exit(0 if got == 1024 else 3)

blockers = [twincore.defer_to_cpu(block) for _ in range(pool.workers)]
for _ in blockers:
    assert started.acquire(timeout=10)
later = [twincore.defer_to_cpu(queued, i) for i in range(3)]
if mode == "os.fork":
    pid = os.fork()
    if pid == 0:
        child()
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
else:
    proc = multiprocessing.get_context("fork").Process(target=child)
    proc.start()
    proc.join(60)
    code = proc.exitcode
print("child exit", code, flush=True)
# The parent's own tasks then finish in the parent.
release.set()
got = run_until(twincore.gather(*blockers, *later))
print("parent got", got == [os.getpid()] * len(blockers) + [0, 1, 2],
      flush=True)
"""


@pytest.mark.parametrize("mode", ["os.fork", "multiprocessing"])
def test_fork_while_every_default_pool_worker_is_busy(mode):
    res = run_script(FORK_SCRIPT, mode, timeout=90)
    assert_clean_exit(res, res.stderr)
    lines = res.stdout.splitlines()
    child = [ln for ln in lines if ln.startswith("child ") and " got " in ln]
    assert len(child) == 1 and child[0].endswith("got 1024"), res.stdout
    child_pid = child[0].split()[1]
    assert "child exit 0" in lines, res.stdout
    assert "parent got True" in lines, res.stdout
    ran = [ln for ln in lines if ln.startswith("queued ")]
    assert len(ran) == 3, res.stdout
    assert not any(ln.endswith(" " + child_pid) for ln in ran), res.stdout
