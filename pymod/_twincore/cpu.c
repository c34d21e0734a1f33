/* CpuPool and CpuTask: Python callables on the native pool.
 *
 * Each Python task is one work of the CpuPool's tc_pool_t, submitted at its
 * priority: queueing, priorities (LOW never takes every worker), the bound
 * on the queue, cancellation, shutdown and the counters are the pool's.
 * Only the Python part is here.  The work function (run_batch) takes the
 * GIL once, runs its task, then runs the next tasks this worker would take
 * anyway (tc_work_take_next) until BATCH_TASKS ran or BATCH_NS passed, and
 * hands the GIL back: tiny tasks cost no GIL hand-off each, and a callable
 * that releases the GIL (hashlib, zlib) still lets the other workers run.
 * Every task returns through the pool's completion route: its done
 * callback (task_done: loop thread, no GIL) queues one event (cpu_task_ops),
 * run in the reactor's batch as on_done(kind, value): 0 result,
 * 1 exception, 2 cancelled.
 *
 * The work holds a reference to its task (the pool's) from submission to
 * delivery; the task holds its reactor and its CpuPool, so a pool nobody
 * else holds finishes its work, and is never freed on one of its own
 * workers (only a task of its own runs there).  While queued or running
 * the task is the pool's, and the GC must not take the reactor from under
 * the worker; once run (or cancelled while queued) it waits for its done
 * callback owned by the reactor: listed on r->transit, so the reactor's
 * traverse shows it to the GC and its teardown releases what the loop can
 * no longer deliver. */
#include <pthread.h>
#include <time.h>

#include "cpu.h"
#include "dispatch.h"
#include "errors.h"
#include "future.h"
#include "module.h"
#include "reactor.h"
#include "worker_gil.h"

#define BATCH_TASKS 64          /* tasks between GIL hand-backs, at most */
#define BATCH_NS 200000         /* ... or this long */
#define RAISED (-EREMOTEIO)     /* the call raised: the pool counts it failed */

/* A finished task (dispatch.h); ptr: the CpuTask with the pool's
 * reference, status: the pool's. */
static const pyevent_ops_t cpu_task_ops;   /* beside cpu_task_dispatch() */
static void cpu_task_discard(void *task);

typedef struct CpuTaskObject CpuTaskObject;

struct CpuTaskObject {
    PyObject_HEAD
    ReactorObject *reactor;
    PyObject *fn, *args, *kwargs, *on_done;
    PyObject *outcome;      /* result or exception, set by the worker */
    tc_work_t *work;        /* the pool's handle until task_done; loop */
    bool failed;
    bool done;              /* delivered (or discarded) on the loop */
    bool started;           /* set by the worker, under the GIL */
    bool in_transit;        /* guards: the reactor's transit_lock */
    bool stopping;          /* queued when its pool was stopped */
    CpuTaskObject *tprev, *tnext;   /* reactor->transit; its lock */
    struct CpuPoolObject *pool;     /* owned until delivered */
};

typedef struct CpuPoolObject {
    PyObject_HEAD
    tc_pool_t *pool;        /* NULL once closed */
    unsigned workers;
    tc_pool_t *closing;     /* closed, workers not yet joined */
    tc_pool_shutdown_mode_t closing_mode;
    PyObject *weakreflist;
} CpuPoolObject;

tc_pool_t *
cpupool_native(PyObject *pool)
{
    return ((CpuPoolObject *)pool)->pool;
}

/* Under r->transit_lock. */
static void
transit_link(ReactorObject *r, CpuTaskObject *t)
{
    t->tprev = NULL;
    t->tnext = r->transit;
    if (r->transit != NULL) {
        r->transit->tprev = t;
    }
    r->transit = t;
    t->in_transit = true;
}

/* Under r->transit_lock. */
static void
transit_unlink(ReactorObject *r, CpuTaskObject *t)
{
    if (t->tprev != NULL) {
        t->tprev->tnext = t->tnext;
    } else {
        r->transit = t->tnext;
    }
    if (t->tnext != NULL) {
        t->tnext->tprev = t->tprev;
    }
    t->tprev = t->tnext = NULL;
    t->in_transit = false;
}

/* GIL: held.  No worker will touch tasks[0..n) any more: each reactor
 * owns its own until their done callbacks run, but those whose callback
 * ran already (t->work is NULL).  One lock per run of one reactor. */
static void
hand_to_reactors(CpuTaskObject **tasks, size_t n)
{
    size_t i = 0;
    while (i < n) {
        ReactorObject *r = tasks[i]->reactor;
        pthread_mutex_lock(&r->transit_lock);
        for (; i < n && tasks[i]->reactor == r; i++) {
            CpuTaskObject *t = tasks[i];
            if (t->work != NULL && !t->in_transit) {
                transit_link(r, t);
            }
        }
        pthread_mutex_unlock(&r->transit_lock);
    }
}

static void
hand_to_reactor(CpuTaskObject *t)
{
    hand_to_reactors(&t, 1);
}

/* Thread: worker, GIL: held.  One call and the capture of its outcome;
 * returns the status the pool records. */
static int
run_python_task(CpuTaskObject *task)
{
    task->started = true;
    PyObject *res = PyObject_Call(task->fn, task->args, task->kwargs);
    int status = 0;
    if (res != NULL) {
        task->outcome = res;
    } else {
        task->outcome = tcpy_fetch_exception();
        task->failed = true;
        status = RAISED;
    }
    return status;
}

/* Thread: worker, GIL: takes.  The work function of every Python task:
 * runs its own, then the ones the pool hands over, under one GIL. */
static int
run_batch(tc_work_t *work, void *arg)
{
    CpuTaskObject *ran[BATCH_TASKS];
    unsigned n = 0;
    ran[0] = arg;
    /* A loop waiting for the GIL goes first: its timers and IO are due. */
    worker_gil_yield_to_loops();
    PyThreadState *gil = worker_gil_take();
    uint64_t start = tcpy_clock_ns(CLOCK_MONOTONIC);
    int status;
    for (;;) {
        status = run_python_task(ran[n++]);
        if (n == BATCH_TASKS ||
            tcpy_clock_ns(CLOCK_MONOTONIC) - start > BATCH_NS ||
            worker_gil_loop_waiting()) {
            break;
        }
        tc_work_t *next = tc_work_take_next(work, status);
        if (next == NULL) {
            break;
        }
        work = next;
        ran[n] = tc_work_arg(next);
    }
    /* Listed late, but never too late: the GC may run during the batch
     * (a task allocates), and then finds these still the pool's, which
     * only keeps their reactors alive a little longer. */
    hand_to_reactors(ran, n);
    worker_gil_release(gil);
    return status;
}

/* Thread: loop, GIL: none.  The pool's done callback: the task (run, or
 * cancelled with -ECANCELED) enters the reactor's batch. */
static void
task_done(tc_work_t *w, int status, void *arg)
{
    (void)w;
    CpuTaskObject *t = arg;
    ReactorObject *r = t->reactor;
    pthread_mutex_lock(&r->transit_lock);
    t->work = NULL;
    if (t->in_transit) {
        transit_unlink(r, t);
    }
    pyevents_push(r, &cpu_task_ops, 0, NULL, t, status);
    pthread_mutex_unlock(&r->transit_lock);
}

int
cpu_transit_traverse(ReactorObject *r, visitproc visit, void *arg)
{
    int rc = 0;
    pthread_mutex_lock(&r->transit_lock);
    for (CpuTaskObject *t = r->transit; t != NULL && rc == 0;
         t = t->tnext) {
        rc = visit((PyObject *)t, arg);
    }
    pthread_mutex_unlock(&r->transit_lock);
    return rc;
}

/* GIL: held.  Drop the tasks whose done callback will never run: those
 * finished for a loop leaked because a worker still ran for it. */
void
cpu_transit_discard(ReactorObject *r)
{
    pthread_mutex_lock(&r->transit_lock);
    CpuTaskObject *t = r->transit;
    r->transit = NULL;
    for (CpuTaskObject *u = t; u != NULL; u = u->tnext) {
        u->in_transit = false;
    }
    pthread_mutex_unlock(&r->transit_lock);
    while (t != NULL) {
        CpuTaskObject *next = t->tnext;
        t->tprev = t->tnext = NULL;
        cpu_task_discard(t);
        t = next;
    }
}

static void
cpu_task_dispatch(ReactorObject *r, pyevent_t *ev)
{
    CpuTaskObject *task = ev->ptr;
    task->done = true;
    int kind;
    PyObject *value;
    if (!task->started) {
        kind = 2;   /* cancelled while queued, or by a pool shutdown */
        value = Py_NewRef(Py_None);
    } else if (task->failed) {
        kind = 1;
        value = Py_XNewRef(task->outcome);
    } else {
        kind = 0;
        value = Py_XNewRef(task->outcome);
    }
    Py_CLEAR(task->outcome);
    Py_CLEAR(task->fn);
    Py_CLEAR(task->args);
    Py_CLEAR(task->kwargs);
    PyObject *on_done = task->on_done;
    task->on_done = NULL;
    if (value == NULL) {
        reactor_report(r, "a defer_to_cpu completion");
        value = Py_NewRef(Py_None);
    }
    tc_state *st = reactor_state(r);
    if (on_done != NULL && future_check(st, on_done)) {
        /* The fast path: settle the Future here, unless it was cancelled
         * or timed out meanwhile. */
        int rc = 0;
        if (future_is_pending(on_done)) {
            rc = kind == 0   ? future_set_result(on_done, value)
                 : kind == 1 ? future_set_exception(on_done, value)
                             : future_cancel(on_done, NULL);
        }
        if (rc < 0) {
            reactor_report(r, "a defer_to_cpu callback");
        }
    } else if (on_done != NULL) {
        PyObject *k = PyLong_FromLong(kind);
        PyObject *argv[] = {k, value};
        PyObject *res = k ? PyObject_Vectorcall(on_done, argv, 2, NULL) : NULL;
        if (res == NULL) {
            reactor_report(r, "a defer_to_cpu completion");
        }
        Py_XDECREF(res);
        Py_XDECREF(k);
    }
    Py_XDECREF(on_done);
    Py_DECREF(value);
    Py_CLEAR(task->pool);   /* may close it: no task of it is left */
    Py_DECREF(task);   /* the pool's reference */
}

static void
cpu_task_discard(void *arg)
{
    CpuTaskObject *task = arg;
    task->done = true;
    Py_CLEAR(task->pool);
    Py_DECREF(task);
}

static void
cpu_task_discard_event(ReactorObject *r, pyevent_t *ev)
{
    (void)r;
    cpu_task_discard(ev->ptr);
}

static int
cpu_task_traverse(pyevent_t *ev, visitproc visit, void *arg)
{
    Py_VISIT((PyObject *)ev->ptr);   /* the pool's reference */
    return 0;
}

static const pyevent_ops_t cpu_task_ops = {
    .run = cpu_task_dispatch,
    .discard = cpu_task_discard_event,
    .traverse = cpu_task_traverse,
    .name = "cpu_task",
};

/* ---- CpuTask ------------------------------------------------------------ */

bool
cputask_check(PyObject *obj)
{
    tc_state *st = state_of_type(Py_TYPE(obj));
    if (st == NULL) {
        PyErr_Clear();
        return false;
    }
    return Py_IS_TYPE(obj, st->CpuTask_type);
}

bool
cputask_started(PyObject *obj)
{
    return cputask_check(obj) && ((CpuTaskObject *)obj)->started;
}

/* Loop thread, GIL held.  True when it was still queued: the pool then
 * hands it back as cancelled, in a later batch of the reactor. */
static bool
cancel_queued(CpuTaskObject *task)
{
    if (task->done || task->work == NULL ||
        tc_pool_cancel(task->work) != 0) {
        return false;   /* running or finished */
    }
    hand_to_reactor(task);  /* no worker will touch it */
    return true;
}

void
cputask_cancel(PyObject *obj)
{
    CpuTaskObject *task = (CpuTaskObject *)obj;
    if (task->reactor->loop != NULL &&
        tc_loop_is_owner_thread(task->reactor->loop)) {
        cancel_queued(task);
    }
}

static PyObject *
CpuTask_cancel(CpuTaskObject *task, PyObject *unused)
{
    (void)unused;
    if (reactor_check_thread(task->reactor) < 0) {
        return NULL;
    }
    return PyBool_FromLong(cancel_queued(task));
}

static PyObject *
CpuTask_done(CpuTaskObject *task, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(task->done);
}

static PyObject *
CpuTask_started(CpuTaskObject *task, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(task->started);
}

static int
CpuTask_traverse(CpuTaskObject *task, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(task));
    Py_VISIT(task->reactor);
    Py_VISIT(task->fn);
    Py_VISIT(task->args);
    Py_VISIT(task->kwargs);
    Py_VISIT(task->on_done);
    Py_VISIT(task->pool);
    return 0;
}

static int
CpuTask_clear(CpuTaskObject *task)
{
    /* Never while a worker may use them: the pool holds a reference to a
     * pending task, so the GC cannot collect it. */
    Py_CLEAR(task->fn);
    Py_CLEAR(task->args);
    Py_CLEAR(task->kwargs);
    Py_CLEAR(task->on_done);
    Py_CLEAR(task->outcome);
    Py_CLEAR(task->pool);
    return 0;
}

static void
CpuTask_dealloc(CpuTaskObject *task)
{
    PyTypeObject *tp = Py_TYPE(task);
    PyObject_GC_UnTrack(task);
    CpuTask_clear(task);
    Py_CLEAR(task->reactor);
    tp->tp_free((PyObject *)task);
    Py_DECREF(tp);
}

static PyMethodDef CpuTask_methods[] = {
    {"cancel", (PyCFunction)CpuTask_cancel, METH_NOARGS,
     "cancel($self, /)\n--\n\nCancel if still queued; True when it will "
     "complete as cancelled, False when running or done."},
    {"done", (PyCFunction)CpuTask_done, METH_NOARGS, "done($self, /)\n--\n\n"},
    {"started", (PyCFunction)CpuTask_started, METH_NOARGS,
     "started($self, /)\n--\n\nTrue once a worker began the call."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot CpuTask_slots[] = {
    {Py_tp_dealloc, CpuTask_dealloc},
    {Py_tp_traverse, CpuTask_traverse},
    {Py_tp_clear, CpuTask_clear},
    {Py_tp_methods, CpuTask_methods},
    {Py_tp_doc, "A callable queued on a CpuPool (internal)."},
    {0, NULL},
};

PyType_Spec CpuTask_spec = {
    .name = "twincore._twincore.CpuTask",
    .basicsize = sizeof(CpuTaskObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = CpuTask_slots,
};

/* ---- CpuPool ------------------------------------------------------------ */

static PyObject *
CpuPool_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"workers", "max_queued", NULL};
    PyObject *workers_obj = NULL, *max_queued_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:CpuPool", kwlist,
                                     &workers_obj, &max_queued_obj)) {
        return NULL;
    }
    /* Converted here, not by "i"/"n", so the errors name the argument. */
    long workers = 0;
    if (workers_obj != NULL) {
        if (!PyLong_Check(workers_obj)) {
            PyErr_Format(PyExc_TypeError,
                         "CpuPool(): 'workers' must be an int, got %.100s",
                         Py_TYPE(workers_obj)->tp_name);
            return NULL;
        }
        int overflow;
        workers = PyLong_AsLongAndOverflow(workers_obj, &overflow);
        if (overflow != 0) {
            workers = -1;
        }
    }
    if (workers < 0 || workers > 1024) {
        PyErr_Format(PyExc_ValueError,
                     "CpuPool(): 'workers' must be in 0..1024 (0: one per "
                     "CPU), got %R", workers_obj);
        return NULL;
    }
    Py_ssize_t max_queued = 0;
    if (max_queued_obj != NULL) {
        if (!PyLong_Check(max_queued_obj)) {
            PyErr_Format(PyExc_TypeError,
                         "CpuPool(): 'max_queued' must be an int, got %.100s",
                         Py_TYPE(max_queued_obj)->tp_name);
            return NULL;
        }
        max_queued = PyLong_AsSsize_t(max_queued_obj);
        if (max_queued == -1 && PyErr_Occurred()) {
            return NULL;   /* OverflowError: too large */
        }
    }
    if (max_queued < 0) {
        PyErr_Format(PyExc_ValueError,
                     "CpuPool(): 'max_queued' must be >= 0, got %zd",
                     max_queued);
        return NULL;
    }
    CpuPoolObject *p = (CpuPoolObject *)type->tp_alloc(type, 0);
    if (p == NULL) {
        return NULL;
    }
    tc_pool_opts_t opts = {.threads = (unsigned)workers,
                           .max_queued = (size_t)max_queued};
    int err = tc_pool_new(&opts, &p->pool);
    if (err != 0) {
        p->pool = NULL;
        Py_DECREF(p);
        return tcpy_raise(state_of_type(type), err);
    }
    p->workers = tc_pool_threads(p->pool);
    return (PyObject *)p;
}

typedef struct task_vec {
    CpuTaskObject **items;
    size_t len, cap;
} task_vec_t;

/* tc_pool_walk callbacks, under the pool's lock: the works hold their
 * tasks alive.  Out of memory, a task is left out: the GC then does not
 * see it until it is delivered. */
static int
mark_queued(tc_work_t *work, bool running, void *arg)
{
    task_vec_t *v = arg;
    if (running) {
        return 0;
    }
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        CpuTaskObject **items = realloc(v->items, cap * sizeof(*items));
        if (items == NULL) {
            return 1;
        }
        v->items = items;
        v->cap = cap;
    }
    CpuTaskObject *t = tc_work_arg(work);
    t->stopping = true;
    v->items[v->len++] = t;
    return 0;
}

static int
unmark_running(tc_work_t *work, bool running, void *arg)
{
    (void)arg;
    if (running) {
        ((CpuTaskObject *)tc_work_arg(work))->stopping = false;
    }
    return 0;
}

/* GIL: held.  Refuse new tasks from now on (closed) and, with
 * TC_POOL_CANCEL, cancel the queued ones: they complete as cancelled on
 * their reactors.  join_workers() then joins the workers. */
static void
begin_close(CpuPoolObject *p, tc_pool_shutdown_mode_t mode)
{
    tc_pool_t *pool = p->pool;
    p->pool = NULL;
    if (pool == NULL) {
        return;
    }
    p->closing = pool;
    p->closing_mode = mode;
    if (mode != TC_POOL_CANCEL) {
        tc_pool_stop(pool, mode);
        return;
    }
    /* The tasks the stop cancels are the queued ones that no worker has
     * taken by then: hand those to their reactors, as cancel() does.  No
     * task starts or ends meanwhile: that needs the GIL we hold. */
    task_vec_t queued = {0};
    tc_pool_walk(pool, run_batch, mark_queued, &queued);
    tc_pool_stop(pool, mode);
    tc_pool_walk(pool, run_batch, unmark_running, NULL);
    for (size_t i = 0; i < queued.len; i++) {
        CpuTaskObject *t = queued.items[i];
        if (t->stopping) {
            t->stopping = false;
            hand_to_reactor(t);
        }
    }
    free(queued.items);
}

/* GIL: drops.  Join the workers of a closed pool: they finish what they
 * run (and, draining, what is queued), and need the GIL for it.  On one of
 * the pool's own workers nothing is joined: tc_pool_free() leaves the
 * workers to exit on their own. */
static void
join_workers(CpuPoolObject *p)
{
    tc_pool_t *pool = p->closing;
    tc_pool_shutdown_mode_t mode = p->closing_mode;
    p->closing = NULL;
    if (pool == NULL) {
        return;
    }
    Py_BEGIN_ALLOW_THREADS
    tc_pool_shutdown(pool, mode);
    tc_pool_free(pool);
    Py_END_ALLOW_THREADS
}

/* GIL: drops. */
static void
close_pool(CpuPoolObject *p, tc_pool_shutdown_mode_t mode)
{
    begin_close(p, mode);
    join_workers(p);
}

typedef struct own_loop {
    bool cancel;
    ReactorObject *found;
} own_loop_t;

/* Under the pool's lock, GIL held: the work holds its task alive. */
static int
find_own_loop(tc_work_t *work, bool running, void *arg)
{
    own_loop_t *c = arg;
    ReactorObject *r = ((CpuTaskObject *)tc_work_arg(work))->reactor;
    if ((running || !c->cancel) && r->loop != NULL &&
        tc_loop_is_owner_thread(r->loop) && r->running) {
        c->found = r;
        return 1;
    }
    return 0;
}

/* GIL: held.  Would joining the workers here stall the reactor running on
 * this thread: is a task of its still queued (unless cancelled now) or
 * running?  Such a task may even need the loop to finish.  Returns that
 * reactor (borrowed) or NULL. */
static ReactorObject *
blocks_own_loop(CpuPoolObject *p, bool cancel)
{
    own_loop_t c = {.cancel = cancel};
    tc_pool_t *pool = p->pool != NULL ? p->pool : p->closing;
    if (pool != NULL) {
        tc_pool_walk(pool, run_batch, find_own_loop, &c);
    }
    return c.found;
}

/* GIL: drops.  close() and __exit__: refuse to block a running reactor
 * that still waits for tasks of this pool. */
static int
close_blocking(CpuPoolObject *p, tc_pool_shutdown_mode_t mode,
               const char *what)
{
    if ((p->pool != NULL || p->closing != NULL) &&
        blocks_own_loop(p, mode == TC_POOL_CANCEL) != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "%s: tasks of this CpuPool still run for the reactor "
                     "running on this thread, and joining the workers here "
                     "would stall its loop (or deadlock, if a task needs "
                     "it); use 'await pool.aclose()' or 'async with'",
                     what);
        return -1;
    }
    close_pool(p, mode);
    return 0;
}

/* Validate (reactor, fn, args, kwargs, priority) in args[0..4]. */
static int
check_submit(CpuPoolObject *p, tc_state *st, PyObject *const *args,
             long *prio_out)
{
    if (!PyObject_TypeCheck(args[0], st->Reactor_type)) {
        PyErr_SetString(PyExc_TypeError, "_submit(): 'reactor' must be a "
                                         "Reactor");
        return -1;
    }
    /* The Future is settled, and its callbacks run, on the reactor's
     * thread: it must be made (and its callbacks added) there too. */
    if (reactor_check_thread((ReactorObject *)args[0]) < 0) {
        return -1;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_Format(PyExc_TypeError,
                     "defer_to_cpu(): 'fn' must be callable, got %.100s",
                     Py_TYPE(args[1])->tp_name);
        return -1;
    }
    if (!PyTuple_Check(args[2]) ||
        (args[3] != Py_None && !PyDict_Check(args[3]))) {
        PyErr_SetString(PyExc_TypeError, "_submit(): bad args or kwargs");
        return -1;
    }
    if (!PyLong_Check(args[4])) {
        PyErr_Format(PyExc_TypeError,
                     "defer_to_cpu(): 'priority' must be PRIORITY_HIGH, "
                     "PRIORITY_NORMAL or PRIORITY_LOW, got %.100s",
                     Py_TYPE(args[4])->tp_name);
        return -1;
    }
    int overflow;
    long prio = PyLong_AsLongAndOverflow(args[4], &overflow);
    if (overflow != 0) {
        prio = LONG_MAX;   /* out of range, reported below */
    }
    if (prio < TC_PRIORITY_HIGH || prio > TC_PRIORITY_LOW) {
        PyErr_Format(PyExc_ValueError,
                     "defer_to_cpu(): 'priority' must be PRIORITY_HIGH, "
                     "PRIORITY_NORMAL or PRIORITY_LOW, got %ld", prio);
        return -1;
    }
    if (p->pool == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "defer_to_cpu(): the CpuPool is closed");
        return -1;
    }
    if (((ReactorObject *)args[0])->loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        return -1;
    }
    *prio_out = prio;
    return 0;
}

/* Queue fn(*args, **kwargs); on_done gets the outcome.  New ref. */
static CpuTaskObject *
submit_task(CpuPoolObject *p, tc_state *st, ReactorObject *r, PyObject *fn,
            PyObject *args, PyObject *kwargs, long prio, PyObject *on_done)
{
    CpuTaskObject *task = PyObject_GC_New(CpuTaskObject, st->CpuTask_type);
    if (task == NULL) {
        return NULL;
    }
    task->reactor = (ReactorObject *)Py_NewRef(r);
    task->fn = Py_NewRef(fn);
    task->args = Py_NewRef(args);
    task->kwargs = kwargs == Py_None ? NULL : Py_XNewRef(kwargs);
    task->on_done = Py_NewRef(on_done);
    task->outcome = NULL;
    task->work = NULL;
    task->failed = false;
    task->done = false;
    task->started = false;
    task->in_transit = false;
    task->stopping = false;
    task->tprev = task->tnext = NULL;
    task->pool = (CpuPoolObject *)Py_NewRef(p);
    PyObject_GC_Track(task);

    Py_INCREF(task);   /* the pool's reference, dropped on delivery */
    int err = tc_pool_submit(p->pool, r->loop, run_batch, task_done, task,
                             (tc_priority_t)prio, &task->work);
    if (err != 0) {
        task->done = true;
        Py_DECREF(task);   /* the pool's */
        Py_DECREF(task);
        if (err == -EAGAIN) {
            PyErr_SetString(PyExc_BlockingIOError,
                            "defer_to_cpu(): the pool's queue is full");
            return NULL;
        }
        return (CpuTaskObject *)tcpy_raise(st, err);
    }
    return task;
}

static PyObject *
CpuPool_submit(CpuPoolObject *p, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "_submit(reactor, fn, args, kwargs, priority, "
                        "on_done)");
        return NULL;
    }
    tc_state *st = state_of_type(Py_TYPE(p));
    long prio;
    if (st == NULL || check_submit(p, st, args, &prio) < 0) {
        return NULL;
    }
    return (PyObject *)submit_task(p, st, (ReactorObject *)args[0], args[1],
                                   args[2], args[3], prio, args[5]);
}

/* The fast path of CpuPool.defer(): a Future settled in C. */
static PyObject *
CpuPool_defer_future(CpuPoolObject *p, PyObject *const *args,
                     Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError,
                        "_defer(reactor, fn, args, kwargs, priority)");
        return NULL;
    }
    tc_state *st = state_of_type(Py_TYPE(p));
    long prio;
    if (st == NULL || check_submit(p, st, args, &prio) < 0) {
        return NULL;
    }
    PyObject *fut = future_new(st, args[0]);
    if (fut == NULL) {
        return NULL;
    }
    CpuTaskObject *task = submit_task(p, st, (ReactorObject *)args[0],
                                      args[1], args[2], args[3], prio, fut);
    if (task == NULL) {
        Py_DECREF(fut);
        return NULL;
    }
    future_set_task(fut, (PyObject *)task, NULL);
    Py_DECREF(task);
    return fut;
}

PyObject *
pool_stats_dict(tc_pool_t *pool)
{
    tc_pool_stats_t s;
    tc_pool_stats(pool, &s);
    PyObject *wait = PyList_New(TC_POOL_HIST_BUCKETS);
    PyObject *run = PyList_New(TC_POOL_HIST_BUCKETS);
    if (wait == NULL || run == NULL) {
        Py_XDECREF(wait);
        Py_XDECREF(run);
        return NULL;
    }
    for (int i = 0; i < TC_POOL_HIST_BUCKETS; i++) {
        PyList_SET_ITEM(wait, i, PyLong_FromUnsignedLongLong(s.wait_ns[i]));
        PyList_SET_ITEM(run, i, PyLong_FromUnsignedLongLong(s.run_ns[i]));
    }
    return Py_BuildValue(
        "{sKsKsKsKsKsKsIsNsN}", "submitted",
        (unsigned long long)s.submitted, "completed",
        (unsigned long long)s.completed, "failed",
        (unsigned long long)s.failed, "cancelled",
        (unsigned long long)s.cancelled, "queued",
        (unsigned long long)s.queued, "running",
        (unsigned long long)s.running, "workers", s.threads,
        "drainer_wait_ns_log2", wait, "drainer_run_ns_log2", run);
}

static PyObject *
CpuPool_stats(CpuPoolObject *p, PyObject *unused)
{
    (void)unused;
    if (p->pool == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "stats(): the CpuPool is closed");
        return NULL;
    }
    return pool_stats_dict(p->pool);
}

static PyObject *
CpuPool_close(CpuPoolObject *p, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"cancel_queued", NULL};
    int cancel = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|p:close", kwlist,
                                     &cancel)) {
        return NULL;
    }
    if (close_blocking(p, cancel ? TC_POOL_CANCEL : TC_POOL_DRAIN,
                       "close()") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
CpuPool_begin_close(CpuPoolObject *p, PyObject *arg)
{
    int cancel = PyObject_IsTrue(arg);
    if (cancel < 0) {
        return NULL;
    }
    begin_close(p, cancel ? TC_POOL_CANCEL : TC_POOL_DRAIN);
    Py_RETURN_NONE;
}

static PyObject *
CpuPool_reactor_here(CpuPoolObject *p, PyObject *arg)
{
    int cancel = PyObject_IsTrue(arg);
    if (cancel < 0) {
        return NULL;
    }
    ReactorObject *r = blocks_own_loop(p, cancel);
    return Py_NewRef(r != NULL ? (PyObject *)r : Py_None);
}

static PyObject *
CpuPool_join_workers(CpuPoolObject *p, PyObject *unused)
{
    (void)unused;
    join_workers(p);
    Py_RETURN_NONE;
}

static PyObject *
CpuPool_enter(PyObject *self, PyObject *unused)
{
    (void)unused;
    return Py_NewRef(self);
}

static PyObject *
CpuPool_exit(CpuPoolObject *p, PyObject *args)
{
    (void)args;
    if (close_blocking(p, TC_POOL_DRAIN, "CpuPool.__exit__") < 0) {
        return NULL;
    }
    Py_RETURN_FALSE;
}

static PyObject *
CpuPool_get_workers(CpuPoolObject *p, void *closure)
{
    (void)closure;
    return PyLong_FromUnsignedLong(p->workers);
}

static PyObject *
CpuPool_get_closed(CpuPoolObject *p, void *closure)
{
    (void)closure;
    return PyBool_FromLong(p->pool == NULL);
}

static int
CpuPool_traverse(CpuPoolObject *p, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(p));
    return 0;
}

static void
CpuPool_dealloc(CpuPoolObject *p)
{
    PyTypeObject *tp = Py_TYPE(p);
    PyObject_GC_UnTrack(p);
    if (p->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)p);
    }
    close_pool(p, TC_POOL_CANCEL);
    tp->tp_free((PyObject *)p);
    Py_DECREF(tp);
}

static PyMethodDef CpuPool_methods[] = {
    {"_submit", (PyCFunction)(void (*)(void))CpuPool_submit, METH_FASTCALL,
     "_submit($self, reactor, fn, args, kwargs, priority, on_done, /)\n--\n\n"
     "Low level; use CpuPool.defer() or twincore.defer_to_cpu()."},
    {"_defer", (PyCFunction)(void (*)(void))CpuPool_defer_future,
     METH_FASTCALL,
     "_defer($self, reactor, fn, args, kwargs, priority, /)\n--\n\nLow "
     "level: a Future of fn(*args, **kwargs) on a worker."},
    {"stats", (PyCFunction)CpuPool_stats, METH_NOARGS,
     "stats($self, /)\n--\n\nThe native pool's counters (submitted, "
     "completed, failed, cancelled, queued, running: every work of the "
     "pool, defer_to_cpu() tasks, name lookups and native tasks alike) and "
     "log2 histograms (ns) of queue wait and run time, one task in 8 "
     "timed."},
    {"close", (PyCFunction)(void (*)(void))CpuPool_close,
     METH_VARARGS | METH_KEYWORDS,
     "close($self, cancel_queued=False)\n--\n\nRun (or cancel) what is "
     "queued, then join the workers.  On the thread of a running reactor "
     "that still waits for tasks of this pool it raises RuntimeError "
     "instead of stalling the loop: use aclose() there.  On one of the "
     "pool's own workers it does not wait: the workers exit once the "
     "queue is done."},
    {"_begin_close", (PyCFunction)CpuPool_begin_close, METH_O,
     "_begin_close($self, cancel_queued, /)\n--\n\nLow level (aclose()): "
     "closed from now on; the workers are joined by _join_workers()."},
    {"_reactor_here", (PyCFunction)CpuPool_reactor_here, METH_O,
     "_reactor_here($self, cancel_queued, /)\n--\n\nLow level (aclose()): "
     "the reactor running on this thread that tasks of this pool still run "
     "for (queued ones too, unless cancel_queued), or None."},
    {"_join_workers", (PyCFunction)CpuPool_join_workers, METH_NOARGS,
     "_join_workers($self, /)\n--\n\nLow level (aclose()): join the "
     "workers of a closed pool; blocks, without the GIL."},
    {"__enter__", (PyCFunction)CpuPool_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)CpuPool_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef CpuPool_getset[] = {
    {"workers", (getter)CpuPool_get_workers, NULL, "Worker threads.", NULL},
    {"closed", (getter)CpuPool_get_closed, NULL, "True after close().",
     NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMemberDef CpuPool_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(CpuPoolObject, weakreflist),
     READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot CpuPool_slots[] = {
    {Py_tp_new, CpuPool_new},
    {Py_tp_dealloc, CpuPool_dealloc},
    {Py_tp_traverse, CpuPool_traverse},
    {Py_tp_methods, CpuPool_methods},
    {Py_tp_getset, CpuPool_getset},
    {Py_tp_members, CpuPool_members},
    {Py_tp_doc, "CpuPool(workers=0, max_queued=0)\n--\n\nNative worker "
                "threads (0: one per CPU)."},
    {0, NULL},
};

PyType_Spec CpuPool_spec = {
    .name = "twincore._twincore.CpuPool",
    .basicsize = sizeof(CpuPoolObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
    .slots = CpuPool_slots,
};
