/* One-shot and repeating timers on the loop's cached monotonic clock. */
#ifndef TWINCORE_TIMER_H
#define TWINCORE_TIMER_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*tc_timer_cb)(tc_timer_t *timer);

/* Allocate a stopped timer.  Returns 0, -EINVAL or -ENOMEM. */
TC_EXTERN int tc_timer_new(tc_loop_t *loop, void *data, tc_timer_t **out);

/* Arm the timer to fire after after_ms, then every repeat_ms (0: once).
 * Starting an active timer re-arms it.  Returns 0 or -EINVAL. */
TC_EXTERN int tc_timer_start(tc_timer_t *timer, tc_timer_cb cb,
                             uint64_t after_ms, uint64_t repeat_ms);
/* The same with seconds, for sub-millisecond delays. */
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
