/* The GIL on a pool worker: a thread state made once per worker thread and
 * kept for the thread's life (worker_gil.c). */
#ifndef TWINCORE_WORKER_GIL_H
#define TWINCORE_WORKER_GIL_H

#include <Python.h>

/* GIL: takes.  Make this thread's thread state for the main interpreter
 * current (creating it on the thread's first call) and take the GIL.
 * Returns what worker_gil_release() needs.  Thread: a native worker. */
PyThreadState *worker_gil_take(void);
/* GIL: drops.  Thread: the one that took it. */
void worker_gil_release(PyThreadState *ts);

#endif
