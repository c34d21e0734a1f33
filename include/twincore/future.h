/* Futures: a result that arrives later, bound to one loop.
 *
 * A future is settled once: resolved with a value (DONE), rejected with a
 * negative code (FAILED), or cancelled (CANCELLED).  Any thread may resolve
 * or reject it; callbacks added with tc_future_then() always run on the
 * loop's thread, in the order added, on a loop iteration after the future
 * settled and never inside the call that added them.  A second settle is
 * refused with -EALREADY.  Futures are reference counted: whoever will
 * settle a future, or still reads it, holds a reference; every reference
 * is dropped before the loop is closed.  Callbacks due keep
 * tc_loop_run(TC_RUN_DEFAULT) running until they ran.
 *
 * Callback timing: a future settled on the loop thread queues its
 * callbacks with tc_loop_call_soon(), so they run in the after-phase of
 * the same loop iteration (a future of pool work: the iteration that
 * delivers the completion), never inside tc_future_resolve/reject/cancel
 * or tc_future_then().  The Python Future (pymod/_twincore/future.c) runs
 * its callbacks synchronously instead, inside set_result(), as a Twisted
 * Deferred does.  They differ on purpose: a tc_future may be settled from
 * any thread and by C code that holds state of its own (inside a stream or
 * done callback, under a lock), and one rule that never re-enters the
 * caller is what makes that safe; a Python Future is settled only on its
 * reactor's thread, by code that expects Deferred semantics (Twisted
 * interop, inline_callbacks), and calling back at once saves a hop on
 * every defer_to_cpu().  Both run callbacks on the loop thread, in the
 * order added. */
#ifndef TWINCORE_FUTURE_H
#define TWINCORE_FUTURE_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_future_s tc_future_t;

typedef enum tc_future_state {
    TC_FUTURE_PENDING = 0,
    TC_FUTURE_RUNNING,      /* the work that settles it has started */
    TC_FUTURE_DONE,
    TC_FUTURE_FAILED,
    TC_FUTURE_CANCELLED,
} tc_future_state_t;

/* status is 0 (DONE, value is the result), the rejection code (FAILED), or
 * -ECANCELED (CANCELLED); value is NULL unless DONE, and borrowed: it lives
 * as long as the future does. */
typedef void (*tc_future_cb)(tc_future_t *f, int status, void *value,
                             void *arg);

/* Like tc_future_cb, for tc_future_then_chain(): settle next (borrowed for
 * the call; tc_future_ref() it to settle it later), chain it to another
 * future with tc_future_chain(), or leave it pending. */
typedef void (*tc_future_chain_cb)(tc_future_t *f, int status, void *value,
                                   void *arg, tc_future_t *next);

/* A new PENDING future on loop; *out holds one reference.  Returns 0,
 * -EINVAL or -ENOMEM.  Thread: any. */
TC_EXTERN int tc_future_new(tc_loop_t *loop, tc_future_t **out);

TC_EXTERN void tc_future_ref(tc_future_t *f);
/* Drop a reference.  The last one frees the future, and its value with
 * free_value, on the loop's thread (from another thread the free is
 * queued to the loop).  A pending future freed never calls back.
 * Thread: any. */
TC_EXTERN void tc_future_unref(tc_future_t *f);

/* Settle with value; free_value (may be NULL) releases it when the future
 * is freed.  Returns 0; -EALREADY when the future was already settled (the
 * caller keeps value); -ESHUTDOWN or -ENOMEM when the loop cannot be
 * reached from this thread.  Thread: any. */
TC_EXTERN int tc_future_resolve(tc_future_t *f, void *value,
                                void (*free_value)(void *value));
/* Settle with the negative code err (-ECANCELED means cancelled).  Returns
 * as tc_future_resolve(), or -EINVAL when err >= 0.  Thread: any. */
TC_EXTERN int tc_future_reject(tc_future_t *f, int err);
/* Settle as CANCELLED and cancel the pool work behind the future, if any.
 * Returns 0 or -EALREADY. */
TC_EXTERN int tc_future_cancel(tc_future_t *f);
/* Mark a pending future RUNNING.  Returns 0 or -EALREADY.  Thread: any. */
TC_EXTERN int tc_future_set_running(tc_future_t *f);

/* Call cb(f, status, value, arg) once the future settles.  Returns 0,
 * -EINVAL or -ENOMEM (cb is then never called). */
TC_EXTERN int tc_future_then(tc_future_t *f, tc_future_cb cb, void *arg);
/* Like tc_future_then(), and *out receives a new future (one reference for
 * the caller) that cb settles through its next argument.  If cb leaves
 * next pending, it stays pending until someone settles it. */
TC_EXTERN int tc_future_then_chain(tc_future_t *f, tc_future_chain_cb cb,
                                   void *arg, tc_future_t **out);
/* Settle dst as src settles: the same value (borrowed from src, which dst
 * keeps alive), code, or cancellation.  src and dst may belong to
 * different loops.  Returns 0, -EINVAL or -ENOMEM.  Thread: src's loop. */
TC_EXTERN int tc_future_chain(tc_future_t *src, tc_future_t *dst);

/* Reject with -ETIMEDOUT unless settled within ms, on the loop's timers
 * (the timer keeps the loop running).  Setting it again re-arms it.
 * Returns 0, -EALREADY when settled, -EINVAL or -ENOMEM. */
TC_EXTERN int tc_future_set_timeout(tc_future_t *f, uint64_t ms);

/* The state: PENDING until the loop has processed a settle made on
 * another thread.  Thread: any. */
TC_EXTERN tc_future_state_t tc_future_state(const tc_future_t *f);
/* True once settled: DONE, FAILED or CANCELLED.  Thread: any. */
TC_EXTERN bool tc_future_is_done(const tc_future_t *f);
/* 0 and *value (may be NULL) when DONE; the code when FAILED or
 * CANCELLED; -EAGAIN while pending. */
TC_EXTERN int tc_future_result(const tc_future_t *f, void **value);
TC_EXTERN tc_loop_t *tc_future_loop(const tc_future_t *f);

#ifdef __cplusplus
}
#endif
#endif
