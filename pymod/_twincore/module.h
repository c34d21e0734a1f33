/* The module twincore._twincore (module.c): its state, reached from any
 * object through its type, and the small helpers every file shares.
 *
 * Threads and the GIL: every object of the extension belongs to one
 * reactor's loop thread.  C callbacks from the loop run without the GIL
 * and only queue events (dispatch.h); dispatch_ready() takes the GIL once
 * per iteration and runs them all.  Each header tags what differs. */
#ifndef TWINCORE_PYMOD_MODULE_H
#define TWINCORE_PYMOD_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>   /* PyMemberDef, T_PYSSIZET in 3.11 */
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include <twincore.h>

typedef struct tc_state {
    PyTypeObject *Reactor_type;
    PyTypeObject *Transport_type;
    PyTypeObject *Listener_type;
    PyTypeObject *TimerHandle_type;
    PyTypeObject *DatagramTransport_type;
    PyTypeObject *CpuPool_type;
    PyTypeObject *CpuTask_type;
    PyTypeObject *Future_type;
    PyTypeObject *FutureIter_type;
    PyTypeObject *TLSContext_type;
    PyTypeObject *FdWatcher_type;
    PyTypeObject *ProcessTransport_type;
    PyTypeObject *InterpreterPool_type;   /* 3.12+ (interp.c), else NULL */
    PyTypeObject *StreamReader_type;
    PyTypeObject *ReadLine_type;
    PyObject *CancelledError;   /* asyncio's, so both kinds of code catch it */
    PyObject *InvalidStateError;
    PyObject *Error;            /* twincore.Error(OSError): codes errno lacks */
    PyObject *logger;           /* logging.getLogger("twincore") */
    /* Interned method names for the hot paths. */
    PyObject *str_data_received;
    PyObject *str_eof_received;
    PyObject *str_connection_made;
    PyObject *str_connection_lost;
    PyObject *str_pause_writing;
    PyObject *str_resume_writing;
    PyObject *str_build_protocol;
    PyObject *str_datagram_received;
    PyObject *str_error_received;
} tc_state;

extern PyModuleDef tc_module;

static inline tc_state *
state_of_module(PyObject *module)
{
    return (tc_state *)PyModule_GetState(module);
}

static inline tc_state *
state_of_type(PyTypeObject *type)
{
    PyObject *module = PyType_GetModuleByDef(type, &tc_module);
    return module != NULL ? state_of_module(module) : NULL;
}

/* A growable byte buffer in C memory.  GIL: none. */
typedef struct bytebuf {
    char *data;
    size_t len, cap;
} bytebuf_t;

int bytebuf_append(bytebuf_t *b, const void *p, size_t n);
void bytebuf_free(bytebuf_t *b);

/* Nanoseconds on a clock (CLOCK_MONOTONIC, a thread's CPU clock).  Thread:
 * any, GIL: not needed. */
static inline uint64_t
tcpy_clock_ns(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

#endif
