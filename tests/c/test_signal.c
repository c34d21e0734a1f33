/* Signal handlers run on the loop thread, not in signal context, whichever
 * thread the signal was delivered to; one loop at a time watches a signal.
 *
 * A watched signal is never raised after its watcher stopped: the default
 * action of SIGUSR1 or SIGHUP would end the test process. */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct sctx {
    tc_loop_t *loop;
    int calls;
    int last_signum;
    bool on_loop_thread;
    pthread_t loop_thread;
} sctx_t;

static void
on_signal(tc_signal_t *sig, int signum)
{
    sctx_t *c = tc_handle_data(tc_signal_handle(sig));

    c->calls++;
    c->last_signum = signum;
    c->on_loop_thread = pthread_equal(pthread_self(), c->loop_thread) &&
                        tc_loop_is_owner_thread(c->loop);
}

static void
test_bad_args(void **state)
{
    tc_loop_t *loop;
    tc_signal_t *sig = NULL;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_signal_new(NULL, NULL, &sig), -EINVAL);
    assert_null(sig);
    ASSERT_RC(tc_signal_new(loop, NULL, NULL), -EINVAL);
    ASSERT_RC(tc_signal_new(loop, NULL, &sig), 0);
    assert_int_equal(tc_handle_type(tc_signal_handle(sig)), TC_HANDLE_SIGNAL);
    ASSERT_RC(tc_signal_start(sig, on_signal, 0), -EINVAL);
    ASSERT_RC(tc_signal_start(sig, on_signal, -1), -EINVAL);
    ASSERT_RC(tc_signal_start(sig, on_signal, 65), -EINVAL);
    ASSERT_RC(tc_signal_start(sig, on_signal, 100000), -EINVAL);
    ASSERT_RC(tc_signal_start(sig, on_signal, SIGKILL), -EINVAL);
    ASSERT_RC(tc_signal_start(sig, on_signal, SIGSTOP), -EINVAL);
    ASSERT_RC(tc_signal_start(sig, NULL, SIGUSR1), -EINVAL);
    ASSERT_RC(tc_signal_start(NULL, on_signal, SIGUSR1), -EINVAL);
    ASSERT_RC(tc_signal_stop(NULL), -EINVAL);
    /* Failed starts left it inactive; stopping it is harmless. */
    assert_false(tc_handle_is_active(tc_signal_handle(sig)));
    ASSERT_RC(tc_signal_stop(sig), 0);
    ASSERT_RC(tc_close(tc_signal_handle(sig), NULL), 0);
    close_loop_clean(loop);
}

static void
deliver_once(int signum)
{
    tc_loop_t *loop;
    tc_signal_t *sig;
    sctx_t c = {0};

    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    c.loop_thread = pthread_self();
    ASSERT_RC(tc_signal_new(loop, &c, &sig), 0);
    ASSERT_RC(tc_signal_start(sig, on_signal, signum), 0);
    assert_true(tc_handle_is_active(tc_signal_handle(sig)));
    assert_int_equal(raise(signum), 0);
    /* Not in signal context: nothing ran before the loop did. */
    assert_int_equal(c.calls, 0);
    RUN_UNTIL(loop, c.calls > 0, 5000);
    run_nowait(loop, 2);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.last_signum, signum);
    assert_true(c.on_loop_thread);
    ASSERT_RC(tc_close(tc_signal_handle(sig), NULL), 0);
    close_loop_clean(loop);
}

static void
test_sigusr1(void **state)
{
    (void)state;
    deliver_once(SIGUSR1);
}

static void
test_sighup(void **state)
{
    (void)state;
    deliver_once(SIGHUP);
}

static void
test_sigterm(void **state)
{
    (void)state;
    deliver_once(SIGTERM);
}

static void *
kill_process(void *arg)
{
    kill(getpid(), *(int *)arg);
    return NULL;
}

/* A signal delivered to another thread still runs the callback on the
 * loop thread. */
static void
test_from_other_thread(void **state)
{
    tc_loop_t *loop;
    tc_signal_t *sig;
    sctx_t c = {0};
    pthread_t th;
    int signum = SIGUSR2;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    c.loop_thread = pthread_self();
    ASSERT_RC(tc_signal_new(loop, &c, &sig), 0);
    ASSERT_RC(tc_signal_start(sig, on_signal, signum), 0);
    assert_int_equal(pthread_create(&th, NULL, kill_process, &signum), 0);
    RUN_UNTIL(loop, c.calls > 0, 5000);
    pthread_join(th, NULL);
    assert_int_equal(c.calls, 1);
    assert_int_equal(c.last_signum, SIGUSR2);
    assert_true(c.on_loop_thread);
    ASSERT_RC(tc_close(tc_signal_handle(sig), NULL), 0);
    close_loop_clean(loop);
}

/* Two signals watched by two handles: each callback sees its own. */
static void
test_two_signals(void **state)
{
    tc_loop_t *loop;
    tc_signal_t *a, *b;
    sctx_t ca = {0}, cb = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ca.loop = cb.loop = loop;
    ca.loop_thread = cb.loop_thread = pthread_self();
    ASSERT_RC(tc_signal_new(loop, &ca, &a), 0);
    ASSERT_RC(tc_signal_new(loop, &cb, &b), 0);
    ASSERT_RC(tc_signal_start(a, on_signal, SIGUSR1), 0);
    ASSERT_RC(tc_signal_start(b, on_signal, SIGHUP), 0);
    raise(SIGHUP);
    raise(SIGUSR1);
    RUN_UNTIL(loop, ca.calls > 0 && cb.calls > 0, 5000);
    assert_int_equal(ca.calls, 1);
    assert_int_equal(cb.calls, 1);
    assert_int_equal(ca.last_signum, SIGUSR1);
    assert_int_equal(cb.last_signum, SIGHUP);
    /* Restarting a watcher on another signal moves it. */
    ASSERT_RC(tc_signal_stop(b), 0);
    ASSERT_RC(tc_signal_start(b, on_signal, SIGUSR2), 0);
    raise(SIGUSR2);
    RUN_UNTIL(loop, cb.calls == 2, 5000);
    assert_int_equal(cb.last_signum, SIGUSR2);
    assert_int_equal(ca.calls, 1);
    ASSERT_RC(tc_close(tc_signal_handle(a), NULL), 0);
    ASSERT_RC(tc_close(tc_signal_handle(b), NULL), 0);
    close_loop_clean(loop);
}

/* Raised many times while the loop is not looking: coalesced, never lost. */
static void
test_repeated_raise(void **state)
{
    tc_loop_t *loop;
    tc_signal_t *sig;
    sctx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    c.loop_thread = pthread_self();
    ASSERT_RC(tc_signal_new(loop, &c, &sig), 0);
    ASSERT_RC(tc_signal_start(sig, on_signal, SIGUSR1), 0);
    for (int round = 1; round <= 5; round++) {
        for (int i = 0; i < 10; i++) {
            raise(SIGUSR1);
        }
        RUN_UNTIL(loop, c.calls >= round, 5000);
        assert_true(c.calls <= round * 10);
    }
    ASSERT_RC(tc_close(tc_signal_handle(sig), NULL), 0);
    close_loop_clean(loop);
}

static void
test_sigchld(void **state)
{
    tc_loop_t *loop;
    tc_signal_t *sig;
    sctx_t c = {0};
    pid_t pid;
    int status;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    c.loop_thread = pthread_self();
    ASSERT_RC(tc_signal_new(loop, &c, &sig), 0);
    ASSERT_RC(tc_signal_start(sig, on_signal, SIGCHLD), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        _exit(7);
    }
    RUN_UNTIL(loop, c.calls > 0, 10000);
    assert_int_equal(c.last_signum, SIGCHLD);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 7);
    ASSERT_RC(tc_close(tc_signal_handle(sig), NULL), 0);
    close_loop_clean(loop);
}

/* One loop at a time watches a signal: a second loop gets -EBUSY until the
 * first lets go. */
static void
test_busy_in_other_loop(void **state)
{
    tc_loop_t *l1, *l2;
    tc_signal_t *s1, *s1b, *s2;
    sctx_t c1 = {0}, c2 = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&l1), 0);
    ASSERT_RC(tc_loop_new(&l2), 0);
    c1.loop = l1;
    c2.loop = l2;
    c1.loop_thread = c2.loop_thread = pthread_self();
    ASSERT_RC(tc_signal_new(l1, &c1, &s1), 0);
    ASSERT_RC(tc_signal_new(l1, &c1, &s1b), 0);
    ASSERT_RC(tc_signal_new(l2, &c2, &s2), 0);
    ASSERT_RC(tc_signal_start(s1, on_signal, SIGUSR1), 0);
    ASSERT_RC(tc_signal_start(s2, on_signal, SIGUSR1), -EBUSY);
    assert_false(tc_handle_is_active(tc_signal_handle(s2)));
    /* Another handle of the same loop may watch it too. */
    ASSERT_RC(tc_signal_start(s1b, on_signal, SIGUSR1), 0);
    ASSERT_RC(tc_signal_stop(s1), 0);
    ASSERT_RC(tc_signal_start(s2, on_signal, SIGUSR1), -EBUSY);
    ASSERT_RC(tc_close(tc_signal_handle(s1b), NULL), 0);
    run_nowait(l1, 2);
    /* Free now: the second loop can take it, and receives it. */
    ASSERT_RC(tc_signal_start(s2, on_signal, SIGUSR1), 0);
    raise(SIGUSR1);
    RUN_UNTIL(l2, c2.calls > 0, 5000);
    assert_int_equal(c2.last_signum, SIGUSR1);
    ASSERT_RC(tc_close(tc_signal_handle(s2), NULL), 0);
    ASSERT_RC(tc_close(tc_signal_handle(s1), NULL), 0);
    close_loop_clean(l2);
    close_loop_clean(l1);
}

/* Embedded in a host loop (poll on the backend fd, then TC_RUN_NOWAIT), a
 * signal still wakes the host: its poll must not sleep out its timeout. */
static void
test_wakes_embedding_host(void **state)
{
    tc_loop_t *loop;
    tc_signal_t *sig;
    sctx_t c = {0};
    pthread_t th;
    int signum = SIGUSR1;
    int slept = 0;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    c.loop = loop;
    c.loop_thread = pthread_self();
    ASSERT_RC(tc_signal_new(loop, &c, &sig), 0);
    ASSERT_RC(tc_signal_start(sig, on_signal, signum), 0);
    host_iteration(loop, 0);
    assert_int_equal(pthread_create(&th, NULL, kill_process, &signum), 0);
    pthread_join(th, NULL);
    for (int i = 0; i < 5 && c.calls == 0; i++) {
        if (host_iteration(loop, 1000) == 0) {
            slept++;
        }
    }
    assert_int_equal(c.calls, 1);
    assert_int_equal(slept, 0);
    ASSERT_RC(tc_close(tc_signal_handle(sig), NULL), 0);
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_sigusr1),
        cmocka_unit_test(test_sighup),
        cmocka_unit_test(test_sigterm),
        cmocka_unit_test(test_from_other_thread),
        cmocka_unit_test(test_two_signals),
        cmocka_unit_test(test_repeated_raise),
        cmocka_unit_test(test_sigchld),
        cmocka_unit_test(test_busy_in_other_loop),
        cmocka_unit_test(test_wakes_embedding_host),
    };

    return cmocka_run_group_tests_name("signal", tests, NULL, NULL);
}
