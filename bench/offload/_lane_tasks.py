"""The functions interp_lane.py runs on every lane. The lanes' workers
import this module by name, so it imports nothing: a worker's first call
then costs the worker's start-up and not this module's imports."""


def spin(n):
    """Pure Python, never releasing the GIL."""
    s = 0
    for i in range(n):
        s += i
    return s


def add(a, b):
    return a + b
