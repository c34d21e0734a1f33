/* The GIL on a pool worker: a thread state made once per worker thread and
 * kept for the thread's life (worker_gil.c). */
#ifndef TWINCORE_WORKER_GIL_H
#define TWINCORE_WORKER_GIL_H

#include <Python.h>
#include <stdbool.h>

/* GIL: takes.  Make this thread's thread state for the main interpreter
 * current (creating it on the thread's first call) and take the GIL.
 * Returns what worker_gil_release() needs.  Thread: a native worker. */
PyThreadState *worker_gil_take(void);
/* GIL: drops.  Thread: the one that took it. */
void worker_gil_release(PyThreadState *ts);

/* The loop thread has precedence for the GIL: a reactor's dispatch brackets
 * its wait for the GIL with these (GIL: none), and workers that run Python
 * tasks back to back end their batch when a loop waits
 * (worker_gil_loop_waiting) and, having dropped the GIL, let it go first
 * (worker_gil_yield_to_loops, GIL: none) instead of taking the GIL back
 * before the loop's thread has even woken.  Thread: any. */
void worker_gil_loop_wait_begin(void);
void worker_gil_loop_wait_end(void);
bool worker_gil_loop_waiting(void);
void worker_gil_yield_to_loops(void);

#endif
