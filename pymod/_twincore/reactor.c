/* The Reactor type: one tc_loop_t and the Python-facing methods on it.
 * Every method but call_from_thread must be called on the thread that
 * owns the reactor; they raise RuntimeError elsewhere.  The owner is the
 * thread that created it, until the first run() or run_once(), which
 * adopts it for the thread it runs on.
 *
 * The reactor owns its loop, and through it the references the loop's
 * handles hold on Transports, Listeners, DatagramTransports and armed
 * TimerHandles (r->held), the finished CpuTasks on their way back
 * (r->transit) and what the event queue owns.  Reactor_traverse shows
 * those to the GC, so a dropped reactor is collected with everything on
 * it, and reactor_teardown() (tp_clear, dealloc, close()) closes every
 * handle and frees the loop.  Once r->loop is NULL the reactor is closed:
 * every method raises RuntimeError and every C pointer into the loop that
 * a Python object keeps is NULL or unused. */
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "args.h"
#include "cpu.h"
#include "dispatch.h"
#include "errors.h"
#include "fdwatch.h"
#include "module.h"
#include "process.h"
#include "reactor.h"
#include "timerhandle.h"
#include "tls.h"
#include "transport.h"
#include "udp.h"

static const pyevent_ops_t call_ops;     /* beside from_thread_cb() */
static const pyevent_ops_t signal_ops;   /* beside signal_cb() */

int
reactor_check_thread(ReactorObject *r)
{
    if (r->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        return -1;
    }
    if (!tc_loop_is_owner_thread(r->loop)) {
        PyErr_SetString(PyExc_RuntimeError,
                        "reactor used from a thread other than the one that "
                        "created it; use call_from_thread()");
        return -1;
    }
    return 0;
}

void
reactor_report(ReactorObject *r, const char *context)
{
    assert(PyGILState_Check());
    tcpy_log_current(reactor_state(r), context);
    if (PyErr_Occurred()) {
        /* KeyboardInterrupt or SystemExit: stop and let run() raise it. */
        PyObject *exc = tcpy_fetch_exception();
        if (r->pending_exc == NULL) {
            r->pending_exc = exc;
        } else {
            Py_XDECREF(exc);
        }
        if (r->loop != NULL) {
            tc_loop_stop(r->loop);
        }
    }
}

/* The tuple args[start:nargs], for the fn(*args) call forms. */
static PyObject *
args_from(PyObject *const *args, Py_ssize_t start, Py_ssize_t nargs)
{
    PyObject *rest = PyTuple_New(nargs - start);
    if (rest == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = start; i < nargs; i++) {
        PyTuple_SET_ITEM(rest, i - start, Py_NewRef(args[i]));
    }
    return rest;
}

static void
wake_noop(void *arg)
{
    (void)arg;
}

void
reactor_wake(ReactorObject *r)
{
    /* Inside a batch, dispatch_ready() checks its queues itself. */
    if (!r->in_dispatch && r->loop != NULL) {
        tc_loop_call_soon(r->loop, wake_noop, NULL);
    }
}

int
reactor_call_soon_obj(ReactorObject *r, PyObject *fn, PyObject *args)
{
    if (r->soon_len + 2 > r->soon_cap) {
        size_t cap = r->soon_cap ? r->soon_cap * 2 : 64;
        PyObject **items = PyMem_Realloc(r->soon, cap * sizeof(*items));
        if (items == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        r->soon = items;
        r->soon_cap = cap;
    }
    r->soon[r->soon_len++] = Py_NewRef(fn);
    r->soon[r->soon_len++] = Py_NewRef(args);
    return 0;
}

void
reactor_hold(ReactorObject *r, loopref_t *ref, PyObject *obj,
             void (*detach)(PyObject *obj))
{
    assert(ref->obj == NULL);
    ref->obj = Py_NewRef(obj);
    ref->detach = detach;
    ref->prev = NULL;
    ref->next = r->held;
    if (r->held != NULL) {
        r->held->prev = ref;
    }
    r->held = ref;
}

PyObject *
reactor_unhold(ReactorObject *r, loopref_t *ref)
{
    PyObject *obj = ref->obj;
    if (obj == NULL) {
        return NULL;
    }
    if (ref->prev != NULL) {
        ref->prev->next = ref->next;
    } else {
        r->held = ref->next;
    }
    if (ref->next != NULL) {
        ref->next->prev = ref->prev;
    }
    ref->prev = ref->next = NULL;
    ref->obj = NULL;
    return obj;
}

static void
keepalive_cb(tc_async_t *a)
{
    (void)a;
}

static PyObject *
Reactor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, ":Reactor", kwlist)) {
        return NULL;
    }
    PyObject *module = PyType_GetModuleByDef(type, &tc_module);
    if (module == NULL) {
        return NULL;
    }
    ReactorObject *r = (ReactorObject *)type->tp_alloc(type, 0);
    if (r == NULL) {
        return NULL;
    }
    r->module = Py_NewRef(module);
    r->wakeup_read_fd = r->wakeup_write_fd = -1;
    int err = pthread_mutex_init(&r->transit_lock, NULL);
    if (err != 0) {
        Py_DECREF(r);
        return tcpy_raise(state_of_module(module), -err);
    }
    r->transit_lock_ready = true;
    err = tc_loop_new(&r->loop);
    if (err != 0) {
        r->loop = NULL;
        Py_DECREF(r);
        return tcpy_raise(state_of_module(module), err);
    }
    tc_loop_set_data(r->loop, r);
    tc_loop_set_after_iteration(r->loop, dispatch_ready, r);
    /* run() runs until stop(), Twisted-style: an idle async keeps the
     * loop from returning when nothing else is active. */
    tc_async_t *keepalive;
    err = tc_async_new(r->loop, keepalive_cb, NULL, &keepalive);
    if (err != 0) {
        Py_DECREF(r);
        return tcpy_raise(state_of_module(module), err);
    }
    r->signal_handlers = PyDict_New();
    if (r->signal_handlers == NULL) {
        Py_DECREF(r);
        return NULL;
    }
    return (PyObject *)r;
}

static int
Reactor_traverse(ReactorObject *r, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(r));
    Py_VISIT(r->module);
    Py_VISIT(r->signal_handlers);
    Py_VISIT(r->fd_watchers);
    Py_VISIT(r->cpu_pool);
    Py_VISIT(r->pending_exc);
    for (size_t i = 0; i < r->soon_len; i++) {
        Py_VISIT(r->soon[i]);
    }
    for (loopref_t *ref = r->held; ref != NULL; ref = ref->next) {
        Py_VISIT(ref->obj);
    }
    if (!r->running) {
        int rc = dispatch_traverse(r, visit, arg);
        if (rc == 0 && r->transit_lock_ready) {
            rc = cpu_transit_traverse(r, visit, arg);
        }
        if (rc != 0) {
            return rc;
        }
    }
    return 0;
}

static void
close_any(tc_handle_t *h, void *arg)
{
    (void)arg;
    if (!tc_handle_is_closing(h)) {
        tc_close(h, NULL);
    }
}

/* Free the loop: close every handle, deliver what other threads sent
 * (pool completions) into the queue, and close.  Returns tc_loop_close()'s
 * result.  GIL: held, no Python code runs. */
static int
close_loop(tc_loop_t *loop)
{
    /* From here C callbacks only queue: nothing takes the GIL. */
    tc_loop_set_after_iteration(loop, NULL, NULL);
    tc_loop_walk(loop, close_any, NULL);
    int err = tc_loop_close(loop);
    /* A pool's completions wait in the loop's cross-thread queue, and
     * tc_loop_close() refuses while they do: run them.  Work still on a
     * worker keeps it refusing. */
    for (int i = 0; i < 4 && err == -EBUSY; i++) {
        tc_loop_run(loop, TC_RUN_NOWAIT);
        tc_loop_walk(loop, close_any, NULL);
        err = tc_loop_close(loop);
    }
    return err;
}

/* GIL: held.  Close the reactor: detach every object its handles hold,
 * free the loop, then drop what it owned.  No Python code runs until
 * r->loop is NULL, so code run by the last step (finalizers) finds a
 * closed reactor.  Returns 0, or -1 with nothing done when the loop runs
 * on another thread. */
static int
reactor_teardown(ReactorObject *r)
{
    if (r->loop == NULL) {
        if (r->transit_lock_ready) {
            cpu_transit_discard(r);   /* sends that came too late */
        }
        return 0;
    }
    if (!tc_loop_is_owner_thread(r->loop) && tc_loop_adopt(r->loop) != 0) {
        return -1;   /* not reached: a running reactor is referenced */
    }
    /* Keep the references until the loop is gone. */
    loopref_t *held = r->held;
    r->held = NULL;
    for (loopref_t *ref = held; ref != NULL; ref = ref->next) {
        ref->detach(ref->obj);
    }
    while (r->dirty != NULL) {
        TransportObject *t = r->dirty;
        r->dirty = t->next_dirty;
        t->next_dirty = NULL;
        t->dirty_listed = false;
    }
    PyObject *signal_handlers = r->signal_handlers;
    r->signal_handlers = NULL;
    PyObject *fd_watchers = r->fd_watchers;
    r->fd_watchers = NULL;
    tc_loop_t *loop = r->loop;
    /* Under the lock: a worker sending tasks back reads r->loop. */
    pthread_mutex_lock(&r->transit_lock);
    r->loop = NULL;
    pthread_mutex_unlock(&r->transit_lock);
    int err = close_loop(loop);
    if (err != 0) {
        /* Work for this loop still runs on a pool worker: the loop must
         * outlive it, so it is leaked; its handles are all closed. */
        PyObject *exc = tcpy_fetch_exception();
        if (PyErr_WarnFormat(PyExc_ResourceWarning, 1,
                             "twincore: reactor closed while CpuPool work "
                             "for it was still running; its loop is leaked "
                             "(%s)", tc_strerror(err)) < 0) {
            PyErr_WriteUnraisable((PyObject *)r);
        }
        if (exc != NULL) {
            tcpy_restore_exception(exc);
        }
    }
    cpu_transit_discard(r);
    dispatch_discard(r);
    while (held != NULL) {
        loopref_t *ref = held;
        held = ref->next;
        PyObject *obj = ref->obj;
        ref->prev = ref->next = NULL;
        ref->obj = NULL;
        Py_DECREF(obj);
    }
    Py_XDECREF(signal_handlers);
    Py_XDECREF(fd_watchers);
    if (r->wakeup_read_fd >= 0) {   /* its poll handle went with the loop */
        close(r->wakeup_read_fd);
        close(r->wakeup_write_fd);
        r->wakeup_read_fd = r->wakeup_write_fd = -1;
    }
    return 0;
}

static int
Reactor_clear(ReactorObject *r)
{
    /* The loop first: a pool's completions still reach the CpuPool. */
    reactor_teardown(r);
    Py_CLEAR(r->signal_handlers);
    Py_CLEAR(r->fd_watchers);
    Py_CLEAR(r->cpu_pool);
    Py_CLEAR(r->pending_exc);
    for (size_t i = 0; i < r->soon_len; i++) {
        Py_CLEAR(r->soon[i]);
    }
    r->soon_len = 0;
    return 0;
}

static void
Reactor_dealloc(ReactorObject *r)
{
    PyTypeObject *tp = Py_TYPE(r);
    PyObject_GC_UnTrack(r);
    if (r->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)r);
    }
    /* Nothing the handles hold is left (it would hold the reactor): only
     * the keepalive, signals, and timers whose TimerHandle died.  A GC
     * pass on another thread may free a reactor nothing uses any more;
     * reactor_teardown() adopts the idle loop then. */
    Reactor_clear(r);
    if (r->loop != NULL) {
        PyErr_WarnEx(PyExc_ResourceWarning,
                     "twincore: reactor freed while running", 1);
    }
    PyMem_Free(r->soon);
    free(r->events.items);
    free(r->events_spare.items);
    if (r->transit_lock_ready) {
        pthread_mutex_destroy(&r->transit_lock);
    }
    Py_CLEAR(r->module);
    tp->tp_free((PyObject *)r);
    Py_DECREF(tp);
}

/* ---- signal wakeup: Ctrl-C interrupts epoll ---------------------------- */

static void
wakeup_on_ready(tc_poll_t *p, int status, int events)
{
    (void)events;
    ReactorObject *r = tc_handle_data(tc_poll_handle(p));
    char buf[64];
    if (status == 0) {
        while (read(r->wakeup_read_fd, buf, sizeof(buf)) > 0) {
        }
    }
    pyevents_push(r, &signal_ops, 0, NULL, NULL, 0);
}

/* GIL: held.  signal.set_wakeup_fd(fd); returns the previous fd, or -2
 * when it cannot be set (not the main thread).  Clears any exception. */
static int
set_wakeup_fd(int fd)
{
    PyObject *exc = tcpy_fetch_exception();
    int old = -2;
    PyObject *signal_mod = PyImport_ImportModule("signal");
    if (signal_mod != NULL) {
        PyObject *res = PyObject_CallMethod(signal_mod, "set_wakeup_fd", "i",
                                            fd);
        Py_DECREF(signal_mod);
        if (res != NULL) {
            old = (int)PyLong_AsLong(res);
            Py_DECREF(res);
        }
    }
    PyErr_Clear();
    if (exc != NULL) {
        tcpy_restore_exception(exc);
    }
    return old;
}

/* GIL: held.  Only the main thread may set Python's wakeup fd. */
static bool
is_main_thread(void)
{
    PyObject *threading = PyImport_ImportModule("threading");
    PyObject *main = threading != NULL
                         ? PyObject_CallMethod(threading, "main_thread", NULL)
                         : NULL;
    PyObject *ident = main != NULL ? PyObject_GetAttrString(main, "ident")
                                   : NULL;
    bool yes = ident != NULL &&
               PyLong_AsUnsignedLong(ident) == PyThread_get_thread_ident();
    Py_XDECREF(ident);
    Py_XDECREF(main);
    Py_XDECREF(threading);
    PyErr_Clear();
    return yes;
}

/* Route Python's signal wakeup fd into the loop while run() runs, on the
 * main thread, unless a host (asyncio, Twisted) has installed its own:
 * that one is left alone, and its owner hears of signals.  The socketpair
 * is made once per reactor.  Returns true when ours is installed. */
static bool
install_wakeup(ReactorObject *r)
{
    if (r->wakeup_read_fd < 0) {
        int fds[2];
        if (!is_main_thread() ||
            socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                       0, fds) != 0) {
            return false;
        }
        r->wakeup_read_fd = fds[0];
        r->wakeup_write_fd = fds[1];
    }
    /* Python has no way to read the wakeup fd without setting one: a
     * signal in the instant ours stands in for a host's still runs its
     * Python handler, only without waking the host's poll. */
    int old = set_wakeup_fd(r->wakeup_write_fd);
    if (old == -2) {
        return false;   /* not the main thread: no Python signals here */
    }
    if (old != -1 && old != r->wakeup_write_fd) {
        set_wakeup_fd(old);   /* the host's: put it back */
        return false;
    }
    if (tc_poll_new(r->loop, r->wakeup_read_fd, r, &r->wakeup_poll) != 0) {
        r->wakeup_poll = NULL;
        set_wakeup_fd(-1);
        return false;
    }
    tc_poll_start(r->wakeup_poll, TC_POLL_READABLE, wakeup_on_ready);
    return true;
}

/* Undo install_wakeup(): only our own fd is taken out; one a callback
 * installed meanwhile stays. */
static void
remove_wakeup(ReactorObject *r, bool installed)
{
    if (!installed) {
        return;
    }
    int cur = set_wakeup_fd(-1);
    if (cur != r->wakeup_write_fd && cur >= 0) {
        set_wakeup_fd(cur);
    }
    if (r->wakeup_poll != NULL) {
        tc_close(tc_poll_handle(r->wakeup_poll), NULL);
        r->wakeup_poll = NULL;
    }
}

/* ---- methods ------------------------------------------------------------ */

/* run() and run_once() check the thread this way: the first run adopts a
 * loop created on another thread (handed over to the one that runs it). */
static int
check_run_thread(ReactorObject *r, const char *what)
{
    if (r->loop != NULL && !r->has_run && !r->running &&
        !tc_loop_is_owner_thread(r->loop)) {
        tc_loop_adopt(r->loop);
    }
    if (reactor_check_thread(r) < 0) {
        return -1;
    }
    if (r->running) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s(): the reactor is already running", what);
        return -1;
    }
    return 0;
}

/* GIL: drops.  The GIL is released for the whole of tc_loop_run(); the
 * dispatch hook takes it back once per iteration.  timeout < -1.5: run
 * until stop(); else one iteration that waits at most timeout seconds
 * (-1: without a bound). */
static PyObject *
run_loop(ReactorObject *r, double timeout)
{
    bool forever = timeout < -1.5;
    r->running = true;
    r->has_run = true;
    r->stopping = false;
    bool pending_stop = forever && r->stop_pending;
    if (forever) {
        r->stop_pending = false;
    }
    bool installed = install_wakeup(r);
    /* Python signals that arrived before the wakeup fd was set. */
    pyevents_push(r, &signal_ops, 0, NULL, NULL, 0);
    Py_INCREF(r);
    r->saved_tstate = PyEval_SaveThread();
    int rc;
    if (pending_stop) {
        rc = tc_loop_run(r->loop, TC_RUN_NOWAIT);   /* asyncio's rule */
    } else if (forever) {
        rc = tc_loop_run(r->loop, TC_RUN_DEFAULT);
    } else {
        rc = tc_loop_run_timeout(r->loop, timeout < 0.0 ? -1.0 : timeout);
    }
    PyEval_RestoreThread(r->saved_tstate);
    r->saved_tstate = NULL;
    remove_wakeup(r, installed);
    r->running = false;
    r->stopping = false;
    PyObject *exc = r->pending_exc;
    r->pending_exc = NULL;
    Py_DECREF(r);
    if (exc != NULL) {
        tcpy_restore_exception(exc);
        return NULL;
    }
    if (rc < 0) {
        return tcpy_raise(reactor_state(r), rc);
    }
    Py_RETURN_NONE;
}

static PyObject *
reactor_run(ReactorObject *r, PyObject *unused)
{
    (void)unused;
    if (check_run_thread(r, "run") < 0) {
        return NULL;
    }
    return run_loop(r, -2.0);
}

static PyObject *
reactor_run_once(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"timeout", NULL};
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:run_once", kwlist,
                                     &timeout_obj)) {
        return NULL;
    }
    double timeout = -1.0;
    if (timeout_obj != Py_None) {
        timeout = PyFloat_AsDouble(timeout_obj);
        if (timeout == -1.0 && PyErr_Occurred()) {
            PyErr_Format(PyExc_TypeError,
                         "run_once(): 'timeout' must be a number or None, "
                         "got %.100s", Py_TYPE(timeout_obj)->tp_name);
            return NULL;
        }
        if (!(timeout >= 0.0)) {
            PyErr_Format(PyExc_ValueError,
                         "run_once(): 'timeout' must be >= 0 or None, got %R",
                         timeout_obj);
            return NULL;
        }
    }
    if (check_run_thread(r, "run_once") < 0) {
        return NULL;
    }
    return run_loop(r, timeout);
}

static PyObject *
reactor_stop(ReactorObject *r, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    if (!r->running) {
        r->stop_pending = true;   /* the next run() returns at once */
        Py_RETURN_NONE;
    }
    r->stopping = true;
    tc_loop_stop(r->loop);
    Py_RETURN_NONE;
}

static PyObject *
reactor_close(ReactorObject *r, PyObject *unused)
{
    (void)unused;
    if (r->loop == NULL) {
        Py_RETURN_NONE;   /* closing twice is harmless */
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    if (r->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "close(): the reactor is running; call stop() and "
                        "close it after run() returns");
        return NULL;
    }
    /* The protocols of open transports hear connection_lost, once, after
     * the loop is gone (no Python runs inside reactor_teardown()). */
    tc_state *st = reactor_state(r);
    PyObject *lost = PyList_New(0);
    if (lost == NULL) {
        return NULL;
    }
    for (loopref_t *ref = r->held; ref != NULL; ref = ref->next) {
        if ((Py_IS_TYPE(ref->obj, st->Transport_type) ||
             Py_IS_TYPE(ref->obj, st->DatagramTransport_type)) &&
            PyList_Append(lost, ref->obj) < 0) {
            Py_DECREF(lost);
            return NULL;
        }
    }
    if (reactor_teardown(r) < 0) {
        Py_DECREF(lost);
        PyErr_SetString(PyExc_RuntimeError,
                        "close(): the reactor's loop is in use");
        return NULL;
    }
    /* Oldest first: r->held lists the newest first. */
    for (Py_ssize_t i = PyList_GET_SIZE(lost) - 1; i >= 0; i--) {
        PyObject *obj = PyList_GET_ITEM(lost, i);
        if (Py_IS_TYPE(obj, st->Transport_type)) {
            transport_reactor_closed(obj);
        } else {
            datagram_reactor_closed(obj);
        }
    }
    Py_DECREF(lost);
    PyObject *exc = r->pending_exc;   /* KeyboardInterrupt in one of them */
    r->pending_exc = NULL;
    if (exc != NULL) {
        tcpy_restore_exception(exc);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
reactor_call_soon(ReactorObject *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1) {
        PyErr_SetString(PyExc_TypeError,
                        "call_soon(): missing the callable 'fn'");
        return NULL;
    }
    if (!PyCallable_Check(args[0])) {
        PyErr_Format(PyExc_TypeError,
                     "call_soon(): 'fn' must be callable, got %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    PyObject *rest = args_from(args, 1, nargs);
    if (rest == NULL) {
        return NULL;
    }
    int rc = reactor_call_soon_obj(r, args[0], rest);
    Py_DECREF(rest);
    if (rc < 0) {
        return NULL;
    }
    reactor_wake(r);
    Py_RETURN_NONE;
}

static PyObject *
reactor_call_later(ReactorObject *r, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError,
                        "call_later(): expected (delay, fn, *args)");
        return NULL;
    }
    double delay = PyFloat_AsDouble(args[0]);
    if (delay == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError,
                     "call_later(): 'delay' must be a number, got %.100s",
                     Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    if (!(delay >= 0.0)) {   /* also NaN; infinity means never */
        PyErr_Format(PyExc_ValueError,
                     "call_later(): 'delay' must be >= 0, got %R", args[0]);
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_Format(PyExc_TypeError,
                     "call_later(): 'fn' must be callable, got %.100s",
                     Py_TYPE(args[1])->tp_name);
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    PyObject *rest = args_from(args, 2, nargs);
    if (rest == NULL) {
        return NULL;
    }
    PyObject *handle = timerhandle_new(r, delay, args[1], rest);
    Py_DECREF(rest);
    return handle;
}

/* The event of a cross-thread call; obj: the tuple (fn, args, reactor),
 * owned. */
static void
call_dispatch(ReactorObject *r, pyevent_t *ev)
{
    PyObject *fn = PyTuple_GET_ITEM(ev->obj, 0);
    PyObject *args = PyTuple_GET_ITEM(ev->obj, 1);
    PyObject *res = PyObject_Call(fn, args, NULL);
    if (res == NULL) {
        reactor_report(r, "a call_from_thread callback");
    }
    Py_XDECREF(res);
    Py_DECREF(ev->obj);
}

static void
call_discard(ReactorObject *r, pyevent_t *ev)
{
    (void)r;
    Py_DECREF(ev->obj);
}

static int
call_traverse(pyevent_t *ev, visitproc visit, void *arg)
{
    Py_VISIT(ev->obj);
    return 0;
}

static const pyevent_ops_t call_ops = {
    .run = call_dispatch,
    .discard = call_discard,
    .traverse = call_traverse,
    .name = "call_from_thread",
};

/* Thread: loop, GIL: none.  Moves a cross-thread call into the batch. */
static void
from_thread_cb(void *arg)
{
    PyObject *call = arg;
    /* The loop's data is the reactor; the tuple's third slot is unused. */
    ReactorObject *r = (ReactorObject *)PyTuple_GET_ITEM(call, 2);
    if (pyevents_push(r, &call_ops, 0, call, NULL, 0) != 0 &&
        r->loop != NULL) {
        /* Out of memory: keep it for the next batch rather than lose it.
         * (While the reactor closes, it is leaked.) */
        tc_loop_call_soon(r->loop, from_thread_cb, call);
    }
}

/* Thread: any, GIL: held. */
static PyObject *
reactor_call_from_thread(ReactorObject *r, PyObject *const *args,
                         Py_ssize_t nargs)
{
    if (nargs < 1 || !PyCallable_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError,
                        "call_from_thread(): 'fn' must be callable");
        return NULL;
    }
    if (r->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        return NULL;
    }
    PyObject *rest = args_from(args, 1, nargs);
    if (rest == NULL) {
        return NULL;
    }
    /* (fn, args, reactor): the reactor stays alive until the call ran. */
    PyObject *call = PyTuple_Pack(3, args[0], rest, (PyObject *)r);
    Py_DECREF(rest);
    if (call == NULL) {
        return NULL;
    }
    int err = tc_loop_call_from_thread(r->loop, from_thread_cb, call);
    if (err != 0) {
        Py_DECREF(call);
        return tcpy_raise(reactor_state(r), err);
    }
    Py_RETURN_NONE;
}

static PyObject *
reactor_time(ReactorObject *r, PyObject *unused)
{
    (void)unused;
    if (r->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        return NULL;
    }
    return PyFloat_FromDouble(tc_loop_now_s(r->loop));
}

int
reactor_listen_server(ReactorObject *r, const char *what, const char *host,
                      int port, int backlog, int reuse_port,
                      tc_server_t **out)
{
    assert(port >= 0 && port <= 65535);   /* tcpy_port_arg() */
    if (backlog < 0) {
        PyErr_Format(PyExc_ValueError,
                     "%s(): 'backlog' must be >= 0, got %d", what, backlog);
        return -1;
    }
    if (reactor_check_thread(r) < 0) {
        return -1;
    }
    tc_tcp_listen_opts_t opts = {.backlog = backlog,
                                 .reuseport = reuse_port != 0};
    int err = tc_tcp_listen(r->loop, host, port, &opts,
                            listener_on_connection, NULL, out);
    if (err == -EINVAL) {
        PyErr_Format(PyExc_ValueError,
                     "%s(): 'host' must be a numeric IPv4 or IPv6 address, "
                     "got '%s'", what, host ? host : "(None)");
        return -1;
    }
    if (err != 0) {
        PyObject *addr = Py_BuildValue("(zi)", host, port);
        if (addr != NULL) {
            tcpy_raise_at(reactor_state(r), err, "bind on address", addr);
            Py_DECREF(addr);
        }
        return -1;
    }
    return 0;
}

static PyObject *
reactor_listen_tcp(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"port", "factory", "host", "backlog",
                             "reuse_port", NULL};
    PyObject *port_obj;
    int port;
    PyObject *factory;
    const char *host = "127.0.0.1";
    int backlog = 0;
    int reuse_port = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|zip:listen_tcp",
                                     kwlist, &port_obj, &factory, &host,
                                     &backlog, &reuse_port) ||
        tcpy_port_arg(port_obj, "listen_tcp", "'port'", 0, &port) < 0) {
        return NULL;
    }
    tc_server_t *server;
    if (reactor_listen_server(r, "listen_tcp", host, port, backlog,
                              reuse_port, &server) < 0) {
        return NULL;
    }
    return listener_new(r, server, factory, false);
}

static PyObject *
reactor_listen_unix(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "factory", "backlog", NULL};
    PyObject *path_arg, *path_obj;
    PyObject *factory;
    int backlog = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|i:listen_unix",
                                     kwlist, &path_arg, &factory, &backlog) ||
        tcpy_unix_path_arg(path_arg, "listen_unix", &path_obj) < 0) {
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        Py_DECREF(path_obj);
        return NULL;
    }
    tc_unix_listen_opts_t opts = {.backlog = backlog,
                                  .unlink_existing = true,
                                  .unlink_on_close = true};
    tc_server_t *server;
    int err = tc_unix_listen(r->loop, PyBytes_AS_STRING(path_obj), &opts,
                             listener_on_connection, NULL, &server);
    if (err != 0) {
        PyObject *addr = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(path_obj));
        Py_DECREF(path_obj);
        if (addr != NULL) {
            tcpy_raise_at(reactor_state(r), err, "bind on address", addr);
            Py_DECREF(addr);
        }
        return NULL;
    }
    Py_DECREF(path_obj);
    return listener_new(r, server, factory, true);
}

/* addr: stolen (NULL for a socket connected already); named by a failed
 * connect's error. */
static PyObject *
start_client(ReactorObject *r, tc_stream_t *s, bool is_unix,
             PyObject *factory, PyObject *on_connect, PyObject *addr)
{
    PyObject *t = transport_new(r, s, is_unix);
    if (t == NULL) {
        tc_close(tc_stream_handle(s), NULL);
        Py_XDECREF(addr);
        return NULL;
    }
    TransportObject *tr = (TransportObject *)t;
    tr->factory = Py_NewRef(factory);
    tr->on_connect = Py_NewRef(on_connect);
    tr->connect_to = addr;
    return t;
}

static PyObject *
reactor_connect_tcp(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"host", "port", "factory", "on_connect",
                             "timeout", "bind", NULL};
    PyObject *host_obj, *port_obj;
    PyObject *factory, *on_connect;
    PyObject *timeout_obj = Py_None;
    PyObject *bind_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOO|OO:connect_tcp",
                                     kwlist, &host_obj, &port_obj, &factory,
                                     &on_connect, &timeout_obj, &bind_obj)) {
        return NULL;
    }
    PyObject *host_str = NULL, *bind_str = NULL, *addr = NULL;
    const char *host;
    int port;
    const char *bind_host = NULL;
    int bind_port = 0;
    tc_tcp_connect_opts_t opts = {0};
    host_str = tcpy_host_arg(host_obj, "connect_tcp", "'host'", &host);
    if (host_str == NULL) {
        goto error;
    }
    /* connect_tcp() has always raised ValueError for a port of the wrong
     * type too. */
    if (PyBool_Check(port_obj) || !PyLong_Check(port_obj)) {
        PyErr_Format(PyExc_ValueError,
                     "connect_tcp(): 'port' must be an int in 1..65535, "
                     "got %R", port_obj);
        goto error;
    }
    if (tcpy_port_arg(port_obj, "connect_tcp", "'port'", 1, &port) < 0 ||
        tcpy_timeout_arg(timeout_obj, "connect_tcp", "'timeout'", true,
                         &opts.timeout_ms) < 0) {
        goto error;
    }
    if (bind_obj != Py_None) {
        PyObject *bh = NULL, *bp = NULL;
        if (PyTuple_Check(bind_obj) && PyTuple_GET_SIZE(bind_obj) == 2) {
            bh = PyTuple_GET_ITEM(bind_obj, 0);
            bp = PyTuple_GET_ITEM(bind_obj, 1);
        }
        if (bh == NULL || (bh != Py_None && !PyUnicode_Check(bh)) ||
            PyBool_Check(bp) || !PyLong_Check(bp)) {
            PyErr_Format(PyExc_TypeError,
                         "connect_tcp(): 'bind' must be a (host, port) "
                         "tuple, got %R", bind_obj);
            goto error;
        }
        if (tcpy_port_arg(bp, "connect_tcp", "the port of 'bind'", 0,
                          &bind_port) < 0) {
            goto error;
        }
        if (bh != Py_None) {
            bind_str = tcpy_host_arg(bh, "connect_tcp", "the host of 'bind'",
                                     &bind_host);
            if (bind_str == NULL) {
                goto error;
            }
        }
    }
    if (bind_host != NULL && bind_host[0] == '\0') {
        bind_host = NULL;   /* "": the wildcard of the peer's family */
    }
    if (reactor_check_thread(r) < 0) {
        goto error;
    }
    opts.bind_host = bind_host;
    opts.bind_port = bind_port;
    addr = Py_BuildValue("(si)", host, port);
    if (addr == NULL) {
        goto error;
    }
    tc_stream_t *s;
    reactor_sync_resolver(r);
    int err = tc_tcp_connect(r->loop, host, port, &opts, transport_on_connect,
                             NULL, &s);
    if (err == -EINVAL && bind_host != NULL) {
        PyErr_Format(PyExc_ValueError,
                     "connect_tcp(): the host of 'bind' must be a numeric "
                     "IPv4 or IPv6 address, got '%s'", bind_host);
        goto error;
    }
    if (err != 0) {
        tcpy_raise_at(reactor_state(r), err, "connect to", addr);
        goto error;
    }
    Py_DECREF(host_str);
    Py_XDECREF(bind_str);
    return start_client(r, s, false, factory, on_connect, addr);  /* steals */

error:
    Py_XDECREF(host_str);
    Py_XDECREF(bind_str);
    Py_XDECREF(addr);
    return NULL;
}

/* ---- sockets made elsewhere -------------------------------------------- */

/* A close-on-exec duplicate of sock's descriptor after checks; -1 with an
 * exception.  twincore works on the duplicate: the caller keeps (and
 * closes) its own. */
static int
dup_socket(ReactorObject *r, PyObject *sock, const char *what, bool peer)
{
    int fd;
    if (tcpy_fileno(sock, what, &fd) < 0 || reactor_check_thread(r) < 0) {
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (peer && getpeername(fd, (struct sockaddr *)&ss, &len) != 0) {
        if (errno == ENOTCONN) {
            PyErr_Format(PyExc_ValueError,
                         "%s(): 'sock' must be a connected stream socket",
                         what);
        } else {
            PyErr_SetFromErrno(PyExc_OSError);
        }
        return -1;
    }
    int copy = fcntl(fd, F_DUPFD_CLOEXEC, 0);
    if (copy < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
    }
    return copy;
}

static PyObject *
reactor_adopt_stream(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sock", "factory", "on_connect", NULL};
    PyObject *sock, *factory, *on_connect;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:_adopt_stream",
                                     kwlist, &sock, &factory, &on_connect)) {
        return NULL;
    }
    int fd = dup_socket(r, sock, "adopt_stream", true);
    if (fd < 0) {
        return NULL;
    }
    tc_stream_t *s;
    int err = tc_stream_open(r->loop, fd, NULL, &s);   /* owns fd */
    if (err == -EINVAL) {
        PyErr_SetString(PyExc_ValueError,
                        "adopt_stream(): 'sock' must be a connected stream "
                        "socket");
        return NULL;
    }
    if (err != 0) {
        return tcpy_raise(reactor_state(r), err);
    }
    /* Connected already: no connect can fail to name an address. */
    PyObject *t = start_client(r, s, tc_stream_is_unix(s), factory,
                               on_connect, NULL);
    if (t != NULL) {
        /* Connected already: the protocol is built in the next batch. */
        transport_on_connect(s, 0);
        reactor_wake(r);
    }
    return t;
}

static PyObject *
reactor_adopt_listener(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"sock", "factory", NULL};
    PyObject *sock, *factory;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO:adopt_listener",
                                     kwlist, &sock, &factory)) {
        return NULL;
    }
    int fd = dup_socket(r, sock, "adopt_listener", false);
    if (fd < 0) {
        return NULL;
    }
    tc_server_t *server;
    int err = tc_server_open(r->loop, fd, listener_on_connection, NULL,
                             &server);   /* owns fd */
    if (err == -EINVAL) {
        PyErr_SetString(PyExc_ValueError,
                        "adopt_listener(): 'sock' must be a listening stream "
                        "socket");
        return NULL;
    }
    if (err != 0) {
        return tcpy_raise(reactor_state(r), err);
    }
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    bool is_unix = tc_server_sockname(server, (struct sockaddr *)&ss,
                                      &len) == 0 &&
                   ss.ss_family == AF_UNIX;
    return listener_new(r, server, factory, is_unix);
}

static PyObject *
reactor_connect_unix(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"path", "factory", "on_connect", NULL};
    PyObject *path_arg, *path_obj;
    PyObject *factory, *on_connect;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:connect_unix",
                                     kwlist, &path_arg, &factory,
                                     &on_connect) ||
        tcpy_unix_path_arg(path_arg, "connect_unix", &path_obj) < 0) {
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        Py_DECREF(path_obj);
        return NULL;
    }
    PyObject *addr = PyUnicode_DecodeFSDefault(PyBytes_AS_STRING(path_obj));
    if (addr == NULL) {
        Py_DECREF(path_obj);
        return NULL;
    }
    tc_stream_t *s;
    int err = tc_unix_connect(r->loop, PyBytes_AS_STRING(path_obj),
                              transport_on_connect, NULL, &s);
    Py_DECREF(path_obj);
    if (err != 0) {
        tcpy_raise_at(reactor_state(r), err, "connect to", addr);
        Py_DECREF(addr);
        return NULL;
    }
    return start_client(r, s, true, factory, on_connect, addr);
}

static PyObject *
reactor_listen_udp(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"port", "protocol", "host", NULL};
    PyObject *port_obj;
    int port;
    PyObject *protocol;
    const char *host = "127.0.0.1";
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OO|s:listen_udp", kwlist,
                                     &port_obj, &protocol, &host) ||
        tcpy_port_arg(port_obj, "listen_udp", "'port'", 0, &port) < 0) {
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    tc_udp_t *udp;
    int err = tc_udp_bind(r->loop, host, port, NULL, NULL, &udp);
    if (err == -EINVAL) {
        PyErr_Format(PyExc_ValueError,
                     "listen_udp(): 'host' must be a numeric IPv4 or IPv6 "
                     "address, got '%s'", host);
        return NULL;
    }
    if (err != 0) {
        PyObject *addr = Py_BuildValue("(si)", host, port);
        if (addr != NULL) {
            tcpy_raise_at(reactor_state(r), err, "bind on address", addr);
            Py_DECREF(addr);
        }
        return NULL;
    }
    return datagram_new(r, udp, protocol);
}

/* ---- signals ------------------------------------------------------------ */

static void
signal_cb(tc_signal_t *sig, int signum)
{
    ReactorObject *r = tc_handle_data(tc_signal_handle(sig));
    pyevents_push(r, &signal_ops, 0, NULL, NULL, signum);
}

static void
reactor_run_signal(ReactorObject *r, int signum)
{
    PyObject *key = PyLong_FromLong(signum);
    if (key == NULL) {
        reactor_report(r, "a signal handler");
        return;
    }
    PyObject *entry = PyDict_GetItemWithError(r->signal_handlers, key);
    Py_DECREF(key);
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            reactor_report(r, "a signal handler");
        }
        return;   /* removed since it fired */
    }
    Py_INCREF(entry);
    PyObject *res = PyObject_Call(PyTuple_GET_ITEM(entry, 0),
                                  PyTuple_GET_ITEM(entry, 1), NULL);
    Py_DECREF(entry);
    if (res == NULL) {
        reactor_report(r, "a signal handler");
    }
    Py_XDECREF(res);
}

/* The event of a signal; status: its number, or 0 for Python's own
 * handlers (KeyboardInterrupt for Ctrl-C). */
static void
signal_dispatch(ReactorObject *r, pyevent_t *ev)
{
    if (ev->status == 0) {
        if (PyErr_CheckSignals() < 0) {
            reactor_report(r, "a signal handler");
        }
    } else {
        reactor_run_signal(r, ev->status);
    }
}

static const pyevent_ops_t signal_ops = {
    .run = signal_dispatch,
    .name = "signal",
};

static PyObject *
reactor_add_signal_handler(ReactorObject *r, PyObject *const *args,
                           Py_ssize_t nargs)
{
    if (nargs < 2) {
        PyErr_SetString(PyExc_TypeError,
                        "add_signal_handler(): expected (signum, fn, *args)");
        return NULL;
    }
    if (!PyLong_Check(args[0])) {
        PyErr_Format(PyExc_TypeError,
                     "add_signal_handler(): 'signum' must be an int, got "
                     "%.100s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    int overflow;
    long signum = PyLong_AsLongAndOverflow(args[0], &overflow);
    if (overflow != 0) {
        signum = -1;   /* invalid, reported below */
    }
    if (signum <= 0 || signum >= NSIG || signum == SIGKILL ||
        signum == SIGSTOP) {
        PyErr_Format(PyExc_ValueError,
                     "add_signal_handler(): invalid signal number %ld",
                     signum);
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError,
                        "add_signal_handler(): 'fn' must be callable");
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    PyObject *key = PyLong_FromLong(signum);
    if (key == NULL) {
        return NULL;
    }
    PyObject *old = PyDict_GetItemWithError(r->signal_handlers, key);
    if (old == NULL && PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *capsule;
    if (old != NULL) {
        capsule = Py_NewRef(PyTuple_GET_ITEM(old, 2));
    } else {
        tc_signal_t *sig;
        int err = tc_signal_new(r->loop, r, &sig);
        if (err == 0) {
            err = tc_signal_start(sig, signal_cb, (int)signum);
            if (err != 0) {
                tc_close(tc_signal_handle(sig), NULL);
            }
        }
        if (err != 0) {
            Py_DECREF(key);
            return tcpy_raise(reactor_state(r), err);
        }
        capsule = PyCapsule_New(sig, "twincore.signal", NULL);
        if (capsule == NULL) {
            tc_close(tc_signal_handle(sig), NULL);
            Py_DECREF(key);
            return NULL;
        }
    }
    PyObject *rest = args_from(args, 2, nargs);
    if (rest == NULL) {
        Py_DECREF(key);
        Py_DECREF(capsule);
        return NULL;
    }
    PyObject *entry = PyTuple_Pack(3, args[1], rest, capsule);
    Py_DECREF(rest);
    Py_DECREF(capsule);
    int rc = entry != NULL
                 ? PyDict_SetItem(r->signal_handlers, key, entry)
                 : -1;
    Py_XDECREF(entry);
    Py_DECREF(key);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
reactor_remove_signal_handler(ReactorObject *r, PyObject *arg)
{
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    PyObject *entry = PyDict_GetItemWithError(r->signal_handlers, arg);
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        Py_RETURN_FALSE;
    }
    tc_signal_t *sig = PyCapsule_GetPointer(PyTuple_GET_ITEM(entry, 2),
                                            "twincore.signal");
    if (sig != NULL) {
        tc_close(tc_signal_handle(sig), NULL);
    }
    if (PyDict_DelItem(r->signal_handlers, arg) < 0) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyObject *
reactor_get_running(ReactorObject *r, void *closure)
{
    (void)closure;
    return PyBool_FromLong(r->running);
}

static PyObject *
reactor_get_cpu_pool(ReactorObject *r, void *closure)
{
    (void)closure;
    if (r->cpu_pool == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(r->cpu_pool);
}

/* The loop resolves host names on the native pool of the reactor's
 * CpuPool.  That pool is freed when the CpuPool closes, while the loop
 * keeps its pointer: every connect refreshes it first, so a closed pool
 * means "no resolver" (-ENOTSUP), never a freed one. */
void
reactor_sync_resolver(ReactorObject *r)
{
    if (r->loop != NULL) {
        tc_loop_set_resolver_pool(
            r->loop, r->cpu_pool ? cpupool_native(r->cpu_pool) : NULL);
    }
}

static int
reactor_set_cpu_pool(ReactorObject *r, PyObject *value, void *closure)
{
    (void)closure;
    if (value != NULL && value != Py_None &&
        !PyObject_TypeCheck(value, reactor_state(r)->CpuPool_type)) {
        PyErr_SetString(PyExc_TypeError, "cpu_pool must be a CpuPool");
        return -1;
    }
    Py_XSETREF(r->cpu_pool,
               (value == NULL || value == Py_None) ? NULL : Py_NewRef(value));
    reactor_sync_resolver(r);
    return 0;
}

static PyObject *
reactor_stats(ReactorObject *r, PyObject *unused)
{
    (void)unused;
    if (r->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        return NULL;
    }
    tc_loop_stats_t st;
    tc_loop_stats(r->loop, &st);
    return Py_BuildValue("{sKsKsKsKsKsKsKsn}", "iterations",
                         (unsigned long long)st.iterations, "wakeups",
                         (unsigned long long)st.wakeups, "thread_calls",
                         (unsigned long long)st.thread_calls, "soon_calls",
                         (unsigned long long)st.soon_calls, "spin_waits",
                         (unsigned long long)st.spin_waits, "spin_hits",
                         (unsigned long long)st.spin_hits, "spin_ns",
                         (unsigned long long)st.spin_ns, "open_handles",
                         (Py_ssize_t)tc_loop_open_handles(r->loop));
}

/* The default reactor belongs to the thread that runs it: run() on an
 * idle one made on another thread takes it over (twincore/__init__.py). */
static PyObject *
reactor_adopt(ReactorObject *r, PyObject *unused)
{
    (void)unused;
    if (r->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        return NULL;
    }
    if (r->running || tc_loop_adopt(r->loop) != 0) {
        PyErr_SetString(PyExc_RuntimeError,
                        "the reactor runs on another thread; use "
                        "call_from_thread()");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
reactor_check_thread_py(ReactorObject *r, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef Reactor_methods[] = {
    {"_check_thread", (PyCFunction)reactor_check_thread_py, METH_NOARGS,
     "_check_thread($self, /)\n--\n\nRuntimeError unless called on the "
     "reactor's thread."},
    {"_adopt", (PyCFunction)reactor_adopt, METH_NOARGS,
     "_adopt($self, /)\n--\n\nMake the calling thread the owner of an idle "
     "reactor (the default one, taken over by the thread that runs it)."},
    {"run", (PyCFunction)reactor_run, METH_NOARGS,
     "run($self, /)\n--\n\nRun until stop(). Ctrl-C stops the reactor and "
     "raises KeyboardInterrupt from run() (on the main thread, while no "
     "other signal.set_wakeup_fd() is installed: a host's stays, and hears "
     "of signals itself). The first run() may be on another thread than "
     "the one that created the reactor: that thread owns it from then on."},
    {"run_once", (PyCFunction)(void (*)(void))reactor_run_once,
     METH_VARARGS | METH_KEYWORDS,
     "run_once($self, timeout=None)\n--\n\nRun one iteration: wait for "
     "events at most timeout seconds (None: until something happens, 0: "
     "not at all), then run every callback that is due, as one batch."},
    {"stop", (PyCFunction)reactor_stop, METH_NOARGS,
     "stop($self, /)\n--\n\nMake run() return after the current iteration. "
     "Before run(), the next run() runs one iteration without waiting and "
     "returns, as asyncio's run_forever() does."},
    {"close", (PyCFunction)reactor_close, METH_NOARGS,
     "close($self, /)\n--\n\nClose every listener, transport, datagram "
     "transport, timer and signal handler of the reactor at once and free "
     "the loop's descriptors; then call connection_lost() once for every "
     "transport whose protocol has not heard it yet "
     "(ConnectionAbortedError for an open connection cut short). Queued "
     "callbacks are dropped, and Futures it would settle stay pending. "
     "Afterwards every method raises RuntimeError; close() again does "
     "nothing. RuntimeError while run() runs. A reactor collected by the "
     "GC closes the same way but calls no protocol."},
    {"call_soon", (PyCFunction)(void (*)(void))reactor_call_soon,
     METH_FASTCALL,
     "call_soon($self, fn, /, *args)\n--\n\nCall fn(*args) on the next "
     "iteration, in FIFO order."},
    {"call_later", (PyCFunction)(void (*)(void))reactor_call_later,
     METH_FASTCALL,
     "call_later($self, delay, fn, /, *args)\n--\n\nCall fn(*args) after "
     "delay seconds (any number >= 0; float('inf'): never, until "
     "cancelled); returns a TimerHandle (cancel, reset, active)."},
    {"call_from_thread", (PyCFunction)(void (*)(void))reactor_call_from_thread,
     METH_FASTCALL,
     "call_from_thread($self, fn, /, *args)\n--\n\nThread-safe: call "
     "fn(*args) on the reactor's thread. Calls share one wakeup."},
    {"time", (PyCFunction)reactor_time, METH_NOARGS,
     "time($self, /)\n--\n\nThe reactor's cached monotonic clock, seconds."},
    {"listen_tcp", (PyCFunction)(void (*)(void))reactor_listen_tcp,
     METH_VARARGS | METH_KEYWORDS,
     "listen_tcp($self, port, factory, host='127.0.0.1', backlog=0, "
     "reuse_port=False)\n--\n\nListen for TCP connections; port 0 picks a "
     "free port (Listener.port). factory.build_protocol(addr) is called per "
     "connection."},
    {"listen_unix", (PyCFunction)(void (*)(void))reactor_listen_unix,
     METH_VARARGS | METH_KEYWORDS,
     "listen_unix($self, path, factory, backlog=0)\n--\n\nListen on a Unix "
     "socket path ('@name': abstract)."},
    {"_connect_tcp", (PyCFunction)(void (*)(void))reactor_connect_tcp,
     METH_VARARGS | METH_KEYWORDS,
     "_connect_tcp($self, host, port, factory, on_connect, timeout=None)\n"
     "--\n\nLow level; use twincore.Reactor.connect_tcp."},
    {"listen_tls", (PyCFunction)(void (*)(void))reactor_listen_tls,
     METH_VARARGS | METH_KEYWORDS,
     "listen_tls($self, port, factory, context, host='127.0.0.1', "
     "backlog=0, reuse_port=False, handshake_timeout=60.0)\n--\n\nListen "
     "for TLS connections with a server TLSContext. The handshake runs in C "
     "without the GIL; build_protocol() and connection_made() follow it. A "
     "failed or timed-out handshake is logged and closed; the listener "
     "goes on."},
    {"_connect_tls", (PyCFunction)(void (*)(void))reactor_connect_tls,
     METH_VARARGS | METH_KEYWORDS,
     "_connect_tls($self, host, port, factory, on_connect, context, "
     "server_hostname=None, timeout=None)\n--\n\nLow level; use "
     "twincore.Reactor.connect_tls."},
    {"_adopt_stream", (PyCFunction)(void (*)(void))reactor_adopt_stream,
     METH_VARARGS | METH_KEYWORDS,
     "_adopt_stream($self, sock, factory, on_connect)\n--\n\nLow level; "
     "use twincore.Reactor.adopt_stream."},
    {"adopt_listener", (PyCFunction)(void (*)(void))reactor_adopt_listener,
     METH_VARARGS | METH_KEYWORDS,
     "adopt_listener($self, sock, factory)\n--\n\nAccept connections on a "
     "listening socket made elsewhere (TCP or Unix; an object with fileno() "
     "or a descriptor); returns a Listener. twincore works on a duplicate: "
     "close your own socket when you like."},
    {"_spawn_process", (PyCFunction)reactor_spawn_process, METH_VARARGS,
     "_spawn_process($self, protocol, future, argv, env, cwd, stdin, "
     "stdout, stderr, pgid, setsid, close_fds, /)\n--\n\nLow level; use "
     "twincore.Reactor.spawn_process."},
    {"_connect_unix", (PyCFunction)(void (*)(void))reactor_connect_unix,
     METH_VARARGS | METH_KEYWORDS,
     "_connect_unix($self, path, factory, on_connect)\n--\n\nLow level."},
    {"listen_udp", (PyCFunction)(void (*)(void))reactor_listen_udp,
     METH_VARARGS | METH_KEYWORDS,
     "listen_udp($self, port, protocol, host='127.0.0.1')\n--\n\nBind a UDP "
     "socket; protocol.datagram_received(data, addr) per datagram."},
    {"add_signal_handler",
     (PyCFunction)(void (*)(void))reactor_add_signal_handler, METH_FASTCALL,
     "add_signal_handler($self, signum, fn, /, *args)\n--\n\nCall fn(*args) "
     "on the reactor when signum arrives."},
    {"remove_signal_handler", (PyCFunction)reactor_remove_signal_handler,
     METH_O,
     "remove_signal_handler($self, signum, /)\n--\n\nReturns True if a "
     "handler was removed."},
    {"add_reader", (PyCFunction)(void (*)(void))reactor_add_reader,
     METH_FASTCALL,
     "add_reader($self, fd, callback, /, *args)\n--\n\nCall "
     "callback(*args) on every iteration in which fd (an int or an object "
     "with fileno()) is readable, until remove_reader(fd); level-triggered, "
     "as asyncio's. Replaces a reader the fd had. The descriptor stays "
     "yours: remove the reader before closing it. One found closed wakes "
     "its callbacks once (their own IO meets the error), then stays quiet."},
    {"remove_reader", (PyCFunction)reactor_remove_reader, METH_O,
     "remove_reader($self, fd, /)\n--\n\nStop watching fd for reading "
     "at once; True if it was watched."},
    {"add_writer", (PyCFunction)(void (*)(void))reactor_add_writer,
     METH_FASTCALL,
     "add_writer($self, fd, callback, /, *args)\n--\n\nadd_reader() for "
     "writability."},
    {"remove_writer", (PyCFunction)reactor_remove_writer, METH_O,
     "remove_writer($self, fd, /)\n--\n\nStop watching fd for writing at "
     "once; True if it was watched."},
    {"stats", (PyCFunction)reactor_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nLoop counters: iterations, wakeups, ..."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Reactor_getset[] = {
    {"running", (getter)reactor_get_running, NULL,
     "True while run() is running.", NULL},
    {"cpu_pool", (getter)reactor_get_cpu_pool, (setter)reactor_set_cpu_pool,
     "The CpuPool used by defer_to_cpu() and name resolution.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Reactor_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(ReactorObject, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot Reactor_slots[] = {
    {Py_tp_new, Reactor_new},
    {Py_tp_dealloc, Reactor_dealloc},
    {Py_tp_traverse, Reactor_traverse},
    {Py_tp_clear, Reactor_clear},
    {Py_tp_methods, Reactor_methods},
    {Py_tp_getset, Reactor_getset},
    {Py_tp_members, Reactor_members},
    {Py_tp_doc, "Reactor()\n--\n\nAn event loop on its own libev loop. "
                "The thread of its first run() owns it."},
    {0, NULL},
};

PyType_Spec Reactor_spec = {
    .name = "twincore._twincore.Reactor",
    .basicsize = sizeof(ReactorObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
    .slots = Reactor_slots,
};
