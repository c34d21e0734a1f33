/* Futures: callbacks on the loop thread in the order added and never
 * synchronously; settle once (a second settle is -EALREADY); cancel,
 * timeout, chaining, settles from other threads, and futures of pool
 * work. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"

#define DEADLINE_MS 30000

static void
sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000u, (long)(ms % 1000u) * 1000000L};
    nanosleep(&ts, NULL);
}

/* What callbacks saw, in order. */
typedef struct seen {
    int n;
    int tag[16];
    int status[16];
    void *value[16];
    bool off_thread;
    tc_loop_t *loop;
} seen_t;

typedef struct tagged {
    seen_t *seen;
    int tag;
} tagged_t;

static void
record_cb(tc_future_t *f, int status, void *value, void *arg)
{
    (void)f;
    tagged_t *t = arg;
    seen_t *s = t->seen;
    if (s->loop != NULL && !tc_loop_is_owner_thread(s->loop)) {
        s->off_thread = true;
    }
    if (s->n < 16) {
        s->tag[s->n] = t->tag;
        s->status[s->n] = status;
        s->value[s->n] = value;
    }
    s->n++;
}

static atomic_int freed_values;
static atomic_bool freed_off_loop;
static tc_loop_t *value_loop;

static void
free_value(void *v)
{
    if (value_loop != NULL && !tc_loop_is_owner_thread(value_loop)) {
        atomic_store(&freed_off_loop, true);
    }
    atomic_fetch_add(&freed_values, 1);
    free(v);
}

static int *
new_int(int x)
{
    int *p = malloc(sizeof(*p));
    assert_non_null(p);
    *p = x;
    return p;
}

static tc_loop_t *
setup_loop(void)
{
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    atomic_store(&freed_values, 0);
    atomic_store(&freed_off_loop, false);
    value_loop = loop;
    return loop;
}

/* ---- then ---- */

static void
test_then_order_never_synchronous(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    assert_int_equal(tc_future_state(f), TC_FUTURE_PENDING);
    assert_false(tc_future_is_done(f));
    ASSERT_RC(tc_future_result(f, NULL), -EAGAIN);
    assert_ptr_equal(tc_future_loop(f), loop);

    seen_t s = {.loop = loop};
    tagged_t t[5];
    for (int i = 0; i < 3; i++) {
        t[i] = (tagged_t){&s, i + 1};
        ASSERT_RC(tc_future_then(f, record_cb, &t[i]), 0);
    }
    int *v = new_int(7);
    ASSERT_RC(tc_future_resolve(f, v, free_value), 0);
    /* Settled on the loop thread: in effect at once, callbacks later. */
    assert_int_equal(tc_future_state(f), TC_FUTURE_DONE);
    assert_int_equal(s.n, 0);
    void *got = NULL;
    ASSERT_RC(tc_future_result(f, &got), 0);
    assert_ptr_equal(got, v);

    RUN_UNTIL(loop, s.n == 3, DEADLINE_MS);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(s.tag[i], i + 1);
        ASSERT_RC(s.status[i], 0);
        assert_ptr_equal(s.value[i], v);
    }
    /* Added once settled: still not inside then(). */
    t[3] = (tagged_t){&s, 4};
    t[4] = (tagged_t){&s, 5};
    ASSERT_RC(tc_future_then(f, record_cb, &t[3]), 0);
    ASSERT_RC(tc_future_then(f, record_cb, &t[4]), 0);
    assert_int_equal(s.n, 3);
    RUN_UNTIL(loop, s.n == 5, DEADLINE_MS);
    assert_int_equal(s.tag[3], 4);
    assert_int_equal(s.tag[4], 5);
    assert_false(s.off_thread);

    assert_int_equal(atomic_load(&freed_values), 0);
    tc_future_unref(f);
    assert_int_equal(atomic_load(&freed_values), 1);
    close_loop_clean(loop);
}

/* A callback that adds another: the new one runs on a later batch. */
static void
adder_cb(tc_future_t *f, int status, void *value, void *arg)
{
    record_cb(f, status, value, arg);
    tagged_t *t = arg;
    static tagged_t late;
    late = (tagged_t){t->seen, 99};
    ASSERT_RC(tc_future_then(f, record_cb, &late), 0);
    assert_int_equal(t->seen->n, 1);
}

static void
test_then_inside_callback(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    seen_t s = {.loop = loop};
    tagged_t a = {&s, 1};
    ASSERT_RC(tc_future_then(f, adder_cb, &a), 0);
    ASSERT_RC(tc_future_reject(f, -EIO), 0);
    RUN_UNTIL(loop, s.n == 2, DEADLINE_MS);
    assert_int_equal(s.tag[1], 99);
    ASSERT_RC(s.status[1], -EIO);
    assert_null(s.value[1]);
    tc_future_unref(f);
    close_loop_clean(loop);
}

/* ---- settling once ---- */

static void
test_settle_twice_is_ealready(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    int *v = new_int(1);
    int *w = new_int(2);
    ASSERT_RC(tc_future_resolve(f, v, free_value), 0);
    ASSERT_RC(tc_future_resolve(f, w, free_value), -EALREADY);
    ASSERT_RC(tc_future_reject(f, -EIO), -EALREADY);
    ASSERT_RC(tc_future_cancel(f), -EALREADY);
    ASSERT_RC(tc_future_set_timeout(f, 10), -EALREADY);
    ASSERT_RC(tc_future_set_running(f), -EALREADY);
    free(w);    /* refused: still ours */
    ASSERT_RC(tc_future_reject(f, 0), -EINVAL);
    assert_int_equal(tc_future_state(f), TC_FUTURE_DONE);
    tc_future_unref(f);
    assert_int_equal(atomic_load(&freed_values), 1);

    ASSERT_RC(tc_future_new(loop, &f), 0);
    ASSERT_RC(tc_future_set_running(f), 0);
    assert_int_equal(tc_future_state(f), TC_FUTURE_RUNNING);
    ASSERT_RC(tc_future_set_running(f), -EALREADY);
    ASSERT_RC(tc_future_reject(f, -ENOENT), 0);
    ASSERT_RC(tc_future_resolve(f, NULL, NULL), -EALREADY);
    assert_int_equal(tc_future_state(f), TC_FUTURE_FAILED);
    assert_true(tc_future_is_done(f));
    ASSERT_RC(tc_future_result(f, NULL), -ENOENT);
    tc_future_unref(f);

    ASSERT_RC(tc_future_new(NULL, &f), -EINVAL);
    ASSERT_RC(tc_future_resolve(NULL, NULL, NULL), -EINVAL);
    ASSERT_RC(tc_future_then(NULL, record_cb, NULL), -EINVAL);
    close_loop_clean(loop);
}

static void
test_cancel(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    seen_t s = {.loop = loop};
    tagged_t t = {&s, 1};
    ASSERT_RC(tc_future_then(f, record_cb, &t), 0);
    ASSERT_RC(tc_future_cancel(f), 0);
    ASSERT_RC(tc_future_cancel(f), -EALREADY);
    int *v = new_int(3);
    ASSERT_RC(tc_future_resolve(f, v, free_value), -EALREADY);
    free(v);
    assert_int_equal(tc_future_state(f), TC_FUTURE_CANCELLED);
    assert_int_equal(s.n, 0);
    RUN_UNTIL(loop, s.n == 1, DEADLINE_MS);
    ASSERT_RC(s.status[0], -ECANCELED);
    ASSERT_RC(tc_future_result(f, NULL), -ECANCELED);
    tc_future_unref(f);

    /* Rejecting with -ECANCELED from elsewhere means cancelled too. */
    ASSERT_RC(tc_future_new(loop, &f), 0);
    ASSERT_RC(tc_future_reject(f, -ECANCELED), 0);
    assert_int_equal(tc_future_state(f), TC_FUTURE_CANCELLED);
    tc_future_unref(f);
    assert_int_equal(atomic_load(&freed_values), 0);
    close_loop_clean(loop);
}

/* ---- timeout ---- */

static void
test_timeout(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    seen_t s = {.loop = loop};
    tagged_t t = {&s, 1};
    ASSERT_RC(tc_future_then(f, record_cb, &t), 0);
    ASSERT_RC(tc_future_set_timeout(f, 60000), 0);
    ASSERT_RC(tc_future_set_timeout(f, 20), 0);     /* re-armed */
    /* The timer keeps the loop running until it fires. */
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(s.n, 1);
    ASSERT_RC(s.status[0], -ETIMEDOUT);
    assert_int_equal(tc_future_state(f), TC_FUTURE_FAILED);
    ASSERT_RC(tc_future_resolve(f, NULL, NULL), -EALREADY);
    tc_future_unref(f);

    /* Settled first: the timer is closed with it and never fires. */
    ASSERT_RC(tc_future_new(loop, &f), 0);
    ASSERT_RC(tc_future_set_timeout(f, 60000), 0);
    assert_int_equal(tc_loop_open_handles(loop), 1);
    ASSERT_RC(tc_future_resolve(f, new_int(5), free_value), 0);
    assert_int_equal(tc_loop_open_handles(loop), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(tc_future_state(f), TC_FUTURE_DONE);
    tc_future_unref(f);
    assert_int_equal(atomic_load(&freed_values), 1);

    /* Freed while pending: its timer goes with it. */
    ASSERT_RC(tc_future_new(loop, &f), 0);
    ASSERT_RC(tc_future_set_timeout(f, 60000), 0);
    tc_future_unref(f);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    close_loop_clean(loop);
}

/* ---- other threads ---- */

typedef struct racer {
    tc_future_t *f;
    atomic_bool *go;
    int rc;
    int *value;
} racer_t;

static void *
racer_main(void *arg)
{
    racer_t *r = arg;
    while (!atomic_load(r->go)) {
        /* spin: start together */
    }
    r->rc = tc_future_resolve(r->f, r->value, free_value);
    if (r->rc != 0) {
        free(r->value);
    }
    tc_future_unref(r->f);
    return NULL;
}

static void
test_resolve_from_threads(void **state)
{
    (void)state;
    enum { T = 4 };
    tc_loop_t *loop = setup_loop();
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    seen_t s = {.loop = loop};
    tagged_t t = {&s, 1};
    ASSERT_RC(tc_future_then(f, record_cb, &t), 0);

    atomic_bool go = false;
    racer_t r[T];
    pthread_t tid[T];
    for (int i = 0; i < T; i++) {
        tc_future_ref(f);       /* each settler holds a reference */
        r[i] = (racer_t){.f = f, .go = &go, .value = new_int(i)};
        assert_int_equal(pthread_create(&tid[i], NULL, racer_main, &r[i]),
                         0);
    }
    atomic_store(&go, true);
    for (int i = 0; i < T; i++) {
        assert_int_equal(pthread_join(tid[i], NULL), 0);
    }
    int winners = 0, winner = -1;
    for (int i = 0; i < T; i++) {
        if (r[i].rc == 0) {
            winners++;
            winner = i;
        } else {
            ASSERT_RC(r[i].rc, -EALREADY);
        }
    }
    assert_int_equal(winners, 1);
    /* In effect once the loop has run. */
    RUN_UNTIL(loop, s.n == 1, DEADLINE_MS);
    assert_false(s.off_thread);
    ASSERT_RC(s.status[0], 0);
    assert_int_equal(*(int *)s.value[0], winner);
    assert_int_equal(tc_future_state(f), TC_FUTURE_DONE);
    tc_future_unref(f);
    assert_int_equal(atomic_load(&freed_values), 1);   /* losers free() */
    close_loop_clean(loop);
}

static void *
unref_main(void *arg)
{
    tc_future_unref(arg);
    return NULL;
}

static void
test_last_unref_elsewhere_frees_on_loop(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    ASSERT_RC(tc_future_resolve(f, new_int(1), free_value), 0);
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, unref_main, f), 0);
    assert_int_equal(pthread_join(tid, NULL), 0);
    RUN_UNTIL(loop, atomic_load(&freed_values) == 1, DEADLINE_MS);
    assert_false(atomic_load(&freed_off_loop));
    close_loop_clean(loop);
}

/* ---- chaining ---- */

static void
test_chain_mirrors_source(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *src, *dst;
    ASSERT_RC(tc_future_new(loop, &src), 0);
    ASSERT_RC(tc_future_new(loop, &dst), 0);
    ASSERT_RC(tc_future_chain(src, dst), 0);
    ASSERT_RC(tc_future_chain(src, src), -EINVAL);
    seen_t s = {.loop = loop};
    tagged_t t = {&s, 1};
    ASSERT_RC(tc_future_then(dst, record_cb, &t), 0);
    int *v = new_int(11);
    ASSERT_RC(tc_future_resolve(src, v, free_value), 0);
    tc_future_unref(src);   /* dst keeps the value alive */
    RUN_UNTIL(loop, s.n == 1, DEADLINE_MS);
    ASSERT_RC(s.status[0], 0);
    assert_ptr_equal(s.value[0], v);
    assert_int_equal(*(int *)s.value[0], 11);
    assert_int_equal(atomic_load(&freed_values), 0);
    tc_future_unref(dst);
    assert_int_equal(atomic_load(&freed_values), 1);

    /* Failure and cancellation carry over too. */
    for (int k = 0; k < 2; k++) {
        ASSERT_RC(tc_future_new(loop, &src), 0);
        ASSERT_RC(tc_future_new(loop, &dst), 0);
        ASSERT_RC(tc_future_chain(src, dst), 0);
        if (k == 0) {
            ASSERT_RC(tc_future_reject(src, -EPIPE), 0);
        } else {
            ASSERT_RC(tc_future_cancel(src), 0);
        }
        RUN_UNTIL(loop, tc_future_is_done(dst), DEADLINE_MS);
        ASSERT_RC(tc_future_result(dst, NULL), k == 0 ? -EPIPE
                                                      : -ECANCELED);
        assert_int_equal(tc_future_state(dst), k == 0 ? TC_FUTURE_FAILED
                                                      : TC_FUTURE_CANCELLED);
        tc_future_unref(src);
        tc_future_unref(dst);
    }
    close_loop_clean(loop);
}

/* Each step doubles the value into the next future. */
static void
double_cb(tc_future_t *f, int status, void *value, void *arg,
          tc_future_t *next)
{
    (void)f;
    (*(int *)arg)++;
    if (status != 0) {
        tc_future_reject(next, status);
        return;
    }
    ASSERT_RC(tc_future_resolve(next, new_int(*(int *)value * 2),
                                free_value), 0);
}

static void
test_then_chain(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_future_t *f0, *f1, *f2, *f3;
    int steps = 0;
    ASSERT_RC(tc_future_new(loop, &f0), 0);
    ASSERT_RC(tc_future_then_chain(f0, double_cb, &steps, &f1), 0);
    ASSERT_RC(tc_future_then_chain(f1, double_cb, &steps, &f2), 0);
    ASSERT_RC(tc_future_then_chain(f2, double_cb, &steps, &f3), 0);
    ASSERT_RC(tc_future_resolve(f0, new_int(3), free_value), 0);
    RUN_UNTIL(loop, tc_future_is_done(f3), DEADLINE_MS);
    assert_int_equal(steps, 3);
    void *v = NULL;
    ASSERT_RC(tc_future_result(f3, &v), 0);
    assert_int_equal(*(int *)v, 24);
    tc_future_unref(f0);
    tc_future_unref(f1);
    tc_future_unref(f2);
    tc_future_unref(f3);
    assert_int_equal(atomic_load(&freed_values), 4);

    /* A rejection runs down the chain. */
    ASSERT_RC(tc_future_new(loop, &f0), 0);
    ASSERT_RC(tc_future_then_chain(f0, double_cb, &steps, &f1), 0);
    ASSERT_RC(tc_future_then_chain(f1, double_cb, &steps, &f2), 0);
    /* Dropping our reference to the middle link is fine: its entry in
     * f0 holds one until it ran. */
    tc_future_unref(f1);
    ASSERT_RC(tc_future_reject(f0, -EIO), 0);
    RUN_UNTIL(loop, tc_future_is_done(f2), DEADLINE_MS);
    ASSERT_RC(tc_future_result(f2, NULL), -EIO);
    tc_future_unref(f0);
    tc_future_unref(f2);
    close_loop_clean(loop);
}

/* A chain across two loops on two threads. */
typedef struct other_loop {
    tc_loop_t *loop;
    tc_future_t *dst;
    atomic_bool ready, quit;
    int result;
    int value;
    bool on_thread;
} other_loop_t;

static void
other_cb(tc_future_t *f, int status, void *value, void *arg)
{
    (void)f;
    other_loop_t *o = arg;
    o->result = status;
    o->value = value != NULL ? *(int *)value : -1;
    o->on_thread = tc_loop_is_owner_thread(o->loop);
    tc_loop_stop(o->loop);
}

static void
stop_loop_cb(tc_timer_t *t)
{
    tc_loop_stop(tc_handle_loop(tc_timer_handle(t)));
}

static void *
other_main(void *arg)
{
    other_loop_t *o = arg;
    tc_loop_new(&o->loop);
    tc_future_new(o->loop, &o->dst);
    tc_future_then(o->dst, other_cb, o);
    /* Something must keep the loop waiting: a long timer. */
    tc_timer_t *keep;
    tc_timer_new(o->loop, NULL, &keep);
    tc_timer_start(keep, stop_loop_cb, 60000, 0);
    atomic_store(&o->ready, true);
    tc_loop_run(o->loop, TC_RUN_DEFAULT);
    tc_close(tc_timer_handle(keep), NULL);
    tc_future_unref(o->dst);
    tc_loop_run(o->loop, TC_RUN_DEFAULT);
    o->result = o->result == 0 && tc_loop_close(o->loop) == 0 ? 0 : -1;
    return NULL;
}

static void
test_chain_across_loops(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    value_loop = NULL;      /* freed on whichever loop drops it last */
    other_loop_t o = {.result = 1};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, other_main, &o), 0);
    uint64_t deadline = mono_ms() + DEADLINE_MS;
    while (!atomic_load(&o.ready)) {
        assert_true(mono_ms() < deadline);
        sleep_ms(1);
    }
    tc_future_t *src;
    ASSERT_RC(tc_future_new(loop, &src), 0);
    ASSERT_RC(tc_future_chain(src, o.dst), 0);
    ASSERT_RC(tc_future_resolve(src, new_int(77), free_value), 0);
    tc_future_unref(src);
    /* Run ours until the chain entry has run; the other thread stops its
     * loop when the value arrives, and its last unref of src comes back
     * here to be freed. */
    RUN_UNTIL(loop, atomic_load(&freed_values) == 1, DEADLINE_MS);
    assert_int_equal(pthread_join(tid, NULL), 0);
    ASSERT_RC(o.result, 0);
    assert_int_equal(o.value, 77);
    assert_true(o.on_thread);
    close_loop_clean(loop);
}

/* ---- futures of pool work ---- */

typedef struct job {
    atomic_bool started, open, saw_cancel;
    int input;
    bool positive;      /* return 1: a broken work function */
} job_t;

static int
square_work(tc_work_t *w, void *arg, void **value)
{
    job_t *j = arg;
    atomic_store(&j->started, true);
    uint64_t deadline = mono_ms() + DEADLINE_MS;
    while (!atomic_load(&j->open) && mono_ms() < deadline) {
        if (tc_work_is_cancelled(w)) {
            atomic_store(&j->saw_cancel, true);
            /* A value made anyway is released by the pool future. */
            *value = new_int(-1);
            return 0;
        }
        sleep_ms(1);
    }
    if (j->positive) {
        return 1;
    }
    if (j->input < 0) {
        return -EDOM;
    }
    *value = new_int(j->input * j->input);
    return 0;
}

static void
wait_started(job_t *j)
{
    uint64_t deadline = mono_ms() + DEADLINE_MS;
    while (!atomic_load(&j->started)) {
        assert_true(mono_ms() < deadline);
        sleep_ms(1);
    }
}

static void
test_pool_future(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    tc_pool_opts_t opts = {.threads = 1};
    tc_pool_t *pool;
    ASSERT_RC(tc_pool_new(&opts, &pool), 0);

    /* Runs, then resolves with the value. */
    job_t a = {.input = 9};
    tc_future_t *fa;
    ASSERT_RC(tc_pool_submit_future(pool, loop, square_work, &a, free_value,
                                    TC_PRIORITY_NORMAL, &fa), 0);
    wait_started(&a);
    assert_int_equal(tc_future_state(fa), TC_FUTURE_RUNNING);
    /* Queued behind it: cancelled before it runs. */
    job_t b = {.input = 2, .open = true};
    tc_future_t *fb;
    ASSERT_RC(tc_pool_submit_future(pool, loop, square_work, &b, free_value,
                                    TC_PRIORITY_NORMAL, &fb), 0);
    ASSERT_RC(tc_future_cancel(fb), 0);
    /* Rejected by the work. */
    job_t c = {.input = -1, .open = true};
    tc_future_t *fc;
    ASSERT_RC(tc_pool_submit_future(pool, loop, square_work, &c, free_value,
                                    TC_PRIORITY_NORMAL, &fc), 0);
    atomic_store(&a.open, true);
    /* Outstanding work keeps the loop running to the end. */
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);

    void *v = NULL;
    ASSERT_RC(tc_future_result(fa, &v), 0);
    assert_int_equal(*(int *)v, 81);
    assert_int_equal(tc_future_state(fb), TC_FUTURE_CANCELLED);
    assert_false(atomic_load(&b.started));
    assert_int_equal(tc_future_state(fc), TC_FUTURE_FAILED);
    ASSERT_RC(tc_future_result(fc, NULL), -EDOM);
    tc_future_unref(fa);
    tc_future_unref(fb);
    tc_future_unref(fc);
    assert_int_equal(atomic_load(&freed_values), 1);

    /* A timeout cancels running work; its late value is released. */
    job_t d = {.input = 3};
    tc_future_t *fd;
    ASSERT_RC(tc_pool_submit_future(pool, loop, square_work, &d, free_value,
                                    TC_PRIORITY_HIGH, &fd), 0);
    ASSERT_RC(tc_future_set_timeout(fd, 20), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(tc_future_state(fd), TC_FUTURE_FAILED);
    ASSERT_RC(tc_future_result(fd, NULL), -ETIMEDOUT);
    assert_true(atomic_load(&d.saw_cancel));
    assert_int_equal(atomic_load(&freed_values), 2);
    tc_future_unref(fd);

    /* A work function that returns a positive number (breaking its
     * contract) still settles its future: FAILED with -EINVAL. */
    job_t g = {.input = 1, .open = true, .positive = true};
    tc_future_t *fg;
    ASSERT_RC(tc_pool_submit_future(pool, loop, square_work, &g, free_value,
                                    TC_PRIORITY_NORMAL, &fg), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(tc_future_state(fg), TC_FUTURE_FAILED);
    ASSERT_RC(tc_future_result(fg, NULL), -EINVAL);
    tc_future_unref(fg);

    /* A submit refused: no future, nothing leaked. */
    ASSERT_RC(tc_pool_shutdown(pool, TC_POOL_DRAIN), 0);
    tc_future_t *fe = NULL;
    ASSERT_RC(tc_pool_submit_future(pool, loop, square_work, &d, free_value,
                                    TC_PRIORITY_HIGH, &fe), -ESHUTDOWN);
    assert_null(fe);
    tc_pool_free(pool);
    close_loop_clean(loop);
}

/* ---- callback timing (documented in future.h) ---- */

static void
test_callbacks_run_in_the_settling_iteration(void **state)
{
    (void)state;
    tc_loop_t *loop = setup_loop();
    seen_t s = {.loop = loop};
    tagged_t t[2] = {{&s, 1}, {&s, 2}};

    /* Settled on the loop thread: not inside resolve, and done by the end
     * of the next iteration, which does not wait for IO. */
    tc_future_t *f;
    ASSERT_RC(tc_future_new(loop, &f), 0);
    ASSERT_RC(tc_future_then(f, record_cb, &t[0]), 0);
    ASSERT_RC(tc_future_resolve(f, NULL, NULL), 0);
    assert_int_equal(s.n, 0);
    assert_true(tc_loop_run(loop, TC_RUN_NOWAIT) >= 0);
    assert_int_equal(s.n, 1);

    /* Pool work: the iteration that delivers the completion runs them. */
    tc_pool_opts_t opts = {.threads = 1};
    tc_pool_t *pool;
    ASSERT_RC(tc_pool_new(&opts, &pool), 0);
    job_t j = {.input = 3, .open = true};
    tc_future_t *fp;
    ASSERT_RC(tc_pool_submit_future(pool, loop, square_work, &j, free_value,
                                    TC_PRIORITY_NORMAL, &fp), 0);
    ASSERT_RC(tc_future_then(fp, record_cb, &t[1]), 0);
    uint64_t deadline = mono_ms() + DEADLINE_MS;
    tc_pool_stats_t st;
    do {
        assert_true(mono_ms() < deadline);
        sleep_ms(1);
        tc_pool_stats(pool, &st);
    } while (st.completed == 0);
    assert_int_equal(s.n, 1);
    assert_true(tc_loop_run(loop, TC_RUN_ONCE) >= 0);
    assert_int_equal(s.n, 2);
    ASSERT_RC(s.status[1], 0);
    assert_int_equal(*(int *)s.value[1], 9);
    assert_false(s.off_thread);

    tc_future_unref(f);
    tc_future_unref(fp);
    tc_pool_free(pool);
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_then_order_never_synchronous),
        cmocka_unit_test(test_then_inside_callback),
        cmocka_unit_test(test_settle_twice_is_ealready),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_timeout),
        cmocka_unit_test(test_resolve_from_threads),
        cmocka_unit_test(test_last_unref_elsewhere_frees_on_loop),
        cmocka_unit_test(test_chain_mirrors_source),
        cmocka_unit_test(test_then_chain),
        cmocka_unit_test(test_chain_across_loops),
        cmocka_unit_test(test_pool_future),
        cmocka_unit_test(test_callbacks_run_in_the_settling_iteration),
    };

    return cmocka_run_group_tests_name("future", tests, NULL, NULL);
}
