"""Functions test_interpreter_pool.py runs inside InterpreterPool workers.
A subinterpreter imports this module by name, so it imports only the
standard library (and what a function asks for itself)."""

import mmap
import os
import sys
import time


class TaskError(Exception):
    """An exception type both interpreters can import."""


class Unpicklable(Exception):
    def __init__(self, message):
        super().__init__(message)
        self.lock = __import__("threading").Lock()   # cannot be pickled


def add(a, b=0):
    return a + b


def echo(value):
    return value


def fail(message):
    raise TaskError(message)


def fail_unpicklable(message):
    raise Unpicklable(message)


def where():
    """Which interpreter and thread run this."""
    import threading
    return (sys.modules["__main__"].__dict__.get("__name__"),
            threading.get_ident(), id(sys.modules))


def spin(n):
    s = 0
    for i in range(n):
        s += i
    return s


def spin_until_interrupted(path, seconds=30.0):
    """Say it started (a byte in the file at path), then loop in pure
    Python until interrupted; bounded in time."""
    with open(path, "r+b") as f:
        f.write(b"1")
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            pass
    except KeyboardInterrupt:
        return "interrupted"
    return "ran out"


def rendezvous(path, me, other, seconds=20.0):
    """Two of these meet through a shared mapping without ever releasing
    the GIL on purpose, with a switch interval longer than the wait: they
    can meet only when they run at the same time on their own GILs."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(seconds * 2)
    try:
        with open(path, "r+b") as f:
            m = mmap.mmap(f.fileno(), 2)
            try:
                m[me] = 1
                deadline = time.monotonic() + seconds
                n = 0
                while m[other] == 0:
                    n += 1
                    if n % 100000 == 0 and time.monotonic() > deadline:
                        return False
                return True
            finally:
                m.close()
    finally:
        sys.setswitchinterval(old)


def import_capi_demo():
    import capi_demo   # multi-phase, no per-interpreter GIL slot
    return capi_demo.__name__


def rss_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pid():
    return os.getpid()
