/* Reactor.add_reader/add_writer: one tc_poll_t per descriptor, carried by
 * an _FdWatcher that holds the reader's and the writer's callback.
 *
 * The reactor maps fd -> watcher (r->fd_watchers); while its poll handle is
 * open, the handle also holds the watcher (reactor_hold), so a readiness
 * event queued without the GIL points at a live object until the handle's
 * close callback has been dispatched (PYEV_FD_CLOSED).  Readiness is a
 * PYEV_FD in the same batch as every other event; a watcher removed
 * meanwhile has poll == NULL and ignores it.  Removing the last callback
 * stops the watch at once, so the caller may close the descriptor right
 * after remove_reader()/remove_writer(). */
#include "dispatch.h"
#include "errors.h"
#include "fdwatch.h"
#include "module.h"
#include "reactor.h"

typedef struct {
    PyObject_HEAD
    ReactorObject *reactor;     /* strong */
    tc_poll_t *poll;            /* NULL once closed */
    int fd;
    PyObject *reader, *reader_args;   /* NULL when none */
    PyObject *writer, *writer_args;
    loopref_t held;             /* listed while the poll handle holds us */
} FdWatcherObject;

/* The events this file queues (dispatch.h); obj: the _FdWatcher. */
enum {
    PYEV_FD = 1,       /* status: TC_POLL_* bits or < 0 */
    PYEV_FD_CLOSED,    /* its poll handle is gone */
};
static const pyevent_ops_t fdwatch_ops;   /* beside fdwatch_dispatch() */

/* ---- C callbacks: GIL none, loop thread; they only queue ---------------- */

static void
w_on_ready(tc_poll_t *p, int status, int events)
{
    FdWatcherObject *w = tc_handle_data(tc_poll_handle(p));
    if (w != NULL) {
        pyevents_push(w->reactor, &fdwatch_ops, PYEV_FD, (PyObject *)w, NULL,
                      status < 0 ? status : events);
    }
}

static void
w_on_closed(tc_handle_t *h)
{
    FdWatcherObject *w = tc_handle_data(h);
    if (w != NULL) {
        pyevents_push(w->reactor, &fdwatch_ops, PYEV_FD_CLOSED, (PyObject *)w,
                      NULL, 0);
    }
}

/* ---- helpers: GIL held ---------------------------------------------------- */

int
tcpy_fileno(PyObject *obj, const char *what, int *out)
{
    PyObject *num;
    if (PyLong_Check(obj)) {
        num = Py_NewRef(obj);
    } else {
        num = PyObject_CallMethod(obj, "fileno", NULL);
        if (num == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
                PyErr_Format(PyExc_TypeError,
                             "%s(): 'fd' must be an int or have fileno(), "
                             "got %.100s", what, Py_TYPE(obj)->tp_name);
            }
            return -1;
        }
        if (!PyLong_Check(num)) {
            PyErr_Format(PyExc_TypeError,
                         "%s(): fileno() returned %.100s, not an int", what,
                         Py_TYPE(num)->tp_name);
            Py_DECREF(num);
            return -1;
        }
    }
    int overflow;
    long fd = PyLong_AsLongAndOverflow(num, &overflow);
    Py_DECREF(num);
    if (fd == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || fd < 0 || fd > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "%s(): invalid file descriptor %R",
                     what, obj);
        return -1;
    }
    *out = (int)fd;
    return 0;
}

static int
events_of(FdWatcherObject *w)
{
    return (w->reader != NULL ? TC_POLL_READABLE : 0) |
           (w->writer != NULL ? TC_POLL_WRITABLE : 0);
}

/* Close the watch and forget the watcher (its callbacks stay until the
 * caller clears them).  Returns -1 with an exception only when the dict
 * fails. */
static int
retire(ReactorObject *r, FdWatcherObject *w)
{
    if (w->poll != NULL) {
        tc_close(tc_poll_handle(w->poll), w_on_closed);
        w->poll = NULL;
    }
    PyObject *key = PyLong_FromLong(w->fd);
    if (key == NULL) {
        return -1;
    }
    int rc = 0;
    if (r->fd_watchers != NULL) {
        PyObject *cur = PyDict_GetItemWithError(r->fd_watchers, key);
        if (cur == (PyObject *)w) {
            rc = PyDict_DelItem(r->fd_watchers, key);
        } else if (cur == NULL && PyErr_Occurred()) {
            rc = -1;
        }
    }
    Py_DECREF(key);
    return rc;
}

/* loopref_t.detach: the reactor closes; the watch goes with it. */
static void
w_detach(PyObject *obj)
{
    FdWatcherObject *w = (FdWatcherObject *)obj;
    if (w->poll != NULL) {
        tc_handle_t *h = tc_poll_handle(w->poll);
        tc_handle_set_data(h, NULL);
        tc_close(h, NULL);
        w->poll = NULL;
    }
}

static FdWatcherObject *
watcher_new(ReactorObject *r, int fd)
{
    tc_state *st = reactor_state(r);
    FdWatcherObject *w = PyObject_GC_New(FdWatcherObject,
                                         st->FdWatcher_type);
    if (w == NULL) {
        return NULL;
    }
    w->reactor = (ReactorObject *)Py_NewRef(r);
    w->poll = NULL;
    w->fd = fd;
    w->reader = w->reader_args = NULL;
    w->writer = w->writer_args = NULL;
    w->held = (loopref_t){0};
    PyObject_GC_Track(w);
    int err = tc_poll_new(r->loop, fd, w, &w->poll);
    if (err != 0) {
        w->poll = NULL;
        Py_DECREF(w);
        tcpy_raise(st, err);
        return NULL;
    }
    reactor_hold(r, &w->held, (PyObject *)w, w_detach);
    return w;
}

/* add_reader/add_writer: (fd, fn, *args). */
static PyObject *
add_callback(ReactorObject *r, PyObject *const *args, Py_ssize_t nargs,
             bool writer, const char *what)
{
    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError, "%s(): expected (fd, callback, *args)",
                     what);
        return NULL;
    }
    int fd;
    if (tcpy_fileno(args[0], what, &fd) < 0) {
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_Format(PyExc_TypeError,
                     "%s(): 'callback' must be callable, got %.100s", what,
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    PyObject *rest = PyTuple_New(nargs - 2);
    if (rest == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 2; i < nargs; i++) {
        PyTuple_SET_ITEM(rest, i - 2, Py_NewRef(args[i]));
    }
    if (r->fd_watchers == NULL && (r->fd_watchers = PyDict_New()) == NULL) {
        Py_DECREF(rest);
        return NULL;
    }
    PyObject *key = PyLong_FromLong(fd);
    if (key == NULL) {
        Py_DECREF(rest);
        return NULL;
    }
    FdWatcherObject *w =
        (FdWatcherObject *)PyDict_GetItemWithError(r->fd_watchers, key);
    bool fresh = false;
    if (w != NULL) {
        Py_INCREF(w);
    } else if (PyErr_Occurred()) {
        goto error;
    } else {
        w = watcher_new(r, fd);
        if (w == NULL || PyDict_SetItem(r->fd_watchers, key,
                                        (PyObject *)w) < 0) {
            if (w != NULL) {
                retire(r, w);
            }
            goto error;
        }
        fresh = true;
    }
    PyObject **fn = writer ? &w->writer : &w->reader;
    PyObject **fargs = writer ? &w->writer_args : &w->reader_args;
    PyObject *old_fn = *fn, *old_args = *fargs;
    *fn = Py_NewRef(args[1]);
    *fargs = rest;
    rest = NULL;
    int err = tc_poll_start(w->poll, events_of(w), w_on_ready);
    if (err != 0) {
        /* The descriptor is closed: as before, and the error raised. */
        PyObject *new_fn = *fn, *new_args = *fargs;
        *fn = old_fn;
        *fargs = old_args;
        old_fn = new_fn;
        old_args = new_args;
        if (fresh || events_of(w) == 0) {
            retire(r, w);
        }
        tcpy_raise(reactor_state(r), err);
    }
    Py_XDECREF(old_fn);
    Py_XDECREF(old_args);
    Py_DECREF(w);
    Py_DECREF(key);
    if (err != 0) {
        return NULL;
    }
    Py_RETURN_NONE;

error:
    Py_XDECREF(w);
    Py_DECREF(key);
    Py_XDECREF(rest);
    return NULL;
}

static PyObject *
remove_callback(ReactorObject *r, PyObject *arg, bool writer,
                const char *what)
{
    int fd;
    if (tcpy_fileno(arg, what, &fd) < 0) {
        return NULL;
    }
    if (r->loop == NULL) {
        Py_RETURN_FALSE;   /* closed: nothing is watched (asyncio too) */
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    if (r->fd_watchers == NULL) {
        Py_RETURN_FALSE;
    }
    PyObject *key = PyLong_FromLong(fd);
    if (key == NULL) {
        return NULL;
    }
    FdWatcherObject *w =
        (FdWatcherObject *)PyDict_GetItemWithError(r->fd_watchers, key);
    Py_DECREF(key);
    if (w == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_FALSE;
    }
    PyObject **fn = writer ? &w->writer : &w->reader;
    PyObject **fargs = writer ? &w->writer_args : &w->reader_args;
    if (*fn == NULL) {
        Py_RETURN_FALSE;
    }
    Py_INCREF(w);
    /* Move the callback out before anything can run Python code. */
    PyObject *old_fn = *fn, *old_args = *fargs;
    *fn = NULL;
    *fargs = NULL;
    int rc = 0;
    if (events_of(w) == 0) {
        rc = retire(r, w);
    } else if (w->poll != NULL &&
               tc_poll_start(w->poll, events_of(w), w_on_ready) != 0) {
        /* Closed descriptor: the other callback hears of it when it is
         * removed too; nothing is watched any more. */
        tc_poll_stop(w->poll);
    }
    Py_DECREF(old_fn);
    Py_XDECREF(old_args);
    Py_DECREF(w);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

PyObject *
reactor_add_reader(ReactorObject *r, PyObject *const *args, Py_ssize_t nargs)
{
    return add_callback(r, args, nargs, false, "add_reader");
}

PyObject *
reactor_add_writer(ReactorObject *r, PyObject *const *args, Py_ssize_t nargs)
{
    return add_callback(r, args, nargs, true, "add_writer");
}

PyObject *
reactor_remove_reader(ReactorObject *r, PyObject *arg)
{
    return remove_callback(r, arg, false, "remove_reader");
}

PyObject *
reactor_remove_writer(ReactorObject *r, PyObject *arg)
{
    return remove_callback(r, arg, true, "remove_writer");
}

/* GIL: held.  Call one of the watcher's callbacks, kept alive over the
 * call (it may remove itself). */
static void
call_one(ReactorObject *r, PyObject *fn, PyObject *args, const char *what)
{
    Py_INCREF(fn);
    Py_INCREF(args);
    PyObject *res = PyObject_Call(fn, args, NULL);
    if (res == NULL) {
        reactor_report(r, what);
    }
    Py_XDECREF(res);
    Py_DECREF(fn);
    Py_DECREF(args);
}

static void
fdwatch_dispatch(ReactorObject *r, pyevent_t *ev)
{
    FdWatcherObject *w = (FdWatcherObject *)ev->obj;
    if (ev->kind == PYEV_FD_CLOSED) {
        Py_XDECREF(reactor_unhold(r, &w->held));   /* the handle's */
        return;
    }
    if (w->poll == NULL) {
        return;   /* removed after this was queued */
    }
    /* A descriptor found closed (status < 0) wakes both: their own read
     * or write then meets the error, as after select(). */
    bool bad = ev->status < 0;
    Py_INCREF(w);
    if ((bad || (ev->status & TC_POLL_READABLE)) && w->reader != NULL) {
        call_one(r, w->reader, w->reader_args, "a reader callback");
    }
    if ((bad || (ev->status & TC_POLL_WRITABLE)) && w->writer != NULL &&
        w->poll != NULL) {
        call_one(r, w->writer, w->writer_args, "a writer callback");
    }
    Py_DECREF(w);
}

static const pyevent_ops_t fdwatch_ops = {
    .run = fdwatch_dispatch,
    .name = "fdwatch",
};

/* ---- the type ------------------------------------------------------------- */

static int
FdWatcher_traverse(FdWatcherObject *w, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(w));
    Py_VISIT(w->reactor);
    Py_VISIT(w->reader);
    Py_VISIT(w->reader_args);
    Py_VISIT(w->writer);
    Py_VISIT(w->writer_args);
    return 0;
}

static int
FdWatcher_clear(FdWatcherObject *w)
{
    Py_CLEAR(w->reader);
    Py_CLEAR(w->reader_args);
    Py_CLEAR(w->writer);
    Py_CLEAR(w->writer_args);
    return 0;
}

static void
FdWatcher_dealloc(FdWatcherObject *w)
{
    PyTypeObject *tp = Py_TYPE(w);
    PyObject_GC_UnTrack(w);
    FdWatcher_clear(w);
    /* An open poll handle holds us: only a closed one is left here. */
    assert(w->poll == NULL);
    Py_CLEAR(w->reactor);
    tp->tp_free((PyObject *)w);
    Py_DECREF(tp);
}

static PyObject *
FdWatcher_repr(FdWatcherObject *w)
{
    return PyUnicode_FromFormat("<twincore._FdWatcher fd=%d%s%s%s>", w->fd,
                                w->reader != NULL ? " reader" : "",
                                w->writer != NULL ? " writer" : "",
                                w->poll == NULL ? " closed" : "");
}

static PyType_Slot FdWatcher_slots[] = {
    {Py_tp_dealloc, FdWatcher_dealloc},
    {Py_tp_traverse, FdWatcher_traverse},
    {Py_tp_clear, FdWatcher_clear},
    {Py_tp_repr, FdWatcher_repr},
    {Py_tp_doc, "The reader and writer callbacks of one descriptor "
                "(Reactor.add_reader/add_writer)."},
    {0, NULL},
};

PyType_Spec FdWatcher_spec = {
    .name = "twincore._twincore._FdWatcher",
    .basicsize = sizeof(FdWatcherObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = FdWatcher_slots,
};
