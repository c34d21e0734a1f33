"""The C echo examples against real peers (socat and OpenBSD nc): many
connections in a row, every echo intact, and the server's descriptor count
(/proc/PID/fd) back to where it started: a connection that ends with the
peer's EOF must not leave its descriptor behind (issue 11.9).  The README's
"C API in one screen" is examples/c/echo_minimal.c, word for word."""

import os
import pathlib
import random
import select
import shutil
import signal
import subprocess
import time

import pytest

import twincore

# build/pymod/twincore/__init__.py -> build/examples/c
EXAMPLES = pathlib.Path(twincore.__file__).resolve().parents[2] / \
    "examples" / "c"
SOURCE = pathlib.Path(__file__).resolve().parents[2]


def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def start_server(name):
    exe = EXAMPLES / name
    assert exe.exists(), f"{exe} is not built"
    proc = subprocess.Popen([str(exe), "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    ready, _, _ = select.select([proc.stdout], [], [], 10)
    assert ready, f"{name} printed no port within 10 s"
    line = proc.stdout.readline().decode()
    assert "listening on 127.0.0.1:" in line, line
    return proc, int(line.rsplit(":", 1)[1])


def stop_server(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
    proc.stdout.close()
    proc.stderr.close()


def peer_command(kind, port):
    if kind == "socat":
        # -t: after stdin's EOF, wait at most 10 s for the server's EOF.
        return [shutil.which("socat"), "-t", "10", "-",
                f"TCP:127.0.0.1:{port}"]
    # -N: shut the socket down after stdin's EOF; then read until the
    # server closes.
    return [shutil.which("nc"), "-N", "127.0.0.1", str(port)]


def wait_fds(pid, want, timeout=10.0):
    """The server closes on a later iteration: poll (bounded)."""
    deadline = time.monotonic() + timeout
    n = fd_count(pid)
    while n != want and time.monotonic() < deadline:
        time.sleep(0.02)
        n = fd_count(pid)
    return n


@pytest.mark.parametrize("name, connections", [("echo_minimal", 200),
                                               ("echo_server", 60)])
def test_echo_example_many_peers_no_descriptor_left(name, connections):
    assert shutil.which("socat") and shutil.which("nc"), \
        "socat and nc are needed (scripts/dev.sh installs them)"
    rng = random.Random(9)
    proc, port = start_server(name)
    try:
        start_fds = fd_count(proc.pid)
        for i in range(connections):
            kind = "socat" if i % 2 == 0 else "nc"
            # Mostly small messages, some larger than a socket buffer.
            size = rng.choice([1, 10, 1000, 70000, 300000])
            payload = (b"%d:%s:" % (i, kind.encode()) * size)[:size]
            out = subprocess.run(peer_command(kind, port), input=payload,
                                 stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=30)
            assert out.returncode == 0, (i, kind, out.stderr)
            assert out.stdout == payload, \
                f"connection {i} ({kind}): {len(out.stdout)} of " \
                f"{len(payload)} bytes came back intact"
            assert proc.poll() is None, proc.stderr.read()
        left = wait_fds(proc.pid, start_fds)
        assert left == start_fds, \
            f"{name} holds {left - start_fds} more descriptors after " \
            f"{connections} connections"
    finally:
        stop_server(proc)
    if name == "echo_server":
        assert proc.returncode == 0   # SIGTERM closes all and exits 0


def test_readme_c_example_is_echo_minimal():
    readme = (SOURCE / "README.md").read_text()
    section = readme.split("## The C API in one screen", 1)[1]
    snippet = section.split("```c\n", 1)[1].split("```", 1)[0]
    source = (SOURCE / "examples" / "c" / "echo_minimal.c").read_text()
    assert snippet == source[source.index("#include"):]
