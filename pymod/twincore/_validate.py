"""Checks and conversions of arguments made in Python: those of
spawn_process() (argv, env, stdio; the C method takes them converted), of
the pools' timeouts, host names for listen_* (resolved here), factories.
The C methods check the rest themselves (pymod/_twincore/args.c)."""

import ipaddress
import os
import socket

from .protocol import Factory


# spawn_process() stdio values: subprocess's own, so either module's work.
PIPE = -1
STDOUT = -2
DEVNULL = -3


def _check_timeout(timeout, what):
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
        raise TypeError(f"{what}(): 'timeout' must be a number or None, "
                        f"got {type(timeout).__name__}")
    if not timeout > 0:   # also NaN
        raise ValueError(f"{what}(): 'timeout' must be > 0, got {timeout!r}")


def _env_workers(name):
    """A default pool's worker count from the environment variable name
    (unset or 0: one per CPU)."""
    value = os.environ.get(name, "0")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {value!r}") \
            from None


def _fs_arg(value, what):
    if isinstance(value, (str, bytes, os.PathLike)):
        b = os.fsencode(value)
        if b"\0" in b:
            raise ValueError(f"spawn_process(): {what!r} must not contain "
                             "NUL characters")
        return b
    raise TypeError(f"spawn_process(): {what!r} items must be str, bytes "
                    f"or os.PathLike, got {type(value).__name__}")


def _stdio_code(value, what):
    if value is None:
        return -4
    if value in (PIPE, STDOUT, DEVNULL) and isinstance(value, int) \
            and not isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise TypeError(f"spawn_process(): {what!r} must be PIPE, DEVNULL, "
                        "None, a descriptor or a file")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"spawn_process(): {what!r} must be PIPE, "
                             f"DEVNULL, None or a descriptor, got {value}")
        return value
    if hasattr(value, "fileno"):
        return value.fileno()
    raise TypeError(f"spawn_process(): {what!r} must be PIPE, DEVNULL, None, "
                    f"a descriptor or a file, got {type(value).__name__}")


def _is_numeric_host(host):
    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return False


def _is_host_name(host):
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    return 0 < len(host) <= 253 and all(
        0 < len(label) <= 63 and label.isascii() and
        label.replace("-", "").isalnum() and
        not label.startswith("-") and not label.endswith("-")
        for label in labels)


def _listen_host(host):
    """listen_*'s host: None, "" (every interface) and numeric addresses
    go to C as they are (which refuses what is neither); a host name is
    resolved here, at once, as bind() would (its first address)."""
    if not isinstance(host, str) or host == "" or _is_numeric_host(host) \
            or not _is_host_name(host):
        return host
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    return infos[0][4][0]


def _as_factory(factory, what):
    if hasattr(factory, "build_protocol"):
        return factory
    if callable(factory):
        return Factory(factory)
    raise TypeError(f"{what}(): 'factory' must be a Factory or a protocol "
                    f"class, got {type(factory).__name__}")
