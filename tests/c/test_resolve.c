/* Name resolution on the pool: names from /etc/hosts and numeric hosts
 * resolve, an invalid name fails with a name code, lookups can be
 * cancelled, and the loop's resolver pool serves tc__resolve_one.  Nothing
 * here needs network DNS: ".invalid" never resolves (RFC 6761). */
#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "helpers.h"
#include "internal.h"

#define DEADLINE_MS 30000

typedef struct answer {
    int calls;
    int status;
    bool has_loopback;
    int port;
    int count;
} answer_t;

static void
on_addrinfo(int status, const struct addrinfo *res, void *data)
{
    answer_t *a = data;
    a->calls++;
    a->status = status;
    for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
        a->count++;
        if (ai->ai_family == AF_INET) {
            const struct sockaddr_in *sin = (const void *)ai->ai_addr;
            a->port = ntohs(sin->sin_port);
            if (ntohl(sin->sin_addr.s_addr) == INADDR_LOOPBACK) {
                a->has_loopback = true;
            }
        } else if (ai->ai_family == AF_INET6) {
            const struct sockaddr_in6 *sin6 = (const void *)ai->ai_addr;
            a->port = ntohs(sin6->sin6_port);
            if (IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr)) {
                a->has_loopback = true;
            }
        }
    }
    if (status != 0) {
        assert_null(res);
    }
}

static tc_pool_t *
new_pool(unsigned threads)
{
    tc_pool_opts_t opts = {.threads = threads};
    tc_pool_t *pool;
    ASSERT_RC(tc_pool_new(&opts, &pool), 0);
    return pool;
}

static void
test_localhost_and_numeric(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_pool_t *pool = new_pool(2);
    answer_t a = {0}, b = {0}, c = {0};
    ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", 8080, AF_UNSPEC,
                             on_addrinfo, &a), 0);
    ASSERT_RC(tc_getaddrinfo(loop, pool, "127.0.0.1", 443, AF_INET,
                             on_addrinfo, &b), 0);
    ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", 0, AF_INET,
                             on_addrinfo, &c), 0);
    /* Never called inside the request. */
    assert_int_equal(a.calls + b.calls + c.calls, 0);
    /* Lookups in flight keep the loop running. */
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);

    assert_int_equal(a.calls, 1);
    ASSERT_RC(a.status, 0);
    assert_true(a.has_loopback);
    assert_int_equal(a.port, 8080);
    assert_int_equal(b.calls, 1);
    ASSERT_RC(b.status, 0);
    assert_true(b.has_loopback);
    assert_int_equal(b.port, 443);
    assert_int_equal(b.count, 1);
    assert_int_equal(c.calls, 1);
    ASSERT_RC(c.status, 0);
    assert_true(c.has_loopback);
    tc_pool_free(pool);
    close_loop_clean(loop);
}

static void
test_invalid_name(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_pool_t *pool = new_pool(1);
    answer_t a = {0};
    ASSERT_RC(tc_getaddrinfo(loop, pool, "nonexistent.invalid", 80,
                             AF_UNSPEC, on_addrinfo, &a), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(a.calls, 1);
    /* TC_ENONAME; a machine without a usable resolver says "try again". */
    if (a.status != TC_ENONAME) {
        ASSERT_RC(a.status, TC_EAGAIN_NAME);
    }
    assert_int_equal(a.count, 0);
    tc_pool_free(pool);
    close_loop_clean(loop);
}

static void
test_bad_args_and_loop_pool(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_pool_t *pool = new_pool(1);
    answer_t a = {0};
    ASSERT_RC(tc_getaddrinfo(loop, NULL, "localhost", 80, AF_UNSPEC,
                             on_addrinfo, &a), -ENOTSUP);
    assert_null(tc_loop_resolver_pool(loop));
    ASSERT_RC(tc_getaddrinfo(loop, pool, NULL, 80, AF_UNSPEC, on_addrinfo,
                             &a), -EINVAL);
    ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", 65536, AF_UNSPEC,
                             on_addrinfo, &a), -EINVAL);
    ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", -1, AF_UNSPEC,
                             on_addrinfo, &a), -EINVAL);
    ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", 80, AF_UNIX,
                             on_addrinfo, &a), -EINVAL);
    ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", 80, AF_UNSPEC, NULL,
                             &a), -EINVAL);
    ASSERT_RC(tc_getaddrinfo(NULL, pool, "localhost", 80, AF_UNSPEC,
                             on_addrinfo, &a), -EINVAL);

    /* With a resolver pool, pool NULL means the loop's. */
    tc_loop_set_resolver_pool(loop, pool);
    assert_ptr_equal(tc_loop_resolver_pool(loop), pool);
    ASSERT_RC(tc_getaddrinfo(loop, NULL, "localhost", 80, AF_UNSPEC,
                             on_addrinfo, &a), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(a.calls, 1);
    ASSERT_RC(a.status, 0);
    tc_loop_set_resolver_pool(loop, NULL);

    /* A shut-down pool refuses; the callback is never called. */
    ASSERT_RC(tc_pool_shutdown(pool, TC_POOL_DRAIN), 0);
    ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", 80, AF_UNSPEC,
                             on_addrinfo, &a), -ESHUTDOWN);
    assert_int_equal(a.calls, 1);
    tc_pool_free(pool);
    close_loop_clean(loop);
}

/* ---- the connect helper ---- */

typedef struct one {
    int calls;
    int status;
    int family;
    int port;
} one_t;

static void
on_one(void *arg, int status, const struct sockaddr *sa, socklen_t len)
{
    one_t *o = arg;
    o->calls++;
    o->status = status;
    if (status == 0) {
        assert_non_null(sa);
        assert_true(len > 0);
        o->family = sa->sa_family;
        o->port = sa->sa_family == AF_INET
                      ? ntohs(((const struct sockaddr_in *)(const void *)sa)
                                  ->sin_port)
                      : ntohs(((const struct sockaddr_in6 *)(const void *)sa)
                                  ->sin6_port);
    } else {
        assert_null(sa);
    }
}

/* A task that holds the only worker until released. */
static atomic_bool gate_started, gate_open;

static int
gate_work(tc_work_t *w, void *arg)
{
    (void)w;
    (void)arg;
    atomic_store(&gate_started, true);
    uint64_t deadline = mono_ms() + DEADLINE_MS;
    while (!atomic_load(&gate_open) && mono_ms() < deadline) {
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    return 0;
}

typedef struct set_pool_arg {
    tc_loop_t *loop;
    tc_pool_t *pool;
} set_pool_arg_t;

static void *
set_pool_main(void *arg)
{
    set_pool_arg_t *sp = arg;
    tc_loop_set_resolver_pool(sp->loop, sp->pool);
    return NULL;
}

/* A monitoring thread may set up the resolver pool first (Python reads
 * reactor.cpu_pool there); the loop's own lookups then use it. */
static void
test_resolver_pool_set_from_another_thread(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_pool_t *pool = new_pool(1);
    set_pool_arg_t sp = {loop, pool};
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, set_pool_main, &sp), 0);
    assert_int_equal(pthread_join(tid, NULL), 0);
    assert_ptr_equal(tc_loop_resolver_pool(loop), pool);
    answer_t a = {0};
    ASSERT_RC(tc_getaddrinfo(loop, NULL, "localhost", 80, AF_UNSPEC,
                             on_addrinfo, &a), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(a.calls, 1);
    ASSERT_RC(a.status, 0);
    sp.pool = NULL;
    assert_int_equal(pthread_create(&tid, NULL, set_pool_main, &sp), 0);
    assert_int_equal(pthread_join(tid, NULL), 0);
    assert_null(tc_loop_resolver_pool(loop));
    tc_pool_free(pool);
    close_loop_clean(loop);
}

static void
test_resolve_one(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    one_t o = {0};
    ASSERT_RC(tc__resolve_one(loop, "localhost", 80, on_one, &o, NULL),
              -ENOTSUP);
    tc_pool_t *pool = new_pool(1);
    tc_loop_set_resolver_pool(loop, pool);
    ASSERT_RC(tc__resolve_one(loop, "localhost", 5000, on_one, &o, NULL), 0);
    one_t bad = {0};
    ASSERT_RC(tc__resolve_one(loop, "nonexistent.invalid", 5000, on_one,
                              &bad, NULL), 0);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(o.calls, 1);
    ASSERT_RC(o.status, 0);
    assert_true(o.family == AF_INET || o.family == AF_INET6);
    assert_int_equal(o.port, 5000);
    assert_int_equal(bad.calls, 1);
    assert_true(bad.status == TC_ENONAME || bad.status == TC_EAGAIN_NAME);

    /* Forgotten while queued behind a busy worker, or while running: the
     * callback never comes either way. */
    atomic_store(&gate_started, false);
    atomic_store(&gate_open, false);
    ASSERT_RC(tc_pool_submit(pool, loop, gate_work, NULL, NULL,
                             TC_PRIORITY_HIGH, NULL), 0);
    uint64_t deadline = mono_ms() + DEADLINE_MS;
    while (!atomic_load(&gate_started)) {
        assert_true(mono_ms() < deadline);
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
    one_t forgotten = {0}, kept = {0};
    tc__resolve_req_t *req;
    ASSERT_RC(tc__resolve_one(loop, "localhost", 1, on_one, &forgotten,
                              &req), 0);
    ASSERT_RC(tc__resolve_one(loop, "localhost", 2, on_one, &kept, NULL), 0);
    tc__resolve_cancel(req);
    atomic_store(&gate_open, true);
    ASSERT_RC(tc__resolve_one(loop, "localhost", 3, on_one, &forgotten,
                              &req), 0);
    tc__resolve_cancel(req);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    assert_int_equal(forgotten.calls, 0);
    assert_int_equal(kept.calls, 1);
    assert_int_equal(kept.port, 2);

    tc_loop_set_resolver_pool(loop, NULL);
    tc_pool_free(pool);
    close_loop_clean(loop);
}

static void
test_many_and_shutdown_cancel(void **state)
{
    (void)state;
    enum { N = 200 };
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_pool_t *pool = new_pool(2);
    answer_t *a = calloc(N, sizeof(*a));
    assert_non_null(a);
    for (int i = 0; i < N; i++) {
        ASSERT_RC(tc_getaddrinfo(loop, pool, i % 2 ? "localhost" : "::1",
                                 i, AF_UNSPEC, on_addrinfo, &a[i]), 0);
    }
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    for (int i = 0; i < N; i++) {
        assert_int_equal(a[i].calls, 1);
        ASSERT_RC(a[i].status, 0);
        assert_true(a[i].has_loopback);
        assert_int_equal(a[i].port, i);
    }

    /* Lookups still queued when the pool is cancelled report -ECANCELED,
     * once; the rest complete normally. */
    memset(a, 0, N * sizeof(*a));
    for (int i = 0; i < N; i++) {
        ASSERT_RC(tc_getaddrinfo(loop, pool, "localhost", 80, AF_UNSPEC,
                                 on_addrinfo, &a[i]), 0);
    }
    ASSERT_RC(tc_pool_shutdown(pool, TC_POOL_CANCEL), 0);
    tc_pool_free(pool);
    ASSERT_RC(tc_loop_run(loop, TC_RUN_DEFAULT), 0);
    int cancelled = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(a[i].calls, 1);
        if (a[i].status == -ECANCELED) {
            cancelled++;
        } else {
            ASSERT_RC(a[i].status, 0);
        }
    }
    print_message("# %d of %d lookups cancelled by the shutdown\n",
                  cancelled, N);
    free(a);
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_localhost_and_numeric),
        cmocka_unit_test(test_invalid_name),
        cmocka_unit_test(test_bad_args_and_loop_pool),
        cmocka_unit_test(test_resolve_one),
        cmocka_unit_test(test_resolver_pool_set_from_another_thread),
        cmocka_unit_test(test_many_and_shutdown_cancel),
    };

    return cmocka_run_group_tests_name("resolve", tests, NULL, NULL);
}
