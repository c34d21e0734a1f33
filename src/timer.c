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
 * costs an extra iteration.
 *
 * What libev cannot do is wake on time: it sleeps in epoll_wait, whose
 * timeout is in whole milliseconds and rounded up, so a timer due in
 * 0.3 ms fired about 1 ms late.  The loop therefore keeps the due times of
 * its armed timers in a heap of its own and points a timerfd (in the same
 * epoll set) at the earliest before each poll: the poll ends when that
 * timer is due, to the microsecond, and libev then finds it due. */
#include <float.h>
#include <math.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "internal.h"

#define TC__TIMER_MAX_S (100.0 * 365 * 86400)

struct tc_timer_s {
    tc_handle_t h;
    ev_timer w;
    tc_timer_cb cb;
    double base;      /* due time of the first fire, tc_loop_now_s clock */
    double repeat;    /* seconds between fires; 0: once */
    double slot;      /* grid index n of the pending fire */
    double due;       /* when armed: the due time in the loop's heap */
    size_t heap_index;   /* 1-based position in the heap; 0: not in it */
};

/* ---- the loop's heap of due times (min-heap on due) ---- */

static bool
heap_less(tc_timer_t *a, tc_timer_t *b)
{
    return a->due < b->due;
}

static void
heap_place(tc_loop_t *loop, size_t i, tc_timer_t *t)
{
    loop->timer_heap[i] = t;
    t->heap_index = i + 1;
}

static void
heap_sift_up(tc_loop_t *loop, size_t i)
{
    tc_timer_t *t = loop->timer_heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!heap_less(t, loop->timer_heap[parent])) {
            break;
        }
        heap_place(loop, i, loop->timer_heap[parent]);
        i = parent;
    }
    heap_place(loop, i, t);
}

static void
heap_sift_down(tc_loop_t *loop, size_t i)
{
    size_t n = loop->timer_heap_len;
    tc_timer_t *t = loop->timer_heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n &&
            heap_less(loop->timer_heap[child + 1], loop->timer_heap[child])) {
            child++;
        }
        if (!heap_less(loop->timer_heap[child], t)) {
            break;
        }
        heap_place(loop, i, loop->timer_heap[child]);
        i = child;
    }
    heap_place(loop, i, t);
}

static void
heap_remove(tc_timer_t *t)
{
    tc_loop_t *loop = t->h.loop;
    if (t->heap_index == 0) {
        return;
    }
    size_t i = t->heap_index - 1;
    t->heap_index = 0;
    tc_timer_t *last = loop->timer_heap[--loop->timer_heap_len];
    if (last == t) {
        return;
    }
    heap_place(loop, i, last);
    heap_sift_up(loop, i);
    heap_sift_down(loop, last->heap_index - 1);
}

/* Out of memory the timer only loses its precise wake-up (libev's
 * millisecond one remains), so there is no error to report. */
static void
heap_insert(tc_timer_t *t)
{
    tc_loop_t *loop = t->h.loop;
    if (loop->timer_heap_len == loop->timer_heap_cap) {
        size_t cap = loop->timer_heap_cap ? loop->timer_heap_cap * 2 : 16;
        tc_timer_t **items = realloc(loop->timer_heap, cap * sizeof(*items));
        if (items == NULL) {
            return;
        }
        loop->timer_heap = items;
        loop->timer_heap_cap = cap;
    }
    heap_place(loop, loop->timer_heap_len++, t);
    heap_sift_up(loop, loop->timer_heap_len - 1);
}

static void
timer_disarm(tc_timer_t *t)
{
    ev_timer_stop(t->h.loop->ev, &t->w);
    heap_remove(t);
}

static void
wake_fired(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_loop_t *loop = TC__CONTAINER_OF(w, tc_loop_t, timer_io);
    uint64_t expirations;
    while (read(w->fd, &expirations, sizeof(expirations)) < 0 &&
           errno == EINTR) {
    }
    loop->timer_fd_due = -1.0;   /* disarmed by firing */
}

void
tc__timers_init(tc_loop_t *loop)
{
    loop->timer_fd_due = -1.0;
    loop->timer_fd = timerfd_create(CLOCK_MONOTONIC,
                                    TFD_NONBLOCK | TFD_CLOEXEC);
    if (loop->timer_fd < 0) {
        return;     /* timers keep libev's millisecond precision */
    }
    ev_io_init(&loop->timer_io, wake_fired, loop->timer_fd, EV_READ);
    tc__io_start(loop->ev, &loop->timer_io);
    ev_unref(loop->ev);
}

void
tc__timers_fini(tc_loop_t *loop)
{
    if (loop->timer_fd >= 0) {
        ev_ref(loop->ev);
        tc__io_stop(loop->ev, &loop->timer_io);
        close(loop->timer_fd);
        loop->timer_fd = -1;
    }
    free(loop->timer_heap);
    loop->timer_heap = NULL;
    loop->timer_heap_len = loop->timer_heap_cap = 0;
}

/* Before the poll: point the timerfd at the earliest due time, one
 * syscall only when that changed.  A microsecond on top covers libev's
 * own margin (arm_at), so that libev finds the timer due when it wakes. */
void
tc__timers_before_poll(tc_loop_t *loop)
{
    if (loop->timer_fd < 0 || loop->timer_heap_len == 0) {
        return;
    }
    double due = loop->timer_heap[0]->due;
    if (due == loop->timer_fd_due) {
        return;
    }
    double at = due + 1e-6;
    struct itimerspec its = {0};
    its.it_value.tv_sec = (time_t)at;
    its.it_value.tv_nsec = (long)((at - (double)its.it_value.tv_sec) * 1e9);
    if (its.it_value.tv_nsec >= 1000000000L) {
        its.it_value.tv_sec++;
        its.it_value.tv_nsec -= 1000000000L;
    }
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0) {
        its.it_value.tv_nsec = 1;   /* zero would disarm it */
    }
    if (timerfd_settime(loop->timer_fd, TFD_TIMER_ABSTIME, &its, NULL) ==
        0) {
        loop->timer_fd_due = due;
    }
}

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
    heap_remove(t);
    t->due = due;
    heap_insert(t);
}

static void
timer_fire(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_timer_t *t = TC__CONTAINER_OF(w, tc_timer_t, w);
    heap_remove(t);   /* libev stopped the one-shot watcher */
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
    timer_disarm(TC__CONTAINER_OF(h, tc_timer_t, h));
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
    timer_disarm(t);   /* Re-arming moves it. */
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
    timer_disarm(t);
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
