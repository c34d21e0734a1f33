/* The event loop: one libev loop (epoll on Linux) owned by one thread.
 * Everything here is Thread: loop unless tagged otherwise; the thread-safe
 * entry points are tc_loop_call_from_thread() and tc_async_send(). */
#ifndef TWINCORE_LOOP_H
#define TWINCORE_LOOP_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum tc_run_mode {
    TC_RUN_DEFAULT = 0, /* until tc_loop_stop() or nothing is active */
    TC_RUN_ONCE,        /* one iteration, blocking for events if needed */
    TC_RUN_NOWAIT,      /* one iteration, never blocking */
} tc_run_mode_t;

typedef void (*tc_call_cb)(void *arg);
typedef void (*tc_walk_cb)(tc_handle_t *handle, void *arg);

/* Counters a loop keeps for tests and tuning; cheap to read. */
typedef struct tc_loop_stats {
    uint64_t iterations;      /* loop iterations run */
    uint64_t wakeups;         /* cross-thread wakeups received */
    uint64_t thread_calls;    /* tc_loop_call_from_thread callbacks run */
    uint64_t soon_calls;      /* tc_loop_call_soon callbacks run */
    /* The pre-poll wait: with pool work outstanding and nothing else to
     * do, the loop polls for its completions a few microseconds before it
     * sleeps in epoll (never in a process confined to one CPU). */
    uint64_t spin_waits;      /* such waits begun */
    uint64_t spin_hits;       /* ... that a completion ended */
    uint64_t spin_ns;         /* time spent in them */
} tc_loop_stats_t;

/* Create a loop; the calling thread becomes its owner.  Returns 0, -ENOMEM
 * or a negated errno from the backend. */
TC_EXTERN int tc_loop_new(tc_loop_t **out);

/* Free the loop.  Runs close callbacks still due; returns -EBUSY (and frees
 * nothing) while handles are open that tc_close() was not called on (list
 * them with tc_loop_walk()) or while pool work submitted for this loop has
 * not completed (run the loop until it has). */
TC_EXTERN int tc_loop_close(tc_loop_t *loop);

/* Run the loop.  Returns 0 when nothing is left active, 1 when it stopped or
 * a single iteration ended with handles still active, or -EINVAL/-EBUSY
 * (the loop is already running: loops do not nest).  The first call on a
 * thread asks Linux (6.12 and later) for the shortest time slice for it
 * (sched_attr.sched_runtime, reset on fork), so that when a timer or IO is
 * due the loop preempts CPU-bound threads, such as pool workers, instead of
 * waiting milliseconds for their slice to end; a thread with another
 * policy or a raised priority is left as it is. */
TC_EXTERN int tc_loop_run(tc_loop_t *loop, tc_run_mode_t mode);

/* One iteration that waits for events at most timeout_s seconds, for a
 * host's "poll once" (Twisted's doIteration, a selector's select): like
 * TC_RUN_ONCE, but returns once the timeout passed even when nothing
 * happened, and waits for it even when no handle is active.  timeout_s < 0
 * waits without a bound (TC_RUN_ONCE), 0 never waits (TC_RUN_NOWAIT).
 * Returns 0, -EINVAL (NaN) or -EBUSY (the loop is running). */
TC_EXTERN int tc_loop_run_timeout(tc_loop_t *loop, double timeout_s);

/* Make tc_loop_run() return after the current iteration. */
TC_EXTERN void tc_loop_stop(tc_loop_t *loop);

/* Cached monotonic time (CLOCK_MONOTONIC) in milliseconds, updated once
 * per iteration, by tc_loop_update_time() and by arming a timer. */
TC_EXTERN uint64_t tc_loop_now(const tc_loop_t *loop);
/* Same clock in seconds, with sub-millisecond precision. */
TC_EXTERN double tc_loop_now_s(const tc_loop_t *loop);
/* Read the clock now into the loop's cached time.  Timers need no call:
 * tc_timer_start() reads the clock itself (see timer.h). */
TC_EXTERN void tc_loop_update_time(tc_loop_t *loop);

/* Run fn(arg) on the next iteration, after IO of this one, in FIFO order.
 * Calls queued by a running callback run on the following iteration.
 * Returns 0 or -ENOMEM (fn is then never called). */
TC_EXTERN int tc_loop_call_soon(tc_loop_t *loop, tc_call_cb fn, void *arg);

/* Queue fn(arg) to run on the loop's thread.  Calls from all threads share
 * one wakeup; their order is kept per calling thread.  Returns 0, -ENOMEM,
 * or -ESHUTDOWN once the loop is closing.  Thread: any. */
TC_EXTERN int tc_loop_call_from_thread(tc_loop_t *loop, tc_call_cb fn,
                                       void *arg);

/* Call cb for every open handle, closing ones included. */
TC_EXTERN void tc_loop_walk(tc_loop_t *loop, tc_walk_cb cb, void *arg);
/* Number of handles tc_close() was not yet called on. */
TC_EXTERN size_t tc_loop_open_handles(const tc_loop_t *loop);

/* Embedding in a host event loop: poll tc_loop_backend_fd() for reading
 * with tc_loop_backend_timeout() (ms, -1 = none) as the timeout, then call
 * tc_loop_run(loop, TC_RUN_NOWAIT).  The timeout is O(active timers). */
TC_EXTERN int tc_loop_backend_fd(const tc_loop_t *loop);
TC_EXTERN int tc_loop_backend_timeout(tc_loop_t *loop);

TC_EXTERN void tc_loop_stats(const tc_loop_t *loop, tc_loop_stats_t *out);
TC_EXTERN void *tc_loop_data(const tc_loop_t *loop);
TC_EXTERN void tc_loop_set_data(tc_loop_t *loop, void *data);
/* True when the calling thread owns the loop.  Thread: any. */
TC_EXTERN bool tc_loop_is_owner_thread(const tc_loop_t *loop);
/* Make the calling thread the loop's owner: for a loop handed over to
 * another thread, or closed by a thread other than the one that made it
 * (a garbage collector's).  No other thread may use the loop meanwhile.
 * Returns 0, -EINVAL, or -EBUSY while the loop runs.  Thread: any. */
TC_EXTERN int tc_loop_adopt(tc_loop_t *loop);

/* A hook run once per iteration, after its IO and timer callbacks, the
 * call-soon queue and the close callbacks (from libev's invoke-pending
 * callback; an ev_check watcher would run before the IO callbacks); the
 * Python layer batches its work here.  One per loop; NULL removes it. */
TC_EXTERN void tc_loop_set_after_iteration(tc_loop_t *loop, tc_call_cb fn,
                                           void *arg);

#ifdef __cplusplus
}
#endif
#endif
