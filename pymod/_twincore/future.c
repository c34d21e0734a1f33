/* twincore.Future in C: a Deferred-style result that is also awaitable.
 *
 * The behaviour is the one documented in twincore/_future.py's docstring:
 * callbacks run in the order added; each gets the chain's current result
 * and its return value (or the exception it raises) becomes the next; a
 * returned Future pauses the chain until it completes; a failure that no
 * errback or await saw is logged when the Future is finalized.  C because
 * every defer_to_cpu() creates and settles one: this is the hot path.
 * GIL: held throughout; loop thread (no locks). */
#include "cpu.h"
#include "errors.h"
#include "future.h"
#include "module.h"
#include "reactor.h"

enum { ST_PENDING, ST_DONE, ST_FAILED, ST_CANCELLED };
static const char *const state_names[] = {"pending", "done", "failed",
                                          "cancelled"};

/* One add_callbacks() pair.  fn == NULL passes the value through. */
typedef enum { ENTRY_PAIR, ENTRY_OBSERVE, ENTRY_RESUME } entry_kind_t;

typedef struct entry {
    entry_kind_t kind;
    PyObject *fn[2];        /* [0] callback, [1] errback; OBSERVE: fn[0]
                               called with the future; RESUME: fn[0] is the
                               paused Future */
    PyObject *args[2];      /* tuples or NULL */
    PyObject *kwargs[2];    /* dicts or NULL */
} entry_t;

typedef struct FutureObject {
    PyObject_HEAD
    PyObject *reactor;      /* or NULL */
    PyObject *result;
    PyObject *cancel_hook;  /* called by cancel() while pending */
    PyObject *task;         /* a CpuTask, for running() */
    entry_t *entries;
    size_t head, len, cap;  /* entries[head .. head+len) are pending */
    int state;
    int paused;
    bool failed;
    bool handled;
    bool running_callbacks;
    PyObject *weakreflist;
} FutureObject;

static int run_callbacks(FutureObject *f);

static inline tc_state *
fstate(FutureObject *f)
{
    return state_of_type(Py_TYPE(f));
}

bool
future_check(tc_state *st, PyObject *obj)
{
    return PyObject_TypeCheck(obj, st->Future_type);
}

/* ---- settling ------------------------------------------------------------ */

static void
clear_entry(entry_t *e)
{
    for (int i = 0; i < 2; i++) {
        Py_CLEAR(e->fn[i]);
        Py_CLEAR(e->args[i]);
        Py_CLEAR(e->kwargs[i]);
    }
}

/* Steals value.  Returns -1 only for KeyboardInterrupt/SystemExit raised
 * by a callback (propagated to the caller). */
static int
settle(FutureObject *f, PyObject *value, bool failed, int state)
{
    f->state = state;
    Py_XSETREF(f->result, value);
    f->failed = failed;
    Py_CLEAR(f->cancel_hook);
    Py_CLEAR(f->task);
    return run_callbacks(f);
}

int
future_set_result(PyObject *fut, PyObject *value)
{
    FutureObject *f = (FutureObject *)fut;
    if (f->state != ST_PENDING) {
        PyErr_Format(fstate(f)->InvalidStateError,
                     "set_result(): the Future is already %s",
                     state_names[f->state]);
        return -1;
    }
    return settle(f, Py_NewRef(value), false, ST_DONE);
}

/* A StopIteration raised out of a Future's await would end the awaiting
 * coroutine as if it returned: wrap it in RuntimeError, as asyncio does.
 * Returns a new reference (exc itself when it needs no wrapping). */
static PyObject *
wrap_stop_iteration(PyObject *exc)
{
    if (!PyErr_GivenExceptionMatches(exc, PyExc_StopIteration)) {
        return Py_NewRef(exc);
    }
    PyObject *err = PyObject_CallFunction(
        PyExc_RuntimeError, "s",
        "StopIteration interacts badly with generators and cannot be "
        "raised into a Future");
    if (err == NULL) {
        return NULL;
    }
    PyException_SetCause(err, Py_NewRef(exc));
    PyException_SetContext(err, Py_NewRef(exc));
    return err;
}

int
future_set_exception(PyObject *fut, PyObject *exc)
{
    FutureObject *f = (FutureObject *)fut;
    if (f->state != ST_PENDING) {
        PyErr_Format(fstate(f)->InvalidStateError,
                     "set_exception(): the Future is already %s",
                     state_names[f->state]);
        return -1;
    }
    PyObject *value = wrap_stop_iteration(exc);
    if (value == NULL) {
        return -1;
    }
    return settle(f, value, true, ST_FAILED);
}

static PyObject *
make_cancelled(tc_state *st, PyObject *msg)
{
    if (msg != NULL && msg != Py_None) {
        return PyObject_CallOneArg(st->CancelledError, msg);
    }
    return PyObject_CallNoArgs(st->CancelledError);
}

/* Returns 1 cancelled, 0 not pending, -1 error. */
int
future_cancel(PyObject *fut, PyObject *msg)
{
    FutureObject *f = (FutureObject *)fut;
    if (f->state != ST_PENDING) {
        return 0;
    }
    if (f->task != NULL && cputask_check(f->task)) {
        cputask_cancel(f->task);   /* dequeues it if it has not started */
    }
    PyObject *hook = f->cancel_hook;
    f->cancel_hook = NULL;
    if (hook != NULL) {
        PyObject *res = PyObject_CallNoArgs(hook);
        Py_DECREF(hook);
        if (res == NULL) {
            if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt) ||
                PyErr_ExceptionMatches(PyExc_SystemExit)) {
                return -1;
            }
            tcpy_log_current(fstate(f), "a cancel hook");
        }
        Py_XDECREF(res);
    }
    if (f->state != ST_PENDING) {   /* the hook settled it */
        return f->state == ST_CANCELLED;
    }
    PyObject *exc = make_cancelled(fstate(f), msg);
    if (exc == NULL) {
        return -1;
    }
    f->handled = true;   /* cancelling is observing */
    if (settle(f, exc, true, ST_CANCELLED) < 0) {
        return -1;
    }
    return 1;
}

/* ---- the chain ----------------------------------------------------------- */

static int
push_entry(FutureObject *f, entry_t *e)
{
    if (f->head + f->len == f->cap) {
        if (f->head > 0) {
            memmove(f->entries, f->entries + f->head,
                    f->len * sizeof(entry_t));
            f->head = 0;
        }
        if (f->len == f->cap) {
            size_t cap = f->cap ? f->cap * 2 : 2;
            entry_t *items = PyMem_Realloc(f->entries, cap * sizeof(entry_t));
            if (items == NULL) {
                clear_entry(e);
                PyErr_NoMemory();
                return -1;
            }
            f->entries = items;
            f->cap = cap;
        }
    }
    f->entries[f->head + f->len] = *e;
    f->len++;
    if (f->state != ST_PENDING) {
        return run_callbacks(f);
    }
    return 0;
}

static PyObject *
call_with(PyObject *fn, PyObject *first, PyObject *args, PyObject *kwargs)
{
    Py_ssize_t n = args != NULL ? PyTuple_GET_SIZE(args) : 0;
    if (n == 0 && (kwargs == NULL || PyDict_GET_SIZE(kwargs) == 0)) {
        return PyObject_CallOneArg(fn, first);
    }
    PyObject *full = PyTuple_New(n + 1);
    if (full == NULL) {
        return NULL;
    }
    PyTuple_SET_ITEM(full, 0, Py_NewRef(first));
    for (Py_ssize_t i = 0; i < n; i++) {
        PyTuple_SET_ITEM(full, i + 1, Py_NewRef(PyTuple_GET_ITEM(args, i)));
    }
    PyObject *res = PyObject_Call(fn, full, kwargs);
    Py_DECREF(full);
    return res;
}

static void resume(FutureObject *paused, PyObject *value, bool failed);

/* Runs one entry; returns the new result (new ref) with *failed set, or
 * NULL with an exception set for KeyboardInterrupt/SystemExit. */
static PyObject *
run_entry(FutureObject *f, entry_t *e, bool *failed, bool *pause_on)
{
    PyObject *cur = f->result;
    *pause_on = false;
    if (e->kind == ENTRY_RESUME) {
        resume((FutureObject *)e->fn[0], cur, f->failed);
        if (f->failed) {
            f->handled = true;   /* the paused chain took the failure */
        }
        *failed = false;
        return Py_NewRef(Py_None);   /* as Twisted: the inner result is
                                        consumed by the outer chain */
    }
    PyObject *res;
    if (e->kind == ENTRY_OBSERVE) {
        res = PyObject_CallOneArg(e->fn[0], (PyObject *)f);
        if (res != NULL) {
            Py_DECREF(res);
            *failed = f->failed;
            return Py_NewRef(cur);
        }
    } else {
        int side = f->failed ? 1 : 0;
        PyObject *fn = e->fn[side];
        if (fn == NULL) {   /* pass through */
            *failed = f->failed;
            return Py_NewRef(cur);
        }
        if (f->failed) {
            f->handled = true;
        }
        res = call_with(fn, cur, e->args[side], e->kwargs[side]);
        if (res != NULL) {
            *failed = false;
            if (future_check(fstate(f), res)) {
                *pause_on = true;
            }
            return res;
        }
    }
    PyObject *exc = tcpy_fetch_exception();
    /* An errback that re-raises the failure it was given passes it on,
     * whatever its type: a SystemExit or KeyboardInterrupt that a task
     * raised on a worker is this future's result, not a request to stop
     * the reactor.  Raised anew, they are. */
    bool passed_on = f->failed && exc == cur;
    if (!passed_on &&
        (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
         PyErr_GivenExceptionMatches(exc, PyExc_SystemExit))) {
        tcpy_restore_exception(exc);
        return NULL;
    }
    if (exc != cur) {
        f->handled = false;
        PyObject *wrapped = wrap_stop_iteration(exc);
        if (wrapped == NULL) {   /* no memory: keep the original */
            PyErr_Clear();
        } else {
            Py_SETREF(exc, wrapped);
        }
    }
    *failed = true;
    return exc;
}

static int
run_callbacks(FutureObject *f)
{
    if (f->running_callbacks || f->paused) {
        return 0;
    }
    f->running_callbacks = true;
    Py_INCREF(f);
    int rc = 0;
    while (f->len > 0 && !f->paused) {
        entry_t e = f->entries[f->head];
        f->head++;
        f->len--;
        if (f->len == 0) {
            f->head = 0;
        }
        bool failed, pause_on;
        PyObject *res = run_entry(f, &e, &failed, &pause_on);
        clear_entry(&e);
        if (res == NULL) {
            rc = -1;
            break;
        }
        if (pause_on) {
            if (res == (PyObject *)f) {
                Py_DECREF(res);
                PyErr_SetString(fstate(f)->InvalidStateError,
                                "a callback returned its own Future");
                res = tcpy_fetch_exception();
                failed = true;
            } else {
                FutureObject *inner = (FutureObject *)res;
                f->paused++;
                entry_t link = {.kind = ENTRY_RESUME,
                                .fn = {Py_NewRef(f), NULL}};
                int prc = push_entry(inner, &link);
                Py_DECREF(res);
                if (prc < 0) {
                    rc = -1;
                    break;
                }
                /* Still paused: the loop ends here.  An inner Future that
                 * was already done resumed us inside push_entry(), whose
                 * run_callbacks() on us returned at once: go on. */
                continue;
            }
        }
        Py_XSETREF(f->result, res);
        f->failed = failed;
        if (failed && f->state == ST_DONE) {
            f->state = ST_FAILED;
        } else if (!failed && f->state == ST_FAILED) {
            f->state = ST_DONE;
        }
    }
    f->running_callbacks = false;
    Py_DECREF(f);
    return rc;
}

/* The inner Future a callback returned completed: resume the chain. */
static void
resume(FutureObject *f, PyObject *value, bool failed)
{
    f->paused--;
    Py_XSETREF(f->result, Py_NewRef(value));
    f->failed = failed;
    if (failed) {
        f->handled = false;
        if (f->state == ST_DONE) {
            f->state = ST_FAILED;
        }
    } else if (f->state == ST_FAILED) {
        f->state = ST_DONE;
    }
    if (run_callbacks(f) < 0) {
        /* KeyboardInterrupt inside a nested chain: keep it raised. */
    }
}

/* ---- Python methods ------------------------------------------------------ */

/* Allocation only: subclasses (the coroutine Task) take other arguments
 * and call super().__init__(reactor). */
static PyObject *
Future_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    (void)args;
    (void)kwargs;
    FutureObject *f = (FutureObject *)type->tp_alloc(type, 0);
    if (f == NULL) {
        return NULL;
    }
    f->result = Py_NewRef(Py_None);
    f->state = ST_PENDING;
    return (PyObject *)f;
}

static int
Future_init(PyObject *self, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"reactor", NULL};
    PyObject *reactor = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Future", kwlist,
                                     &reactor)) {
        return -1;
    }
    FutureObject *f = (FutureObject *)self;
    if (reactor != Py_None &&
        !PyObject_TypeCheck(reactor, fstate(f)->Reactor_type)) {
        PyErr_Format(PyExc_TypeError,
                     "Future(): 'reactor' must be a Reactor or None, got "
                     "%.100s", Py_TYPE(reactor)->tp_name);
        return -1;
    }
    Py_XSETREF(f->reactor, reactor == Py_None ? NULL : Py_NewRef(reactor));
    return 0;
}

PyObject *
future_new(tc_state *st, PyObject *reactor)
{
    FutureObject *f = PyObject_GC_New(FutureObject, st->Future_type);
    if (f == NULL) {
        return NULL;
    }
    memset((char *)f + sizeof(PyObject), 0,
           sizeof(FutureObject) - sizeof(PyObject));
    f->reactor = Py_XNewRef(reactor);
    f->result = Py_NewRef(Py_None);
    f->state = ST_PENDING;
    PyObject_GC_Track(f);
    return (PyObject *)f;
}

void
future_set_task(PyObject *fut, PyObject *task, PyObject *cancel_hook)
{
    FutureObject *f = (FutureObject *)fut;
    Py_XSETREF(f->task, Py_XNewRef(task));
    Py_XSETREF(f->cancel_hook, Py_XNewRef(cancel_hook));
}

bool
future_is_pending(PyObject *fut)
{
    return ((FutureObject *)fut)->state == ST_PENDING;
}

PyObject *
future_reactor(PyObject *fut)
{
    return ((FutureObject *)fut)->reactor;
}

void
future_set_handled(PyObject *fut)
{
    ((FutureObject *)fut)->handled = true;
}

static bool
is_running(FutureObject *f)
{
    return f->state == ST_PENDING && f->task != NULL &&
           cputask_started(f->task);
}

static PyObject *
Future_get_state(FutureObject *f, void *closure)
{
    (void)closure;
    if (is_running(f)) {
        return PyUnicode_FromString("running");
    }
    return PyUnicode_FromString(state_names[f->state]);
}

static PyObject *
Future_done(FutureObject *f, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(f->state != ST_PENDING);
}

static PyObject *
Future_running(FutureObject *f, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(is_running(f));
}

static PyObject *
Future_cancelled(FutureObject *f, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(f->state == ST_CANCELLED);
}

static int
check_done(FutureObject *f, const char *what)
{
    if (f->state == ST_PENDING || f->paused) {
        PyErr_Format(fstate(f)->InvalidStateError,
                     "%s(): the Future is not done", what);
        return -1;
    }
    return 0;
}

static PyObject *
Future_result(FutureObject *f, PyObject *unused)
{
    (void)unused;
    if (check_done(f, "result") < 0) {
        return NULL;
    }
    if (f->failed) {
        f->handled = true;
        PyErr_SetObject((PyObject *)Py_TYPE(f->result), f->result);
        return NULL;
    }
    return Py_NewRef(f->result);
}

static PyObject *
Future_exception(FutureObject *f, PyObject *unused)
{
    (void)unused;
    if (check_done(f, "exception") < 0) {
        return NULL;
    }
    if (f->failed) {
        f->handled = true;
        return Py_NewRef(f->result);
    }
    Py_RETURN_NONE;
}

/* Settling runs the callbacks, and resumes the coroutines awaiting, on
 * the calling thread: from any thread but the reactor's they would race
 * with it, and a coroutine would never resume.  Refuse at once, as asyncio
 * refuses a Future of another loop; call_from_thread() is the way over.
 * A Future without a reactor, or of a closed one, is not checked. */
static int
check_owner(FutureObject *f, const char *what)
{
    if (f->reactor == NULL ||
        !PyObject_TypeCheck(f->reactor, fstate(f)->Reactor_type)) {
        return 0;
    }
    tc_loop_t *loop = ((ReactorObject *)f->reactor)->loop;
    if (loop == NULL || tc_loop_is_owner_thread(loop)) {
        return 0;
    }
    PyErr_Format(PyExc_RuntimeError,
                 "%s(): called from a thread other than its reactor's; use "
                 "reactor.call_from_thread(future.%s, ...)", what, what);
    return -1;
}

int
future_check_owner(PyObject *fut, const char *what)
{
    return check_owner((FutureObject *)fut, what);
}

static PyObject *
Future_set_result(FutureObject *f, PyObject *value)
{
    if (check_owner(f, "set_result") < 0) {
        return NULL;
    }
    if (future_set_result((PyObject *)f, value) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Future_set_exception(FutureObject *f, PyObject *exc)
{
    if (check_owner(f, "set_exception") < 0) {
        return NULL;
    }
    PyObject *inst;
    if (PyType_Check(exc)) {
        inst = PyObject_CallNoArgs(exc);
        if (inst == NULL) {
            return NULL;
        }
    } else {
        inst = Py_NewRef(exc);
    }
    if (!PyExceptionInstance_Check(inst)) {
        PyErr_Format(PyExc_TypeError,
                     "set_exception(): 'exc' must be an exception, got %.100s",
                     Py_TYPE(inst)->tp_name);
        Py_DECREF(inst);
        return NULL;
    }
    int rc = future_set_exception((PyObject *)f, inst);
    Py_DECREF(inst);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
Future_cancel(FutureObject *f, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"msg", NULL};
    PyObject *msg = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:cancel", kwlist,
                                     &msg)) {
        return NULL;
    }
    if (check_owner(f, "cancel") < 0) {
        return NULL;
    }
    int rc = future_cancel((PyObject *)f, msg);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static int
check_callable(PyObject *fn, const char *method, const char *arg)
{
    if (!PyCallable_Check(fn)) {
        PyErr_Format(PyExc_TypeError, "%s(): '%s' must be callable, got "
                     "%.100s", method, arg, Py_TYPE(fn)->tp_name);
        return -1;
    }
    return 0;
}

static PyObject *
add_entry(FutureObject *f, entry_t *e)
{
    if (push_entry(f, e) < 0) {
        return NULL;
    }
    return Py_NewRef((PyObject *)f);
}

static PyObject *
Future_add_callbacks(FutureObject *f, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"callback", "errback", "callback_args",
                             "callback_kwargs", "errback_args",
                             "errback_kwargs", NULL};
    PyObject *cb, *eb = Py_None, *cba = NULL, *cbk = Py_None, *eba = NULL,
                  *ebk = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O|OO!OO!O:add_callbacks",
                                     kwlist, &cb, &eb, &PyTuple_Type, &cba,
                                     &cbk, &PyTuple_Type, &eba, &ebk)) {
        return NULL;
    }
    if (check_callable(cb, "add_callbacks", "callback") < 0 ||
        (eb != Py_None && check_callable(eb, "add_callbacks", "errback") < 0)) {
        return NULL;
    }
    if ((cbk != Py_None && !PyDict_Check(cbk)) ||
        (ebk != Py_None && !PyDict_Check(ebk))) {
        PyErr_SetString(PyExc_TypeError,
                        "add_callbacks(): keyword arguments must be dicts");
        return NULL;
    }
    entry_t e = {.kind = ENTRY_PAIR,
                 .fn = {Py_NewRef(cb), eb == Py_None ? NULL : Py_NewRef(eb)},
                 .args = {Py_XNewRef(cba), Py_XNewRef(eba)},
                 .kwargs = {cbk == Py_None ? NULL : Py_NewRef(cbk),
                            ebk == Py_None ? NULL : Py_NewRef(ebk)}};
    return add_entry(f, &e);
}

int
future_add_callbacks(PyObject *fut, PyObject *callback, PyObject *errback)
{
    entry_t e = {.kind = ENTRY_PAIR,
                 .fn = {Py_NewRef(callback), Py_XNewRef(errback)}};
    return push_entry((FutureObject *)fut, &e);
}

/* add_callback / add_errback / add_both: fn(value, *args, **kwargs). */
static PyObject *
add_one(FutureObject *f, PyObject *args, PyObject *kwargs, const char *name,
        bool on_success, bool on_failure)
{
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 1) {
        PyErr_Format(PyExc_TypeError, "%s(): missing the callable 'fn'",
                     name);
        return NULL;
    }
    PyObject *fn = PyTuple_GET_ITEM(args, 0);
    if (check_callable(fn, name, "fn") < 0) {
        return NULL;
    }
    PyObject *rest = PyTuple_GetSlice(args, 1, n);
    if (rest == NULL) {
        return NULL;
    }
    entry_t e = {.kind = ENTRY_PAIR};
    if (on_success) {
        e.fn[0] = Py_NewRef(fn);
        e.args[0] = Py_NewRef(rest);
        e.kwargs[0] = Py_XNewRef(kwargs);
    }
    if (on_failure) {
        e.fn[1] = Py_NewRef(fn);
        e.args[1] = Py_NewRef(rest);
        e.kwargs[1] = Py_XNewRef(kwargs);
    }
    Py_DECREF(rest);
    return add_entry(f, &e);
}

static PyObject *
Future_add_callback(FutureObject *f, PyObject *args, PyObject *kwargs)
{
    return add_one(f, args, kwargs, "add_callback", true, false);
}

static PyObject *
Future_add_errback(FutureObject *f, PyObject *args, PyObject *kwargs)
{
    return add_one(f, args, kwargs, "add_errback", false, true);
}

static PyObject *
Future_add_both(FutureObject *f, PyObject *args, PyObject *kwargs)
{
    return add_one(f, args, kwargs, "add_both", true, true);
}

static PyObject *
Future_add_done_callback(FutureObject *f, PyObject *fn)
{
    if (check_callable(fn, "add_done_callback", "fn") < 0) {
        return NULL;
    }
    entry_t e = {.kind = ENTRY_OBSERVE, .fn = {Py_NewRef(fn), NULL}};
    return add_entry(f, &e);
}

/* ---- await ---------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    FutureObject *future;   /* NULL once finished */
} FutureIterObject;

static PyObject *
Future_await(FutureObject *f)
{
    tc_state *st = fstate(f);
    FutureIterObject *it = PyObject_GC_New(FutureIterObject,
                                           st->FutureIter_type);
    if (it == NULL) {
        return NULL;
    }
    it->future = (FutureObject *)Py_NewRef(f);
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *
FutureIter_next(FutureIterObject *it)
{
    FutureObject *f = it->future;
    if (f == NULL) {
        return NULL;
    }
    if (f->state == ST_PENDING || f->paused) {
        return Py_NewRef((PyObject *)f);   /* suspend on this Future */
    }
    it->future = NULL;
    PyObject *res = Future_result(f, NULL);
    Py_DECREF(f);
    if (res == NULL) {
        return NULL;
    }
    /* StopIteration(res), wrapping a tuple or StopIteration itself. */
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, res);
    Py_DECREF(res);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

/* `await` on 3.10+ (SEND through PyIter_Send): the result comes back
 * without a StopIteration made and caught per await. */
static PySendResult
FutureIter_am_send(FutureIterObject *it, PyObject *value, PyObject **result)
{
    (void)value;
    FutureObject *f = it->future;
    if (f == NULL) {
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    if (f->state == ST_PENDING || f->paused) {
        *result = Py_NewRef((PyObject *)f);
        return PYGEN_NEXT;
    }
    it->future = NULL;
    *result = Future_result(f, NULL);
    Py_DECREF(f);
    return *result != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

static PyObject *
FutureIter_send(FutureIterObject *it, PyObject *value)
{
    (void)value;
    return FutureIter_next(it);
}

static PyObject *
FutureIter_throw(FutureIterObject *it, PyObject *args)
{
    Py_CLEAR(it->future);
    return tcpy_raise_thrown(args);
}

static PyObject *
FutureIter_close(FutureIterObject *it, PyObject *unused)
{
    (void)unused;
    Py_CLEAR(it->future);
    Py_RETURN_NONE;
}

static int
FutureIter_traverse(FutureIterObject *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->future);
    return 0;
}

static int
FutureIter_clear(FutureIterObject *it)
{
    Py_CLEAR(it->future);
    return 0;
}

static void
FutureIter_dealloc(FutureIterObject *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    Py_CLEAR(it->future);
    tp->tp_free((PyObject *)it);
    Py_DECREF(tp);
}

static PyMethodDef FutureIter_methods[] = {
    {"send", (PyCFunction)FutureIter_send, METH_O, NULL},
    {"throw", (PyCFunction)FutureIter_throw, METH_VARARGS, NULL},
    {"close", (PyCFunction)FutureIter_close, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot FutureIter_slots[] = {
    {Py_tp_dealloc, FutureIter_dealloc},
    {Py_tp_traverse, FutureIter_traverse},
    {Py_tp_clear, FutureIter_clear},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, FutureIter_next},
    {Py_am_send, FutureIter_am_send},
    {Py_tp_methods, FutureIter_methods},
    {0, NULL},
};

PyType_Spec FutureIter_spec = {
    .name = "twincore._twincore.FutureIter",
    .basicsize = sizeof(FutureIterObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = FutureIter_slots,
};

/* ---- lifetime -------------------------------------------------------------- */

static void
Future_finalize(FutureObject *f)
{
    if (!f->failed || f->handled || f->result == NULL) {
        return;
    }
    tc_state *st = fstate(f);
    if (st == NULL || PyObject_TypeCheck(f->result,
                                         (PyTypeObject *)st->CancelledError)) {
        PyErr_Clear();
        return;
    }
    PyObject *saved = tcpy_fetch_exception();
    PyObject *exc = f->result;
    PyObject *tb = PyException_GetTraceback(exc);
    PyObject *info = PyTuple_Pack(3, (PyObject *)Py_TYPE(exc), exc,
                                  tb ? tb : Py_None);
    Py_XDECREF(tb);
    PyObject *kwargs = info ? Py_BuildValue("{sO}", "exc_info", info) : NULL;
    PyObject *meth = PyObject_GetAttrString(st->logger, "error");
    PyObject *args = Py_BuildValue("(sO)",
                                   "twincore: unhandled failure in %r",
                                   (PyObject *)f);
    PyObject *res = (kwargs && meth && args) ? PyObject_Call(meth, args,
                                                             kwargs)
                                             : NULL;
    if (res == NULL) {
        PyErr_Clear();   /* interpreter shutdown: nothing left to log to */
    }
    Py_XDECREF(res);
    Py_XDECREF(args);
    Py_XDECREF(meth);
    Py_XDECREF(kwargs);
    Py_XDECREF(info);
    if (saved != NULL) {
        tcpy_restore_exception(saved);
    }
}

static int
Future_traverse(FutureObject *f, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(f));
    Py_VISIT(f->reactor);
    Py_VISIT(f->result);
    Py_VISIT(f->cancel_hook);
    Py_VISIT(f->task);
    for (size_t i = f->head; i < f->head + f->len; i++) {
        entry_t *e = &f->entries[i];
        for (int k = 0; k < 2; k++) {
            Py_VISIT(e->fn[k]);
            Py_VISIT(e->args[k]);
            Py_VISIT(e->kwargs[k]);
        }
    }
    return 0;
}

static int
Future_clear(FutureObject *f)
{
    Py_CLEAR(f->reactor);
    Py_CLEAR(f->cancel_hook);
    Py_CLEAR(f->task);
    for (size_t i = f->head; i < f->head + f->len; i++) {
        clear_entry(&f->entries[i]);
    }
    f->len = 0;
    f->head = 0;
    return 0;
}

static void
Future_dealloc(FutureObject *f)
{
    PyTypeObject *tp = Py_TYPE(f);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)f) < 0) {
        return;   /* resurrected */
    }
    PyObject_GC_UnTrack(f);
    if (f->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)f);
    }
    Future_clear(f);
    Py_CLEAR(f->result);
    PyMem_Free(f->entries);
    tp->tp_free((PyObject *)f);
    Py_DECREF(tp);
}

static PyObject *
Future_repr(FutureObject *f)
{
    const char *state = is_running(f) ? "running" : state_names[f->state];
    if (f->state == ST_DONE || f->failed) {
        return PyUnicode_FromFormat("<twincore.Future %s %.60R>", state,
                                    f->result);
    }
    return PyUnicode_FromFormat("<twincore.Future %s>", state);
}

/* ---- attributes the Python layer uses -------------------------------------- */

static PyObject *
Future_get_cancel_hook(FutureObject *f, void *closure)
{
    (void)closure;
    return Py_NewRef(f->cancel_hook ? f->cancel_hook : Py_None);
}

static int
Future_set_cancel_hook(FutureObject *f, PyObject *v, void *closure)
{
    (void)closure;
    Py_XSETREF(f->cancel_hook, (v == NULL || v == Py_None) ? NULL
                                                           : Py_NewRef(v));
    return 0;
}

static PyObject *
Future_get_handled(FutureObject *f, void *closure)
{
    (void)closure;
    return PyBool_FromLong(f->handled);
}

static int
Future_set_handled(FutureObject *f, PyObject *v, void *closure)
{
    (void)closure;
    int truth = v ? PyObject_IsTrue(v) : 0;
    if (truth < 0) {
        return -1;
    }
    f->handled = truth;
    return 0;
}

static PyObject *
Future_get_reactor(FutureObject *f, void *closure)
{
    (void)closure;
    return Py_NewRef(f->reactor ? f->reactor : Py_None);
}

static PyObject *
Future_get_task(FutureObject *f, void *closure)
{
    (void)closure;
    return Py_NewRef(f->task ? f->task : Py_None);
}

static int
Future_set_task(FutureObject *f, PyObject *v, void *closure)
{
    (void)closure;
    Py_XSETREF(f->task, (v == NULL || v == Py_None) ? NULL : Py_NewRef(v));
    return 0;
}

/* Deferred.addTimeout: the timer and the chain's entry are Python
 * (twincore/_timeouts.py), called as any user would. */
static PyObject *
Future_with_timeout(FutureObject *f, PyObject *timeout)
{
    PyObject *mod = PyImport_ImportModule("twincore._timeouts");
    if (mod == NULL) {
        return NULL;
    }
    PyObject *res = PyObject_CallMethod(mod, "future_with_timeout", "OO",
                                        (PyObject *)f, timeout);
    Py_DECREF(mod);
    return res;
}

static PyMethodDef Future_methods[] = {
    {"with_timeout", (PyCFunction)Future_with_timeout, METH_O,
     "with_timeout($self, timeout, /)\n--\n\nCancel this Future after "
     "timeout seconds unless it is done\nfirst; the chain then fails "
     "with TimeoutError (Deferred.addTimeout).\nReturns self."},
    {"done", (PyCFunction)Future_done, METH_NOARGS,
     "done($self, /)\n--\n\nTrue once it has a result, a failure, or was "
     "cancelled."},
    {"running", (PyCFunction)Future_running, METH_NOARGS,
     "running($self, /)\n--\n\nTrue while a CPU worker runs its task."},
    {"cancelled", (PyCFunction)Future_cancelled, METH_NOARGS,
     "cancelled($self, /)\n--\n\n"},
    {"result", (PyCFunction)Future_result, METH_NOARGS,
     "result($self, /)\n--\n\nThe chain's current result; raises its "
     "failure, or InvalidStateError while pending."},
    {"exception", (PyCFunction)Future_exception, METH_NOARGS,
     "exception($self, /)\n--\n\nThe failure or None; InvalidStateError "
     "while pending."},
    {"set_result", (PyCFunction)Future_set_result, METH_O,
     "set_result($self, value, /)\n--\n\nComplete with value; "
     "InvalidStateError if already done. RuntimeError on a thread other "
     "than its reactor's (use reactor.call_from_thread)."},
    {"set_exception", (PyCFunction)Future_set_exception, METH_O,
     "set_exception($self, exc, /)\n--\n\nFail with exc (an exception "
     "instance or class); a StopIteration is wrapped in RuntimeError, as "
     "asyncio does. RuntimeError on a thread other than its reactor's."},
    {"cancel", (PyCFunction)(void (*)(void))Future_cancel,
     METH_VARARGS | METH_KEYWORDS,
     "cancel($self, msg=None)\n--\n\nCancel a pending Future: errbacks get "
     "CancelledError. True if it was cancelled. RuntimeError on a thread "
     "other than its reactor's."},
    {"add_callbacks", (PyCFunction)(void (*)(void))Future_add_callbacks,
     METH_VARARGS | METH_KEYWORDS,
     "add_callbacks($self, callback, errback=None, callback_args=(), "
     "callback_kwargs=None, errback_args=(), errback_kwargs=None)\n--\n\n"
     "Add a callback/errback pair; returns self."},
    {"add_callback", (PyCFunction)(void (*)(void))Future_add_callback,
     METH_VARARGS | METH_KEYWORDS,
     "add_callback($self, fn, /, *args, **kwargs)\n--\n\nfn(result, ...) on "
     "success; its return value is the new result."},
    {"add_errback", (PyCFunction)(void (*)(void))Future_add_errback,
     METH_VARARGS | METH_KEYWORDS,
     "add_errback($self, fn, /, *args, **kwargs)\n--\n\nfn(exception, ...) "
     "on failure; returning recovers, raising passes a failure on."},
    {"add_both", (PyCFunction)(void (*)(void))Future_add_both,
     METH_VARARGS | METH_KEYWORDS,
     "add_both($self, fn, /, *args, **kwargs)\n--\n\nfn(result or "
     "exception, ...) either way."},
    {"add_done_callback", (PyCFunction)Future_add_done_callback, METH_O,
     "add_done_callback($self, fn, /)\n--\n\nasyncio style: fn(self) once "
     "done; does not change the chain."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Future_getset[] = {
    {"state", (getter)Future_get_state, NULL,
     "'pending', 'running', 'done', 'failed' or 'cancelled'.", NULL},
    {"_cancel_hook", (getter)Future_get_cancel_hook,
     (setter)Future_set_cancel_hook, NULL, NULL},
    {"_handled", (getter)Future_get_handled, (setter)Future_set_handled, NULL,
     NULL},
    {"_reactor", (getter)Future_get_reactor, NULL, NULL, NULL},
    {"_task", (getter)Future_get_task, (setter)Future_set_task, NULL, NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef Future_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(FutureObject, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyObject *
Future_iter(FutureObject *f)
{
    return Future_await(f);
}

static PyType_Slot Future_slots[] = {
    {Py_tp_new, Future_new},
    {Py_tp_init, Future_init},
    {Py_tp_dealloc, Future_dealloc},
    {Py_tp_finalize, Future_finalize},
    {Py_tp_traverse, Future_traverse},
    {Py_tp_clear, Future_clear},
    {Py_tp_methods, Future_methods},
    {Py_tp_getset, Future_getset},
    {Py_tp_members, Future_members},
    {Py_tp_repr, Future_repr},
    {Py_tp_iter, Future_iter},
    {Py_am_await, Future_await},
    {Py_tp_doc,
     "Future(reactor=None)\n--\n\nA result that arrives later, on the "
     "reactor thread: Deferred-style callbacks, and awaitable. A failure "
     "nobody handled is logged when the Future is dropped. A Future of a "
     "reactor is settled and cancelled on that reactor's thread only, and "
     "awaited only by coroutines of that reactor."},
    {0, NULL},
};

PyType_Spec Future_spec = {
    .name = "twincore._twincore.Future",
    .basicsize = sizeof(FutureObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
    .slots = Future_slots,
};
