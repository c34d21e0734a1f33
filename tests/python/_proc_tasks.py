"""Functions the process-lane tests run in worker processes: importable by
name (pickled by reference), and light to import."""

import ctypes
import hashlib
import os
import signal
import time


def square(x):
    return x * x


def echo(*args, **kwargs):
    return args, kwargs


def getpid(_=None):
    return os.getpid()


def fail(msg):
    raise ValueError(msg)


def digest_and_echo(data):
    return hashlib.sha256(data).hexdigest(), data


def pid_then_sleep(path, seconds):
    """Write our pid to path (atomically), then sleep: the test learns
    which worker runs the task."""
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(os.getpid()))
    os.rename(tmp, path)
    time.sleep(seconds)
    return "slept"


def sleep(seconds, value=None):
    time.sleep(seconds)
    return value


def segfault():
    ctypes.string_at(0)


def exit_now(code):
    os._exit(code)


def kill_self(sig=signal.SIGKILL):
    os.kill(os.getpid(), sig)
    time.sleep(10)


def unpicklable_result():
    return lambda: None


class _Local(Exception):
    def __init__(self, a, b):     # pickles, but does not unpickle
        super().__init__(f"{a}-{b}")


def raise_unloadable():
    raise _Local(1, 2)


def spin(n):
    """Pure-Python CPU work: holds the GIL throughout."""
    total = 0
    for i in range(n):
        total += i * i % 7
    return total
