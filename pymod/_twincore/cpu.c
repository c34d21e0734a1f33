/* CpuPool and CpuTask: Python callables on the native pool.
 *
 * Python tasks wait in the CpuPool's own queues (one per priority); the
 * native pool runs "drainers", at most one per worker thread, submitted
 * when a task arrives and fewer are running.  A drainer takes the GIL once
 * and runs queued tasks one after another (run_python_task), handing the
 * GIL back between batches: tiny tasks then cost no GIL hand-off each, and
 * a callable that releases the GIL (hashlib, zlib) still lets the other
 * drainers run, on every core.  Finished tasks cross back to their reactor
 * in one tc_loop_call_from_thread per batch and are delivered in the
 * reactor's batch as on_done(kind, value): 0 result, 1 exception,
 * 2 cancelled.
 *
 * A task's reference (the pool's) keeps it, and its reactor, alive from
 * submission to delivery; the task in turn holds its pool until then, so a
 * pool nobody else holds finishes its work, and is never freed on one of
 * its own workers (only a task of its own runs there).  While queued or running it is the pool's, and
 * the GC must not take the reactor from under the worker; once sent back
 * it waits in the loop's cross-thread queue, owned by the reactor: listed
 * on r->transit, so the reactor's traverse shows it to the GC and its
 * teardown releases what the loop can no longer deliver. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include "cpu.h"
#include "dispatch.h"
#include "errors.h"
#include "future.h"
#include "module.h"
#include "reactor.h"
#include "worker_gil.h"

#define NPRIO 3
#define BATCH_TASKS 64          /* tasks between GIL hand-backs, at most */
#define BATCH_NS 200000         /* ... or this long */

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
    bool failed;
    bool done;              /* delivered (or discarded) on the loop */
    bool started;           /* set by the worker, under the GIL */
    bool queued;            /* guards: the pool's qlock */
    int priority;
    int status;             /* 0, or -ECANCELED */
    CpuTaskObject *qprev, *qnext;   /* queue, then a finished batch */
    CpuTaskObject *lprev, *lnext;   /* pool->live, queued or running */
    CpuTaskObject *tprev, *tnext;   /* reactor->transit; its lock */
    struct CpuPoolObject *pool;     /* owned until delivered */
};

typedef struct CpuPoolObject {
    PyObject_HEAD
    tc_pool_t *pool;        /* NULL once closed */
    unsigned workers;
    /* guards: head, tail, live, queued, drainers.  Taken only with the
     * GIL held, so no worker holds it when Python forks. */
    pthread_mutex_t qlock;
    CpuTaskObject *head[NPRIO], *tail[NPRIO];
    CpuTaskObject *live;    /* tasks queued or running, for close() */
    tc_pool_t *closing;     /* closed, workers not yet joined */
    tc_pool_shutdown_mode_t closing_mode;
    size_t queued, max_queued;
    unsigned drainers;      /* submitted and not yet finished */
    /* Closed on one of its workers: nobody joins them, so the drainers
     * hold the pool (one reference) until the last is done with it. */
    bool held_by_drainers;
    bool qlock_ready;
    uint64_t submitted, cancelled;         /* guards: qlock */
    atomic_uint_fast64_t completed, failed, running;
    PyObject *weakreflist;
} CpuPoolObject;

tc_pool_t *
cpupool_native(PyObject *pool)
{
    return ((CpuPoolObject *)pool)->pool;
}

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Queue operations: under p->qlock. */
static void unlink_task(CpuPoolObject *p, CpuTaskObject *t);

static void
enqueue(CpuPoolObject *p, CpuTaskObject *t)
{
    t->qnext = NULL;
    t->qprev = p->tail[t->priority];
    if (t->qprev != NULL) {
        t->qprev->qnext = t;
    } else {
        p->head[t->priority] = t;
    }
    p->tail[t->priority] = t;
    t->queued = true;
    p->queued++;
    t->lprev = NULL;
    t->lnext = p->live;
    if (p->live != NULL) {
        p->live->lprev = t;
    }
    p->live = t;
}

/* The task no longer runs nor waits (finished or cancelled). */
static void
live_unlink(CpuPoolObject *p, CpuTaskObject *t)
{
    if (t->lprev != NULL) {
        t->lprev->lnext = t->lnext;
    } else {
        p->live = t->lnext;
    }
    if (t->lnext != NULL) {
        t->lnext->lprev = t->lprev;
    }
    t->lprev = t->lnext = NULL;
}

/* Remove a queued task that will not run. */
static void
drop_queued(CpuPoolObject *p, CpuTaskObject *t)
{
    unlink_task(p, t);
    live_unlink(p, t);
}

static void
unlink_task(CpuPoolObject *p, CpuTaskObject *t)
{
    if (t->qprev != NULL) {
        t->qprev->qnext = t->qnext;
    } else {
        p->head[t->priority] = t->qnext;
    }
    if (t->qnext != NULL) {
        t->qnext->qprev = t->qprev;
    } else {
        p->tail[t->priority] = t->qprev;
    }
    t->qprev = t->qnext = NULL;
    t->queued = false;
    p->queued--;
}

static CpuTaskObject *
dequeue(CpuPoolObject *p)
{
    for (int prio = 0; prio < NPRIO; prio++) {
        CpuTaskObject *t = p->head[prio];
        if (t != NULL) {
            unlink_task(p, t);
            return t;
        }
    }
    return NULL;
}

/* Thread: worker, GIL: held.  One call and the capture of its outcome. */
static void
run_python_task(CpuPoolObject *p, CpuTaskObject *task)
{
    task->started = true;
    atomic_fetch_add(&p->running, 1);
    PyObject *res = PyObject_Call(task->fn, task->args, task->kwargs);
    if (res != NULL) {
        task->outcome = res;
        atomic_fetch_add(&p->completed, 1);
    } else {
        task->outcome = tcpy_fetch_exception();
        task->failed = true;
        atomic_fetch_add(&p->failed, 1);
    }
    atomic_fetch_sub(&p->running, 1);
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
}

/* Thread: loop, GIL: none.  A finished batch (all of one reactor) enters
 * the reactor's batch. */
static void
deliver_batch(void *arg)
{
    CpuTaskObject *t = arg;
    ReactorObject *r = t->reactor;
    pthread_mutex_lock(&r->transit_lock);
    while (t != NULL) {
        CpuTaskObject *next = t->qnext;
        t->qnext = NULL;
        transit_unlink(r, t);
        pyevents_push(r, &cpu_task_ops, 0, NULL, t, t->status);
        t = next;
    }
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

/* GIL: held.  Drop the tasks sent back that the loop will never deliver:
 * those sent after the reactor closed, or into a loop leaked because a
 * worker still ran for it. */
void
cpu_transit_discard(ReactorObject *r)
{
    pthread_mutex_lock(&r->transit_lock);
    CpuTaskObject *t = r->transit;
    r->transit = NULL;
    pthread_mutex_unlock(&r->transit_lock);
    while (t != NULL) {
        CpuTaskObject *next = t->tnext;
        t->tprev = t->tnext = NULL;
        t->qnext = NULL;
        cpu_task_discard(t);
        t = next;
    }
}

/* Thread: any, GIL: none.  Send a finished list back, one cross-thread
 * call per run of tasks of the same reactor. */
static void
send_back(CpuTaskObject *list)
{
    while (list != NULL) {
        CpuTaskObject *run_end = list;
        while (run_end->qnext != NULL &&
               run_end->qnext->reactor == list->reactor) {
            run_end = run_end->qnext;
        }
        CpuTaskObject *rest = run_end->qnext;
        run_end->qnext = NULL;
        /* The tasks hold the reactor, and its teardown clears r->loop
         * under this lock before it frees the loop: the loop outlives the
         * call.  Sent or not, they are listed until delivered. */
        ReactorObject *r = list->reactor;
        pthread_mutex_lock(&r->transit_lock);
        for (CpuTaskObject *t = list; t != NULL; t = t->qnext) {
            t->tprev = NULL;
            t->tnext = r->transit;
            if (r->transit != NULL) {
                r->transit->tprev = t;
            }
            r->transit = t;
        }
        if (r->loop != NULL) {
            /* Fails only once the loop closes, when nobody is left to
             * deliver to: cpu_transit_discard() drops them. */
            tc_loop_call_from_thread(r->loop, deliver_batch, list);
        }
        pthread_mutex_unlock(&r->transit_lock);
        list = rest;
    }
}

/* Under p->qlock, GIL held: this drainer found the queue empty and ends;
 * the last one releases the pool's reference after its last use. */
static void
drainer_done(CpuPoolObject *p, bool *release)
{
    p->drainers--;
    if (p->drainers == 0 && p->held_by_drainers) {
        p->held_by_drainers = false;
        *release = true;
    }
}

/* Thread: worker, GIL: takes.  Runs queued tasks until none is left,
 * handing the GIL back between batches. */
static int
drain_work(tc_work_t *work, void *arg)
{
    (void)work;
    CpuPoolObject *p = arg;
    CpuTaskObject *done_head = NULL, *done_tail = NULL;
    unsigned in_batch = 0;
    bool release = false;
    PyThreadState *gil = worker_gil_take();
    uint64_t batch_start = now_ns();
    pthread_mutex_lock(&p->qlock);
    CpuTaskObject *t = dequeue(p);
    if (t == NULL) {
        drainer_done(p, &release);
    }
    pthread_mutex_unlock(&p->qlock);
    while (t != NULL) {
        run_python_task(p, t);
        if (done_tail != NULL) {
            done_tail->qnext = t;
        } else {
            done_head = t;
        }
        done_tail = t;
        /* A batch ends early when a loop waits for the GIL: its timers
         * and IO go first. */
        bool flush = ++in_batch >= BATCH_TASKS ||
                     now_ns() - batch_start > BATCH_NS ||
                     worker_gil_loop_waiting();
        pthread_mutex_lock(&p->qlock);
        live_unlink(p, t);  /* before it is sent back and may be freed */
        t = flush ? NULL : dequeue(p);
        if (!flush && t == NULL) {
            drainer_done(p, &release);
        }
        pthread_mutex_unlock(&p->qlock);
        if (flush) {
            worker_gil_release(gil);
            send_back(done_head);
            done_head = done_tail = NULL;
            in_batch = 0;
            worker_gil_yield_to_loops();
            gil = worker_gil_take();
            batch_start = now_ns();
            pthread_mutex_lock(&p->qlock);
            t = dequeue(p);
            if (t == NULL) {
                drainer_done(p, &release);
            }
            pthread_mutex_unlock(&p->qlock);
        }
    }
    if (release) {
        Py_DECREF(p);   /* the last use of p here; may free it */
    }
    worker_gil_release(gil);
    send_back(done_head);
    return 0;
}


static void
cpu_task_dispatch(ReactorObject *r, pyevent_t *ev)
{
    CpuTaskObject *task = ev->ptr;
    task->done = true;
    int kind;
    PyObject *value;
    if (ev->status == -ECANCELED) {
        kind = 2;
        value = Py_NewRef(Py_None);
    } else if (ev->status != 0) {
        kind = 1;
        value = tcpy_error_object(reactor_state(r), ev->status);
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

/* Loop thread, GIL held.  True when it was still queued: it then completes
 * as cancelled in the reactor's next batch. */
static bool
cancel_queued(CpuTaskObject *task)
{
    CpuPoolObject *p = task->pool;
    bool removed = false;
    if (!task->done && p != NULL) {
        pthread_mutex_lock(&p->qlock);
        if (task->queued) {
            drop_queued(p, task);
            p->cancelled++;
            removed = true;
        }
        pthread_mutex_unlock(&p->qlock);
    }
    if (!removed) {
        return false;   /* running or finished */
    }
    task->status = -ECANCELED;
    pyevents_push(task->reactor, &cpu_task_ops, 0, NULL, task, -ECANCELED);
    reactor_wake(task->reactor);
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
    /* The bound applies to Python tasks, in our own queue; the native
     * queue only ever holds one drainer per worker. */
    tc_pool_opts_t opts = {.threads = (unsigned)workers};
    int err = tc_pool_new(&opts, &p->pool);
    if (err != 0) {
        p->pool = NULL;
        Py_DECREF(p);
        return tcpy_raise(state_of_type(type), err);
    }
    p->workers = tc_pool_threads(p->pool);
    p->max_queued = (size_t)max_queued;
    pthread_mutex_init(&p->qlock, NULL);
    p->qlock_ready = true;
    return (PyObject *)p;
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
    if (mode == TC_POOL_CANCEL) {
        CpuTaskObject *head = NULL, *tail = NULL, *t;
        pthread_mutex_lock(&p->qlock);
        while ((t = dequeue(p)) != NULL) {
            live_unlink(p, t);
            t->status = -ECANCELED;
            p->cancelled++;
            if (tail != NULL) {
                tail->qnext = t;
            } else {
                head = t;
            }
            tail = t;
        }
        pthread_mutex_unlock(&p->qlock);
        send_back(head);
    }
}

/* GIL: drops.  Join the workers of a closed pool: drainers finish what
 * they run (and, draining, what is queued), and need the GIL for it.  On
 * one of the pool's own workers nothing is joined: tc_pool_free() leaves
 * the workers to exit on their own. */
static void
join_workers(CpuPoolObject *p)
{
    tc_pool_t *pool = p->closing;
    tc_pool_shutdown_mode_t mode = p->closing_mode;
    p->closing = NULL;
    if (pool == NULL) {
        return;
    }
    int err;
    Py_BEGIN_ALLOW_THREADS
    err = tc_pool_shutdown(pool, mode);
    tc_pool_free(pool);
    Py_END_ALLOW_THREADS
    pthread_mutex_lock(&p->qlock);
    if (err != -EDEADLK) {
        /* Every drainer has run or was cancelled with the pool; no new
         * one starts on a closed pool. */
        p->drainers = 0;
    } else if (p->drainers > 0 && !p->held_by_drainers) {
        /* On a worker: the drainers still to run or finish must find the
         * object alive, though their tasks may all be delivered first. */
        Py_INCREF(p);
        p->held_by_drainers = true;
    }
    pthread_mutex_unlock(&p->qlock);
}

/* GIL: drops. */
static void
close_pool(CpuPoolObject *p, tc_pool_shutdown_mode_t mode)
{
    begin_close(p, mode);
    join_workers(p);
}

/* GIL: held.  Would joining the workers here stall the reactor running on
 * this thread: is a task of its still queued (unless cancelled now) or
 * running?  Such a task may even need the loop to finish.  Returns that
 * reactor (borrowed) or NULL. */
static ReactorObject *
blocks_own_loop(CpuPoolObject *p, bool cancel)
{
    ReactorObject *found = NULL;
    pthread_mutex_lock(&p->qlock);
    for (CpuTaskObject *t = p->live; t != NULL && !found; t = t->lnext) {
        ReactorObject *r = t->reactor;
        if (cancel && t->queued) {
            continue;
        }
        if (r->loop != NULL && tc_loop_is_owner_thread(r->loop) &&
            r->running) {
            found = r;
        }
    }
    pthread_mutex_unlock(&p->qlock);
    return found;
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
    task->failed = false;
    task->done = false;
    task->started = false;
    task->queued = false;
    task->priority = (int)prio;
    task->status = 0;
    task->qprev = task->qnext = NULL;
    task->lprev = task->lnext = NULL;
    task->tprev = task->tnext = NULL;
    task->pool = (CpuPoolObject *)Py_NewRef(p);
    PyObject_GC_Track(task);

    pthread_mutex_lock(&p->qlock);
    if (p->max_queued > 0 && p->queued >= p->max_queued) {
        pthread_mutex_unlock(&p->qlock);
        task->done = true;
        Py_DECREF(task);
        PyErr_SetString(PyExc_BlockingIOError,
                        "defer_to_cpu(): the pool's queue is full");
        return NULL;
    }
    Py_INCREF(task);   /* the queue's reference, dropped on delivery */
    enqueue(p, task);
    p->submitted++;
    bool need_drainer = p->drainers < p->workers;
    if (need_drainer) {
        p->drainers++;
    }
    pthread_mutex_unlock(&p->qlock);
    if (need_drainer) {
        /* No done callback: tasks report through send_back, and the
         * completion of a drainer cancelled by close_pool() may reach its
         * loop after this object is gone. */
        int err = tc_pool_submit(p->pool, r->loop, drain_work, NULL, p,
                                 (tc_priority_t)prio, NULL);
        if (err != 0) {
            pthread_mutex_lock(&p->qlock);
            p->drainers--;
            bool orphan = p->drainers == 0 && task->queued;
            if (orphan) {
                drop_queued(p, task);
                p->submitted--;
            }
            pthread_mutex_unlock(&p->qlock);
            if (orphan) {
                task->done = true;
                Py_DECREF(task);   /* the queue's */
                Py_DECREF(task);
                tcpy_raise(st, err);
                return NULL;
            }
            /* Another drainer is running and will take it. */
        }
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

static PyObject *
CpuPool_stats(CpuPoolObject *p, PyObject *unused)
{
    (void)unused;
    if (p->pool == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "stats(): the CpuPool is closed");
        return NULL;
    }
    tc_pool_stats_t s;
    tc_pool_stats(p->pool, &s);
    pthread_mutex_lock(&p->qlock);
    uint64_t submitted = p->submitted, cancelled = p->cancelled;
    size_t queued = p->queued;
    pthread_mutex_unlock(&p->qlock);
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
        "{sKsKsKsKsKsKsIsNsN}", "submitted", (unsigned long long)submitted,
        "completed", (unsigned long long)atomic_load(&p->completed),
        "failed", (unsigned long long)atomic_load(&p->failed), "cancelled",
        (unsigned long long)cancelled, "queued", (unsigned long long)queued,
        "running", (unsigned long long)atomic_load(&p->running), "workers",
        s.threads, "drainer_wait_ns_log2", wait, "drainer_run_ns_log2", run);
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

/* In a child after fork(): the native pool forgot its workers and their
 * work; forget ours too.  Tasks queued or running in the parent are the
 * parent's: they never run here (their Futures stay pending), and new
 * tasks start new drainers. */
static PyObject *
CpuPool_after_fork(CpuPoolObject *p, PyObject *unused)
{
    (void)unused;
    if (!p->qlock_ready) {
        Py_RETURN_NONE;
    }
    CpuTaskObject *forgotten = NULL, *t;
    pthread_mutex_lock(&p->qlock);
    while ((t = dequeue(p)) != NULL) {
        t->qnext = forgotten;
        forgotten = t;
    }
    /* Running ones keep their pool reference: it stays alive here. */
    while (p->live != NULL) {
        live_unlink(p, p->live);
    }
    p->drainers = 0;
    p->held_by_drainers = false;    /* theirs: left alive here */
    pthread_mutex_unlock(&p->qlock);
    atomic_store(&p->running, 0);
    while (forgotten != NULL) {
        t = forgotten;
        forgotten = t->qnext;
        t->qnext = NULL;
        t->done = true;
        Py_CLEAR(t->pool);
        Py_DECREF(t);   /* the queue's */
    }
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
    if (p->qlock_ready) {
        close_pool(p, TC_POOL_CANCEL);
        pthread_mutex_destroy(&p->qlock);
    }
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
     "stats($self, /)\n--\n\nCounters and log2 histograms (ns) of queue "
     "wait and run time."},
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
    {"_after_fork", (PyCFunction)CpuPool_after_fork, METH_NOARGS,
     "_after_fork($self, /)\n--\n\nIn a child after fork(): forget the "
     "parent's tasks and drainers."},
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
