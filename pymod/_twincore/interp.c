/* InterpreterPool (3.12+): Python functions run in subinterpreters, each
 * with its own GIL, on the native pool.
 *
 * The pool is a tc_pool_t like any other: its queue, priorities, cancel,
 * stats and its completion route (native_submit, capi.c) are the ones every
 * lane shares.  Each worker thread creates one subinterpreter
 * (Py_NewInterpreterFromConfig, PyInterpreterConfig_OWN_GIL) on its first
 * task and reuses it; a pthread key destructor ends it on that thread when
 * the worker exits (tc_pool_shutdown joins it).  A task is (module,
 * qualified name, pickled (args, kwargs)): the worker reads the caller's
 * bytes in place, and the runner module (twincore/_interp_worker.py,
 * compiled once in the main interpreter and handed over marshalled, so no
 * worker runs the compiler) imports the function, calls it and pickles the
 * outcome, which is copied into C memory.  On the reactor's thread
 * to_python() unpickles it under the main interpreter's GIL.  No object
 * ever crosses interpreters.  Each worker times its start-up
 * (stats()["startup"]): that is the whole cost of a worker, since the
 * thread itself starts in microseconds.
 *
 * A running task is stopped with PyThreadState_SetAsyncExc(KeyboardInterrupt)
 * inside its interpreter: a helper thread takes that interpreter's GIL with
 * a thread state of its own.  slot_t.pins keeps the interpreter alive
 * meanwhile; the worker clears an interrupt that arrives after its task. */
#include "capi.h"
#include "cpu.h"
#include "errors.h"
#include "future.h"
#include "interp.h"
#include "module.h"
#include "reactor.h"

#if PY_VERSION_HEX >= 0x030C0000

#include <marshal.h>
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#define RAISED (-EREMOTEIO)   /* the call raised: counted failed */

typedef struct core core_t;

/* One worker thread and its interpreter. */
typedef struct slot {
    core_t *core;
    PyThreadState *tstate;      /* the worker's, in its interpreter */
    PyInterpreterState *interp;
    PyObject *run, *describe;   /* the runner's, in that interpreter */
    unsigned long thread_id;
    uint64_t running;           /* id of the task it runs, 0: none */
    unsigned pins;              /* interrupters about to enter interp */
    bool interrupted;           /* an async exception was sent */
    bool gone;                  /* the interpreter ended */
    /* Start-up: Py_NewInterpreterFromConfig, then loading the runner
     * (wall clock), and the thread's CPU time for both. */
    uint64_t interp_ns, runner_ns, cpu_ns;
} slot_t;

/* What the pool object, its workers and interrupters share; freed by the
 * last of them. */
struct core {
    pthread_mutex_t lock;       /* guards: slots[*], nslots, refs */
    pthread_cond_t unpinned;
    unsigned refs;
    unsigned nslots, cap;       /* slots claimed, and there are */
    slot_t *slots;
    atomic_bool cancel_all;     /* close(cancel_queued=True) */
    char *runner_code;          /* _interp_worker.py's code, marshalled */
    size_t runner_len;
};

typedef struct InterpPoolObject {
    PyObject_HEAD
    tc_pool_t *pool;            /* NULL once closed */
    tc_pool_t *closing;         /* closed, workers not yet joined */
    tc_pool_shutdown_mode_t closing_mode;
    core_t *core;
    unsigned workers;
    uint64_t next_id;
    PyObject *loads, *rebuild;  /* main interpreter's helpers */
    PyObject *weakreflist;
} InterpPoolObject;

enum { OUT_RESULT = 0, OUT_RAISED, OUT_CANCELLED, OUT_BROKEN };

/* A task: C memory, owned by the route (to_python) and by the Future's
 * cancel hook (a capsule); both drop their reference under the GIL. */
typedef struct itask {
    unsigned refs;
    InterpPoolObject *pool;     /* strong */
    PyObject *payload;          /* bytes, strong: read by the worker */
    char *module, *qualname, *main_path;
    tc_work_t *work;            /* NULL once the pool is done with it */
    uint64_t id;
    int slot;                   /* the worker that ran it, or -1 */
    bool cancel;                /* guards: core lock; asked before it ran */
    /* The outcome, written by the worker. */
    int kind;
    char *out;                  /* pickled result or exception */
    size_t out_len;
    char *exc_module, *exc_qualname, *exc_msg, *exc_tb;
} itask_t;

static pthread_key_t slot_key;
static pthread_once_t slot_key_once = PTHREAD_ONCE_INIT;
static _Thread_local slot_t *my_slot;

static void
core_release(core_t *c)
{
    pthread_mutex_lock(&c->lock);
    bool last = --c->refs == 0;
    pthread_mutex_unlock(&c->lock);
    if (last) {
        pthread_cond_destroy(&c->unpinned);
        pthread_mutex_destroy(&c->lock);
        free(c->slots);
        free(c->runner_code);
        free(c);
    }
}

/* Thread: worker, at its exit (pthread key destructor).  End the
 * interpreter once no interrupter is about to enter it. */
static void
slot_end(void *arg)
{
    slot_t *s = arg;
    core_t *c = s->core;
    pthread_mutex_lock(&c->lock);
    s->gone = true;
    while (s->pins > 0) {
        pthread_cond_wait(&c->unpinned, &c->lock);
    }
    pthread_mutex_unlock(&c->lock);
    PyEval_RestoreThread(s->tstate);
    Py_CLEAR(s->run);
    Py_CLEAR(s->describe);
    Py_EndInterpreter(s->tstate);
    my_slot = NULL;
    core_release(c);
}

static void
make_slot_key(void)
{
    pthread_key_create(&slot_key, slot_end);
}

static char *
dup_utf8(PyObject *str)
{
    const char *p = PyUnicode_AsUTF8(str);
    char *copy = p != NULL ? strdup(p) : NULL;
    if (p != NULL && copy == NULL) {
        PyErr_NoMemory();
    }
    return copy;
}

/* Thread: worker, GIL: none.  Create this thread's interpreter and load
 * the runner in it.  NULL with *why (static text) on failure. */
static slot_t *
slot_start(core_t *c, const char **why)
{
    uint64_t t0 = tcpy_clock_ns(CLOCK_MONOTONIC);
    uint64_t cpu0 = tcpy_clock_ns(CLOCK_THREAD_CPUTIME_ID);
    pthread_once(&slot_key_once, make_slot_key);
    /* Claimed now, listed (interp set) once the interpreter is ready. */
    pthread_mutex_lock(&c->lock);
    if (c->nslots == c->cap) {
        pthread_mutex_unlock(&c->lock);
        *why = "no free worker slot";
        return NULL;
    }
    slot_t *s = &c->slots[c->nslots++];
    memset(s, 0, sizeof(*s));
    s->core = c;
    pthread_mutex_unlock(&c->lock);

    PyInterpreterConfig config = {
        .use_main_obmalloc = 0,
        .allow_fork = 0,
        .allow_exec = 0,
        .allow_threads = 1,
        .allow_daemon_threads = 0,
        .check_multi_interp_extensions = 1,
        .gil = PyInterpreterConfig_OWN_GIL,
    };
    PyThreadState *ts = NULL;
    PyStatus status = Py_NewInterpreterFromConfig(&ts, &config);
    if (PyStatus_Exception(status) || ts == NULL) {
        *why = "Py_NewInterpreterFromConfig() failed";
        return NULL;
    }
    uint64_t t1 = tcpy_clock_ns(CLOCK_MONOTONIC);
    PyObject *code = PyMarshal_ReadObjectFromString(
        c->runner_code, (Py_ssize_t)c->runner_len);
    PyObject *mod = code != NULL
                        ? PyImport_ExecCodeModule("_twincore_interp_worker",
                                                  code)
                        : NULL;
    Py_XDECREF(code);
    if (mod != NULL) {
        s->run = PyObject_GetAttrString(mod, "run");
        s->describe = PyObject_GetAttrString(mod, "describe");
        Py_DECREF(mod);
    }
    if (s->run == NULL || s->describe == NULL) {
        PyErr_Print();
        Py_CLEAR(s->run);
        Py_CLEAR(s->describe);
        Py_EndInterpreter(ts);
        *why = "the runner failed to load in the subinterpreter";
        return NULL;
    }
    PyEval_SaveThread();
    uint64_t t2 = tcpy_clock_ns(CLOCK_MONOTONIC);
    uint64_t cpu = tcpy_clock_ns(CLOCK_THREAD_CPUTIME_ID) - cpu0;
    pthread_mutex_lock(&c->lock);
    s->interp_ns = t1 - t0;
    s->runner_ns = t2 - t1;
    s->cpu_ns = cpu;
    s->tstate = ts;
    s->interp = PyThreadState_GetInterpreter(ts);
    s->thread_id = PyThread_get_thread_ident();
    c->refs++;      /* the worker's, until slot_end */
    pthread_mutex_unlock(&c->lock);
    my_slot = s;
    pthread_setspecific(slot_key, s);
    return s;
}

static char *
copy_str(PyObject *obj)
{
    if (obj == NULL || !PyUnicode_Check(obj)) {
        return NULL;
    }
    const char *p = PyUnicode_AsUTF8(obj);
    if (p == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return strdup(p);
}

static int
copy_bytes(PyObject *obj, char **out, size_t *len)
{
    if (obj == NULL || !PyBytes_Check(obj)) {
        return -1;
    }
    *len = (size_t)PyBytes_GET_SIZE(obj);
    *out = malloc(*len ? *len : 1);
    if (*out == NULL) {
        return -1;
    }
    memcpy(*out, PyBytes_AS_STRING(obj), *len);
    return 0;
}

/* Thread: worker, GIL: the subinterpreter's.  Keep the outcome of a call
 * that raised: describe(exc) -> (module, qualname, pickled or None,
 * message, traceback text). */
static void
keep_exception(slot_t *s, itask_t *t)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *d = exc != NULL ? PyObject_CallOneArg(s->describe, exc)
                              : NULL;
    t->kind = OUT_RAISED;
    if (d != NULL && PyTuple_Check(d) && PyTuple_GET_SIZE(d) == 5) {
        t->exc_module = copy_str(PyTuple_GET_ITEM(d, 0));
        t->exc_qualname = copy_str(PyTuple_GET_ITEM(d, 1));
        if (copy_bytes(PyTuple_GET_ITEM(d, 2), &t->out, &t->out_len) < 0) {
            t->out = NULL;
        }
        t->exc_msg = copy_str(PyTuple_GET_ITEM(d, 3));
        t->exc_tb = copy_str(PyTuple_GET_ITEM(d, 4));
    } else {
        PyErr_Clear();
        t->exc_msg = strdup("the task failed and its exception could not "
                            "be described");
    }
    Py_XDECREF(d);
    Py_XDECREF(exc);
}

/* Thread: worker, GIL: takes its interpreter's. */
static int
interp_work(void *arg)
{
    itask_t *t = arg;
    core_t *c = t->pool->core;
    slot_t *s = my_slot;
    if (s == NULL) {
        const char *why = NULL;
        s = slot_start(c, &why);
        if (s == NULL) {
            t->kind = OUT_BROKEN;
            t->exc_msg = strdup(why);
            return -ECHILD;
        }
    }
    PyEval_RestoreThread(s->tstate);
    pthread_mutex_lock(&c->lock);
    bool skip = atomic_load(&c->cancel_all) || t->cancel;
    if (!skip) {
        s->running = t->id;
        t->slot = (int)(s - c->slots);
    }
    pthread_mutex_unlock(&c->lock);
    if (skip) {
        PyEval_SaveThread();
        t->kind = OUT_CANCELLED;
        return -ECANCELED;
    }
    /* The caller's bytes, read in place: the task holds them, and the
     * view does not outlive this call (pickle copies what it builds). */
    PyObject *view = PyMemoryView_FromMemory(
        PyBytes_AS_STRING(t->payload), PyBytes_GET_SIZE(t->payload),
        PyBUF_READ);
    PyObject *res = NULL;
    if (view != NULL) {
        res = PyObject_CallFunction(s->run, "sssO", t->module, t->qualname,
                                    t->main_path ? t->main_path : "", view);
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *rel = PyObject_CallMethod(view, "release", NULL);
        if (rel == NULL) {
            /* Something kept a view of the caller's memory: fail the
             * call rather than let it read freed memory later. */
            Py_CLEAR(res);
            Py_CLEAR(exc);
        } else {
            Py_DECREF(rel);
            PyErr_SetRaisedException(exc);
        }
        Py_DECREF(view);
    }
    int rc = 0;
    if (res != NULL && copy_bytes(res, &t->out, &t->out_len) == 0) {
        t->kind = OUT_RESULT;
    } else {
        if (res != NULL) {
            PyErr_NoMemory();
        }
        keep_exception(s, t);
        rc = RAISED;
    }
    Py_XDECREF(res);
    pthread_mutex_lock(&c->lock);
    s->running = 0;
    if (s->interrupted) {
        /* Cancelled or timed out while it ran: its Future is settled, and
         * an exception still pending must not hit the next task. */
        s->interrupted = false;
        PyThreadState_SetAsyncExc(s->thread_id, NULL);
        t->kind = OUT_CANCELLED;
        rc = -ECANCELED;
    }
    pthread_mutex_unlock(&c->lock);
    PyErr_Clear();
    PyEval_SaveThread();
    return rc;
}

/* Thread: any, GIL: none (and no thread state).  Raise KeyboardInterrupt
 * in the task id running on slot i, if it still runs there. */
static void
interrupt_slot(core_t *c, unsigned i, uint64_t id)
{
    pthread_mutex_lock(&c->lock);
    slot_t *s = &c->slots[i];
    bool go = i < c->nslots && s->interp != NULL && !s->gone &&
              s->running == id && id != 0 && !s->interrupted;
    if (go) {
        s->pins++;
    }
    pthread_mutex_unlock(&c->lock);
    if (!go) {
        return;
    }
    PyThreadState *ts = PyThreadState_New(s->interp);
    if (ts != NULL) {
        PyEval_RestoreThread(ts);
        pthread_mutex_lock(&c->lock);
        if (s->running == id && !s->interrupted) {
            PyThreadState_SetAsyncExc(s->thread_id, PyExc_KeyboardInterrupt);
            s->interrupted = true;
        }
        pthread_mutex_unlock(&c->lock);
        PyThreadState_Clear(ts);
        PyThreadState_DeleteCurrent();
    }
    pthread_mutex_lock(&c->lock);
    s->pins--;
    pthread_cond_broadcast(&c->unpinned);
    pthread_mutex_unlock(&c->lock);
}

typedef struct interrupt_req {
    core_t *core;               /* one reference */
    unsigned slot;
    uint64_t id;
} interrupt_req_t;

static void *
interrupter_main(void *arg)
{
    interrupt_req_t *req = arg;
    interrupt_slot(req->core, req->slot, req->id);
    core_release(req->core);
    free(req);
    return NULL;
}

/* GIL: held.  Interrupt a running task on a helper thread: taking the
 * task's GIL may wait for its interpreter's switch interval (or longer in
 * a C call), which the reactor's thread must not. */
static void
interrupt_later(core_t *c, unsigned slot, uint64_t id)
{
    interrupt_req_t *req = malloc(sizeof(*req));
    if (req == NULL) {
        return;
    }
    pthread_mutex_lock(&c->lock);
    c->refs++;
    pthread_mutex_unlock(&c->lock);
    req->core = c;
    req->slot = slot;
    req->id = id;
    pthread_t tid;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pthread_create(&tid, &attr, interrupter_main, req) != 0) {
        core_release(c);
        free(req);
    }
    pthread_attr_destroy(&attr);
}

static void
itask_release(itask_t *t)
{
    if (--t->refs > 0) {
        return;
    }
    Py_XDECREF(t->pool);
    Py_XDECREF(t->payload);
    free(t->module);
    free(t->qualname);
    free(t->main_path);
    free(t->out);
    free(t->exc_module);
    free(t->exc_qualname);
    free(t->exc_msg);
    free(t->exc_tb);
    free(t);
}

static PyObject *
maybe_str(const char *s)
{
    return s != NULL ? PyUnicode_FromString(s) : Py_NewRef(Py_None);
}

/* Thread: loop, GIL: held.  The outcome as the Future's result, or NULL
 * with its exception. */
static PyObject *
interp_to_python(void *arg, int status)
{
    itask_t *t = arg;
    PyObject *res = NULL;
    tc_state *st = state_of_type(Py_TYPE(t->pool));
    if (status == -ECANCELED || t->kind == OUT_CANCELLED) {
        PyErr_SetNone(st != NULL ? st->CancelledError
                                 : PyExc_RuntimeError);
    } else if (t->kind == OUT_BROKEN) {
        PyErr_Format(PyExc_RuntimeError, "InterpreterPool: %s",
                     t->exc_msg ? t->exc_msg : "the worker failed");
    } else if (t->kind == OUT_RESULT) {
        PyObject *view = PyMemoryView_FromMemory(t->out, (Py_ssize_t)
                                                 t->out_len, PyBUF_READ);
        if (view != NULL) {
            res = PyObject_CallOneArg(t->pool->loads, view);
            PyObject *rel = PyObject_CallMethod(view, "release", NULL);
            if (rel == NULL) {
                PyErr_Clear();   /* loads keeps no view of its input */
            }
            Py_XDECREF(rel);
            Py_DECREF(view);
        }
    } else {
        PyObject *data = t->out != NULL
                             ? PyBytes_FromStringAndSize(
                                   t->out, (Py_ssize_t)t->out_len)
                             : Py_NewRef(Py_None);
        PyObject *exc = NULL;
        if (data != NULL) {
            exc = PyObject_CallFunction(
                t->pool->rebuild, "NNONN", maybe_str(t->exc_module),
                maybe_str(t->exc_qualname), data, maybe_str(t->exc_msg),
                maybe_str(t->exc_tb));
            Py_DECREF(data);
        }
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    }
    itask_release(t);
    return res;
}

/* The Future's cancel hook: cancel it while queued, interrupt it while it
 * runs.  GIL: held, the reactor's thread. */
static PyObject *
itask_cancel(PyObject *capsule, PyObject *unused)
{
    (void)unused;
    itask_t *t = PyCapsule_GetPointer(capsule, "twincore.itask");
    if (t == NULL || t->work == NULL) {
        PyErr_Clear();
        Py_RETURN_NONE;   /* the pool is done with it */
    }
    int rc = tc_pool_cancel(t->work);
    if (rc == -EBUSY && t->pool->core != NULL) {
        core_t *c = t->pool->core;
        pthread_mutex_lock(&c->lock);
        t->cancel = true;   /* a worker that took it but has not begun */
        int slot = -1;
        for (unsigned i = 0; i < c->nslots; i++) {
            if (c->slots[i].running == t->id) {
                slot = (int)i;
            }
        }
        pthread_mutex_unlock(&c->lock);
        if (slot >= 0) {
            interrupt_later(c, (unsigned)slot, t->id);
        }
    }
    Py_RETURN_NONE;
}

static PyMethodDef itask_cancel_def = {
    "cancel", (PyCFunction)itask_cancel, METH_NOARGS,
    "Cancel the interpreter task (its Future's cancel hook)."};

static void
itask_capsule_free(PyObject *capsule)
{
    itask_t *t = PyCapsule_GetPointer(capsule, "twincore.itask");
    if (t != NULL) {
        itask_release(t);
    }
}

static PyObject *
InterpPool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"workers", "runner_code", "loads", "rebuild",
                             NULL};
    int workers;
    Py_buffer code;
    PyObject *loads, *rebuild;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iy*OO:_InterpreterPool",
                                     kwlist, &workers, &code, &loads,
                                     &rebuild)) {
        return NULL;
    }
    /* The runner's code, marshalled by this interpreter: kept as bytes
     * for the workers to read. */
    char *code_copy = malloc(code.len > 0 ? (size_t)code.len : 1);
    size_t code_len = (size_t)code.len;
    if (code_copy != NULL) {
        memcpy(code_copy, code.buf, code_len);
    }
    PyBuffer_Release(&code);
    if (code_copy == NULL) {
        return PyErr_NoMemory();
    }
    if (workers < 0 || workers > 1024) {
        free(code_copy);
        PyErr_Format(PyExc_ValueError,
                     "InterpreterPool(): 'workers' must be in 0..1024 (0: "
                     "one per CPU), got %d", workers);
        return NULL;
    }
    InterpPoolObject *p = (InterpPoolObject *)type->tp_alloc(type, 0);
    if (p == NULL) {
        free(code_copy);
        return NULL;
    }
    tc_pool_opts_t opts = {.threads = (unsigned)workers};
    int err = tc_pool_new(&opts, &p->pool);
    if (err != 0) {
        p->pool = NULL;
        free(code_copy);
        Py_DECREF(p);
        return tcpy_raise(state_of_type(type), err);
    }
    p->workers = tc_pool_threads(p->pool);
    core_t *c = calloc(1, sizeof(*c));
    if (c == NULL ||
        (c->slots = calloc(p->workers, sizeof(slot_t))) == NULL) {
        if (c != NULL) {
            free(c->slots);
            free(c);
        }
        free(code_copy);
        Py_DECREF(p);
        return PyErr_NoMemory();
    }
    c->runner_code = code_copy;
    c->runner_len = code_len;
    pthread_mutex_init(&c->lock, NULL);
    pthread_cond_init(&c->unpinned, NULL);
    c->refs = 1;
    c->cap = p->workers;
    atomic_init(&c->cancel_all, false);
    p->core = c;
    p->loads = Py_NewRef(loads);
    p->rebuild = Py_NewRef(rebuild);
    return (PyObject *)p;
}

/* _defer(reactor, module, qualname, main_path, payload, priority) */
static PyObject *
InterpPool_defer(InterpPoolObject *p, PyObject *const *args,
                 Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "_defer(reactor, module, qualname, "
                                         "main_path, payload, priority)");
        return NULL;
    }
    tc_state *st = state_of_type(Py_TYPE(p));
    if (st == NULL) {
        return NULL;
    }
    if (!PyObject_TypeCheck(args[0], st->Reactor_type)) {
        PyErr_SetString(PyExc_TypeError, "_defer(): 'reactor' must be a "
                                         "Reactor");
        return NULL;
    }
    ReactorObject *r = (ReactorObject *)args[0];
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    if (!PyUnicode_Check(args[1]) || !PyUnicode_Check(args[2]) ||
        (args[3] != Py_None && !PyUnicode_Check(args[3])) ||
        !PyBytes_Check(args[4])) {
        PyErr_SetString(PyExc_TypeError, "_defer(): bad argument types");
        return NULL;
    }
    long prio = PyLong_AsLong(args[5]);
    if (prio == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (prio < TC_PRIORITY_HIGH || prio > TC_PRIORITY_LOW) {
        PyErr_Format(PyExc_ValueError,
                     "defer_to_interpreter(): 'priority' must be "
                     "PRIORITY_HIGH, PRIORITY_NORMAL or PRIORITY_LOW, got "
                     "%ld", prio);
        return NULL;
    }
    if (p->pool == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "defer_to_interpreter(): the InterpreterPool is "
                        "closed");
        return NULL;
    }
    if (r->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        return NULL;
    }
    itask_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return PyErr_NoMemory();
    }
    t->refs = 1;
    t->pool = (InterpPoolObject *)Py_NewRef(p);
    t->payload = Py_NewRef(args[4]);
    t->id = ++p->next_id;
    t->slot = -1;
    t->module = dup_utf8(args[1]);
    t->qualname = dup_utf8(args[2]);
    t->main_path = args[3] != Py_None ? dup_utf8(args[3]) : NULL;
    if (t->module == NULL || t->qualname == NULL ||
        (args[3] != Py_None && t->main_path == NULL)) {
        itask_release(t);
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(t, "twincore.itask",
                                      itask_capsule_free);
    if (capsule == NULL) {
        itask_release(t);
        return NULL;
    }
    t->refs++;   /* the capsule's */
    PyObject *hook = PyCFunction_New(&itask_cancel_def, capsule);
    Py_DECREF(capsule);
    if (hook == NULL) {
        itask_release(t);
        return NULL;
    }
    PyObject *fut = native_submit((PyObject *)r, p->pool, interp_work,
                                  interp_to_python, t, (int)prio, &t->work);
    if (fut == NULL) {
        itask_release(t);   /* the route's: to_python never runs */
        Py_DECREF(hook);
        return NULL;
    }
    future_set_task(fut, NULL, hook);
    Py_DECREF(hook);
    return fut;
}

/* Each started worker's start-up: a dict of its interpreter's creation and
 * the runner's load (wall clock), and the thread's CPU time for both. */
static PyObject *
startup_list(core_t *c)
{
    pthread_mutex_lock(&c->lock);
    unsigned n = 0;
    uint64_t *fig = malloc(3 * sizeof(uint64_t) * (c->nslots + 1));
    for (unsigned i = 0; fig != NULL && i < c->nslots; i++) {
        if (c->slots[i].interp != NULL) {   /* else still starting */
            fig[3 * n] = c->slots[i].interp_ns;
            fig[3 * n + 1] = c->slots[i].runner_ns;
            fig[3 * n + 2] = c->slots[i].cpu_ns;
            n++;
        }
    }
    pthread_mutex_unlock(&c->lock);
    if (fig == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *list = PyList_New(n);
    for (unsigned i = 0; list != NULL && i < n; i++) {
        PyObject *d = Py_BuildValue(
            "{sKsKsK}", "interpreter_ns", (unsigned long long)fig[3 * i],
            "runner_ns", (unsigned long long)fig[3 * i + 1], "cpu_ns",
            (unsigned long long)fig[3 * i + 2]);
        if (d == NULL) {
            Py_CLEAR(list);
            break;
        }
        PyList_SET_ITEM(list, i, d);
    }
    free(fig);
    return list;
}

static PyObject *
InterpPool_stats(InterpPoolObject *p, PyObject *unused)
{
    (void)unused;
    if (p->pool == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "stats(): the InterpreterPool is closed");
        return NULL;
    }
    /* CpuPool.stats()'s shape, plus each worker's start-up; the
     * histograms sample tasks here. */
    PyObject *startup = startup_list(p->core);
    if (startup == NULL) {
        return NULL;
    }
    PyObject *d = pool_stats_dict(p->pool);
    if (d == NULL || PyDict_SetItemString(d, "startup", startup) < 0) {
        Py_XDECREF(d);
        Py_DECREF(startup);
        return NULL;
    }
    Py_DECREF(startup);
    return d;
}

/* GIL: drops.  Closed from now on; with cancel, queued tasks will not run
 * and running ones are interrupted (here: this thread blocks next). */
static void
begin_close(InterpPoolObject *p, bool cancel)
{
    tc_pool_t *pool = p->pool;
    if (pool == NULL) {
        return;
    }
    p->pool = NULL;
    p->closing = pool;
    p->closing_mode = cancel ? TC_POOL_CANCEL : TC_POOL_DRAIN;
    core_t *c = p->core;
    if (!cancel || c == NULL) {   /* NULL: the constructor failed */
        return;
    }
    atomic_store(&c->cancel_all, true);
    pthread_mutex_lock(&c->lock);
    unsigned n = c->nslots;
    uint64_t *ids = calloc(n ? n : 1, sizeof(*ids));
    for (unsigned i = 0; ids != NULL && i < n; i++) {
        ids[i] = c->slots[i].running;
    }
    pthread_mutex_unlock(&c->lock);
    if (ids == NULL) {
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    for (unsigned i = 0; i < n; i++) {
        interrupt_slot(c, i, ids[i]);
    }
    Py_END_ALLOW_THREADS
    free(ids);
}

/* GIL: drops.  Join the workers; each ends its interpreter on the way. */
static void
join_workers(InterpPoolObject *p)
{
    tc_pool_t *pool = p->closing;
    p->closing = NULL;
    if (pool == NULL) {
        return;
    }
    tc_pool_shutdown_mode_t mode = p->closing_mode;
    Py_BEGIN_ALLOW_THREADS
    tc_pool_shutdown(pool, mode);
    tc_pool_free(pool);
    Py_END_ALLOW_THREADS
}

static PyObject *
InterpPool_begin_close(InterpPoolObject *p, PyObject *arg)
{
    int cancel = PyObject_IsTrue(arg);
    if (cancel < 0) {
        return NULL;
    }
    begin_close(p, cancel);
    Py_RETURN_NONE;
}

static PyObject *
InterpPool_join_workers(InterpPoolObject *p, PyObject *unused)
{
    (void)unused;
    join_workers(p);
    Py_RETURN_NONE;
}

static PyObject *
InterpPool_busy(InterpPoolObject *p, PyObject *unused)
{
    (void)unused;
    tc_pool_t *pool = p->pool != NULL ? p->pool : p->closing;
    if (pool == NULL) {
        Py_RETURN_FALSE;
    }
    tc_pool_stats_t s;
    tc_pool_stats(pool, &s);
    return PyBool_FromLong(s.queued + s.running > 0);
}

static PyObject *
InterpPool_get_workers(InterpPoolObject *p, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLong(p->workers);
}

static PyObject *
InterpPool_get_closed(InterpPoolObject *p, void *closure)
{
    (void)closure;
    return PyBool_FromLong(p->pool == NULL);
}

static int
InterpPool_traverse(InterpPoolObject *p, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(p));
    Py_VISIT(p->loads);
    Py_VISIT(p->rebuild);
    return 0;
}

static int
InterpPool_clear(InterpPoolObject *p)
{
    Py_CLEAR(p->loads);
    Py_CLEAR(p->rebuild);
    return 0;
}

static void
InterpPool_dealloc(InterpPoolObject *p)
{
    PyTypeObject *tp = Py_TYPE(p);
    PyObject_GC_UnTrack(p);
    if (p->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)p);
    }
    /* Tasks hold the pool, so none is left: nothing runs or waits. */
    begin_close(p, true);
    join_workers(p);
    if (p->core != NULL) {
        core_release(p->core);
    }
    InterpPool_clear(p);
    tp->tp_free((PyObject *)p);
    Py_DECREF(tp);
}

static PyMethodDef InterpPool_methods[] = {
    {"_defer", (PyCFunction)(void (*)(void))InterpPool_defer, METH_FASTCALL,
     "_defer($self, reactor, module, qualname, main_path, payload, "
     "priority, /)\n--\n\nLow level; use InterpreterPool.defer()."},
    {"stats", (PyCFunction)InterpPool_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nCounters and log2 histograms (ns) of queue "
     "wait and run time, as CpuPool.stats()."},
    {"_begin_close", (PyCFunction)InterpPool_begin_close, METH_O,
     "_begin_close($self, cancel, /)\n--\n\nLow level: closed from now "
     "on; cancel: queued tasks will not run, running ones are "
     "interrupted."},
    {"_join_workers", (PyCFunction)InterpPool_join_workers, METH_NOARGS,
     "_join_workers($self, /)\n--\n\nLow level: join the workers (each "
     "ends its interpreter); blocks, without the GIL."},
    {"_busy", (PyCFunction)InterpPool_busy, METH_NOARGS,
     "_busy($self, /)\n--\n\nTrue while tasks are queued or running."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef InterpPool_getset[] = {
    {"workers", (getter)InterpPool_get_workers, NULL, "Worker threads.",
     NULL},
    {"closed", (getter)InterpPool_get_closed, NULL, "True after close().",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef InterpPool_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(InterpPoolObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot InterpPool_slots[] = {
    {Py_tp_new, InterpPool_new},
    {Py_tp_dealloc, InterpPool_dealloc},
    {Py_tp_traverse, InterpPool_traverse},
    {Py_tp_clear, InterpPool_clear},
    {Py_tp_methods, InterpPool_methods},
    {Py_tp_getset, InterpPool_getset},
    {Py_tp_members, InterpPool_members},
    {Py_tp_doc, "The C half of twincore.InterpreterPool (internal)."},
    {0, NULL},
};

PyType_Spec InterpreterPool_spec = {
    .name = "twincore._twincore._InterpreterPool",
    .basicsize = sizeof(InterpPoolObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
    .slots = InterpPool_slots,
};

#endif
