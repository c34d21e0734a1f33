"""Runs inside each InterpreterPool worker's subinterpreter (its code is
compiled once in the main interpreter and handed over marshalled by
pymod/_twincore/interp.c), never in the main one.  A worker's start-up is
what its interpreter costs plus this module, so it imports only the
built-in sys and marshal: _pickle (which pulls in functools and
collections, several ms per worker) and importlib.util are loaded only by
a call that needs them.

run() decodes the caller's sys.path and arguments from its bytes, finds the
function by module and qualified name and encodes its result; describe()
turns an exception into plain data for the main interpreter.  Bytes are
marshal's when the values are all of the built-in types marshal takes
exactly (the common case), else pickle 5's; a pickle always begins with
its PROTO opcode 0x80, which no marshal type code is.  The main
interpreter's side uses encode() and decode() too."""

import marshal
import sys

_PICKLE = 0x80
_pickle = None
_mains = {}


def _pickler():
    global _pickle
    if _pickle is None:
        import _pickle
    return _pickle


# Types marshal writes and reads back as themselves.  Not every type it
# takes: it writes any other buffer (bytearray, memoryview, array) as bytes.
_SCALARS = frozenset((type(None), bool, int, float, complex, str, bytes))
_SEQUENCES = frozenset((tuple, list, set, frozenset))
_BUDGET = 256   # values checked at most; a larger one goes to pickle


def _plain(value, budget):
    # The budget left after checking value, negative when value (or what
    # it holds) is not of those exact types, or holds too much to check.
    t = type(value)
    if t in _SCALARS:
        return budget - 1
    if t in _SEQUENCES:
        budget -= 1
        for item in value:
            if budget < 0:
                return -1
            budget = _plain(item, budget)
        return budget
    if t is dict:
        budget -= 1
        for key, item in value.items():
            if budget < 0:
                return -1
            budget = _plain(item, _plain(key, budget))
        return budget
    return -1


def encode(value):
    """value as bytes: marshal's when it is plain, else pickle 5's."""
    if _plain(value, _BUDGET) >= 0:
        return marshal.dumps(value)
    return _pickler().dumps(value, protocol=5)


def decode(data):
    """The value encode() made data of (bytes or a buffer)."""
    if data[0] == _PICKLE:
        return _pickler().loads(data)
    return marshal.loads(data)


def _main_module(path):
    # A function of the caller's script: load the script under another
    # name, as multiprocessing's spawn does, so its "if __name__ ==
    # '__main__'" block does not run; pickles of its classes name
    # __main__, which then means it here too.  The frozen importlib's own
    # helpers: importlib.util would import functools and threading.
    mod = _mains.get(path)
    if mod is None:
        bootstrap = sys.modules["_frozen_importlib"]
        external = sys.modules["_frozen_importlib_external"]
        spec = external.spec_from_file_location("__mp_main__", path)
        mod = bootstrap.module_from_spec(spec)
        sys.modules["__mp_main__"] = mod
        spec.loader.exec_module(mod)
        sys.modules["__main__"] = mod
        _mains[path] = mod
    return mod


def _find(module, qualname, main_path):
    try:
        if module == "__main__" and main_path:
            obj = _main_module(main_path)
        else:
            __import__(module)
            obj = sys.modules[module]
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        err = ImportError(
            f"cannot import {module}.{qualname} in a subinterpreter: "
            f"{type(exc).__name__}: {exc}", name=module)
        raise err from exc
    return obj


_path = None


def run(module, qualname, main_path, payload):
    global _path
    path, args, kwargs = decode(payload)
    if path != _path:
        # The caller's sys.path, so that what it imports, this finds.
        sys.path[:] = path
        _path = path
    fn = _find(module, qualname, main_path)
    return encode(fn(*args, **kwargs))


def describe(exc):
    import traceback
    tb = "".join(traceback.format_exception(exc))
    cls = type(exc)
    try:
        data = _pickler().dumps(exc, protocol=5)
    except Exception:
        data = None
    return (cls.__module__, cls.__qualname__, data, str(exc), tb)
