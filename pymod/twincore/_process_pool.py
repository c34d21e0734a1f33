"""The process lane: ProcessPool, defer_to_process, and defer_to for any
concurrent.futures Executor.

Workers are fresh interpreters (twincore._procworker) started with
posix_spawn from one long-lived spawner thread: a fork of a threaded parent
is unsafe, and PR_SET_PDEATHSIG fires when the *thread* that started a
child ends, so no short-lived thread may start one. Each worker talks to
the pool over a Unix socket pair that the reactor watches (add_reader;
add_writer only while output is pending); its exit is a pidfd on the
same loop. Nothing polls.

Invariants, all on the reactor's thread:
- a task is in exactly one place: a priority queue of the pool, or the
  `inflight` deque of one worker (sent, unanswered, in send order);
- a worker answers every task once, in order, so inflight[0] is the task
  it runs; a worker that dies fails that one with WorkerDied and hands the
  others back to the front of the queue;
- a worker killed on purpose (timeout, cancel, close) is not a death for
  the restart intensity; an unexpected exit is.
"""

import atexit
import os
import pickle
import select
import signal
import socket
import struct
import sys
import threading
import time
import weakref
from collections import deque

from . import _procworker as _w
from ._future import CancelledError, Future
from ._lane import PoolLifecycle
from ._twincore import PRIORITY_HIGH, PRIORITY_LOW, PRIORITY_NORMAL
from ._validate import _check_timeout, _env_workers

__all__ = ["ProcessPool", "WorkerDied", "BrokenProcessPool",
           "RemoteTraceback", "defer_to_process", "defer_to",
           "default_process_pool"]

_HIST = 40                  # log2 buckets, as CpuPool.stats()
_PREFETCH_BUDGET_NS = 2_000_000
_MAX_DEPTH = 64
_IOV_MAX = 512
_PKG_PARENT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_BOOT = ("import sys; sys.path.insert(0, %r); "
         "from twincore._procworker import main; main()" % _PKG_PARENT)


class WorkerDied(RuntimeError):
    """The worker process running this task ended: ``pid``, and either
    ``exitcode`` or ``signal`` (the other is None); ``returncode`` as in
    subprocess (minus the signal number)."""

    def __init__(self, message, pid=None, exitcode=None, signal=None):
        super().__init__(message)
        self.pid = pid
        self.exitcode = exitcode
        self.signal = signal

    @property
    def returncode(self):
        return -self.signal if self.signal is not None else self.exitcode

    def __reduce__(self):
        return (type(self), (str(self), self.pid, self.exitcode,
                             self.signal))


class BrokenProcessPool(RuntimeError):
    """Workers of a ProcessPool died more often than its restart intensity
    allows: the pool has stopped, and refuses work."""


class RemoteTraceback(Exception):
    """The ``__cause__`` of an exception raised in a worker process: its
    traceback there, as text."""

    def __init__(self, tb):
        super().__init__(tb)
        self.tb = tb

    def __str__(self):
        return self.tb


def _current_reactor():
    from ._current import _current_reactor as current
    return current()


# ---- the spawner thread -----------------------------------------------------

class _Spawner:
    """posix_spawn on one thread that lives as long as the process: the
    parent-death signal is tied to the thread that starts a child."""

    def __init__(self):
        self._lock = threading.Lock()
        self._queue = None
        self._thread = None

    def spawn(self, argv, child_fd):
        with self._lock:
            if self._thread is None:
                import queue
                self._queue = queue.SimpleQueue()
                self._thread = threading.Thread(
                    target=self._serve, args=(self._queue,), daemon=True,
                    name="twincore-spawner")
                self._thread.start()
            q = self._queue
        box = []
        done = threading.Event()
        q.put((argv, child_fd, box, done))
        done.wait()
        if isinstance(box[0], BaseException):
            raise box[0]
        return box[0]

    @staticmethod
    def _serve(q):
        while True:
            argv, child_fd, box, done = q.get()
            try:
                box.append(os.posix_spawn(
                    argv[0], argv, os.environ,
                    file_actions=[(os.POSIX_SPAWN_DUP2, child_fd, 3)],
                    setsigmask=(), setsigdef=(signal.SIGINT,
                                              signal.SIGTERM)))
            except BaseException as exc:   # noqa: B902 - handed back
                box.append(exc)
            done.set()
            del box, done

    def after_fork(self):
        self._lock = threading.Lock()
        self._queue = self._thread = None


_spawner = _Spawner()


# ---- bookkeeping ------------------------------------------------------------

class _Task:
    __slots__ = ("pool", "fut", "id", "call", "frame", "priority", "t0",
                 "worker", "timer", "fn_name")

    def __init__(self, pool, fut, task_id, call, frame, priority, fn_name):
        self.pool = pool
        self.fut = fut
        self.id = task_id
        self.call = call            # (fn, args, kwargs), to send again
        self.frame = frame          # (chunks, memfd) until sent
        self.priority = priority
        self.t0 = time.perf_counter_ns()
        self.worker = None
        self.timer = None
        self.fn_name = fn_name

    def __call__(self):             # the Future's cancel hook
        self.pool._counts["cancelled"] += 1
        self.pool._withdraw(self)

    def discard_frame(self):
        if self.frame is not None and self.frame[1] >= 0:
            os.close(self.frame[1])
        self.frame = None


class _Worker:
    __slots__ = ("pid", "pidfd", "sock", "reader", "outq", "inflight",
                 "sent", "ready", "retiring", "killed", "exited",
                 "watched", "writing", "eof_timer", "head_since")

    def __init__(self, pid, pidfd, sock):
        self.pid = pid
        self.pidfd = pidfd
        self.sock = sock
        self.reader = _w.Reader(sock)
        self.outq = deque()         # [views, fd] to send, in order
        self.inflight = deque()     # tasks sent, unanswered, in order
        self.sent = 0
        self.ready = False
        self.retiring = False       # max_tasks_per_worker reached
        self.killed = False         # by us: not a death
        self.exited = False
        self.watched = False
        self.writing = False
        self.eof_timer = None
        self.head_since = 0         # when inflight[0] became the head


def _bucket(ns):
    return min(max(ns, 0).bit_length(), _HIST - 1)


def _describe(status):
    """(text, exitcode, signal) of an os.waitid() result (None: unknown)."""
    if status is None:
        return "exit status unknown (reaped elsewhere)", None, None
    if status.si_code == os.CLD_EXITED:
        return f"exit code {status.si_status}", status.si_status, None
    try:
        name = signal.Signals(status.si_status).name
    except ValueError:
        name = str(status.si_status)
    dumped = " (core dumped)" if status.si_code == os.CLD_DUMPED else ""
    return f"signal {name}{dumped}", None, status.si_status


def _check_priority(priority, what):
    if isinstance(priority, bool) or not isinstance(priority, int) or \
            priority not in (PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW):
        raise ValueError(f"{what}(): 'priority' must be PRIORITY_HIGH, "
                         f"PRIORITY_NORMAL or PRIORITY_LOW, got {priority!r}")


def _pickle_error(what, fn, args, kwargs, exc):
    culprit = "the call"
    probes = [("the function " + repr(fn), fn)]
    probes += [(f"argument {i} ({type(a).__name__})", a)
               for i, a in enumerate(args)]
    probes += [(f"keyword argument {k!r} ({type(v).__name__})", v)
               for k, v in kwargs.items()]
    for label, obj in probes:
        try:
            pickle.dumps(obj, 5, buffer_callback=lambda b: None)
        except Exception:
            culprit = label
            break
    err = TypeError(f"{what}(): cannot pickle {culprit} for a worker "
                    f"process: {exc}")
    err.__cause__ = exc
    return err


def _rebuild_error(payload, pid):
    data, typename, text, tb = payload
    exc = None
    if data is not None:
        try:
            exc = pickle.loads(data)
        except Exception:
            exc = None
    if not isinstance(exc, BaseException):
        exc = RuntimeError(f"{typename}: {text} (raised in worker process "
                           f"{pid}; it could not be pickled)")
    exc.__cause__ = RemoteTraceback('\n"""\n' + tb + '"""')
    return exc


# ---- the pool -----------------------------------------------------------------

class ProcessPool(PoolLifecycle):
    """Worker processes for pure-Python CPU work, supervised by a reactor:
    ``ProcessPool(workers=N)`` (0: one per CPU this process may use).

    ``defer(fn, *args, priority=, timeout=, **kwargs)`` pickles the call
    (protocol 5; large buffers out of band through a memfd) and returns a
    twincore.Future settled on the reactor's thread. A call that cannot be
    pickled raises TypeError at once; an exception in the worker fails the
    Future, with the worker's traceback as its ``__cause__``
    (RemoteTraceback).

    Supervision: a worker that dies fails the task it ran with WorkerDied
    (naming the exit code or signal); its other tasks go on elsewhere and
    a replacement starts. More than ``max_restarts`` deaths within
    ``restart_period`` seconds break the pool (BrokenProcessPool), as an
    Erlang/OTP supervisor gives up. ``max_tasks_per_worker`` recycles
    workers. A task past its ``timeout`` (TimeoutError), or cancelled while
    it runs, has its worker killed and replaced. ``close()`` (also at
    interpreter exit) kills and reaps every worker; workers die with the
    parent (PR_SET_PDEATHSIG, and EOF on their socket).

    The pool belongs to one reactor (``reactor=``, default: the running
    one, else the default one); use it on that reactor's thread."""

    def __init__(self, workers=0, *, max_tasks_per_worker=None,
                 max_restarts=10, restart_period=5.0, reactor=None):
        if isinstance(workers, bool) or not isinstance(workers, int) or \
                workers < 0:
            raise ValueError("ProcessPool(): 'workers' must be an int >= 0, "
                             f"got {workers!r}")
        if max_tasks_per_worker is not None and (
                isinstance(max_tasks_per_worker, bool) or
                not isinstance(max_tasks_per_worker, int) or
                max_tasks_per_worker < 1):
            raise ValueError("ProcessPool(): 'max_tasks_per_worker' must be "
                             f"an int >= 1 or None, got "
                             f"{max_tasks_per_worker!r}")
        if isinstance(max_restarts, bool) or \
                not isinstance(max_restarts, int) or max_restarts < 0:
            raise ValueError("ProcessPool(): 'max_restarts' must be an int "
                             f">= 0, got {max_restarts!r}")
        if isinstance(restart_period, bool) or \
                not isinstance(restart_period, (int, float)) or \
                not restart_period > 0:
            raise ValueError("ProcessPool(): 'restart_period' must be a "
                             f"number > 0, got {restart_period!r}")
        self._reactor = reactor if reactor is not None else \
            _current_reactor()
        self._size = workers or len(os.sched_getaffinity(0))
        self._max_tasks = max_tasks_per_worker
        self._max_restarts = max_restarts
        self._restart_period = float(restart_period)
        self._queues = (deque(), deque(), deque())
        self._queued = 0
        self._workers = []          # dispatch targets
        self._dying = []            # killed or retired, not yet reaped
        self._deaths = deque()      # monotonic times of unexpected deaths
        self._next_id = 1
        self._closed = False
        self._broken = None
        self._closing = None        # aclose()'s Future
        self._flush_pending = False
        self._avg_run = None
        self._counts = {"submitted": 0, "completed": 0, "failed": 0,
                        "cancelled": 0, "restarts": 0}
        self._wait_hist = [0] * _HIST
        self._run_hist = [0] * _HIST
        from multiprocessing import spawn
        init = spawn.get_preparation_data("twincore-worker")
        init.pop("authkey", None)     # not ours to hand out
        self._init = pickle.dumps(init, 5)
        _open_pools.add(self)
        try:
            for _ in range(self._size):
                self._start_worker()
        except BaseException:
            self.close()
            raise

    def __repr__(self):
        state = ("broken" if self._broken else "closed" if self._closed
                 else "open")
        return (f"<twincore.ProcessPool {state} workers={self._size} "
                f"queued={self._queued}>")

    @property
    def workers(self):
        """The number of worker processes the pool keeps."""
        return self._size

    @property
    def closed(self):
        return self._closed

    @property
    def reactor(self):
        return self._reactor

    def pids(self):
        """The process ids of the live workers (for tests and monitoring)."""
        return [w.pid for w in self._workers]

    # -- workers ------------------------------------------------------------

    def _on_loop(self):
        try:
            self._reactor._check_thread()
        except RuntimeError:
            return False
        return True

    def _start_worker(self):
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            argv = [sys.executable or "/usr/bin/python3", "-c", _BOOT, "3",
                    str(os.getpid())]
            pid = _spawner.spawn(argv, child.fileno())
        except BaseException:
            parent.close()
            raise
        finally:
            child.close()
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            parent.close()
            raise
        parent.setblocking(False)
        w = _Worker(pid, pidfd, parent)
        chunks, fd = _w.frame(_w.INIT, 0, [self._init])
        w.outq.append([[memoryview(c) for c in chunks], fd])
        self._workers.append(w)
        if self._on_loop():
            self._watch(w)
        return w

    def _watch(self, w):
        if w.watched or self._reactor is None:
            return
        w.watched = True
        self._reactor.add_reader(w.sock, self._on_readable, w)
        self._reactor.add_reader(w.pidfd, self._on_exit, w)
        self._write(w)

    def _unwatch_sock(self, w):
        if w.sock is None:
            return
        if w.watched:
            try:
                self._reactor.remove_reader(w.sock)
                if w.writing:
                    self._reactor.remove_writer(w.sock)
            except RuntimeError:
                pass    # the reactor is closed, or we are elsewhere
        w.writing = False
        w.reader.close()
        w.sock.close()
        w.sock = None
        for views, fd in w.outq:
            if fd >= 0:
                os.close(fd)
        w.outq.clear()

    def _remove(self, w):
        """Take w out of service; it is reaped when its pidfd fires."""
        if w in self._workers:
            self._workers.remove(w)
            if not w.exited:
                self._dying.append(w)
        self._unwatch_sock(w)
        if w.eof_timer is not None:
            w.eof_timer.cancel()
            w.eof_timer = None

    def _requeue(self, tasks):
        """Tasks sent to a worker that never started them: back to the
        front of their queues, in their order."""
        for task in reversed(tasks):
            if task.fut.done():
                continue
            task.worker = None
            task.frame = None
            self._queues[task.priority].appendleft(task)
            self._queued += 1

    def _kill(self, w):
        """Kill w on purpose (timeout, cancel): its head task is the
        caller's; the others go back to the queue; a replacement starts."""
        w.killed = True
        try:
            signal.pidfd_send_signal(w.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        rest = list(w.inflight)[1:]
        w.inflight.clear()
        self._remove(w)
        self._requeue(rest)
        self._replace()

    def _live(self):
        return sum(1 for w in self._workers if not w.retiring)

    def _replace(self):
        # Also while aclose() waits: the queued tasks need workers.
        if self._closed or self._broken:
            return
        while self._live() < self._size:
            try:
                self._start_worker()
            except OSError as exc:
                self._break(f"cannot start a worker process: {exc}")
                return
        self._pump()

    # -- sending ------------------------------------------------------------

    def defer(self, fn, /, *args, priority=PRIORITY_NORMAL, timeout=None,
              **kwargs):
        """Run fn(*args, **kwargs) in a worker process; returns a Future
        settled on the reactor's thread. See the class docstring."""
        r = self._reactor
        r._check_thread()
        if self._broken is not None:
            raise BrokenProcessPool(self._broken)
        if self._closed or self._closing is not None:
            raise RuntimeError("defer(): the ProcessPool is closed")
        _check_priority(priority, "defer_to_process")
        _check_timeout(timeout, "defer_to_process")
        task_id = self._next_id
        try:
            call = (fn, _w.mark_big(args),
                    {k: _w.mark_big(v) for k, v in kwargs.items()}
                    if kwargs else {})
            frame = _w.encode(_w.TASK, task_id, call)
        except Exception as exc:
            raise _pickle_error("defer_to_process", fn, args, kwargs,
                                exc) from None
        self._next_id = task_id + 1
        fut = Future(r)
        task = _Task(self, fut, task_id, call, frame, priority,
                     getattr(fn, "__qualname__", None) or repr(fn))
        fut._cancel_hook = task
        self._counts["submitted"] += 1
        self._queues[priority].append(task)
        self._queued += 1
        if timeout is not None:
            task.timer = r.call_later(timeout, self._expire, task, timeout)
        for w in self._workers:
            if not w.watched:
                self._watch(w)
        self._pump()
        return fut

    def _depth(self):
        """Tasks a worker may have sent to it at once: short tasks are
        pipelined (no idle gap between them); long ones go one at a time,
        so none waits behind a long task while another worker idles, but
        see _pump for the one prefetched when every worker is busy."""
        avg = self._avg_run
        if avg is None or avg >= _PREFETCH_BUDGET_NS:
            return 1
        return min(_MAX_DEPTH, max(2, _PREFETCH_BUDGET_NS // max(avg, 1)))

    def _pump(self):
        if not self._queued or not self._workers:
            return
        depth = self._depth()
        # A worker's pipeline is refilled once it is half empty, up to
        # depth: fewer, larger sends, made while the worker still has work
        # (a send that must wake a sleeping process costs the most).
        low = depth // 2
        avg = self._avg_run
        filling = []
        queues = self._queues
        now = time.perf_counter_ns()
        while self._queued:
            # The worker with the fewest tasks: an idle one first; then one
            # whose pipeline of short tasks is below its mark; else, when
            # every worker is busy and work waits, one task behind a long
            # head each, so that no worker waits for this process to be
            # scheduled between tasks (a loaded machine takes milliseconds)
            # -- but not behind a head that has run for longer than twice
            # the average task: one that may go on for a long time.
            best = None
            best_n = 0
            for w in self._workers:
                n = len(w.inflight)
                if w.retiring:
                    continue
                if n == 1 and (avg is None or now - w.head_since > 2 * avg
                               + _PREFETCH_BUDGET_NS):
                    continue    # an outlier head: nothing behind it
                if n > 1 and (n >= depth or (n > low and w not in filling) or
                              now - w.head_since > _PREFETCH_BUDGET_NS):
                    continue
                if best is None or n < best_n:
                    best, best_n = w, n
            if best is None:
                return
            task = None
            for q in queues:
                while q:
                    t = q.popleft()
                    if not t.fut.done():
                        task = t
                        break
                if task is not None:
                    break
            if task is None:
                self._queued = 0
                return
            self._queued -= 1
            if task.frame is None:      # requeued: encode again
                try:
                    task.frame = _w.encode(_w.TASK, task.id, task.call)
                except Exception:   # pickled once: should not happen
                    task.fut.set_exception(RuntimeError(
                        "the task could not be pickled again"))
                    continue
            chunks, fd = task.frame
            task.frame = None
            task.worker = best
            if not best.inflight:
                best.head_since = now
            if best not in filling:
                filling.append(best)
            best.inflight.append(task)
            best.sent += 1
            best.outq.append([[memoryview(c) for c in chunks], fd])
            if self._max_tasks is not None and \
                    best.sent >= self._max_tasks and not best.retiring:
                best.retiring = True
                self._replace()
            if not self._flush_pending:
                self._flush_pending = True
                self._reactor.call_soon(self._flush)

    def _flush(self):
        self._flush_pending = False
        for w in self._workers:
            if w.outq and not w.writing:
                self._write(w)

    def _write(self, w):
        """Send what w.outq holds, without blocking; the rest waits for
        writability. A descriptor goes with its frame's first byte, at
        most one per sendmsg (the reader's ancillary space)."""
        if not w.watched or w.sock is None:
            return
        outq = w.outq
        while outq:
            views = []
            anc = []
            for item in outq:
                if item[1] >= 0:
                    if anc or views:
                        break
                    anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                            struct.pack("i", item[1]))]
                views.extend(item[0])
                if len(views) >= _IOV_MAX:
                    break
            try:
                n = w.sock.sendmsg(views[:_IOV_MAX], anc)
            except BlockingIOError:
                break
            except OSError:
                # The worker is gone; its pidfd tells how.
                for item in outq:
                    if item[1] >= 0:
                        os.close(item[1])
                outq.clear()
                break
            if anc:
                os.close(outq[0][1])
                outq[0][1] = -1
            while n and outq:
                item = outq[0]
                vs = item[0]
                while vs and n >= vs[0].nbytes:
                    n -= vs[0].nbytes
                    vs.pop(0)
                if vs:
                    if n:
                        vs[0] = vs[0][n:]
                        n = 0
                    break
                outq.popleft()
        if outq and not w.writing:
            w.writing = True
            self._reactor.add_writer(w.sock, self._write, w)
        elif not outq and w.writing:
            w.writing = False
            self._reactor.remove_writer(w.sock)

    # -- receiving ----------------------------------------------------------

    def _on_readable(self, w):
        eof = False
        for _ in range(16):
            if w.sock is None:
                return
            try:
                if w.reader.fill() == 0:
                    eof = True
            except BlockingIOError:
                break
            except OSError:
                eof = True
            try:
                while True:
                    f = w.reader.next_frame()
                    if f is None:
                        break
                    self._on_frame(w, f)
                    if w.sock is None:
                        return
            except (OSError, ValueError, struct.error) as exc:
                self._protocol_error(w, exc)
                return
            if eof:
                break
        if eof:
            self._on_eof(w)
        self._pump()
        self._maybe_finish_close()

    def _protocol_error(self, w, exc):
        from ._task import _log
        _log.error("ProcessPool: bad data from worker %d (%s); killing it",
                   w.pid, exc)
        w.killed = True
        try:
            signal.pidfd_send_signal(w.pidfd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        head = list(w.inflight)[:1]
        rest = list(w.inflight)[1:]
        w.inflight.clear()
        self._remove(w)
        for task in head:
            self._settle_exc(task, WorkerDied(
                f"worker process {w.pid} sent bad data ({exc}) while "
                f"running {task.fn_name}; it was killed", w.pid))
        self._requeue(rest)
        self._replace()

    def _on_frame(self, w, f):
        kind, task_id, aux, segs = f
        if kind == _w.READY:
            w.ready = True
            return
        if not w.inflight or w.inflight[0].id != task_id:
            raise ValueError(f"an answer for task {task_id} out of order")
        task = w.inflight.popleft()
        task.call = None
        now = time.perf_counter_ns()
        w.head_since = now
        if kind == _w.SKIPPED:
            self._after_answer(w)
            return
        self._run_hist[min(aux.bit_length(), _HIST - 1)] += 1
        self._wait_hist[_bucket(now - task.t0 - aux)] += 1
        avg = self._avg_run
        self._avg_run = aux if avg is None else avg + (aux - avg) // 8
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        fut = task.fut
        if kind == _w.RESULT:
            self._counts["completed"] += 1
            if not fut.done():
                try:
                    value = _w.decode(segs)
                except Exception as exc:
                    fut.set_exception(exc)
                else:
                    fut.set_result(value)
        elif kind == _w.ERROR:
            self._counts["failed"] += 1
            if not fut.done():
                try:
                    exc = _rebuild_error(_w.decode(segs), w.pid)
                except Exception as err:
                    exc = err
                fut.set_exception(exc)
        self._after_answer(w)

    def _after_answer(self, w):
        if w.retiring and not w.inflight and w.sock is not None:
            # Recycled: EOF ends it cleanly; reaped through its pidfd.
            self._remove(w)

    def _on_eof(self, w):
        """The worker closed its socket: it is dying. Its pidfd says how;
        one that lingers is killed."""
        if w.sock is None:
            return
        try:
            self._reactor.remove_reader(w.sock)
        except RuntimeError:
            pass
        if w.eof_timer is None and not w.exited:
            w.eof_timer = self._reactor.call_later(2.0, self._linger, w)

    def _linger(self, w):
        w.eof_timer = None
        if not w.exited:
            try:
                signal.pidfd_send_signal(w.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def _on_exit(self, w):
        """The pidfd is readable: the worker has ended. Reap it; unless we
        ended it, fail its running task and start a replacement."""
        if w.exited:
            return
        w.exited = True
        try:
            self._reactor.remove_reader(w.pidfd)
        except RuntimeError:
            pass
        status = _reap(w)
        if w in self._dying:
            self._dying.remove(w)
        if w.sock is not None:
            # Answers it sent before it died come first.
            try:
                while w.reader.fill():
                    while True:
                        f = w.reader.next_frame()
                        if f is None:
                            break
                        self._on_frame(w, f)
            except (OSError, ValueError, struct.error):
                pass
        expected = w.killed or (w not in self._workers)
        head = list(w.inflight)[:1]
        rest = list(w.inflight)[1:]
        w.inflight.clear()
        self._remove(w)
        if expected and not head:
            self._maybe_finish_close()
            return
        text, code, sig = _describe(status)
        for task in head:
            self._settle_exc(task, WorkerDied(
                f"worker process {w.pid} died ({text}) while running "
                f"{task.fn_name}", w.pid, code, sig))
        self._requeue(rest)
        if not expected:
            self._counts["restarts"] += 1
            now = time.monotonic()
            self._deaths.append(now)
            while self._deaths and \
                    self._deaths[0] < now - self._restart_period:
                self._deaths.popleft()
            if len(self._deaths) > self._max_restarts:
                self._break(
                    f"{len(self._deaths)} worker processes died within "
                    f"{self._restart_period:g} s (max_restarts="
                    f"{self._max_restarts}); the last: process {w.pid}, "
                    f"{text}")
                return
        self._replace()
        self._maybe_finish_close()

    def _settle_exc(self, task, exc):
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        if not task.fut.done():
            self._counts["failed"] += 1
            task.fut.set_exception(exc)

    def _break(self, why):
        """Restart intensity exceeded: stop everything, fail all work."""
        self._broken = why
        err = BrokenProcessPool(f"the ProcessPool is broken: {why}")
        tasks = self._take_all()
        for w in list(self._workers):
            w.killed = True
            try:
                signal.pidfd_send_signal(w.pidfd, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._remove(w)
        for task in tasks:
            self._settle_exc(task, err)
        self._maybe_finish_close()

    def _take_all(self):
        tasks = []
        for q in self._queues:
            tasks.extend(t for t in q if not t.fut.done())
            q.clear()
        self._queued = 0
        for w in self._workers + self._dying:
            tasks.extend(t for t in w.inflight if not t.fut.done())
            w.inflight.clear()
        for t in tasks:
            t.discard_frame()
        return tasks

    # -- timeouts and cancellation -------------------------------------------

    def _expire(self, task, timeout):
        task.timer = None
        if task.fut.done():
            return
        self._withdraw(task)
        if not task.fut.done():
            self._counts["failed"] += 1
            task.fut.set_exception(TimeoutError(
                f"defer_to_process() timed out after {timeout} s"))

    def _withdraw(self, task):
        """The task's Future is being cancelled or timed out: a queued task
        never runs; a running one has its worker killed; one sent but not
        started is skipped by its worker."""
        if task.timer is not None:
            task.timer.cancel()
            task.timer = None
        w = task.worker
        if w is None:
            self._queued -= 1
            task.discard_frame()
            return          # dropped from the queue when met
        if w.inflight and w.inflight[0] is task:
            self._kill(w)
        elif w.sock is not None:
            chunks, fd = _w.frame(_w.SKIP, task.id, [b""])
            w.outq.append([[memoryview(c) for c in chunks], fd])
            self._write(w)

    # -- closing ------------------------------------------------------------

    def close(self):
        """Cancel queued and running tasks, kill every worker and reap it
        (at most about a second for idle workers to exit at EOF); their
        Futures are cancelled. Call it on the reactor's thread, or while
        the reactor does not run (RuntimeError otherwise). A pool stays
        open, with its workers, until close() or interpreter exit."""
        if self._closed:
            return
        on_loop = self._on_loop()
        if not on_loop and self._reactor.running:
            # Its watchers must go before the descriptors do, and only the
            # reactor's thread may remove them.
            raise RuntimeError("close(): the pool's reactor runs on another "
                               "thread; use reactor.call_from_thread("
                               "pool.close)")
        self._closed = True
        _open_pools.discard(self)
        procs = self._workers + self._dying
        busy = [w for w in procs if w.inflight or not w.ready]
        tasks = self._take_all()
        self._workers = []
        self._dying = []
        for w in procs:
            if w in busy:
                w.killed = True
                _signal(w, signal.SIGKILL)
            if on_loop and w.watched and not w.exited:
                try:
                    self._reactor.remove_reader(w.pidfd)
                except RuntimeError:
                    pass
            w.killed = True
            self._unwatch_sock(w)   # EOF: an idle worker exits
        deadline = time.monotonic() + 1.0
        for w in procs:
            if not w.exited:
                _wait_exit(w, deadline)
                w.exited = True
                _reap(w)
        for task in tasks:
            if task.timer is not None:
                try:
                    task.timer.cancel()
                except RuntimeError:
                    pass
                task.timer = None
            task.fut._cancel_hook = None
        if on_loop:
            for task in tasks:
                task.fut.cancel()
        self._settle_closing()

    def aclose(self):
        """Refuse new work, let queued and running tasks finish, then close;
        returns a Future settled when done. Use on the reactor's thread."""
        self._reactor._check_thread()
        if self._closing is None:
            self._closing = Future(self._reactor)
            if self._closed:
                self._closing.set_result(None)
            else:
                self._maybe_finish_close()
        return self._closing

    def _maybe_finish_close(self):
        if self._closing is None or self._closed:
            return
        if self._queued or any(w.inflight for w in self._workers):
            return
        self.close()

    def _settle_closing(self):
        if self._closing is not None and not self._closing.done() and \
                self._on_loop():
            self._closing.set_result(None)

    def _forget(self):
        self._closed = True
        for w in self._workers + self._dying:
            if w.sock is not None:
                w.sock.close()
                w.sock = None
            if w.pidfd >= 0:
                os.close(w.pidfd)
                w.pidfd = -1
        self._workers = []
        self._dying = []
        _open_pools.discard(self)

    # -- stats --------------------------------------------------------------

    def stats(self):
        """The counters of CpuPool.stats() (tasks submitted, completed,
        failed, cancelled, queued, running; workers; log2 histograms in ns
        of the wait before a worker starts a task and of its run time in
        the worker) plus ``restarts``: workers replaced after dying."""
        c = self._counts
        return {
            "submitted": c["submitted"], "completed": c["completed"],
            "failed": c["failed"], "cancelled": c["cancelled"],
            "queued": self._queued,
            "running": sum(1 for w in self._workers if w.inflight),
            "workers": self._live(),
            "drainer_wait_ns_log2": list(self._wait_hist),
            "drainer_run_ns_log2": list(self._run_hist),
            "restarts": c["restarts"],
        }


def _signal(w, sig):
    try:
        signal.pidfd_send_signal(w.pidfd, sig)
    except (ProcessLookupError, OSError):
        pass


def _wait_exit(w, deadline):
    """Wait for w's pidfd until deadline, then SIGKILL and wait."""
    p = select.poll()
    p.register(w.pidfd, select.POLLIN)
    left = deadline - time.monotonic()
    if left > 0 and p.poll(left * 1000):
        return
    _signal(w, signal.SIGKILL)
    p.poll(5000)


def _reap(w):
    """waitid() on w's pidfd (None if someone else reaped it); closes it."""
    status = None
    if w.pidfd >= 0:
        try:
            status = os.waitid(os.P_PIDFD, w.pidfd, os.WEXITED | os.WNOHANG)
        except ChildProcessError:
            status = None
        os.close(w.pidfd)
        w.pidfd = -1
    return status


# ---- the default pools, exit and fork -------------------------------------

# Every pool not closed yet, held: a pool nobody holds still has children
# to reap, and the exit hook closes what is left.
_open_pools = set()
_default_pools = weakref.WeakKeyDictionary()    # reactor -> ProcessPool
_default_lock = threading.Lock()


def default_process_pool(reactor=None):
    """The ProcessPool of defer_to_process() for a reactor (default: the
    running one, else the default one), made on first use with
    ``TWINCORE_PROCESS_WORKERS`` workers (unset or 0: one per CPU)."""
    r = reactor if reactor is not None else _current_reactor()
    with _default_lock:
        pool = _default_pools.get(r)
        if pool is None or pool.closed or pool._broken is not None:
            pool = ProcessPool(
                workers=_env_workers("TWINCORE_PROCESS_WORKERS"), reactor=r)
            _default_pools[r] = pool
        return pool


def defer_to_process(fn, /, *args, priority=PRIORITY_NORMAL, timeout=None,
                     **kwargs):
    """Run fn(*args, **kwargs) in a worker process of the running reactor's
    default ProcessPool (of the default reactor outside one); returns a
    Future settled on the reactor thread. fn, the arguments and the result
    travel by pickle: fn must be importable by name (a module-level
    function), not a lambda or a closure."""
    return default_process_pool().defer(fn, *args, priority=priority,
                                        timeout=timeout, **kwargs)


def defer_to(executor, fn, /, *args, **kwargs):
    """executor.submit(fn, *args, **kwargs) for any concurrent.futures
    Executor (a ThreadPoolExecutor, a ProcessPoolExecutor, a Dask
    ``Client.get_executor()``...), as a twincore.Future of the running
    reactor (of the default one outside one). The executor's completion,
    on whatever thread, crosses to the reactor's thread with
    call_from_thread: nothing polls. Cancelling the Future cancels the
    executor's future (which stops it only if it has not started)."""
    r = _current_reactor()
    r._check_thread()
    submit = getattr(executor, "submit", None)
    if submit is None:
        raise TypeError("defer_to(): 'executor' must be a concurrent.futures"
                        f".Executor, got {type(executor).__name__}")
    cf = submit(fn, *args, **kwargs)
    fut = Future(r)

    def done(cf):       # any thread
        try:
            r.call_from_thread(_settle_from, fut, cf)
        except RuntimeError:
            pass        # the reactor is closed: nobody waits any more

    fut._cancel_hook = cf.cancel
    cf.add_done_callback(done)
    return fut


def _settle_from(fut, cf):
    if fut.done():
        return
    if cf.cancelled():
        fut.cancel()
        return
    exc = cf.exception()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_result(cf.result())


@atexit.register
def _close_pools():
    for pool in list(_open_pools):
        pool.close()


def _after_fork_in_child():
    # The workers are the parent's children, not ours: forget them.
    _spawner.after_fork()
    for pool in list(_open_pools):
        pool._forget()


os.register_at_fork(after_in_child=_after_fork_in_child)
