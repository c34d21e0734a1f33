"""twincore: one thread runs the event loop for all network IO; CPU work
goes to a pool of native threads and comes back as Futures.

    import twincore

    class Echo(twincore.Protocol):
        def data_received(self, data):
            self.transport.write(data)

    twincore.reactor.listen_tcp(8000, twincore.Factory(Echo))
    twincore.reactor.run()

Everything here runs on the reactor's thread unless it says otherwise;
``Reactor.call_from_thread`` is the thread-safe way in. Importing twincore
creates no reactor, opens no descriptor and starts no thread: the default
reactor ``twincore.reactor`` is made on first use and belongs to the thread
that runs it. Where a ``reactor=`` argument is left out, inside a running
reactor it means that one (``get_running_reactor()``), elsewhere the
default one.
"""

from ._twincore import (Error, PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL,
                        Transport, Listener, TimerHandle, DatagramTransport,
                        ProcessTransport)
from ._twincore import (HAVE_TLS, ETLS, ETLS_CERT, ETLS_HOSTNAME,
                        ETLS_EXPIRED, ETLS_UNKNOWN_CA, ETLS_VERSION,
                        ETLS_NO_CLOSE_NOTIFY)
from ._future import (Future, CancelledError, InvalidStateError, PENDING,
                      RUNNING, DONE, FAILED, CANCELLED)
from .protocol import (BaseProtocol, Protocol, DatagramProtocol, Factory,
                       ClientFactory, ProcessProtocol)
from ._interop import to_asyncio, from_asyncio, to_deferred, from_deferred
from ._lane import PoolLifecycle, closed_future, join_on_thread
from ._current import get_running_reactor, _get_default_reactor
from ._validate import PIPE, STDOUT, DEVNULL
from ._pools import CpuPool, defer_to_cpu, get_include
from ._tls import TLSContext
from ._task import inline_callbacks, spawn, sleep, gather, run
from ._reactor import Reactor
from ._timeouts import wait_for, timeout, Timeout
from .framing import (LineReceiver, IntNStringReceiver, Int8StringReceiver,
                      Int16StringReceiver, Int32StringReceiver,
                      StringTooLongError)
from .streams import (StreamReader, StreamWriter, IncompleteReadError,
                      LimitOverrunError, open_connection, start_server,
                      open_unix_connection, start_unix_server)
from ._process_pool import (ProcessPool, WorkerDied, BrokenProcessPool,
                            RemoteTraceback, defer_to_process, defer_to,
                            default_process_pool)
from ._interp_pool import InterpreterPool, defer_to_interpreter
# Reached as twincore.X by streams.py, _interp_pool.py and tests.
from ._current import _running, _current_reactor, _current_task
from ._validate import _check_timeout
from ._pools import _apply_timeout

__all__ = [
    "Reactor", "reactor", "get_running_reactor", "CpuPool", "Future",
    "CancelledError", "InvalidStateError", "Error", "Protocol", "BaseProtocol",
    "DatagramProtocol", "Factory", "ClientFactory", "Transport", "Listener",
    "TimerHandle", "DatagramTransport", "defer_to_cpu", "run", "gather",
    "sleep", "spawn", "inline_callbacks", "PRIORITY_HIGH", "PRIORITY_NORMAL",
    "PRIORITY_LOW", "to_asyncio", "from_asyncio", "to_deferred",
    "from_deferred", "PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED",
    "get_include", "TLSContext", "HAVE_TLS", "ETLS", "ETLS_CERT",
    "ETLS_HOSTNAME", "ETLS_EXPIRED", "ETLS_UNKNOWN_CA", "ETLS_VERSION",
    "ETLS_NO_CLOSE_NOTIFY", "ProcessProtocol", "ProcessTransport", "PIPE",
    "STDOUT", "DEVNULL",
    "wait_for", "timeout", "Timeout", "LineReceiver",
    "IntNStringReceiver", "Int8StringReceiver", "Int16StringReceiver",
    "Int32StringReceiver", "StringTooLongError", "StreamReader",
    "StreamWriter", "IncompleteReadError", "LimitOverrunError",
    "open_connection", "start_server", "open_unix_connection",
    "start_unix_server",
    "ProcessPool", "WorkerDied", "BrokenProcessPool",
    "RemoteTraceback", "defer_to_process", "defer_to", "default_process_pool",
    "InterpreterPool", "defer_to_interpreter",
]

# Defined in the modules above, shown (repr, pickle, docs) as the package's.
for _obj in (CpuPool, defer_to_cpu, get_include, TLSContext, Reactor,
             get_running_reactor, inline_callbacks, spawn, sleep, gather,
             run):
    _obj.__module__ = __name__
del _obj


def __getattr__(name):
    # The default reactor, made on first use: importing twincore costs no
    # descriptor and no thread.
    if name == "reactor":
        r = _get_default_reactor()
        globals()["reactor"] = r
        return r
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {"reactor"})
