/* Timers: fire in deadline order, once or repeatedly; stop, re-arm and
 * close cleanly, also from inside their own callback.  Only counts and
 * orders are asserted; times only bound the waits. */
#include "helpers.h"
#include "internal.h"   /* the loop's timer heap and timerfd */

#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

static int64_t
now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

typedef struct tctx {
    tc_loop_t *loop;
    int fired;
    int limit;           /* stop (or re-arm) after this many */
    int rearms;          /* one-shot re-arms left */
    int *order;          /* shared order log */
    int *order_n;
    int id;
    bool was_active;     /* tc_handle_is_active seen inside the callback */
} tctx_t;

static tctx_t *
ctx_of(tc_timer_t *t)
{
    return tc_handle_data(tc_timer_handle(t));
}

static void
count_cb(tc_timer_t *t)
{
    ctx_of(t)->fired++;
}

static void
order_cb(tc_timer_t *t)
{
    tctx_t *c = ctx_of(t);

    c->fired++;
    c->order[(*c->order_n)++] = c->id;
}

static void
test_bad_args(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t = NULL;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(NULL, NULL, &t), -EINVAL);
    assert_null(t);
    ASSERT_RC(tc_timer_new(loop, NULL, NULL), -EINVAL);
    ASSERT_RC(tc_timer_new(loop, NULL, &t), 0);
    ASSERT_RC(tc_timer_start(t, NULL, 10, 0), -EINVAL);
    ASSERT_RC(tc_timer_start(NULL, count_cb, 10, 0), -EINVAL);
    ASSERT_RC(tc_timer_start_s(t, NULL, 0.01, 0), -EINVAL);
    ASSERT_RC(tc_timer_start_s(NULL, count_cb, 0.01, 0), -EINVAL);
    ASSERT_RC(tc_timer_start_s(t, count_cb, NAN, 0), -EINVAL);
    ASSERT_RC(tc_timer_start_s(t, count_cb, 0.01, NAN), -EINVAL);
    int rc = tc_timer_start_s(t, count_cb, -1.0, 0);
    assert_true(rc == 0 || rc == -EINVAL);
    ASSERT_RC(tc_timer_stop(NULL), -EINVAL);
    assert_int_equal(tc_timer_remaining(NULL), 0);
    ASSERT_RC(tc_timer_stop(t), 0);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

static void
test_one_shot(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    assert_int_equal(tc_handle_type(tc_timer_handle(t)), TC_HANDLE_TIMER);
    assert_false(tc_handle_is_active(tc_timer_handle(t)));
    ASSERT_RC(tc_timer_start(t, count_cb, 5, 0), 0);
    assert_true(tc_handle_is_active(tc_timer_handle(t)));
    RUN_UNTIL(loop, c.fired > 0, 5000);
    run_for(loop, 30);
    assert_int_equal(c.fired, 1);
    /* A fired one-shot timer is no longer active and has nothing left. */
    assert_false(tc_handle_is_active(tc_timer_handle(t)));
    assert_int_equal(tc_timer_remaining(t), 0);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

/* A one-shot timer keeps TC_RUN_DEFAULT running until it fired; with
 * nothing else active the run then returns 0. */
static void
stop_guard_cb(tc_timer_t *t)
{
    tc_timer_t *guard = tc_handle_data(tc_timer_handle(t));

    tc_timer_stop(guard);
    tc_handle_set_data(tc_timer_handle(t), NULL);
}

static void
guard_fired(tc_timer_t *guard)
{
    bool *expired = tc_handle_data(tc_timer_handle(guard));

    *expired = true;
    tc_loop_stop(tc_handle_loop(tc_timer_handle(guard)));
}

static void
test_keeps_loop_alive(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t, *guard;
    bool expired = false;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &expired, &guard), 0);
    ASSERT_RC(tc_timer_start(guard, guard_fired, 10000, 0), 0);
    ASSERT_RC(tc_timer_new(loop, guard, &t), 0);
    ASSERT_RC(tc_timer_start(t, stop_guard_cb, 10, 0), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_false(expired);
    assert_null(tc_handle_data(tc_timer_handle(t)));
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    ASSERT_RC(tc_close(tc_timer_handle(guard), NULL), 0);
    close_loop_clean(loop);
}

static void
test_fire_in_deadline_order(void **state)
{
    static const int delays[] = {50, 10, 40, 5, 30, 20, 0, 60};
    enum { N = sizeof(delays) / sizeof(delays[0]) };
    tc_loop_t *loop;
    tc_timer_t *t[N];
    tctx_t c[N];
    int order[N * 2];
    int order_n = 0;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    for (int i = 0; i < N; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].order = order;
        c[i].order_n = &order_n;
        c[i].id = delays[i];
        ASSERT_RC(tc_timer_new(loop, &c[i], &t[i]), 0);
        ASSERT_RC(tc_timer_start(t[i], order_cb, (uint64_t)delays[i], 0), 0);
    }
    RUN_UNTIL(loop, order_n == N, 5000);
    run_for(loop, 20);
    assert_int_equal(order_n, N);
    for (int i = 1; i < N; i++) {
        if (order[i - 1] > order[i]) {
            fail_msg("timer %d ms fired before timer %d ms", order[i - 1],
                     order[i]);
        }
    }
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].fired, 1);
        ASSERT_RC(tc_close(tc_timer_handle(t[i]), NULL), 0);
    }
    close_loop_clean(loop);
}

/* Even when every timer is overdue in the same iteration, they run in
 * deadline order. */
static void
test_overdue_order(void **state)
{
    enum { N = 5 };
    tc_loop_t *loop;
    tc_timer_t *t[N];
    tctx_t c[N];
    int order[N];
    int order_n = 0;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    for (int i = 0; i < N; i++) {
        memset(&c[i], 0, sizeof(c[i]));
        c[i].order = order;
        c[i].order_n = &order_n;
        c[i].id = N - i;
        ASSERT_RC(tc_timer_new(loop, &c[i], &t[i]), 0);
        ASSERT_RC(tc_timer_start(t[i], order_cb, (uint64_t)(N - i), 0), 0);
    }
    usleep(30000); /* all are overdue before the loop looks */
    RUN_UNTIL(loop, order_n == N, 5000);
    for (int i = 0; i < N; i++) {
        assert_int_equal(order[i], i + 1);
        ASSERT_RC(tc_close(tc_timer_handle(t[i]), NULL), 0);
    }
    close_loop_clean(loop);
}

static void
stop_at_limit_cb(tc_timer_t *t)
{
    tctx_t *c = ctx_of(t);

    c->was_active = tc_handle_is_active(tc_timer_handle(t));
    if (++c->fired == c->limit) {
        ASSERT_RC(tc_timer_stop(t), 0);
    }
}

static void
test_repeating_stop_inside_callback(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {.limit = 5};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    ASSERT_RC(tc_timer_start(t, stop_at_limit_cb, 1, 2), 0);
    RUN_UNTIL(loop, c.fired >= 5, 5000);
    /* Stopped inside its callback: no further firing. */
    run_for(loop, 40);
    assert_int_equal(c.fired, 5);
    assert_true(c.was_active); /* a repeating timer stays active */
    assert_false(tc_handle_is_active(tc_timer_handle(t)));
    assert_int_equal(tc_timer_remaining(t), 0);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

static void
rearm_cb(tc_timer_t *t)
{
    tctx_t *c = ctx_of(t);

    c->fired++;
    if (c->rearms > 0) {
        c->rearms--;
        ASSERT_RC(tc_timer_start(t, rearm_cb, 1, 0), 0);
    }
}

static void
test_rearm_inside_callback(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {.rearms = 3};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    ASSERT_RC(tc_timer_start(t, rearm_cb, 1, 0), 0);
    RUN_UNTIL(loop, c.fired >= 4, 5000);
    run_for(loop, 30);
    assert_int_equal(c.fired, 4);
    assert_false(tc_handle_is_active(tc_timer_handle(t)));
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

static void
test_rearm_moves_deadline(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    ASSERT_RC(tc_timer_start(t, count_cb, 60000, 0), 0);
    uint64_t r = tc_timer_remaining(t);
    assert_true(r > 50000 && r <= 60000);
    /* Re-arming an active timer moves it; it is never armed twice. */
    ASSERT_RC(tc_timer_start(t, count_cb, 5, 0), 0);
    assert_true(tc_timer_remaining(t) <= 5);
    RUN_UNTIL(loop, c.fired > 0, 5000);
    run_for(loop, 30);
    assert_int_equal(c.fired, 1);
    assert_false(tc_handle_is_active(tc_timer_handle(t)));

    /* Moving a near deadline far: it does not fire at the old one. */
    ASSERT_RC(tc_timer_start(t, count_cb, 5, 0), 0);
    ASSERT_RC(tc_timer_start(t, count_cb, 60000, 0), 0);
    run_for(loop, 40);
    assert_int_equal(c.fired, 1);
    assert_true(tc_handle_is_active(tc_timer_handle(t)));
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

static void
test_stop_before_firing(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t, *r;
    tctx_t c = {0}, cr = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    ASSERT_RC(tc_timer_new(loop, &cr, &r), 0);
    ASSERT_RC(tc_timer_start(t, count_cb, 5, 0), 0);
    ASSERT_RC(tc_timer_start(r, count_cb, 1, 1), 0);
    ASSERT_RC(tc_timer_stop(t), 0);
    ASSERT_RC(tc_timer_stop(r), 0);
    /* Stopping twice is harmless. */
    ASSERT_RC(tc_timer_stop(t), 0);
    assert_false(tc_handle_is_active(tc_timer_handle(t)));
    assert_int_equal(tc_timer_remaining(t), 0);
    run_for(loop, 40);
    assert_int_equal(c.fired, 0);
    assert_int_equal(cr.fired, 0);
    /* A stopped timer can be started again. */
    ASSERT_RC(tc_timer_start(t, count_cb, 1, 0), 0);
    RUN_UNTIL(loop, c.fired == 1, 5000);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    ASSERT_RC(tc_close(tc_timer_handle(r), NULL), 0);
    close_loop_clean(loop);
}

static void
test_remaining(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    assert_int_equal(tc_timer_remaining(t), 0);
    ASSERT_RC(tc_timer_start(t, count_cb, 5000, 0), 0);
    uint64_t r0 = tc_timer_remaining(t);
    assert_true(r0 > 4000 && r0 <= 5000);
    run_for(loop, 30);
    uint64_t r1 = tc_timer_remaining(t);
    assert_true(r1 <= r0);
    assert_true(r1 > 3000);
    ASSERT_RC(tc_timer_stop(t), 0);
    assert_int_equal(tc_timer_remaining(t), 0);
    /* A repeating timer reports the time to its next firing. */
    ASSERT_RC(tc_timer_start(t, count_cb, 3000, 7000), 0);
    uint64_t r2 = tc_timer_remaining(t);
    assert_true(r2 > 2000 && r2 <= 3000);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    assert_false(c.fired);
    close_loop_clean(loop);
}

static void
test_start_seconds(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {.limit = 3};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    ASSERT_RC(tc_timer_start_s(t, count_cb, 0.0005, 0), 0);
    RUN_UNTIL(loop, c.fired == 1, 5000);
    ASSERT_RC(tc_timer_start_s(t, stop_at_limit_cb, 0.0002, 0.0003), 0);
    c.fired = 0;
    RUN_UNTIL(loop, c.fired == 3, 5000);
    run_for(loop, 20);
    assert_int_equal(c.fired, 3);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

/* Closing from inside the callback: no further firing, close cb once. */
static void
close_self_cb(tc_timer_t *t)
{
    tctx_t *c = ctx_of(t);

    c->fired++;
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
}

static void
count_closed(tc_handle_t *h)
{
    ((tctx_t *)tc_handle_data(h))->limit++;
}

static void
close_self_counted_cb(tc_timer_t *t)
{
    tctx_t *c = ctx_of(t);

    c->fired++;
    ASSERT_RC(tc_close(tc_timer_handle(t), count_closed), 0);
    assert_int_equal(c->limit, 0); /* not inside tc_close */
}

static void
test_close_inside_callback(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t, *u;
    tctx_t c = {0}, cu = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    ASSERT_RC(tc_timer_start(t, close_self_cb, 1, 1), 0);
    ASSERT_RC(tc_timer_new(loop, &cu, &u), 0);
    ASSERT_RC(tc_timer_start(u, close_self_counted_cb, 1, 1), 0);
    RUN_UNTIL(loop, c.fired >= 1 && cu.limit >= 1, 5000);
    run_for(loop, 30);
    assert_int_equal(c.fired, 1);
    assert_int_equal(cu.fired, 1);
    assert_int_equal(cu.limit, 1);
    close_loop_clean(loop);
}

/* Closing an armed timer: it never fires, its close callback runs once. */
static void
test_close_active(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    ASSERT_RC(tc_timer_start(t, count_cb, 1, 1), 0);
    ASSERT_RC(tc_close(tc_timer_handle(t), count_closed), 0);
    ASSERT_ERR(tc_timer_start(t, count_cb, 1, 1));
    run_for(loop, 30);
    assert_int_equal(c.fired, 0);
    assert_int_equal(c.limit, 1);
    close_loop_clean(loop);
}

/* Many timers with random deadlines, half cancelled: exactly the others
 * fire, each once, in deadline order.  Each delay counts from its own
 * start call, so the order is that of start time + delay (to within the
 * few microseconds between reading the clock here and in the call; the
 * delays differ by whole milliseconds). */
static void
test_many_timers_cancel_half(void **state)
{
    enum { N = 400 };
    tc_loop_t *loop;
    static tc_timer_t *t[N];
    static tctx_t c[N];
    static int order[N];
    static int64_t due[N];
    int order_n = 0;
    uint64_t x = 88172645463325252ull;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        memset(&c[i], 0, sizeof(c[i]));
        c[i].order = order;
        c[i].order_n = &order_n;
        c[i].id = i;
        uint64_t ms = x % 100;   /* deadline */
        ASSERT_RC(tc_timer_new(loop, &c[i], &t[i]), 0);
        due[i] = now_ns() + (int64_t)ms * 1000000;
        ASSERT_RC(tc_timer_start(t[i], order_cb, ms, 0), 0);
    }
    for (int i = 0; i < N; i += 2) {
        ASSERT_RC(tc_timer_stop(t[i]), 0);
    }
    RUN_UNTIL(loop, order_n == N / 2, 10000);
    run_for(loop, 20);
    assert_int_equal(order_n, N / 2);
    for (int i = 0; i < N; i++) {
        assert_int_equal(c[i].fired, i % 2);
        ASSERT_RC(tc_close(tc_timer_handle(t[i]), NULL), 0);
    }
    for (int i = 1; i < N / 2; i++) {
        if (due[order[i - 1]] > due[order[i]] + 100000) {
            fail_msg("timer %d fired before timer %d, due %lld us earlier",
                     order[i - 1], order[i],
                     (long long)(due[order[i - 1]] - due[order[i]]) / 1000);
        }
    }
    close_loop_clean(loop);
}

/* The largest delays neither fire nor overflow what reports them. */
static void
test_huge_delays(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    tctx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &c, &t), 0);
    static const uint64_t delays[] = {86400000, (uint64_t)INT32_MAX + 1,
                                      UINT64_MAX / 2, UINT64_MAX};
    for (size_t i = 0; i < sizeof(delays) / sizeof(delays[0]); i++) {
        int rc = tc_timer_start(t, count_cb, delays[i], delays[i]);

        if (rc != 0) {
            ASSERT_RC(rc, -EINVAL);
            continue;
        }
        uint64_t r = tc_timer_remaining(t);
        if (r < 86400000 - 1000) {
            fail_msg("a %llu ms timer reports %llu ms remaining",
                     (unsigned long long)delays[i], (unsigned long long)r);
        }
        int timeout = tc_loop_backend_timeout(loop);
        assert_true(timeout > 86400000 - 1000);
        run_nowait(loop, 2);
        assert_int_equal(c.fired, 0);
    }
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

/* ---- never early ------------------------------------------------------
 * A timer's delay counts from the tc_timer_start call on the monotonic
 * clock, not from the loop's cached time: a callback that ran long before
 * arming must not shorten the delay.  Measured in integer nanoseconds just
 * before the start call and at the top of the fire callback. */

static void
spin_ns(int64_t ns)
{
    int64_t end = now_ns() + ns;

    while (now_ns() < end) {
    }
}

typedef struct early {
    tc_loop_t *loop;
    int64_t armed_at;     /* now_ns() just before tc_timer_start */
    int64_t delay_ns;
    int64_t repeat_ns;
    int64_t spin_ns;      /* how long the callback runs before re-arming */
    int fires;
    int limit;
    int early;            /* fires that came before their time */
    int64_t worst_ns;     /* the earliest of them, before its time */
    uint64_t rng;
    double due_s;         /* tc_loop_now_s() after arming + the delay */
    int cached_early;     /* fires that saw tc_loop_now_s() < due_s */
} early_t;

static void
early_check(early_t *e, int64_t due)
{
    int64_t now = now_ns();

    if (now < due) {
        e->early++;
        if (due - now > e->worst_ns) {
            e->worst_ns = due - now;
        }
    }
}

/* The case: a callback runs 3 ms, then arms a 1 ms timer. */
static void
long_then_arm_cb(tc_timer_t *t)
{
    early_t *e = tc_handle_data(tc_timer_handle(t));

    tc_loop_t *loop = tc_handle_loop(tc_timer_handle(t));

    if (e->fires++ > 0) {
        early_check(e, e->armed_at + e->delay_ns);
        /* The loop's cached time agrees: arming refreshed it. */
        if (tc_loop_now_s(loop) < e->due_s) {
            e->cached_early++;
        }
    }
    if (e->fires > e->limit) {
        return;
    }
    spin_ns(e->spin_ns);
    e->armed_at = now_ns();
    ASSERT_RC(tc_timer_start(t, long_then_arm_cb, 1, 0), 0);
    e->due_s = tc_loop_now_s(loop) + 0.001;
}

static void
test_no_early_fire_after_long_callback(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    early_t e = {.delay_ns = 1000000, .spin_ns = 3000000, .limit = 30};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &e, &t), 0);
    ASSERT_RC(tc_timer_start(t, long_then_arm_cb, 0, 0), 0);
    RUN_UNTIL(loop, e.fires > e.limit, 10000);
    if (e.early > 0) {
        fail_msg("%d of %d timers of 1 ms fired early, one by %lld us",
                 e.early, e.limit, (long long)(e.worst_ns / 1000));
    }
    assert_int_equal(e.cached_early, 0);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

/* A timer armed before the loop first runs counts from the call too, not
 * from when the loop was made. */
static void
stamp_cb(tc_timer_t *t)
{
    early_t *e = tc_handle_data(tc_timer_handle(t));

    e->fires++;
    early_check(e, e->armed_at + e->delay_ns);
}

static void
test_no_early_fire_before_the_loop_runs(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    early_t e = {.delay_ns = 20000000};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &e, &t), 0);
    usleep(30000);   /* the loop's cached time is now 30 ms old */
    e.armed_at = now_ns();
    ASSERT_RC(tc_timer_start(t, stamp_cb, 20, 0), 0);
    RUN_UNTIL(loop, e.fires == 1, 5000);
    assert_int_equal(e.early, 0);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

static uint64_t
xorshift(uint64_t *x)
{
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    return *x;
}

/* Many timers at once: each fire checks its own deadline, runs for a
 * random while (so the loop's cached time goes stale for the callbacks
 * after it), then re-arms with a random sub-millisecond or millisecond
 * delay, through either start call. */
static void
random_rearm_cb(tc_timer_t *t)
{
    early_t *e = tc_handle_data(tc_timer_handle(t));
    early_t *all = tc_loop_data(e->loop);

    early_check(all, e->armed_at + e->delay_ns);
    if (++all->fires >= all->limit) {
        return;
    }
    spin_ns((int64_t)(xorshift(&all->rng) % 300) * 1000);
    uint64_t r = xorshift(&all->rng);
    e->armed_at = now_ns();
    if (r & 1) {
        e->delay_ns = (int64_t)((r >> 1) % 2) * 1000000;
        ASSERT_RC(tc_timer_start(t, random_rearm_cb,
                                 (uint64_t)(e->delay_ns / 1000000), 0), 0);
    } else {
        e->delay_ns = (int64_t)((r >> 1) % 1500) * 1000;
        ASSERT_RC(tc_timer_start_s(t, random_rearm_cb,
                                   (double)e->delay_ns / 1e9, 0), 0);
    }
}

static void
test_no_early_fire_in_10000_tries(void **state)
{
    enum { K = 16 };
    tc_loop_t *loop;
    tc_timer_t *t[K];
    early_t e[K];
    early_t all = {.limit = 10000, .rng = 88172645463325252ull};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_loop_set_data(loop, &all);
    for (int i = 0; i < K; i++) {
        memset(&e[i], 0, sizeof(e[i]));
        e[i].loop = loop;
        e[i].delay_ns = (int64_t)i * 100000;
        ASSERT_RC(tc_timer_new(loop, &e[i], &t[i]), 0);
        e[i].armed_at = now_ns();
        ASSERT_RC(tc_timer_start_s(t[i], random_rearm_cb,
                                   (double)e[i].delay_ns / 1e9, 0), 0);
    }
    RUN_UNTIL(loop, all.fires >= all.limit, 60000);
    if (all.early > 0) {
        fail_msg("%d of %d timers fired early, one by %lld ns", all.early,
                 all.fires, (long long)all.worst_ns);
    }
    for (int i = 0; i < K; i++) {
        ASSERT_RC(tc_close(tc_timer_handle(t[i]), NULL), 0);
    }
    close_loop_clean(loop);
}

/* A repeating timer keeps a fixed schedule from its start call: fire k
 * comes no earlier than after + (k - 1) * repeat, even when it is armed
 * at the end of a long callback and its own callbacks overrun. */
static void
repeat_check_cb(tc_timer_t *t)
{
    early_t *e = tc_handle_data(tc_timer_handle(t));

    early_check(e, e->armed_at + e->delay_ns + e->fires * e->repeat_ns);
    e->fires++;
    if (e->fires % 3 == 0) {
        spin_ns(e->repeat_ns * 2);   /* overrun: later fires catch up */
    }
    if (e->fires == e->limit) {
        ASSERT_RC(tc_timer_stop(t), 0);
    }
}

static void
arm_repeat_late_cb(tc_timer_t *starter)
{
    early_t *e = tc_handle_data(tc_timer_handle(starter));
    tc_timer_t *t = tc_loop_data(e->loop);

    spin_ns(3000000);
    e->armed_at = now_ns();
    ASSERT_RC(tc_timer_start_s(t, repeat_check_cb,
                               (double)e->delay_ns / 1e9,
                               (double)e->repeat_ns / 1e9), 0);
}

static void
test_no_early_fire_repeating(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t, *starter;
    early_t e = {.delay_ns = 1000000, .repeat_ns = 500000, .limit = 40};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    e.loop = loop;
    ASSERT_RC(tc_timer_new(loop, &e, &t), 0);
    ASSERT_RC(tc_timer_new(loop, &e, &starter), 0);
    tc_loop_set_data(loop, t);
    ASSERT_RC(tc_timer_start(starter, arm_repeat_late_cb, 0, 0), 0);
    RUN_UNTIL(loop, e.fires == e.limit, 10000);
    if (e.early > 0) {
        fail_msg("%d of %d repeats fired early, one by %lld us", e.early,
                 e.fires, (long long)(e.worst_ns / 1000));
    }
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    ASSERT_RC(tc_close(tc_timer_handle(starter), NULL), 0);
    close_loop_clean(loop);
}

/* An embedding host that polls for tc_loop_backend_timeout() and then
 * runs TC_RUN_NOWAIT never sees a timer fire before its time either. */
static void
test_no_early_fire_embedded(void **state)
{
    tc_loop_t *loop;
    tc_timer_t *t;
    early_t e = {.delay_ns = 2500000};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_timer_new(loop, &e, &t), 0);
    for (int i = 0; i < 20; i++) {
        int before = e.fires;
        uint64_t deadline = mono_ms() + 5000;

        spin_ns(3000000);
        e.armed_at = now_ns();
        ASSERT_RC(tc_timer_start_s(t, stamp_cb, 0.0025, 0), 0);
        while (e.fires == before && mono_ms() < deadline) {
            host_iteration(loop, 1);
        }
        assert_int_equal(e.fires, before + 1);
    }
    assert_int_equal(e.early, 0);
    ASSERT_RC(tc_close(tc_timer_handle(t), NULL), 0);
    close_loop_clean(loop);
}

static void
noop_cb(tc_timer_t *t)
{
    (void)t;
}

/* Before each poll the loop's timerfd points at the earliest armed timer,
 * whatever was stopped, re-armed or closed before it: epoll then ends on
 * time instead of at libev's next whole millisecond. */
static void
test_precise_wake_follows_earliest(void **state)
{
    enum { N = 64 };
    tc_loop_t *loop;
    tc_timer_t *t[N];
    uint64_t x = 0x9e3779b97f4a7c15ull;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    assert_true(loop->timer_fd >= 0);
    for (int i = 0; i < N; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ASSERT_RC(tc_timer_new(loop, NULL, &t[i]), 0);
        ASSERT_RC(tc_timer_start_s(t[i], noop_cb, 5.0 + (double)(x % 1000),
                                   0.0), 0);
    }
    for (int round = 0; round < 3 * N; round++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        tc_timer_t *pick = t[x % N];
        if (x & 1) {
            ASSERT_RC(tc_timer_stop(pick), 0);
        } else {
            ASSERT_RC(tc_timer_start_s(pick, noop_cb,
                                       5.0 + (double)((x >> 8) % 1000),
                                       0.0), 0);
        }
        assert_true(tc_loop_run(loop, TC_RUN_NOWAIT) >= 0);
        /* The timerfd's due time is the earliest armed timer's... */
        double earliest = -1.0;
        size_t armed = 0;
        for (int i = 0; i < N; i++) {
            if (tc_handle_is_active(tc_timer_handle(t[i]))) {
                double left = (double)tc_timer_remaining(t[i]);
                armed++;
                if (earliest < 0.0 || left < earliest) {
                    earliest = left;
                }
            }
        }
        assert_int_equal(loop->timer_heap_len, armed);
        if (armed == 0) {
            continue;
        }
        double top_ms = (loop->timer_fd_due - loop->now_mono) * 1e3;
        assert_true(fabs(top_ms - earliest) <= 2.0);
        /* ... and the timerfd is armed for it. */
        struct itimerspec its;
        assert_int_equal(timerfd_gettime(loop->timer_fd, &its), 0);
        double fd_ms = (double)its.it_value.tv_sec * 1e3 +
                       (double)its.it_value.tv_nsec / 1e6;
        assert_true(fabs(fd_ms - earliest) <= 50.0);
    }
    for (int i = 0; i < N; i++) {
        ASSERT_RC(tc_close(tc_timer_handle(t[i]), NULL), 0);
    }
    run_for(loop, 1);
    assert_int_equal(loop->timer_heap_len, 0);
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_one_shot),
        cmocka_unit_test(test_keeps_loop_alive),
        cmocka_unit_test(test_fire_in_deadline_order),
        cmocka_unit_test(test_overdue_order),
        cmocka_unit_test(test_repeating_stop_inside_callback),
        cmocka_unit_test(test_rearm_inside_callback),
        cmocka_unit_test(test_rearm_moves_deadline),
        cmocka_unit_test(test_stop_before_firing),
        cmocka_unit_test(test_remaining),
        cmocka_unit_test(test_start_seconds),
        cmocka_unit_test(test_close_inside_callback),
        cmocka_unit_test(test_close_active),
        cmocka_unit_test(test_many_timers_cancel_half),
        cmocka_unit_test(test_precise_wake_follows_earliest),
        cmocka_unit_test(test_huge_delays),
        cmocka_unit_test(test_no_early_fire_after_long_callback),
        cmocka_unit_test(test_no_early_fire_before_the_loop_runs),
        cmocka_unit_test(test_no_early_fire_in_10000_tries),
        cmocka_unit_test(test_no_early_fire_repeating),
        cmocka_unit_test(test_no_early_fire_embedded),
    };

    return cmocka_run_group_tests_name("timer", tests, NULL, NULL);
}
