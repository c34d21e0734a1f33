/* The CPU pool: native worker threads that run work off the loop thread and
 * hand each result back to the loop that submitted it.
 *
 * A pool is shared by any number of loops.  tc_pool_submit() is safe from
 * any thread; the work function runs on a worker, then its done callback
 * runs exactly once on the submitting loop's thread, with the work's return
 * value or -ECANCELED.  Completions from every worker reach a loop through
 * one cross-thread wakeup per batch, however many there are.  Work submitted
 * from the loop's own thread keeps tc_loop_run(TC_RUN_DEFAULT) going until
 * its done callback has run.  After fork(), the child finds each pool empty
 * and usable: its workers start again on the next submit, the parent's
 * queued work is discarded (no callback), and the child submits from loops
 * of its own (the parent's loops and their completions stay the parent's).
 */
#ifndef TWINCORE_POOL_H
#define TWINCORE_POOL_H

#include "common.h"
#include "future.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_pool_s tc_pool_t;
typedef struct tc_work_s tc_work_t;

/* Queued work runs highest priority first, FIFO within a priority.  LOW is
 * for bulk work: with two or more workers it never occupies all of them,
 * so HIGH and NORMAL work always finds a worker soon. */
typedef enum tc_priority {
    TC_PRIORITY_HIGH = 0,
    TC_PRIORITY_NORMAL = 1,
    TC_PRIORITY_LOW = 2,
} tc_priority_t;

#define TC_PRIORITY_COUNT 3

/* Runs on a worker; returns 0 or a negative code, passed to the done
 * callback as its status.  Thread: worker. */
typedef int (*tc_work_fn)(tc_work_t *work, void *arg);
/* Runs once on the submitting loop's thread after the work ran (status is
 * its return value) or was cancelled (status is -ECANCELED).  work is valid
 * until this returns. */
typedef void (*tc_work_done_cb)(tc_work_t *work, int status, void *arg);

typedef struct tc_pool_opts {
    unsigned threads;       /* workers; 0: the number of online CPUs */
    size_t max_queued;      /* bound on work waiting for a worker; 0: none */
    bool block_when_full;   /* full: tc_pool_submit waits, not -EAGAIN */
    size_t stack_size;      /* worker stack in bytes; 0: the default */
} tc_pool_opts_t;

typedef enum tc_pool_shutdown_mode {
    TC_POOL_DRAIN = 0,      /* run all queued work, then stop */
    TC_POOL_CANCEL,         /* cancel queued work, flag running work */
} tc_pool_shutdown_mode_t;

/* Log2 histogram buckets: bucket 0 counts 0 ns, bucket i counts durations
 * in [2^(i-1), 2^i) ns, and the last bucket everything longer. */
#define TC_POOL_HIST_BUCKETS 40

typedef struct tc_pool_stats {
    uint64_t submitted;     /* accepted by tc_pool_submit */
    uint64_t completed;     /* ran and returned 0 */
    uint64_t failed;        /* ran and returned < 0 */
    uint64_t cancelled;     /* cancelled before they ran */
    uint64_t queued;        /* waiting for a worker now */
    uint64_t running;       /* on a worker now */
    unsigned threads;       /* workers configured */
    /* One task in 8 is timed (the first included): three clock reads per
     * task would cost more than a tiny task.  timed counts them. */
    uint64_t timed;
    uint64_t wait_ns[TC_POOL_HIST_BUCKETS];  /* submit -> start */
    uint64_t run_ns[TC_POOL_HIST_BUCKETS];   /* start -> end */
} tc_pool_stats_t;

/* Create a pool; opts may be NULL.  Workers start on the first submit.
 * Returns 0, -EINVAL or -ENOMEM.  Thread: any. */
TC_EXTERN int tc_pool_new(const tc_pool_opts_t *opts, tc_pool_t **out);

/* Queue work_fn(work, arg) at priority; done_cb(work, status, arg) (may be
 * NULL) runs later on loop's thread.  *out (may be NULL) receives a handle
 * for tc_pool_cancel(), valid until done_cb returns.  Returns 0, -EINVAL,
 * -ENOMEM, -ESHUTDOWN after tc_pool_shutdown(), -EAGAIN when the queue is
 * full (or, with block_when_full, waits for room), or a negated errno when
 * no worker could be started.  On failure done_cb is never called.
 * Work submitted from another thread does not keep the loop running; do
 * not close the loop before its done callback ran.  Submits made inside
 * done callbacks reach the workers in groups of up to 32, or when the
 * batch of callbacks ends.  Thread: any. */
TC_EXTERN int tc_pool_submit(tc_pool_t *pool, tc_loop_t *loop,
                             tc_work_fn work_fn, tc_work_done_cb done_cb,
                             void *arg, tc_priority_t priority,
                             tc_work_t **out);

/* Cancel work before its done callback ran.  Queued work is removed and its
 * done callback runs on a later iteration with -ECANCELED: returns 0.
 * Running or finished work cannot be stopped: the flag that
 * tc_work_is_cancelled() reads is set and -EBUSY returned.  -EALREADY when
 * already cancelled.  Thread: the submitting loop. */
TC_EXTERN int tc_pool_cancel(tc_work_t *work);

/* True once tc_pool_cancel() or a cancelling shutdown asked running work
 * to stop; long work polls it.  Thread: any. */
TC_EXTERN bool tc_work_is_cancelled(const tc_work_t *work);
/* The loop the work's done callback runs on.  Thread: any. */
TC_EXTERN tc_loop_t *tc_work_loop(const tc_work_t *work);
/* The arg given to tc_pool_submit().  Thread: any. */
TC_EXTERN void *tc_work_arg(const tc_work_t *work);

/* Batching, for work that shares an expensive set-up (an interpreter's
 * GIL): called by a work function on its worker, end work as if its work
 * function had returned status and take the next work this worker would
 * run anyway (the highest priority, oldest queued work, the LOW cap
 * respected), provided it was submitted with the same work function.
 * Returns that work, now running: the caller runs it itself (its work
 * function is not called), and may take the next one after it; what the
 * work function finally returns is the status of the last work taken.
 * Returns NULL, and changes nothing, when the next work is of another
 * kind or none is queued.  Ended work counts in tc_pool_stats() at once;
 * it goes to its loop, in one hand-over with the rest of the batch, after
 * the work function returns.
 * Bound the batch yourself (by count or time): queued work of other kinds
 * waits meanwhile.  Thread: worker, inside work's own work function. */
TC_EXTERN tc_work_t *tc_work_take_next(tc_work_t *work, int status);

/* Called for each work of tc_pool_walk(): running is true for work a
 * worker runs, false for queued work.  A non-zero return stops the walk. */
typedef int (*tc_pool_walk_cb)(tc_work_t *work, bool running, void *arg);

/* Call cb for each running, then each queued work of pool (only those
 * submitted with work_fn, unless it is NULL), under the pool's lock: cb
 * must not call into the pool, nor block.  Returns what the last cb
 * returned (0 when the walk ran through), or -EINVAL.  Thread: any. */
TC_EXTERN int tc_pool_walk(tc_pool_t *pool, tc_work_fn work_fn,
                           tc_pool_walk_cb cb, void *arg);

/* Stop the pool: refuse new work (-ESHUTDOWN), drain or cancel the queued
 * work, then join every worker.  Cancelled work's done callback still runs
 * once, with -ECANCELED, on its loop's thread.  Blocks until the workers
 * have exited; drained work's done callbacks run when its loops run.
 * Returns 0, -EALREADY on a second call or after tc_pool_stop() (the
 * first such call still joins the workers), or -EDEADLK from a worker.
 * Thread: any but a worker of this pool. */
TC_EXTERN int tc_pool_shutdown(tc_pool_t *pool, tc_pool_shutdown_mode_t mode);

/* The first half of tc_pool_shutdown(), which never blocks: refuse new
 * work (-ESHUTDOWN) and drain or cancel the queued work (cancelled work's
 * done callbacks queued as tc_pool_shutdown() does), and let the workers
 * exit once the queue is empty.  A later tc_pool_shutdown() or
 * tc_pool_free() joins them.  Returns 0, -EINVAL, or -EALREADY when the
 * pool was already stopped.  Thread: any, a worker of this pool too. */
TC_EXTERN int tc_pool_stop(tc_pool_t *pool, tc_pool_shutdown_mode_t mode);

/* Shut down (draining) unless already done, and free the pool.  Done
 * callbacks not yet run still run on their loops; the last of them
 * releases the memory.  Called from one of the pool's own work functions
 * it cannot join that worker, so it returns at once: the workers run the
 * queued work, then exit on their own, and the last one out (or the last
 * done callback) releases the memory.  Not while another thread is inside
 * tc_pool_shutdown() of the same pool.  Thread: any. */
TC_EXTERN void tc_pool_free(tc_pool_t *pool);

/* Copy the counters and histograms into *out.  Thread: any. */
TC_EXTERN void tc_pool_stats(tc_pool_t *pool, tc_pool_stats_t *out);
/* The number of workers the pool runs (started or not).  Thread: any. */
TC_EXTERN unsigned tc_pool_threads(const tc_pool_t *pool);

/* Runs on a worker: return 0 and set *value (freed later with the
 * free_value given to tc_pool_submit_future), or a negative code that
 * rejects the future (a positive return rejects it with -EINVAL).
 * Thread: worker. */
typedef int (*tc_value_work_fn)(tc_work_t *work, void *arg, void **value);

/* Run fn on the pool and settle a new future on loop with its outcome: the
 * future is RUNNING while fn runs, then DONE with *value, FAILED with the
 * code fn returned, or CANCELLED.  Cancelling the future, or its timeout,
 * cancels queued work and flags running work.  *out holds one reference
 * for the caller.  Returns 0 or what tc_pool_submit() returns.
 * Thread: loop. */
TC_EXTERN int tc_pool_submit_future(tc_pool_t *pool, tc_loop_t *loop,
                                    tc_value_work_fn fn, void *arg,
                                    void (*free_value)(void *value),
                                    tc_priority_t priority,
                                    tc_future_t **out);

/* A wake scope, for an embedder whose own lock (an interpreter's GIL) a
 * worker needs as soon as it starts: between begin and end, the work that
 * tc_pool_submit() calls made on this thread queue is not shown to the
 * workers (sleeping or polling for work), and end shows it to them, so a
 * worker does not start it only to block on the lock that the submitter
 * still holds (and, on one CPU, to preempt the submitter).  Not nested; at
 * most 4 pools are held per scope (others wake at once).  Thread: any (the
 * scope is per thread). */
TC_EXTERN void tc_pool_defer_wakes_begin(void);
TC_EXTERN void tc_pool_defer_wakes_end(void);

#ifdef __cplusplus
}
#endif
#endif
