/* The C API other extensions import through a capsule (twincore_capi.h):
 * native tasks on the shared pool that settle twincore Futures, and the
 * lower-level pool and loop entry points. */
#include "capi.h"
#include "cpu.h"
#include "dispatch.h"
#include "errors.h"
#include "future.h"
#include "module.h"
#include "reactor.h"
#include "twincore_capi.h"

typedef struct native_task {
    ReactorObject *reactor;   /* strong */
    PyObject *future;         /* strong */
    int (*work)(void *arg);
    PyObject *(*to_python)(void *arg, int status);
    void *arg;
    tc_work_t **handle;       /* cleared when the pool's handle expires */
    int status;
} native_task_t;

/* A finished task (dispatch.h); ptr: the native_task_t, owned. */
static const pyevent_ops_t native_ops;   /* beside native_dispatch() */

/* Thread: worker, GIL: none. */
static int
native_work(tc_work_t *w, void *arg)
{
    (void)w;
    native_task_t *t = arg;
    t->status = t->work(t->arg);
    return t->status;   /* < 0 counts as failed in the pool's stats */
}

/* Thread: loop, GIL: none. */
static void
native_done(tc_work_t *w, int status, void *arg)
{
    (void)w;
    native_task_t *t = arg;
    if (status != 0) {
        t->status = status;   /* cancelled by a pool shutdown */
    }
    if (t->handle != NULL) {
        *t->handle = NULL;
    }
    pyevents_push(t->reactor, &native_ops, 0, NULL, t, 0);
}

static void
native_dispatch(ReactorObject *r, pyevent_t *ev)
{
    native_task_t *t = ev->ptr;
    PyObject *res = t->to_python(t->arg, t->status);
    int rc = 0;
    if (res != NULL) {
        if (future_is_pending(t->future)) {
            rc = future_set_result(t->future, res);
        }
        Py_DECREF(res);
    } else if (PyErr_ExceptionMatches(reactor_state(r)->CancelledError)) {
        PyErr_Clear();
        rc = future_cancel(t->future, NULL);
    } else {
        PyObject *exc = tcpy_fetch_exception();
        if (exc == NULL) {
            exc = PyObject_CallFunction(PyExc_SystemError, "s",
                                        "to_python returned NULL without "
                                        "an exception");
        }
        if (exc != NULL && future_is_pending(t->future)) {
            rc = future_set_exception(t->future, exc);
        }
        Py_XDECREF(exc);
    }
    if (rc < 0) {
        reactor_report(r, "a native task's callback");
    }
    Py_DECREF(t->future);
    Py_DECREF(t->reactor);
    free(t);
}

/* A delivered native task in the reactor's queue: the queue owns it. */
static int
native_traverse(pyevent_t *ev, visitproc visit, void *arg)
{
    native_task_t *t = ev->ptr;
    Py_VISIT((PyObject *)t->reactor);
    Py_VISIT(t->future);
    return 0;
}

static void
native_discard(ReactorObject *r, pyevent_t *ev)
{
    (void)r;
    native_task_t *t = ev->ptr;
    PyObject *res = t->to_python(t->arg, -ECANCELED);   /* frees arg */
    Py_XDECREF(res);
    PyErr_Clear();
    Py_DECREF(t->future);
    Py_DECREF(t->reactor);
    free(t);
}

static const pyevent_ops_t native_ops = {
    .run = native_dispatch,
    .discard = native_discard,
    .traverse = native_traverse,
    .name = "native_task",
};

static tc_state *
state_of_ours(PyObject *obj)
{
    PyObject *module = PyType_GetModuleByDef(Py_TYPE(obj), &tc_module);
    if (module == NULL) {
        PyErr_Clear();
        return NULL;
    }
    return state_of_module(module);
}

static tc_loop_t *
capi_reactor_loop(PyObject *reactor)
{
    tc_state *st = state_of_ours(reactor);
    if (st == NULL || !PyObject_TypeCheck(reactor, st->Reactor_type)) {
        PyErr_SetString(PyExc_TypeError, "twincore C API: expected a "
                                         "Reactor");
        return NULL;
    }
    return ((ReactorObject *)reactor)->loop;
}

static tc_pool_t *
capi_pool_of(PyObject *obj)
{
    tc_state *st = state_of_ours(obj);
    if (st != NULL && PyObject_TypeCheck(obj, st->CpuPool_type)) {
        return cpupool_native(obj);
    }
    if (st == NULL || !PyObject_TypeCheck(obj, st->Reactor_type)) {
        PyErr_SetString(PyExc_TypeError, "twincore C API: expected a "
                                         "Reactor or a CpuPool");
        return NULL;
    }
    /* The Python property creates the default pool on first use. */
    PyObject *pool = PyObject_GetAttrString(obj, "cpu_pool");
    if (pool == NULL) {
        return NULL;
    }
    tc_pool_t *native = PyObject_TypeCheck(pool, st->CpuPool_type)
                            ? cpupool_native(pool)
                            : NULL;
    Py_DECREF(pool);   /* the reactor keeps it */
    if (native == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "the reactor's CpuPool is "
                                            "closed");
    }
    return native;
}

static PyObject *
capi_defer_native(PyObject *reactor, int (*work)(void *),
                  PyObject *(*to_python)(void *, int), void *arg,
                  int priority)
{
    if (work == NULL || to_python == NULL || priority < TC_PRIORITY_HIGH ||
        priority > TC_PRIORITY_LOW) {
        PyErr_SetString(PyExc_ValueError,
                        "defer_native(): bad work, to_python or priority");
        return NULL;
    }
    tc_loop_t *loop = capi_reactor_loop(reactor);
    if (loop == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "the reactor is closed");
        }
        return NULL;
    }
    tc_pool_t *pool = capi_pool_of(reactor);
    if (pool == NULL) {
        return NULL;
    }
    return native_submit(reactor, pool, work, to_python, arg, priority,
                         NULL);
}

PyObject *
native_submit(PyObject *reactor, tc_pool_t *pool, int (*work)(void *),
              PyObject *(*to_python)(void *, int), void *arg, int priority,
              tc_work_t **handle)
{
    tc_loop_t *loop = ((ReactorObject *)reactor)->loop;
    tc_state *st = state_of_ours(reactor);
    native_task_t *t = malloc(sizeof(*t));
    if (t == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *fut = future_new(st, reactor);
    if (fut == NULL) {
        free(t);
        return NULL;
    }
    t->reactor = (ReactorObject *)Py_NewRef(reactor);
    t->future = Py_NewRef(fut);
    t->work = work;
    t->to_python = to_python;
    t->arg = arg;
    t->handle = handle;
    t->status = 0;
    int err = tc_pool_submit(pool, loop, native_work, native_done, t,
                             (tc_priority_t)priority, handle);
    if (err != 0) {
        Py_DECREF(t->future);
        Py_DECREF(t->reactor);
        free(t);
        Py_DECREF(fut);
        return tcpy_raise(st, err);
    }
    return fut;
}

static PyObject *
capi_future_new(PyObject *reactor)
{
    tc_state *st = state_of_ours(reactor);
    if (st == NULL || !PyObject_TypeCheck(reactor, st->Reactor_type)) {
        PyErr_SetString(PyExc_TypeError, "future_new(): expected a Reactor");
        return NULL;
    }
    return future_new(st, reactor);
}

static int
capi_submit(tc_pool_t *pool, tc_loop_t *loop,
            int (*work)(tc_work_t *, void *),
            void (*done)(tc_work_t *, int, void *), void *arg, int priority,
            tc_work_t **out)
{
    return tc_pool_submit(pool, loop, work, done, arg,
                          (tc_priority_t)priority, out);
}

static const twincore_capi_t capi = {
    .version = TWINCORE_CAPI_VERSION,
    .defer_native = capi_defer_native,
    .reactor_loop = capi_reactor_loop,
    .pool_of = capi_pool_of,
    .pool_submit = capi_submit,
    .loop_call_from_thread = tc_loop_call_from_thread,
    .future_new = capi_future_new,
    .future_set_result = future_set_result,
    .future_set_exception = future_set_exception,
};

PyObject *
capi_capsule(void)
{
    return PyCapsule_New((void *)&capi, TWINCORE_CAPI_NAME, NULL);
}
