"""twincore.Future: a Deferred-style result that is also awaitable.

The type is implemented in C (pymod/_twincore/future.c); every
defer_to_cpu() creates and settles one. Its behaviour:

Callbacks run on the reactor thread, in the order added, and synchronously,
as a Twisted Deferred's: inside the set_result(), set_exception() or
cancel() that settles the Future (for defer_to_cpu(): in the reactor's
batch that delivers the result, with no further hop), and inside
add_callback() when the Future is already done. A coroutine awaiting the
Future is resumed later, through call_soon. (tc_future, the C library's
future, never calls back inside the call that settles it or adds the
callback: see include/twincore/future.h for why the two differ.) Each
callback gets
the current result of the chain and its return value becomes the next
result; an exception raised, or a failure passed on, goes to the next
errback. A callback that returns a Future pauses the chain until that
Future completes (the inner Future's own result then becomes None: the
outer chain consumed it, as in Twisted). ``add_done_callback(fn)`` calls
fn(future) without changing the chain. ``result()`` and ``exception()``
read the chain's current state; ``state`` is "pending", "running" (a CPU
worker runs its task), "done", "failed" or "cancelled". A failure that no
errback, ``result()``/``exception()`` or ``await`` saw is logged (logger
"twincore") when the Future is garbage collected: fire-and-forget work never
fails silently.

A Future of a reactor is settled and cancelled on that reactor's thread
only (RuntimeError elsewhere: use ``reactor.call_from_thread``), and awaited
only by coroutines of that reactor (RuntimeError "attached to a different
reactor", as asyncio's). ``Future()`` without a reactor is bound to no
thread. A StopIteration set as the exception becomes a RuntimeError whose
``__cause__`` it is, as in asyncio.
"""

from ._twincore import CancelledError, Future, InvalidStateError

__all__ = ["Future", "CancelledError", "InvalidStateError", "TimeoutError",
           "PENDING", "RUNNING", "DONE", "FAILED", "CANCELLED"]

PENDING = "pending"
RUNNING = "running"
DONE = "done"
FAILED = "failed"
CANCELLED = "cancelled"

TimeoutError = TimeoutError  # the builtin, as asyncio's since 3.11
