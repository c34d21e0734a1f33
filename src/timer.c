/* Timers: a thin handle over ev_timer.  Times are relative to the loop's
 * cached clock, so a timer started in a callback counts from the start of
 * that iteration, as libev's do. */
#include "internal.h"

#define TC__TIMER_MAX_S (100.0 * 365 * 86400)

struct tc_timer_s {
    tc_handle_t h;
    ev_timer w;
    tc_timer_cb cb;
};

static void
timer_fire(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_timer_t *t = TC__CONTAINER_OF(w, tc_timer_t, w);
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
    struct ev_loop *ev = t->h.loop->ev;
    ev_timer_stop(ev, &t->w);   /* Re-arming moves a running timer. */
    t->cb = cb;
    ev_timer_set(&t->w, after_s, repeat_s);
    ev_timer_start(ev, &t->w);
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
