/* ProcessTransport: a child process and its pipes (tc_process_spawn).
 *
 * Ownership: the process handle and each pipe stream hold the transport
 * through one listed reference (reactor_hold) until the close callbacks of
 * all of them are dispatched; the detach function closes them all (which
 * kills a child still running) when the reactor goes first.
 * Order of the protocol's calls: connection_made(transport) first (queued
 * at spawn, so before any output), pipe_data_received(fd, data) and
 * pipe_connection_lost(fd) per output pipe, process_exited(returncode) when
 * the exit is noticed (output may still follow), and connection_lost(None)
 * once the child exited and every pipe is closed.  The C callbacks run
 * without the GIL and only queue events. */
#include <signal.h>

#include "dispatch.h"
#include "errors.h"
#include "future.h"
#include "module.h"
#include "process.h"
#include "reactor.h"

#define DEFAULT_HIGH (64u * 1024u)

typedef struct ProcessTransportObject {
    PyObject_HEAD
    ReactorObject *reactor;     /* strong */
    PyObject *protocol;         /* strong */
    PyObject *start_fut;        /* settled after connection_made */
    tc_process_t *proc;         /* NULL once its close is dispatched */
    tc_stream_t *pipes[3];      /* NULL once closing (C side) */
    bytebuf_t inbuf[3];
    bool data_queued[3];
    bool pipe_open[3];          /* pipe_connection_lost not yet called */
    bool stdin_pipe;            /* stdin=PIPE */
    bool stdin_closing;
    bool reading_paused;
    bool writing_paused;        /* protocol was told pause_writing() */
    bool exited;
    bool lost;                  /* connection_lost called */
    bool closing;               /* close() called */
    bool proc_closing;
    int returncode;
    pid_t pid;
    int open_handles;           /* close callbacks not yet dispatched */
    loopref_t held;
    PyObject *weakreflist;
} ProcessTransportObject;

/* The events this file queues (dispatch.h); obj: the ProcessTransport;
 * status: the pipe's fd, the returncode (EXITED) or paused (FLOW). */
enum {
    PYEV_PROC_START = 1,
    PYEV_PROC_DATA,
    PYEV_PROC_PIPE_CLOSED,
    PYEV_PROC_EXITED,
    PYEV_PROC_CLOSED,
    PYEV_PROC_FLOW,
};
static const pyevent_ops_t process_ops;   /* beside process_dispatch() */

/* ---- C callbacks: GIL none, loop thread; they only queue ---------------- */

static ProcessTransportObject *
owner_of(tc_handle_t *h)
{
    return tc_handle_data(h);
}

static int
pipe_index(ProcessTransportObject *t, tc_stream_t *s)
{
    for (int i = 0; i < 3; i++) {
        if (t->pipes[i] == s) {
            return i;
        }
    }
    return -1;
}

static void
p_pipe_closed(tc_handle_t *h)
{
    ProcessTransportObject *t = owner_of(h);
    if (t == NULL) {
        return;
    }
    int i;
    for (i = 0; i < 3; i++) {
        if (t->pipes[i] != NULL && tc_stream_handle(t->pipes[i]) == h) {
            break;
        }
    }
    if (i == 3) {
        return;
    }
    t->pipes[i] = NULL;
    pyevents_push(t->reactor, &process_ops, PYEV_PROC_PIPE_CLOSED,
                  (PyObject *)t, NULL, i);
}

static void
close_pipe(ProcessTransportObject *t, int i, bool graceful)
{
    tc_stream_t *s = t->pipes[i];
    if (s == NULL || tc_handle_is_closing(tc_stream_handle(s))) {
        return;
    }
    if (graceful) {
        if (tc_stream_close(s, p_pipe_closed) == 0) {
            return;
        }
    }
    tc_close(tc_stream_handle(s), p_pipe_closed);
}

static void
p_on_read(tc_stream_t *s, const char *buf, size_t len)
{
    ProcessTransportObject *t = owner_of(tc_stream_handle(s));
    int i = t != NULL ? pipe_index(t, s) : -1;
    if (i <= 0) {
        return;   /* stdin is read only to see the child close it */
    }
    if (bytebuf_append(&t->inbuf[i], buf, len) != 0) {
        close_pipe(t, i, false);
        return;
    }
    if (!t->data_queued[i]) {
        t->data_queued[i] = true;
        pyevents_push(t->reactor, &process_ops, PYEV_PROC_DATA, (PyObject *)t,
                      NULL, i);
    }
}

static void
p_on_eof(tc_stream_t *s)
{
    ProcessTransportObject *t = owner_of(tc_stream_handle(s));
    int i = t != NULL ? pipe_index(t, s) : -1;
    if (i >= 0) {
        close_pipe(t, i, false);
    }
}

static void
p_on_error(tc_stream_t *s, int status)
{
    (void)status;   /* EPIPE on stdin: the child stopped reading */
    ProcessTransportObject *t = owner_of(tc_stream_handle(s));
    int i = t != NULL ? pipe_index(t, s) : -1;
    if (i >= 0) {
        close_pipe(t, i, false);
    } else {
        tc_close(tc_stream_handle(s), NULL);
    }
}

static void
p_on_flow(tc_stream_t *s, bool paused)
{
    ProcessTransportObject *t = owner_of(tc_stream_handle(s));
    if (t != NULL) {
        pyevents_push(t->reactor, &process_ops, PYEV_PROC_FLOW, (PyObject *)t,
                      NULL, paused ? 1 : 0);
    }
}

static const tc_stream_callbacks_t pipe_callbacks = {
    .on_read = p_on_read,
    .on_eof = p_on_eof,
    .on_error = p_on_error,
    .on_flow = p_on_flow,
};

static void
p_on_exit(tc_process_t *p, int exit_status, int term_signal)
{
    ProcessTransportObject *t = owner_of(tc_process_handle(p));
    if (t != NULL) {
        pyevents_push(t->reactor, &process_ops, PYEV_PROC_EXITED,
                      (PyObject *)t, NULL,
                      term_signal != 0 ? -term_signal : exit_status);
    }
}

static void
p_proc_closed(tc_handle_t *h)
{
    ProcessTransportObject *t = owner_of(h);
    if (t != NULL) {
        pyevents_push(t->reactor, &process_ops, PYEV_PROC_CLOSED,
                      (PyObject *)t, NULL, 0);
    }
}

/* ---- dispatch: GIL held ------------------------------------------------- */

static void
call_protocol(ProcessTransportObject *t, const char *name, PyObject *args,
              const char *context)
{
    if (t->protocol == NULL) {
        return;
    }
    PyObject *fn = PyObject_GetAttrString(t->protocol, name);
    PyObject *res = fn != NULL ? PyObject_Call(fn, args, NULL) : NULL;
    Py_XDECREF(fn);
    if (res == NULL) {
        reactor_report(t->reactor, context);
        return;
    }
    Py_DECREF(res);
}

static void
deliver_data(ProcessTransportObject *t, int i)
{
    bytebuf_t *b = &t->inbuf[i];
    if (b->len == 0 || t->protocol == NULL) {
        return;
    }
    PyObject *args = Py_BuildValue("(iy#)", i, b->data, (Py_ssize_t)b->len);
    b->len = 0;
    if (b->cap > 1024 * 1024) {
        bytebuf_free(b);
    }
    if (args == NULL) {
        reactor_report(t->reactor, "pipe_data_received");
        return;
    }
    call_protocol(t, "pipe_data_received", args, "pipe_data_received");
    Py_DECREF(args);
}

static void
close_proc_handle(ProcessTransportObject *t)
{
    if (t->proc != NULL && !t->proc_closing) {
        t->proc_closing = true;
        tc_close(tc_process_handle(t->proc), p_proc_closed);
    }
}

/* connection_lost once the child is gone and every pipe closed; the
 * listed reference goes once every handle's close is dispatched. */
static void
maybe_finish(ProcessTransportObject *t)
{
    if (!t->lost && t->exited && !t->pipe_open[0] && !t->pipe_open[1] &&
        !t->pipe_open[2]) {
        t->lost = true;
        PyObject *args = PyTuple_Pack(1, Py_None);
        if (args != NULL) {
            call_protocol(t, "connection_lost", args, "connection_lost");
            Py_DECREF(args);
        } else {
            reactor_report(t->reactor, "connection_lost");
        }
    }
    if (t->open_handles == 0) {
        Py_CLEAR(t->protocol);
        Py_XDECREF(reactor_unhold(t->reactor, &t->held));
    }
}

static void
process_dispatch(ReactorObject *r, pyevent_t *ev)
{
    (void)r;
    ProcessTransportObject *t = (ProcessTransportObject *)ev->obj;
    /* The event may drop the last reference (maybe_finish). */
    Py_INCREF(t);
    switch (ev->kind) {
    case PYEV_PROC_START: {
        PyObject *args = PyTuple_Pack(1, (PyObject *)t);
        if (args != NULL) {
            call_protocol(t, "connection_made", args, "connection_made");
            Py_DECREF(args);
        }
        PyObject *fut = t->start_fut;
        t->start_fut = NULL;
        if (fut != NULL) {
            if (future_is_pending(fut) &&
                future_set_result(fut, t->protocol ? t->protocol
                                                   : Py_None) < 0) {
                reactor_report(t->reactor, "spawn_process");
            }
            Py_DECREF(fut);
        }
        break;
    }
    case PYEV_PROC_DATA:
        t->data_queued[ev->status] = false;
        deliver_data(t, ev->status);
        break;
    case PYEV_PROC_PIPE_CLOSED: {
        int i = ev->status;
        deliver_data(t, i);
        t->open_handles--;
        if (t->pipe_open[i]) {
            t->pipe_open[i] = false;
            PyObject *args = Py_BuildValue("(i)", i);
            if (args != NULL) {
                call_protocol(t, "pipe_connection_lost", args,
                              "pipe_connection_lost");
                Py_DECREF(args);
            }
        }
        maybe_finish(t);
        break;
    }
    case PYEV_PROC_EXITED: {
        t->exited = true;
        t->returncode = ev->status;
        close_proc_handle(t);
        PyObject *args = Py_BuildValue("(i)", ev->status);
        if (args != NULL) {
            call_protocol(t, "process_exited", args, "process_exited");
            Py_DECREF(args);
        }
        maybe_finish(t);
        break;
    }
    case PYEV_PROC_CLOSED:
        t->proc = NULL;
        t->open_handles--;
        if (!t->exited) {
            /* Closed by close() before the exit: it was killed. */
            t->exited = true;
            t->returncode = -SIGKILL;
            PyObject *args = Py_BuildValue("(i)", t->returncode);
            if (args != NULL) {
                call_protocol(t, "process_exited", args, "process_exited");
                Py_DECREF(args);
            }
        }
        maybe_finish(t);
        break;
    case PYEV_PROC_FLOW: {
        bool paused = ev->status != 0;
        if (paused == t->writing_paused || !t->pipe_open[0]) {
            break;   /* told already, by write() */
        }
        t->writing_paused = paused;
        const char *name = paused ? "pause_writing" : "resume_writing";
        PyObject *args = PyTuple_New(0);
        if (args != NULL) {
            call_protocol(t, name, args, name);
        }
        Py_XDECREF(args);
        break;
    }
    default:
        break;
    }
    Py_DECREF(t);
}

static const pyevent_ops_t process_ops = {
    .run = process_dispatch,
    .name = "process",
};

/* loopref_t.detach: the reactor closes; every handle goes with it. */
static void
process_detach(PyObject *obj)
{
    ProcessTransportObject *t = (ProcessTransportObject *)obj;
    for (int i = 0; i < 3; i++) {
        if (t->pipes[i] != NULL) {
            tc_handle_t *h = tc_stream_handle(t->pipes[i]);
            tc_handle_set_data(h, NULL);
            if (!tc_handle_is_closing(h)) {
                tc_close(h, NULL);
            }
            t->pipes[i] = NULL;
        }
        t->pipe_open[i] = false;
    }
    if (t->proc != NULL) {
        tc_handle_t *h = tc_process_handle(t->proc);
        tc_handle_set_data(h, NULL);
        if (!tc_handle_is_closing(h)) {
            tc_close(h, NULL);
        }
        t->proc = NULL;
    }
    t->open_handles = 0;
    t->closing = true;
}

/* ---- spawn --------------------------------------------------------------- */

/* A list of bytes as a NULL-terminated array pointing into the objects
 * (kept alive by the list).  Returns NULL with an exception. */
static char **
bytes_list(PyObject *list, const char *what)
{
    if (!PyList_Check(list)) {
        PyErr_Format(PyExc_TypeError, "_spawn_process(): '%s' must be a "
                     "list of bytes", what);
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(list);
    char **v = PyMem_Calloc((size_t)n + 1, sizeof(char *));
    if (v == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyList_GET_ITEM(list, i);
        if (!PyBytes_Check(item) ||
            strlen(PyBytes_AS_STRING(item)) !=
                (size_t)PyBytes_GET_SIZE(item)) {
            PyErr_Format(PyExc_ValueError, "spawn_process(): '%s' items "
                         "must be strings without NUL characters", what);
            PyMem_Free(v);
            return NULL;
        }
        v[i] = PyBytes_AS_STRING(item);
    }
    return v;
}

static int
stdio_mode(int code, tc_process_stdio_t *io)
{
    switch (code) {
    case -1:
        io->mode = TC_STDIO_PIPE;
        return 0;
    case -2:
        io->mode = TC_STDIO_STDOUT;
        return 0;
    case -3:
        io->mode = TC_STDIO_DEVNULL;
        return 0;
    case -4:
        io->mode = TC_STDIO_INHERIT;
        return 0;
    default:
        if (code < 0) {
            return -1;
        }
        io->mode = TC_STDIO_FD;
        io->fd = code;
        return 0;
    }
}

/* _spawn_process(protocol, future, argv, env, cwd, stdin, stdout, stderr,
 * pgid, setsid, close_fds): the Python wrapper validated the arguments;
 * stdio codes are -1 pipe, -2 stdout, -3 devnull, -4 inherit, or an fd. */
PyObject *
reactor_spawn_process(ReactorObject *r, PyObject *args)
{
    PyObject *protocol, *fut, *argv_obj, *env_obj, *cwd_obj;
    int codes[3], pgid, setsid, close_fds;
    if (!PyArg_ParseTuple(args, "OOOOOiiiipp:_spawn_process", &protocol,
                          &fut, &argv_obj, &env_obj, &cwd_obj, &codes[0],
                          &codes[1], &codes[2], &pgid, &setsid,
                          &close_fds)) {
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    tc_state *st = reactor_state(r);
    tc_process_options_t o = {0};
    for (int i = 0; i < 3; i++) {
        if (stdio_mode(codes[i], &o.stdio[i]) < 0) {
            PyErr_Format(PyExc_ValueError,
                         "_spawn_process(): bad stdio code %d", codes[i]);
            return NULL;
        }
    }
    if (cwd_obj != Py_None && !PyBytes_Check(cwd_obj)) {
        PyErr_SetString(PyExc_TypeError, "_spawn_process(): 'cwd' must be "
                        "bytes or None");
        return NULL;
    }
    char **argv = bytes_list(argv_obj, "argv");
    if (argv == NULL) {
        return NULL;
    }
    if (argv[0] == NULL) {
        PyMem_Free(argv);
        PyErr_SetString(PyExc_ValueError,
                        "spawn_process(): 'argv' must not be empty");
        return NULL;
    }
    char **env = NULL;
    if (env_obj != Py_None) {
        env = bytes_list(env_obj, "env");
        if (env == NULL) {
            PyMem_Free(argv);
            return NULL;
        }
    }
    o.argv = argv;
    o.env = env;
    o.cwd = cwd_obj != Py_None ? PyBytes_AS_STRING(cwd_obj) : NULL;
    o.flags = (pgid >= 0 ? TC_PROCESS_SETPGID : 0) |
              (setsid ? TC_PROCESS_SETSID : 0) |
              (close_fds ? 0 : TC_PROCESS_KEEP_FDS);
    o.pgid = pgid >= 0 ? pgid : 0;
    o.on_exit = p_on_exit;

    ProcessTransportObject *t = PyObject_GC_New(ProcessTransportObject,
                                                st->ProcessTransport_type);
    if (t == NULL) {
        PyMem_Free(argv);
        PyMem_Free(env);
        return NULL;
    }
    memset((char *)t + sizeof(PyObject), 0,
           sizeof(ProcessTransportObject) - sizeof(PyObject));
    t->reactor = (ReactorObject *)Py_NewRef(r);
    tc_process_t *proc;
    tc_stream_t *pipes[3];
    int err = tc_process_spawn(r->loop, &o, t, &proc, pipes);
    PyMem_Free(argv);
    PyMem_Free(env);
    if (err != 0) {
        PyObject_GC_Track(t);
        Py_DECREF(t);
        return tcpy_raise(st, err);
    }
    t->proc = proc;
    t->pid = tc_process_pid(proc);
    t->open_handles = 1;
    t->protocol = Py_NewRef(protocol);
    t->start_fut = Py_NewRef(fut);
    for (int i = 0; i < 3; i++) {
        t->pipes[i] = pipes[i];
        if (pipes[i] == NULL) {
            continue;
        }
        t->pipe_open[i] = true;
        t->stdin_pipe = t->stdin_pipe || i == 0;
        t->open_handles++;
        tc_handle_set_data(tc_stream_handle(pipes[i]), t);
        tc_stream_set_callbacks(pipes[i], &pipe_callbacks);
        if (i == 0) {
            tc_stream_set_watermarks(pipes[i], DEFAULT_HIGH / 4,
                                     DEFAULT_HIGH);
        }
        /* On stdin too: its EOF says the child closed it (or exited), as
         * asyncio's pipe transports notice. */
        tc_stream_read_start(pipes[i]);
    }
    reactor_hold(r, &t->held, (PyObject *)t, process_detach);
    PyObject_GC_Track(t);
    pyevents_push(r, &process_ops, PYEV_PROC_START, (PyObject *)t, NULL, 0);
    reactor_wake(r);
    return (PyObject *)t;
}

/* ---- methods: GIL held, loop thread -------------------------------------- */

static int
check_stdin(ProcessTransportObject *t, const char *method)
{
    if (reactor_check_thread(t->reactor) < 0) {
        return -1;
    }
    if (t->pipes[0] == NULL || t->stdin_closing || t->closing) {
        PyErr_Format(PyExc_BrokenPipeError, "%s(): %s", method,
                     t->stdin_pipe ? "stdin is closed"
                         : "stdin is not a pipe (stdin=PIPE)");
        return -1;
    }
    return 0;
}

static PyObject *
ProcessTransport_write(ProcessTransportObject *t, PyObject *data)
{
    if (check_stdin(t, "write") < 0) {
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        PyErr_Format(PyExc_TypeError, "write(): 'data' must be a bytes-like "
                     "object, got %.100s", Py_TYPE(data)->tp_name);
        return NULL;
    }
    int err = tc_stream_write(t->pipes[0], view.buf, (size_t)view.len);
    PyBuffer_Release(&view);
    reactor_wake(t->reactor);
    if (err != 0) {
        return tcpy_raise(reactor_state(t->reactor), err);
    }
    if (!t->writing_paused &&
        tc_stream_write_queue_size(t->pipes[0]) > DEFAULT_HIGH) {
        /* At once, as Transport.write does: a loop of writes stops. */
        t->writing_paused = true;
        PyObject *args = PyTuple_New(0);
        if (args != NULL) {
            call_protocol(t, "pause_writing", args, "pause_writing");
            Py_DECREF(args);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
ProcessTransport_close_stdin(ProcessTransportObject *t, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    if (t->pipes[0] != NULL && !t->stdin_closing) {
        t->stdin_closing = true;
        close_pipe(t, 0, true);
        reactor_wake(t->reactor);
    }
    Py_RETURN_NONE;
}

static PyObject *
ProcessTransport_send_signal(ProcessTransportObject *t, PyObject *arg)
{
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    long sig = PyLong_AsLong(arg);
    if (sig == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (sig < 0 || sig >= NSIG) {
        PyErr_Format(PyExc_ValueError, "send_signal(): no signal number %ld",
                     sig);
        return NULL;
    }
    if (t->proc == NULL || t->exited) {
        return tcpy_raise(reactor_state(t->reactor), -ESRCH);
    }
    int err = tc_process_kill(t->proc, (int)sig);
    if (err != 0) {
        return tcpy_raise(reactor_state(t->reactor), err);
    }
    Py_RETURN_NONE;
}

static PyObject *
signal_method(ProcessTransportObject *t, int sig)
{
    PyObject *n = PyLong_FromLong(sig);
    if (n == NULL) {
        return NULL;
    }
    PyObject *res = ProcessTransport_send_signal(t, n);
    Py_DECREF(n);
    return res;
}

static PyObject *
ProcessTransport_kill(ProcessTransportObject *t, PyObject *unused)
{
    (void)unused;
    return signal_method(t, SIGKILL);
}

static PyObject *
ProcessTransport_terminate(ProcessTransportObject *t, PyObject *unused)
{
    (void)unused;
    return signal_method(t, SIGTERM);
}

static PyObject *
ProcessTransport_close(ProcessTransportObject *t, PyObject *unused)
{
    (void)unused;
    if (t->closing || t->reactor->loop == NULL) {
        Py_RETURN_NONE;
    }
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    t->closing = true;
    for (int i = 0; i < 3; i++) {
        close_pipe(t, i, false);
    }
    if (!t->exited && t->proc != NULL) {
        (void)tc_process_kill(t->proc, SIGKILL);
    }
    reactor_wake(t->reactor);
    Py_RETURN_NONE;
}

static PyObject *
ProcessTransport_pause_reading(ProcessTransportObject *t, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    t->reading_paused = true;
    for (int i = 1; i < 3; i++) {
        if (t->pipes[i] != NULL) {
            tc_stream_read_stop(t->pipes[i]);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
ProcessTransport_resume_reading(ProcessTransportObject *t, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(t->reactor) < 0) {
        return NULL;
    }
    t->reading_paused = false;
    for (int i = 1; i < 3; i++) {
        if (t->pipes[i] != NULL &&
            !tc_handle_is_closing(tc_stream_handle(t->pipes[i]))) {
            tc_stream_read_start(t->pipes[i]);
        }
    }
    Py_RETURN_NONE;
}

static PyObject *
ProcessTransport_get_write_buffer_size(ProcessTransportObject *t,
                                       PyObject *unused)
{
    (void)unused;
    return PyLong_FromSize_t(
        t->pipes[0] != NULL ? tc_stream_write_queue_size(t->pipes[0]) : 0);
}

static PyObject *
ProcessTransport_is_closing(ProcessTransportObject *t, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(t->closing || t->lost);
}

static PyObject *
ProcessTransport_get_pid(ProcessTransportObject *t, void *closure)
{
    (void)closure;
    return PyLong_FromLong((long)t->pid);
}

static PyObject *
ProcessTransport_get_returncode(ProcessTransportObject *t, void *closure)
{
    (void)closure;
    if (!t->exited) {
        Py_RETURN_NONE;
    }
    return PyLong_FromLong(t->returncode);
}

static PyObject *
ProcessTransport_get_protocol(ProcessTransportObject *t, void *closure)
{
    (void)closure;
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static int
ProcessTransport_traverse(ProcessTransportObject *t, visitproc visit,
                          void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->reactor);
    Py_VISIT(t->protocol);
    Py_VISIT(t->start_fut);
    return 0;
}

static int
ProcessTransport_clear(ProcessTransportObject *t)
{
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->start_fut);
    return 0;
}

static void
ProcessTransport_dealloc(ProcessTransportObject *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    ProcessTransport_clear(t);
    for (int i = 0; i < 3; i++) {
        bytebuf_free(&t->inbuf[i]);
    }
    Py_CLEAR(t->reactor);
    tp->tp_free((PyObject *)t);
    Py_DECREF(tp);
}

static PyObject *
ProcessTransport_repr(ProcessTransportObject *t)
{
    if (t->exited) {
        return PyUnicode_FromFormat("<twincore.ProcessTransport pid=%d "
                                    "returncode=%d>", (int)t->pid,
                                    t->returncode);
    }
    return PyUnicode_FromFormat("<twincore.ProcessTransport pid=%d running>",
                                (int)t->pid);
}

static PyMethodDef ProcessTransport_methods[] = {
    {"write", (PyCFunction)ProcessTransport_write, METH_O,
     "write($self, data, /)\n--\n\nQueue bytes for the child's stdin "
     "(stdin=PIPE). pause_writing()/resume_writing() follow the queue. "
     "Raises BrokenPipeError once stdin is closed."},
    {"close_stdin", (PyCFunction)ProcessTransport_close_stdin, METH_NOARGS,
     "close_stdin($self, /)\n--\n\nClose stdin after what is queued: the "
     "child reads EOF; pipe_connection_lost(0) follows."},
    {"send_signal", (PyCFunction)ProcessTransport_send_signal, METH_O,
     "send_signal($self, signum, /)\n--\n\nSend a signal (through a pidfd, "
     "never to a recycled pid). ProcessLookupError once it exited."},
    {"kill", (PyCFunction)ProcessTransport_kill, METH_NOARGS,
     "kill($self, /)\n--\n\nsend_signal(SIGKILL)."},
    {"terminate", (PyCFunction)ProcessTransport_terminate, METH_NOARGS,
     "terminate($self, /)\n--\n\nsend_signal(SIGTERM)."},
    {"close", (PyCFunction)ProcessTransport_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose the pipes and kill the child if it "
     "still runs; process_exited() and connection_lost() follow."},
    {"pause_reading", (PyCFunction)ProcessTransport_pause_reading,
     METH_NOARGS,
     "pause_reading($self, /)\n--\n\nStop reading stdout and stderr."},
    {"resume_reading", (PyCFunction)ProcessTransport_resume_reading,
     METH_NOARGS, "resume_reading($self, /)\n--\n\nRead them again."},
    {"get_write_buffer_size",
     (PyCFunction)ProcessTransport_get_write_buffer_size, METH_NOARGS,
     "get_write_buffer_size($self, /)\n--\n\nBytes queued for stdin."},
    {"is_closing", (PyCFunction)ProcessTransport_is_closing, METH_NOARGS,
     "is_closing($self, /)\n--\n\n"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef ProcessTransport_getset[] = {
    {"pid", (getter)ProcessTransport_get_pid, NULL, "The child's pid.",
     NULL},
    {"returncode", (getter)ProcessTransport_get_returncode, NULL,
     "None while it runs; the exit status, or -N after signal N.", NULL},
    {"protocol", (getter)ProcessTransport_get_protocol, NULL,
     "The ProcessProtocol.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef ProcessTransport_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(ProcessTransportObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot ProcessTransport_slots[] = {
    {Py_tp_dealloc, ProcessTransport_dealloc},
    {Py_tp_traverse, ProcessTransport_traverse},
    {Py_tp_clear, ProcessTransport_clear},
    {Py_tp_methods, ProcessTransport_methods},
    {Py_tp_getset, ProcessTransport_getset},
    {Py_tp_members, ProcessTransport_members},
    {Py_tp_repr, ProcessTransport_repr},
    {Py_tp_doc, "A child process and its pipes. Made by "
                "Reactor.spawn_process()."},
    {0, NULL},
};

PyType_Spec ProcessTransport_spec = {
    .name = "twincore._twincore.ProcessTransport",
    .basicsize = sizeof(ProcessTransportObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = ProcessTransport_slots,
};
