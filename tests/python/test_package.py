"""The package's surface: the names `import twincore` gives, where each is
shown to live (repr, pickle), the stubs, and an import free of side
effects. The code lives in private modules (_reactor, _task, _pools...);
moving it between them must change none of this."""

import ast
import os
import pickle
import subprocess
import sys
import types

import twincore

# Every public name of the package, as of the split of __init__.py.
PUBLIC = {
    "BaseProtocol", "BrokenProcessPool", "CANCELLED", "CancelledError",
    "ClientFactory", "CpuPool", "DEVNULL", "DONE", "DatagramProtocol",
    "DatagramTransport", "ETLS", "ETLS_CERT", "ETLS_EXPIRED",
    "ETLS_HOSTNAME", "ETLS_NO_CLOSE_NOTIFY", "ETLS_UNKNOWN_CA",
    "ETLS_VERSION", "Error", "FAILED", "Factory", "Future", "HAVE_TLS",
    "IncompleteReadError", "Int16StringReceiver", "Int32StringReceiver",
    "Int8StringReceiver", "IntNStringReceiver", "InterpreterPool",
    "InvalidStateError", "LimitOverrunError", "LineReceiver", "Listener",
    "PENDING", "PIPE", "PRIORITY_HIGH", "PRIORITY_LOW", "PRIORITY_NORMAL",
    "PoolLifecycle", "ProcessPool", "ProcessProtocol", "ProcessTransport",
    "Protocol", "RUNNING", "Reactor", "RemoteTraceback", "STDOUT",
    "StreamReader", "StreamWriter", "StringTooLongError", "TLSContext",
    "Timeout", "TimerHandle", "Transport", "WorkerDied", "closed_future",
    "default_process_pool", "defer_to", "defer_to_cpu",
    "defer_to_interpreter", "defer_to_process", "from_asyncio",
    "from_deferred", "gather", "get_include", "get_running_reactor",
    "inline_callbacks", "join_on_thread", "open_connection",
    "open_unix_connection", "reactor", "run", "sleep", "spawn",
    "start_server", "start_unix_server", "timeout", "to_asyncio",
    "to_deferred", "wait_for",
}
NOT_IN_ALL = {"PoolLifecycle", "closed_future", "join_on_thread"}

# Where each class and function says it lives (__module__).
MODULES = {
    "twincore": [
        "Reactor", "get_running_reactor", "CpuPool", "Error", "defer_to_cpu",
        "run", "gather", "sleep", "spawn", "inline_callbacks", "get_include",
        "TLSContext"],
    "twincore._twincore": [
        "Future", "Transport", "Listener", "TimerHandle",
        "DatagramTransport", "ProcessTransport"],
    "twincore.protocol": [
        "Protocol", "BaseProtocol", "DatagramProtocol", "Factory",
        "ClientFactory", "ProcessProtocol"],
    "twincore._interop": [
        "to_asyncio", "from_asyncio", "to_deferred", "from_deferred"],
    "twincore._timeouts": ["wait_for", "timeout", "Timeout"],
    "twincore._lane": ["PoolLifecycle", "closed_future", "join_on_thread"],
    "twincore.framing": [
        "LineReceiver", "IntNStringReceiver", "Int8StringReceiver",
        "Int16StringReceiver", "Int32StringReceiver", "StringTooLongError"],
    "twincore.streams": [
        "StreamReader", "StreamWriter", "open_connection", "start_server",
        "open_unix_connection", "start_unix_server"],
    "twincore._process_pool": [
        "ProcessPool", "WorkerDied", "BrokenProcessPool", "RemoteTraceback",
        "defer_to_process", "defer_to", "default_process_pool"],
    "twincore._interp_pool": ["InterpreterPool", "defer_to_interpreter"],
    # asyncio's own, so that either library's handlers catch them.
    "asyncio.exceptions": [
        "CancelledError", "InvalidStateError", "IncompleteReadError",
        "LimitOverrunError"],
}


def public_names():
    return {n for n in dir(twincore) if not n.startswith("_") and
            not isinstance(getattr(twincore, n), types.ModuleType)}


def test_public_names_are_exactly_the_list():
    assert public_names() == PUBLIC
    assert set(twincore.__all__) == PUBLIC - NOT_IN_ALL
    assert len(twincore.__all__) == len(set(twincore.__all__))


def test_every_public_name_has_a_stub():
    path = os.path.join(os.path.dirname(twincore.__file__), "__init__.pyi")
    with open(path) as f:
        tree = ast.parse(f.read())
    stubbed = set()
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef,
                             ast.AsyncFunctionDef)):
            stubbed.add(node.name)
        elif isinstance(node, ast.AnnAssign):
            stubbed.add(node.target.id)
        elif isinstance(node, ast.ImportFrom):
            stubbed.update(a.asname or a.name for a in node.names)
    assert set(twincore.__all__) - stubbed == set()


def test_each_name_says_where_it_lives():
    for module, names in MODULES.items():
        for name in names:
            assert getattr(twincore, name).__module__ == module, name
    assert {n for ns in MODULES.values() for n in ns} == {
        n for n in PUBLIC if isinstance(getattr(twincore, n), type) or
        callable(getattr(twincore, n))} - {"reactor"}


def test_public_functions_and_classes_pickle_by_reference():
    for names in MODULES.values():
        for name in names:
            obj = getattr(twincore, name)
            assert pickle.loads(pickle.dumps(obj)) is obj, name


IMPORT_EACH = r"""
import importlib, os, sys, threading
fds = sorted(os.listdir("/proc/self/fd"))
threads = threading.active_count()
importlib.import_module(sys.argv[1])
import twincore
assert "reactor" not in vars(twincore), sys.argv[1]
assert sorted(os.listdir("/proc/self/fd")) == fds, sys.argv[1]
assert threading.active_count() == threads, sys.argv[1]
print("ok")
"""


def test_each_module_imports_first_without_side_effects():
    """Any module of the package imported first (before twincore itself):
    no import cycle breaks it, and nothing opens a descriptor or starts a
    thread."""
    for name in ("_current", "_validate", "_pools", "_tls", "_task",
                 "_reactor", "_timeouts", "_interop", "_process_pool",
                 "streams", "framing", "protocol"):
        out = subprocess.run(
            [sys.executable, "-c", IMPORT_EACH, "twincore." + name],
            capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, (name, out.stderr)
        assert out.stdout == "ok\n", name
