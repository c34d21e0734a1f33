"""The process lane's wire format, and the worker process that runs tasks.

A worker is a fresh interpreter started by twincore._process_pool with
posix_spawn (never a fork of the threaded parent) and given one end of a
Unix socket pair as descriptor 3. Both sides speak length-prefixed frames:

    header  HDR: kind, number of segments, task id, aux, body length
    body    one SEG descriptor (length, memfd offset or INLINE) per
            segment, then the inline segments, in order

Segment 0 is a pickle (protocol 5); the others are its out-of-band buffers.
A segment of at least BIG bytes goes into one memfd per frame, passed with
SCM_RIGHTS on the frame's first byte, so a large buffer costs one copy in
and one copy out, with no socket chunking. Top-level `bytes` (arguments,
keyword values, results, items of a tuple or list at that level) travel
out of band too (bytes are never out of band in pickle itself).

The worker runs tasks one at a time, in the order sent, and answers every
task exactly once (RESULT, ERROR or SKIPPED), so the parent knows that the
oldest unanswered task of a worker is the one it runs. It exits at EOF,
on EXIT, and (PR_SET_PDEATHSIG) when the parent dies.
"""

import os
import pickle
import select
import socket
import struct
import sys
import time
import traceback
from collections import deque

# kind, segments, task id, aux (RESULT/ERROR: run time in ns), body length
HDR = struct.Struct("<IIQQQ")
SEG = struct.Struct("<QQ")          # length, memfd offset or INLINE
INLINE = (1 << 64) - 1
BIG = 1 << 20                       # segments from here go by memfd
BIG_BYTES = 64 << 10                # top-level bytes from here: out of band
MAX_FDS = 4                         # per recvmsg; we send at most one

INIT, TASK, SKIP, EXIT = 1, 2, 3, 4            # parent -> worker
READY, RESULT, ERROR, SKIPPED = 11, 12, 13, 14  # worker -> parent
HAS_FD = 0x100                                  # or'ed into kind


class _Big:
    """A bytes object pickled out of band (pickle keeps bytes in band)."""

    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data

    def __reduce_ex__(self, protocol):
        return _as_bytes, (pickle.PickleBuffer(self.data),)


def _as_bytes(buf):
    return buf if type(buf) is bytes else bytes(buf)


def _leaf(obj):
    if type(obj) is bytes and len(obj) >= BIG_BYTES:
        return _Big(obj)
    return obj


def mark_big(obj):
    """obj with its large top-level bytes (and those in a top-level tuple
    or list) wrapped to travel out of band."""
    t = type(obj)
    if t is bytes:
        return _leaf(obj)
    if t is tuple or t is list:
        if any(type(x) is bytes and len(x) >= BIG_BYTES for x in obj):
            return t(_leaf(x) for x in obj)
    return obj


def encode(kind, task_id, obj, aux=0):
    """A frame as (chunks, fd): chunks to send in order, fd a memfd to pass
    with the first byte (-1 for none; the caller closes it once sent).
    Raises what pickling raises."""
    bufs = []
    data = pickle.dumps(obj, 5, buffer_callback=bufs.append)
    return frame(kind, task_id, [data] + [b.raw() for b in bufs], aux)


def frame(kind, task_id, segs, aux=0):
    if len(segs) == 1 and len(segs[0]) < BIG:     # the common case
        data = segs[0]
        return [HDR.pack(kind, 1, task_id, aux, SEG.size + len(data)) +
                SEG.pack(len(data), INLINE), data], -1
    descs = []
    inline = []
    fd = -1
    offset = 0
    body = SEG.size * len(segs)
    for seg in segs:
        n = seg.nbytes if isinstance(seg, memoryview) else len(seg)
        if n >= BIG:
            if fd < 0:
                fd = os.memfd_create("twincore-lane", os.MFD_CLOEXEC)
            _pwrite_all(fd, seg, offset)
            descs.append(SEG.pack(n, offset))
            offset += n
        else:
            descs.append(SEG.pack(n, INLINE))
            inline.append(seg)
            body += n
    if fd >= 0:
        kind |= HAS_FD
    head = HDR.pack(kind, len(segs), task_id, aux, body) + b"".join(descs)
    return [head] + inline, fd


def _pwrite_all(fd, seg, offset):
    view = memoryview(seg).cast("B")
    while view:
        n = os.pwrite(fd, view, offset)
        view = view[n:]
        offset += n


def _pread_all(fd, n, offset):
    data = os.pread(fd, n, offset)
    if len(data) == n:
        return data
    parts = [data]
    got = len(data)
    while got < n:
        more = os.pread(fd, n - got, offset + got)
        if not more:
            raise EOFError("memfd shorter than its frame says")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def decode_segments(body, nseg, fd):
    """The segments of a frame body (a memoryview, which the caller may
    reuse afterwards: every segment is copied out)."""
    pos = SEG.size * nseg
    segs = []
    for i in range(nseg):
        n, where = SEG.unpack_from(body, SEG.size * i)
        if where == INLINE:
            segs.append(bytes(body[pos:pos + n]))
            pos += n
        else:
            segs.append(_pread_all(fd, n, where))
    return segs


def decode(segs):
    return pickle.loads(segs[0], buffers=segs[1:])


class Reader:
    """Frames from a socket: a growing buffer, and the descriptors that
    came with it (each belongs to the next frame marked HAS_FD)."""

    def __init__(self, sock, size=256 << 10):
        self.sock = sock
        self.buf = bytearray(size)
        self.view = memoryview(self.buf)
        self.start = self.end = 0
        self.fds = deque()

    def fill(self, flags=0):
        """One recvmsg; returns the bytes read (0 at EOF). Raises
        BlockingIOError when nothing is there (non-blocking)."""
        if self.end == len(self.buf):
            self._make_room(64 << 10)
        n, anc, msg_flags, _ = self.sock.recvmsg_into(
            [self.view[self.end:]], socket.CMSG_SPACE(4 * MAX_FDS),
            flags | socket.MSG_CMSG_CLOEXEC)
        for level, typ, data in anc:
            if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                usable = len(data) - len(data) % 4
                self.fds.extend(struct.unpack(f"{usable // 4}i",
                                              data[:usable]))
        if msg_flags & socket.MSG_CTRUNC:
            raise ConnectionError("descriptors lost (MSG_CTRUNC)")
        self.end += n
        return n

    def _make_room(self, need):
        """Room for need more bytes after end: compact, or grow."""
        live = self.end - self.start
        if live + need > len(self.buf):
            size = len(self.buf)
            while size < live + need:
                size *= 2
            self.view.release()
            new = bytearray(size)
            new[:live] = self.buf[self.start:self.end]
            self.buf = new
        elif self.start:
            self.view.release()
            self.buf[:live] = self.buf[self.start:self.end]
        else:
            return
        self.view = memoryview(self.buf)
        self.start, self.end = 0, live

    def next_frame(self):
        """(kind, task_id, aux, segments) of the next whole frame, or None.
        A frame larger than the buffer makes room for itself."""
        live = self.end - self.start
        if live < HDR.size:
            if self.end == len(self.buf):
                self._make_room(HDR.size)
            return None
        kind, nseg, task_id, aux, body = HDR.unpack_from(self.buf,
                                                         self.start)
        total = HDR.size + body
        if live < total:
            if self.start + total > len(self.buf):
                self._make_room(total - live)
            return None
        fd = -1
        if kind & HAS_FD:
            if not self.fds:
                raise ConnectionError("a frame's descriptor is missing")
            fd = self.fds.popleft()
        b = self.start + HDR.size
        try:
            segs = decode_segments(self.view[b:b + body], nseg, fd)
        finally:
            if fd >= 0:
                os.close(fd)
        self.start += total
        if self.start == self.end:
            self.start = self.end = 0
        return kind & ~HAS_FD, task_id, aux, segs

    def close(self):
        self.view.release()
        while self.fds:
            os.close(self.fds.popleft())


def send_frame(sock, chunks, fd):
    """Send a whole frame, waiting for room as needed; the fd goes with the
    first byte."""
    anc = [] if fd < 0 else [(socket.SOL_SOCKET, socket.SCM_RIGHTS,
                              struct.pack("i", fd))]
    views = [memoryview(c).cast("B") for c in chunks]
    try:
        while views:
            try:
                n = sock.sendmsg(views[:512], anc)
            except BlockingIOError:
                # The worker's socket is non-blocking: wait for room.
                select.select([], [sock], [])
                continue
            anc = []
            while views and n >= views[0].nbytes:
                n -= views[0].nbytes
                views.pop(0)
            if views and n:
                views[0] = views[0][n:]
    finally:
        if fd >= 0:
            os.close(fd)


# ---- the worker process ---------------------------------------------------

def _die_with_parent(parent_pid):
    """SIGKILL when the thread that spawned us ends (the parent's spawner
    thread lives as long as the parent); then check that the parent did
    not die before the prctl."""
    import ctypes
    import signal
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass   # EOF on the socket still ends us once the task is over
    if os.getppid() != parent_pid:
        os._exit(70)


def _error_payload(exc):
    tb = "".join(traceback.format_exception(exc))
    try:
        data = pickle.dumps(exc, 5)
    except Exception:
        data = None
    return (data, f"{type(exc).__module__}.{type(exc).__qualname__}",
            str(exc), tb)


def _reply(sock, kind, task_id, obj, aux=0):
    try:
        chunks, fd = encode(kind, task_id, obj, aux)
    except Exception as exc:   # an unpicklable result
        err = TypeError(f"the result could not be pickled: {exc}")
        err.__cause__ = exc
        chunks, fd = encode(ERROR, task_id, _error_payload(err), aux)
    send_frame(sock, chunks, fd)


def serve(sock):
    reader = Reader(sock)
    skipped = set()
    pending = deque()       # whole frames read ahead
    sock.setblocking(False)

    def read_ahead():
        # Pick up SKIPs for tasks read ahead before we start them:
        # (bytes read, still connected).
        got = 0
        try:
            while True:
                n = reader.fill()
                if n == 0:
                    return got, False
                got += n
        except BlockingIOError:
            return got, True

    alive = True
    while True:
        while True:
            f = reader.next_frame()
            if f is None:
                break
            if f[0] == SKIP:
                skipped.add(f[1])
            else:
                pending.append(f)
        if not pending:
            if not alive:
                return 0
            sock.setblocking(True)
            try:
                alive = reader.fill() > 0
            finally:
                sock.setblocking(False)
            continue
        kind, task_id, aux, segs = pending[0]
        if kind == TASK and alive and task_id not in skipped:
            got, alive = read_ahead()
            if got:
                continue    # parse what came: it may skip this task
        pending.popleft()
        if kind == EXIT:
            return 0
        if kind == INIT:
            _prepare(decode(segs))
            _reply(sock, READY, 0, os.getpid())
            continue
        if kind != TASK:
            continue
        if task_id in skipped:
            skipped.discard(task_id)
            _reply(sock, SKIPPED, task_id, None)
            continue
        t0 = time.perf_counter_ns()
        try:
            fn, args, kwargs = decode(segs)
            del segs
            result = fn(*args, **kwargs)
        except BaseException as exc:   # noqa: B902 - goes to the parent
            run = time.perf_counter_ns() - t0
            _reply(sock, ERROR, task_id, _error_payload(exc), run)
            del exc
            continue
        run = time.perf_counter_ns() - t0
        _reply(sock, RESULT, task_id, mark_big(result), run)
        del result, fn, args, kwargs


def _prepare(data):
    """The parent's sys.path, working directory and main module, as
    multiprocessing's spawn start method does, so that functions pickled
    by reference (module.name, __main__.name) resolve here."""
    from multiprocessing import spawn
    spawn.prepare(data)


def main(argv=None):
    import signal
    argv = sys.argv[1:] if argv is None else argv
    fd, parent_pid = int(argv[0]), int(argv[1])
    # Nothing but our socket (fd 3) and stdio from a parent's stray
    # inheritable descriptors: we must not keep its pipes open.
    os.closerange(fd + 1, os.sysconf("SC_OPEN_MAX"))
    _die_with_parent(parent_pid)
    # Ctrl-C reaches the whole foreground process group: the parent
    # decides what happens to its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    try:
        code = serve(sock)
    except (ConnectionError, BrokenPipeError):
        code = 0   # the parent went away
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
