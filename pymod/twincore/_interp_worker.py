"""Runs inside each InterpreterPool worker's subinterpreter (compiled there
from this source by pymod/_twincore/interp.c), never in the main one: it
imports only the standard library, so a worker starts in milliseconds.

run() unpickles the caller's sys.path and arguments from its bytes,
finds the function by module and qualified name and pickles its result; describe() turns
an exception into plain data for the main interpreter."""

import sys
# _pickle, not pickle: pickle.py imports re and enum, and each worker's
# start-up would pay for them.
from _pickle import dumps, loads

_mains = {}


def _main_module(path):
    # A function of the caller's script: load the script under another
    # name, as multiprocessing's spawn does, so its "if __name__ ==
    # '__main__'" block does not run; pickles of its classes name
    # __main__, which then means it here too.
    mod = _mains.get(path)
    if mod is None:
        import importlib.util
        spec = importlib.util.spec_from_file_location("__mp_main__", path)
        mod = importlib.util.module_from_spec(spec)
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
    path, args, kwargs = loads(payload)
    if path != _path:
        # The caller's sys.path, so that what it imports, this finds.
        sys.path[:] = path
        _path = path
    fn = _find(module, qualname, main_path)
    return dumps(fn(*args, **kwargs), protocol=5)


def describe(exc):
    import traceback
    tb = "".join(traceback.format_exception(exc))
    cls = type(exc)
    try:
        data = dumps(exc, protocol=5)
    except Exception:
        data = None
    return (cls.__module__, cls.__qualname__, data, str(exc), tb)
