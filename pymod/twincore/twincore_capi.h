/* twincore's C API for other CPython extensions.
 *
 * A third-party extension hands native work to the same CPU pool and gets
 * twincore Futures back, without holding the GIL while it works:
 *
 *     #include "twincore_capi.h"      (directory: twincore.get_include())
 *     const twincore_capi_t *tc = twincore_capi_import();   (GIL held)
 *     if (tc == NULL) return NULL;                          (ImportError set)
 *     PyObject *fut = tc->defer_native(reactor, work, to_python, arg,
 *                                      TWINCORE_PRIORITY_NORMAL);
 *
 * work(arg) runs on a pool worker without the GIL; then, on the reactor's
 * thread with the GIL held, to_python(arg, status) builds the Future's
 * result (a new reference) or returns NULL with an exception set to fail
 * it (a CancelledError cancels it).  to_python is called exactly once, also when the task was cancelled
 * (status -ECANCELED) or failed (status < 0 from work): it is the place to
 * free arg.  The lower-level entries use twincore's C types directly. */
#ifndef TWINCORE_CAPI_H
#define TWINCORE_CAPI_H

#include <Python.h>

#ifdef __cplusplus
extern "C" {
#endif

#define TWINCORE_CAPI_NAME "twincore._twincore._C_API"
#define TWINCORE_CAPI_VERSION 1

#define TWINCORE_PRIORITY_HIGH 0
#define TWINCORE_PRIORITY_NORMAL 1
#define TWINCORE_PRIORITY_LOW 2

typedef struct tc_loop_s tc_loop_t;
typedef struct tc_pool_s tc_pool_t;
typedef struct tc_work_s tc_work_t;

typedef struct twincore_capi {
    int version;   /* TWINCORE_CAPI_VERSION or later */

    /* GIL: held, reactor thread.  A Future of to_python(arg, work(arg)). */
    PyObject *(*defer_native)(PyObject *reactor, int (*work)(void *arg),
                              PyObject *(*to_python)(void *arg, int status),
                              void *arg, int priority);

    /* GIL: held.  The native loop of a Reactor and the pool of a Reactor
     * (its cpu_pool) or a CpuPool; NULL with TypeError for other objects.
     * They stay valid while the Python object lives. */
    tc_loop_t *(*reactor_loop)(PyObject *reactor);
    tc_pool_t *(*pool_of)(PyObject *reactor_or_pool);

    /* Thread: any, GIL: not needed.  As tc_pool_submit() and
     * tc_loop_call_from_thread() in twincore's C headers: done and fn run
     * on the loop's thread, without the GIL. */
    int (*pool_submit)(tc_pool_t *pool, tc_loop_t *loop,
                       int (*work)(tc_work_t *w, void *arg),
                       void (*done)(tc_work_t *w, int status, void *arg),
                       void *arg, int priority, tc_work_t **out);
    int (*loop_call_from_thread)(tc_loop_t *loop, void (*fn)(void *arg),
                                 void *arg);

    /* GIL: held, reactor thread.  Futures made and settled from C. */
    PyObject *(*future_new)(PyObject *reactor);
    int (*future_set_result)(PyObject *future, PyObject *value);
    int (*future_set_exception)(PyObject *future, PyObject *exc);
} twincore_capi_t;

/* GIL: held.  NULL with an exception set when twincore is missing or too
 * old. */
static inline const twincore_capi_t *
twincore_capi_import(void)
{
    const twincore_capi_t *api = (const twincore_capi_t *)PyCapsule_Import(
        TWINCORE_CAPI_NAME, 0);
    if (api != NULL && api->version < TWINCORE_CAPI_VERSION) {
        PyErr_Format(PyExc_ImportError,
                     "twincore C API version %d, need %d", api->version,
                     TWINCORE_CAPI_VERSION);
        return NULL;
    }
    return api;
}

#ifdef __cplusplus
}
#endif
#endif
