/* The GIL on a pool worker.
 *
 * PyGILState_Ensure() on a thread without a thread state creates one, and
 * the matching release deletes it: a new frame stack each time, which
 * CPython maps with mmap and unmaps with munmap, and an munmap interrupts
 * every other CPU to flush its TLB.  Paid per batch of tasks, that cost
 * more CPU than the tasks (perf: a third of a one-at-a-time round trip).
 * A worker thread therefore keeps one thread state from its first task to
 * its exit, bound to the thread the way PyGILState_Ensure binds its own
 * (so code in a task that calls PyGILState_Ensure finds it), and takes the
 * GIL with it.  The thread's exit (pool closed) deletes it, unless the
 * interpreter is already finalizing, when taking the GIL could end the
 * thread inside its own TLS destructor: the interpreter frees what is
 * left at its end. */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <time.h>

#include "module.h"
#include "worker_gil.h"

/* How long a worker lets waiting loops go first, at most: a loop thread
 * asleep on the GIL takes tens of microseconds to wake on some machines. */
#define YIELD_MAX_NS 1000000u

static atomic_int loops_waiting;
static pthread_key_t tstate_key;
static pthread_once_t tstate_key_once = PTHREAD_ONCE_INIT;
static bool tstate_key_ok;

static bool
interpreter_finalizing(void)
{
#if PY_VERSION_HEX >= 0x030D0000
    return Py_IsFinalizing();
#else
    return _Py_IsFinalizing();
#endif
}

/* Thread: the exiting worker, GIL: takes and drops.  Not through
 * PyGILState_Release: the thread's exit may already have cleared the key
 * it looks the thread state up with; PyThreadState_DeleteCurrent unbinds
 * it whatever that key holds. */
static void
drop_thread_state(void *arg)
{
    PyThreadState *ts = arg;
    if (ts == NULL || interpreter_finalizing()) {
        return;
    }
    PyEval_RestoreThread(ts);
    PyThreadState_Clear(ts);
    PyThreadState_DeleteCurrent();
}

static void
make_key(void)
{
    tstate_key_ok = pthread_key_create(&tstate_key, drop_thread_state) == 0;
}

PyThreadState *
worker_gil_take(void)
{
    pthread_once(&tstate_key_once, make_key);
    PyThreadState *ts = tstate_key_ok ? pthread_getspecific(tstate_key)
                                      : NULL;
    if (ts != NULL) {
        PyEval_RestoreThread(ts);
        return ts;
    }
    /* First task on this thread: PyGILState_Ensure makes and binds the
     * thread state; the count it leaves (1) dies with it at thread exit. */
    (void)PyGILState_Ensure();
    ts = PyThreadState_Get();
    if (!tstate_key_ok || pthread_setspecific(tstate_key, ts) != 0) {
        return NULL;    /* release with PyGILState_Release, as before */
    }
    return ts;
}

void
worker_gil_release(PyThreadState *ts)
{
    if (ts == NULL) {
        PyGILState_Release(PyGILState_UNLOCKED);
        return;
    }
    (void)PyEval_SaveThread();
}

void
worker_gil_loop_wait_begin(void)
{
    atomic_fetch_add_explicit(&loops_waiting, 1, memory_order_relaxed);
}

void
worker_gil_loop_wait_end(void)
{
    atomic_fetch_sub_explicit(&loops_waiting, 1, memory_order_relaxed);
}

bool
worker_gil_loop_waiting(void)
{
    return atomic_load_explicit(&loops_waiting, memory_order_relaxed) > 0;
}

void
worker_gil_yield_to_loops(void)
{
    if (!worker_gil_loop_waiting()) {
        return;
    }
    uint64_t deadline = tcpy_clock_ns(CLOCK_MONOTONIC) + YIELD_MAX_NS;
    while (worker_gil_loop_waiting() &&
           tcpy_clock_ns(CLOCK_MONOTONIC) < deadline) {
        sched_yield();
    }
}
