/* Timers: a handle over a one-shot ev_timer.  A delay counts from the
 * start call, never from the loop's cached time: libev measures from its
 * cached "now" (the start of the iteration), so a timer armed at the end of
 * a long callback would fire early.  Arming therefore reads the clock
 * first (tc_loop_update_time) and converts an absolute due time on it into
 * libev's relative delay.  Repeats run on a fixed grid, base + n * repeat,
 * computed by multiplication rather than libev's "at += repeat", whose
 * rounding drifts early by up to half an ulp per period; slots missed while
 * the loop was busy are skipped, never crowded together.
 *
 * libev itself cannot fire early once the delay is right: it fires a timer
 * only when its due time is below the clock it read after the poll
 * (timers_reify), and an early return of epoll (millisecond timeouts,
 * backend_mintime, a timeout collect interval, none of which we set) only
 * costs an extra iteration. */
#include <float.h>
#include <math.h>

#include "internal.h"

#define TC__TIMER_MAX_S (100.0 * 365 * 86400)

struct tc_timer_s {
    tc_handle_t h;
    ev_timer w;
    tc_timer_cb cb;
    double base;      /* due time of the first fire, tc_loop_now_s clock */
    double repeat;    /* seconds between fires; 0: once */
    double slot;      /* grid index n of the pending fire */
};

/* Arm the libev watcher to fire no earlier than due; the caller has just
 * called tc_loop_update_time, which reads our clock and then libev's, so
 * libev's "now" is never behind the one we subtract.  The margin covers
 * the rounding of due and of libev's own sum (a few ulps of a clock value:
 * nanoseconds after months of uptime). */
static void
arm_at(tc_timer_t *t, double due)
{
    tc_loop_t *loop = t->h.loop;
    double after = due - loop->now_mono;
    if (after < 0.0) {
        after = 0.0;
    }
    after += 8.0 * DBL_EPSILON * fabs(due);
    ev_timer_set(&t->w, after, 0.0);
    ev_timer_start(loop->ev, &t->w);
}

static void
timer_fire(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_timer_t *t = TC__CONTAINER_OF(w, tc_timer_t, w);
    if (t->repeat > 0.0) {
        /* Re-arm before the callback, which may stop or restart it. */
        tc_loop_update_time(t->h.loop);
        double now = t->h.loop->now_mono;
        t->slot += 1.0;
        if (t->base + t->slot * t->repeat < now) {
            t->slot = ceil((now - t->base) / t->repeat);
        }
        arm_at(t, t->base + t->slot * t->repeat);
    }
    t->cb(t);
}

static void
timer_close(tc_handle_t *h)
{
    tc_timer_t *t = TC__CONTAINER_OF(h, tc_timer_t, h);
    ev_timer_stop(h->loop->ev, &t->w);
}

static bool
timer_is_active(const tc_handle_t *h)
{
    const tc_timer_t *t = TC__CONTAINER_OF(h, tc_timer_t, h);
    return ev_is_active(&t->w);
}

static double
timer_next(const tc_handle_t *h)
{
    tc_timer_t *t = TC__CONTAINER_OF(h, tc_timer_t, h);
    if (!ev_is_active(&t->w)) {
        return -1.0;
    }
    double left = ev_timer_remaining(h->loop->ev, &t->w);
    return left > 0.0 ? left : 0.0;
}

static const tc__handle_vtable_t timer_vt = {
    .close_impl = timer_close,
    .is_active = timer_is_active,
    .next_timeout = timer_next,
};

tc_handle_t *
tc_timer_handle(tc_timer_t *timer)
{
    return timer != NULL ? &timer->h : NULL;
}

int
tc_timer_new(tc_loop_t *loop, void *data, tc_timer_t **out)
{
    if (loop == NULL || out == NULL) {
        return -EINVAL;
    }
    tc_timer_t *t = calloc(1, sizeof(*t));
    if (t == NULL) {
        return -ENOMEM;
    }
    tc__handle_init(loop, &t->h, TC_HANDLE_TIMER, &timer_vt, data);
    ev_init(&t->w, timer_fire);
    *out = t;
    return 0;
}

int
tc_timer_start_s(tc_timer_t *t, tc_timer_cb cb, double after_s,
                 double repeat_s)
{
    /* The negated tests also reject NaN; a century caps what epoll and
     * libev's double arithmetic can take without losing precision. */
    if (t == NULL || cb == NULL || !(after_s >= 0.0) || !(repeat_s >= 0.0) ||
        after_s > TC__TIMER_MAX_S || repeat_s > TC__TIMER_MAX_S) {
        return -EINVAL;
    }
    if (tc__handle_closing(&t->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(t->h.loop);
    ev_timer_stop(t->h.loop->ev, &t->w);   /* Re-arming moves it. */
    t->cb = cb;
    tc_loop_update_time(t->h.loop);
    t->base = t->h.loop->now_mono + after_s;
    t->repeat = repeat_s;
    t->slot = 0.0;
    arm_at(t, t->base);
    return 0;
}

int
tc_timer_start(tc_timer_t *t, tc_timer_cb cb, uint64_t after_ms,
               uint64_t repeat_ms)
{
    return tc_timer_start_s(t, cb, (double)after_ms / 1000.0,
                            (double)repeat_ms / 1000.0);
}

int
tc_timer_stop(tc_timer_t *t)
{
    if (t == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(t->h.loop);
    ev_timer_stop(t->h.loop->ev, &t->w);
    return 0;
}

uint64_t
tc_timer_remaining(const tc_timer_t *t)
{
    if (t == NULL) {
        return 0;
    }
    double left_ms = timer_next(&t->h) * 1000.0 + 0.5;
    if (left_ms >= 18446744073709551615.0) {
        return UINT64_MAX;   /* the conversion would overflow */
    }
    return left_ms > 0.5 ? (uint64_t)left_ms : 0;
}
