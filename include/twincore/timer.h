/* One-shot and repeating timers on the monotonic clock.
 *
 * The rule: a delay counts from the call that arms the timer, never from
 * the loop's cached time.  Arming reads the clock (it updates the loop's
 * time as tc_loop_update_time() does, so tc_loop_now_s() + after_s is the
 * due time), and a timer never fires before its due time has passed on
 * CLOCK_MONOTONIC, however long the callback that armed it had run.  It
 * may fire later: after the callbacks ahead of it, and epoll waits in
 * whole milliseconds. */
#ifndef TWINCORE_TIMER_H
#define TWINCORE_TIMER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*tc_timer_cb)(tc_timer_t *timer);

/* Allocate a stopped timer.  Returns 0, -EINVAL or -ENOMEM. */
TC_EXTERN int tc_timer_new(tc_loop_t *loop, void *data, tc_timer_t **out);

/* Arm the timer to fire after_ms from this call, then every repeat_ms
 * (0: once).  Repeats keep a fixed schedule: fire n (from 0) is due at
 * after + n * repeat from the call; slots the loop missed while busy are
 * skipped, not run back to back.  Starting an active timer re-arms it
 * (also from its own callback).  Returns 0 or -EINVAL. */
TC_EXTERN int tc_timer_start(tc_timer_t *timer, tc_timer_cb cb,
                             uint64_t after_ms, uint64_t repeat_ms);
/* The same with seconds, for sub-millisecond delays; at most a century. */
TC_EXTERN int tc_timer_start_s(tc_timer_t *timer, tc_timer_cb cb,
                               double after_s, double repeat_s);
/* Disarm; harmless when not armed. */
TC_EXTERN int tc_timer_stop(tc_timer_t *timer);
/* Milliseconds until the timer fires, or 0 when it is not armed. */
TC_EXTERN uint64_t tc_timer_remaining(const tc_timer_t *timer);

#ifdef __cplusplus
}
#endif
#endif
