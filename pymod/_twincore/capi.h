/* The capsule C API (capi.c) and the route of native work to a Future. */
#ifndef TWINCORE_PYMOD_CAPI_H
#define TWINCORE_PYMOD_CAPI_H

#include "module.h"

PyObject *capi_capsule(void);
/* GIL: held, reactor thread.  The one route of native work to a Future:
 * work(arg) runs on pool, then on the reactor's thread to_python(arg,
 * status) builds the result, or returns NULL with an exception that fails
 * the Future (CancelledError cancels it); it is called exactly once.
 * *handle (may be NULL) receives the pool's handle for tc_pool_cancel()
 * and is set to NULL when that handle expires.  New ref, or NULL. */
PyObject *native_submit(PyObject *reactor, tc_pool_t *pool,
                        int (*work)(void *arg),
                        PyObject *(*to_python)(void *arg, int status),
                        void *arg, int priority, tc_work_t **handle);

#endif
