/* Async wakeups: any thread sends, the loop thread runs the callback once
 * for any number of sends since the last run; nothing sent is missed. */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

typedef struct actx {
    tc_loop_t *loop;
    int calls;
    atomic_long produced;   /* incremented by senders before each send */
    long seen;              /* produced as observed by the callback */
    bool wrong_thread;
    bool close_in_cb;
    tc_timer_t *guard;
} actx_t;

static void
on_async(tc_async_t *a)
{
    actx_t *c = tc_handle_data(tc_async_handle(a));

    c->calls++;
    c->seen = atomic_load(&c->produced);
    if (!tc_loop_is_owner_thread(c->loop)) {
        c->wrong_thread = true;
    }
    if (c->close_in_cb) {
        if (c->guard != NULL) {
            tc_timer_stop(c->guard);
        }
        ASSERT_RC(tc_close(tc_async_handle(a), NULL), 0);
    }
}

static void
test_bad_args(void **state)
{
    tc_loop_t *loop;
    tc_async_t *a = NULL;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_async_new(NULL, on_async, NULL, &a), -EINVAL);
    ASSERT_RC(tc_async_new(loop, NULL, NULL, &a), -EINVAL);
    ASSERT_RC(tc_async_new(loop, on_async, NULL, NULL), -EINVAL);
    assert_null(a);
    ASSERT_RC(tc_async_send(NULL), -EINVAL);
    close_loop_clean(loop);
}

/* Sends before the loop looks are coalesced into one callback. */
static void
test_coalesced(void **state)
{
    tc_loop_t *loop;
    tc_async_t *a;
    actx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    ASSERT_RC(tc_async_new(loop, on_async, &c, &a), 0);
    assert_int_equal(tc_handle_type(tc_async_handle(a)), TC_HANDLE_ASYNC);
    for (int i = 0; i < 1000; i++) {
        ASSERT_RC(tc_async_send(a), 0);
    }
    assert_int_equal(c.calls, 0);
    RUN_UNTIL(loop, c.calls > 0, 5000);
    run_nowait(loop, 3);
    assert_int_equal(c.calls, 1);
    /* A later send wakes it again. */
    ASSERT_RC(tc_async_send(a), 0);
    RUN_UNTIL(loop, c.calls == 2, 5000);
    run_nowait(loop, 3);
    assert_int_equal(c.calls, 2);
    ASSERT_RC(tc_close(tc_async_handle(a), NULL), 0);
    close_loop_clean(loop);
}

#define SENDERS 4
#define SENDS 50000

typedef struct sender {
    actx_t *c;
    tc_async_t *a;
    pthread_barrier_t *start;
    int failures;
} sender_t;

static void *
send_many(void *arg)
{
    sender_t *s = arg;

    pthread_barrier_wait(s->start);
    for (int i = 0; i < SENDS; i++) {
        atomic_fetch_add(&s->c->produced, 1);
        if (tc_async_send(s->a) != 0) {
            s->failures++;
        }
    }
    return NULL;
}

/* Every increment made before a send is seen by a later callback. */
static void
test_threads_nothing_missed(void **state)
{
    tc_loop_t *loop;
    tc_async_t *a;
    actx_t c = {0};
    pthread_t th[SENDERS];
    sender_t s[SENDERS];
    pthread_barrier_t start;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    ASSERT_RC(tc_async_new(loop, on_async, &c, &a), 0);
    assert_int_equal(pthread_barrier_init(&start, NULL, SENDERS), 0);
    for (int i = 0; i < SENDERS; i++) {
        s[i] = (sender_t){.c = &c, .a = a, .start = &start};
        assert_int_equal(pthread_create(&th[i], NULL, send_many, &s[i]), 0);
    }
    RUN_UNTIL(loop, c.seen == (long)SENDERS * SENDS, 60000);
    for (int i = 0; i < SENDERS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(s[i].failures, 0);
    }
    pthread_barrier_destroy(&start);
    print_message("# %d sends, %d callbacks\n", SENDERS * SENDS, c.calls);
    assert_true(c.calls >= 1);
    assert_true(c.calls <= SENDERS * SENDS);
    assert_false(c.wrong_thread);
    ASSERT_RC(tc_close(tc_async_handle(a), NULL), 0);
    close_loop_clean(loop);
}

static void *
send_later(void *arg)
{
    sender_t *s = arg;

    usleep(20000);
    atomic_fetch_add(&s->c->produced, 1);
    s->failures = tc_async_send(s->a) != 0;
    return NULL;
}

static void
guard_cb(tc_timer_t *t)
{
    tc_loop_stop(tc_handle_loop(tc_timer_handle(t)));
}

/* An active async keeps TC_RUN_DEFAULT running; closed in its callback,
 * the run ends with nothing active. */
static void
test_keeps_loop_alive(void **state)
{
    tc_loop_t *loop;
    tc_async_t *a;
    actx_t c = {0};
    pthread_t th;
    sender_t s;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    c.close_in_cb = true;
    ASSERT_RC(tc_async_new(loop, on_async, &c, &a), 0);
    ASSERT_RC(tc_timer_new(loop, NULL, &c.guard), 0);
    ASSERT_RC(tc_timer_start(c.guard, guard_cb, 20000, 0), 0);
    s = (sender_t){.c = &c, .a = a};
    assert_int_equal(pthread_create(&th, NULL, send_later, &s), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    pthread_join(th, NULL);
    assert_int_equal(s.failures, 0);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.seen, 1);
    ASSERT_RC(tc_close(tc_timer_handle(c.guard), NULL), 0);
    close_loop_clean(loop);
}

/* Closing an async with a send pending: the callback never runs. */
static void
test_close_with_pending_send(void **state)
{
    tc_loop_t *loop;
    tc_async_t *a;
    actx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    ASSERT_RC(tc_async_new(loop, on_async, &c, &a), 0);
    ASSERT_RC(tc_async_send(a), 0);
    ASSERT_RC(tc_close(tc_async_handle(a), NULL), 0);
    run_for(loop, 20);
    assert_int_equal(c.calls, 0);
    close_loop_clean(loop);
}

/* Embedded in a host loop (poll on the backend fd, then TC_RUN_NOWAIT), a
 * send from another thread wakes the host's poll. */
static void
test_wakes_embedding_host(void **state)
{
    tc_loop_t *loop;
    tc_async_t *a;
    actx_t c = {0};
    pthread_t th;
    sender_t s;
    int slept = 0;
    uint64_t start;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    ASSERT_RC(tc_async_new(loop, on_async, &c, &a), 0);
    s = (sender_t){.c = &c, .a = a};
    assert_int_equal(pthread_create(&th, NULL, send_later, &s), 0);
    start = mono_ms();
    while (c.calls == 0 && mono_ms() - start < 10000) {
        if (host_iteration(loop, 1000) == 0) {
            slept++;
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(c.calls, 1);
    /* The sender waits 20 ms: one sleeping poll of 1 s would mean the
     * send did not reach the backend fd. */
    assert_int_equal(slept, 0);
    ASSERT_RC(tc_close(tc_async_handle(a), NULL), 0);
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_coalesced),
        cmocka_unit_test(test_threads_nothing_missed),
        cmocka_unit_test(test_keeps_loop_alive),
        cmocka_unit_test(test_close_with_pending_send),
        cmocka_unit_test(test_wakes_embedding_host),
    };

    return cmocka_run_group_tests_name("async", tests, NULL, NULL);
}
