/* Poll handles: readiness of descriptors twincore does not own (pipes,
 * socketpairs, eventfds, pidfds), level-triggered, start/stop/change; a
 * descriptor closed while watched gives a status, not a crash or a spin. */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct pctx {
    int calls;
    int last_status;
    int last_events;
    int readable, writable, errors;
    bool stop_in_cb;
    bool close_fd_in_cb;
    int fd;
} pctx_t;

static void
on_poll(tc_poll_t *p, int status, int events)
{
    pctx_t *c = tc_handle_data(tc_poll_handle(p));
    c->calls++;
    c->last_status = status;
    c->last_events = events;
    if (status < 0) {
        c->errors++;
    }
    if (events & TC_POLL_READABLE) {
        c->readable++;
    }
    if (events & TC_POLL_WRITABLE) {
        c->writable++;
    }
    if (c->stop_in_cb) {
        ASSERT_RC(tc_poll_stop(p), 0);
    }
    if (c->close_fd_in_cb) {
        c->close_fd_in_cb = false;
        close(c->fd);   /* on purpose, without stopping first */
    }
}

static void
test_bad_args(void **state)
{
    tc_loop_t *loop;
    tc_poll_t *p = NULL;
    int fds[2];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
    ASSERT_RC(tc_poll_new(NULL, fds[0], NULL, &p), -EINVAL);
    ASSERT_RC(tc_poll_new(loop, -1, NULL, &p), -EINVAL);
    ASSERT_RC(tc_poll_new(loop, fds[0], NULL, NULL), -EINVAL);
    close(fds[1]);
    ASSERT_RC(tc_poll_new(loop, fds[1], NULL, &p), -EBADF);
    assert_null(p);
    ASSERT_RC(tc_poll_new(loop, fds[0], NULL, &p), 0);
    ASSERT_RC(tc_poll_start(p, 0, on_poll), -EINVAL);
    ASSERT_RC(tc_poll_start(p, 4, on_poll), -EINVAL);
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE, NULL), -EINVAL);
    ASSERT_RC(tc_poll_start(NULL, TC_POLL_READABLE, on_poll), -EINVAL);
    ASSERT_RC(tc_poll_stop(NULL), -EINVAL);
    assert_int_equal(tc_poll_fd(p), fds[0]);
    assert_int_equal(tc_handle_type(tc_poll_handle(p)), TC_HANDLE_POLL);
    assert_string_equal(tc_handle_type_name(TC_HANDLE_POLL), "poll");
    assert_false(tc_handle_is_active(tc_poll_handle(p)));
    ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    close_loop_clean(loop);
    assert_true(fd_is_open(fds[0]));   /* the caller's, never closed */
    close(fds[0]);
}

/* A pipe: nothing until written; level-triggered while data waits;
 * nothing after stop, although data still waits. */
static void
test_pipe_readable(void **state)
{
    tc_loop_t *loop;
    tc_poll_t *p;
    pctx_t c = {0};
    int fds[2];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    ASSERT_RC(tc_poll_new(loop, fds[0], &c, &p), 0);
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE, on_poll), 0);
    assert_true(tc_handle_is_active(tc_poll_handle(p)));
    assert_int_equal(tc_poll_events(p), TC_POLL_READABLE);
    run_nowait(loop, 3);
    assert_int_equal(c.calls, 0);

    assert_int_equal(write(fds[1], "x", 1), 1);
    RUN_UNTIL(loop, c.calls >= 1, 5000);
    assert_int_equal(c.last_status, 0);
    assert_int_equal(c.last_events, TC_POLL_READABLE);
    /* Level-triggered: the unread byte reports again, once an iteration. */
    int before = c.calls;
    run_nowait(loop, 3);
    assert_int_equal(c.calls, before + 3);

    ASSERT_RC(tc_poll_stop(p), 0);
    ASSERT_RC(tc_poll_stop(p), 0);   /* harmless twice */
    assert_int_equal(tc_poll_events(p), 0);
    before = c.calls;
    run_nowait(loop, 3);
    assert_int_equal(c.calls, before);

    /* Restarted, and read: quiet again. */
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE, on_poll), 0);
    RUN_UNTIL(loop, c.calls > before, 5000);
    char b;
    assert_int_equal(read(fds[0], &b, 1), 1);
    before = c.calls;
    run_nowait(loop, 3);
    assert_int_equal(c.calls, before);

    /* EOF is readable. */
    close(fds[1]);
    RUN_UNTIL(loop, c.calls > before, 5000);
    assert_true(c.last_events & TC_POLL_READABLE);
    ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    close_loop_clean(loop);
    close(fds[0]);
}

/* A socketpair: writable at once; changing the events of a started
 * watcher; both at once. */
static void
test_socketpair_change_events(void **state)
{
    tc_loop_t *loop;
    tc_poll_t *p;
    pctx_t c = {0};
    int fds[2];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    unix_pair(fds);
    set_nonblock(fds[0], true);
    ASSERT_RC(tc_poll_new(loop, fds[0], &c, &p), 0);
    ASSERT_RC(tc_poll_start(p, TC_POLL_WRITABLE, on_poll), 0);
    RUN_UNTIL(loop, c.calls >= 1, 5000);
    assert_int_equal(c.last_events, TC_POLL_WRITABLE);
    assert_int_equal(c.readable, 0);

    /* Change to readable only: quiet until the peer writes. */
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE, on_poll), 0);
    assert_int_equal(tc_poll_events(p), TC_POLL_READABLE);
    int before = c.calls;
    run_nowait(loop, 3);
    assert_int_equal(c.calls, before);
    assert_int_equal(write(fds[1], "hi", 2), 2);
    RUN_UNTIL(loop, c.calls > before, 5000);
    assert_int_equal(c.last_events, TC_POLL_READABLE);

    /* Both: one call carrying both bits. */
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE | TC_POLL_WRITABLE,
                            on_poll), 0);
    before = c.calls;
    RUN_UNTIL(loop, c.calls > before, 5000);
    assert_int_equal(c.last_events, TC_POLL_READABLE | TC_POLL_WRITABLE);

    /* Stopping from inside the callback. */
    c.stop_in_cb = true;
    before = c.calls;
    RUN_UNTIL(loop, c.calls > before, 5000);
    before = c.calls;
    run_nowait(loop, 3);
    assert_int_equal(c.calls, before);
    assert_false(tc_handle_is_active(tc_poll_handle(p)));

    ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    close_loop_clean(loop);
    close(fds[0]);
    close(fds[1]);
}

static void
test_eventfd(void **state)
{
    tc_loop_t *loop;
    tc_poll_t *p;
    pctx_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    int efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    assert_true(efd >= 0);
    ASSERT_RC(tc_poll_new(loop, efd, &c, &p), 0);
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE, on_poll), 0);
    run_nowait(loop, 2);
    assert_int_equal(c.calls, 0);
    uint64_t one = 1;
    assert_int_equal(write(efd, &one, sizeof(one)), (int)sizeof(one));
    RUN_UNTIL(loop, c.calls >= 1, 5000);
    assert_int_equal(c.last_events, TC_POLL_READABLE);
    ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    close_loop_clean(loop);
    close(efd);
}

/* A pidfd turns readable when its process exits. */
static void
test_pidfd(void **state)
{
    tc_loop_t *loop;
    tc_poll_t *p;
    pctx_t c = {0};
    int go[2];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    assert_int_equal(pipe2(go, O_CLOEXEC), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        char b;
        close(go[1]);
        ssize_t n = read(go[0], &b, 1);   /* wait for the parent's word */
        _exit(n == 1 ? 7 : 8);
    }
    close(go[0]);
    int pfd = (int)syscall(SYS_pidfd_open, pid, 0);   /* Linux >= 5.3 */
    assert_true(pfd >= 0);
    ASSERT_RC(tc_poll_new(loop, pfd, &c, &p), 0);
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE, on_poll), 0);
    run_nowait(loop, 2);
    assert_int_equal(c.calls, 0);   /* the child waits for us */
    assert_int_equal(write(go[1], "x", 1), 1);
    RUN_UNTIL(loop, c.calls >= 1, 10000);
    assert_int_equal(c.last_events, TC_POLL_READABLE);
    int wstatus = 0;
    assert_int_equal(waitpid(pid, &wstatus, 0), pid);
    assert_true(WIFEXITED(wstatus));
    assert_int_equal(WEXITSTATUS(wstatus), 7);
    ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    close_loop_clean(loop);
    close(pfd);
    close(go[1]);
}

/* Closed while watched: epoll forgets the descriptor, so the loop neither
 * crashes nor spins; changing the watch then says -EBADF.  Closed after
 * tc_poll_start() but before the loop applied the watch: the callback gets
 * -EBADF (libev itself would assert on epoll_ctl's EBADF). */
static void
test_closed_while_watched(void **state)
{
    tc_loop_t *loop;
    tc_poll_t *p;
    pctx_t c = {0};
    int fds[2];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    c.fd = fds[0];
    c.close_fd_in_cb = true;
    ASSERT_RC(tc_poll_new(loop, fds[0], &c, &p), 0);
    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE, on_poll), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    RUN_UNTIL(loop, c.calls >= 1, 5000);
    assert_false(fd_is_open(fds[0]));
    /* The byte was never read, yet nothing is reported any more. */
    tc_loop_stats_t before, after;
    tc_loop_stats(loop, &before);
    run_for(loop, 50);
    tc_loop_stats(loop, &after);
    assert_int_equal(c.calls, 1);
    /* run_for sleeps in the loop: a spinning loop would have iterated
     * thousands of times (each iteration returns at once). */
    assert_true(after.iterations - before.iterations < 1000);

    ASSERT_RC(tc_poll_start(p, TC_POLL_READABLE | TC_POLL_WRITABLE,
                            on_poll), -EBADF);
    assert_false(tc_handle_is_active(tc_poll_handle(p)));
    ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    close(fds[1]);

    /* Started, then closed before the loop ran. */
    pctx_t c2 = {0};
    assert_int_equal(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    ASSERT_RC(tc_poll_new(loop, fds[1], &c2, &p), 0);
    ASSERT_RC(tc_poll_start(p, TC_POLL_WRITABLE, on_poll), 0);
    close(fds[1]);
    RUN_UNTIL(loop, c2.calls >= 1, 5000);
    assert_int_equal(c2.errors, 1);
    assert_int_equal(c2.last_status, -EBADF);
    assert_int_equal(c2.last_events, 0);
    assert_false(tc_handle_is_active(tc_poll_handle(p)));
    run_for(loop, 20);
    assert_int_equal(c2.calls, 1);
    /* Closed and changed within one iteration: the same. */
    pctx_t c3 = {0};
    int fds2[2];
    unix_pair(fds2);
    tc_poll_t *p3;
    ASSERT_RC(tc_poll_new(loop, fds2[0], &c3, &p3), 0);
    ASSERT_RC(tc_poll_start(p3, TC_POLL_READABLE, on_poll), 0);
    run_nowait(loop, 2);
    ASSERT_RC(tc_poll_start(p3, TC_POLL_WRITABLE, on_poll), 0);
    close(fds2[0]);
    RUN_UNTIL(loop, c3.calls >= 1, 5000);
    assert_int_equal(c3.last_status, -EBADF);
    ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    ASSERT_RC(tc_close(tc_poll_handle(p3), NULL), 0);
    close_loop_clean(loop);
    close(fds[0]);
    close(fds2[1]);
}

/* A thousand descriptors at once, all ready in the same iteration. */
#define MANY 1000
static void
test_many_descriptors(void **state)
{
    tc_loop_t *loop;
    static tc_poll_t *polls[MANY];
    static int efds[MANY];
    static pctx_t ctx[MANY];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    for (int i = 0; i < MANY; i++) {
        memset(&ctx[i], 0, sizeof(ctx[i]));
        efds[i] = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        assert_true(efds[i] >= 0);
        ASSERT_RC(tc_poll_new(loop, efds[i], &ctx[i], &polls[i]), 0);
        ASSERT_RC(tc_poll_start(polls[i], TC_POLL_READABLE, on_poll), 0);
        ctx[i].stop_in_cb = true;
    }
    run_nowait(loop, 2);
    uint64_t one = 1;
    for (int i = 0; i < MANY; i += 2) {   /* every other one */
        assert_int_equal(write(efds[i], &one, 8), 8);
    }
    int seen = 0;
    uint64_t deadline = mono_ms() + 10000;
    while (seen < MANY / 2 && mono_ms() < deadline) {
        tc_loop_run_timeout(loop, 0.05);
        seen = 0;
        for (int i = 0; i < MANY; i++) {
            seen += ctx[i].calls;
        }
    }
    for (int i = 0; i < MANY; i++) {
        assert_int_equal(ctx[i].calls, i % 2 == 0 ? 1 : 0);
        ASSERT_RC(tc_close(tc_poll_handle(polls[i]), NULL), 0);
    }
    close_loop_clean(loop);
    for (int i = 0; i < MANY; i++) {
        close(efds[i]);
    }
}

/* Closing the handle drops an event already pending in this iteration:
 * a watcher closed by another's callback is not called afterwards. */
typedef struct pair_ctx {
    tc_poll_t *a, *b;
    int calls;
} pair_ctx_t;

static void
on_close_other(tc_poll_t *p, int status, int events)
{
    (void)status;
    (void)events;
    pair_ctx_t *c = tc_handle_data(tc_poll_handle(p));
    c->calls++;
    tc_poll_t *other = p == c->a ? c->b : c->a;
    if (!tc_handle_is_closing(tc_poll_handle(other))) {
        ASSERT_RC(tc_close(tc_poll_handle(other), NULL), 0);
    }
    if (!tc_handle_is_closing(tc_poll_handle(p))) {
        ASSERT_RC(tc_close(tc_poll_handle(p), NULL), 0);
    }
}

static void
test_close_drops_pending(void **state)
{
    tc_loop_t *loop;
    pair_ctx_t c = {0};
    int fds[2];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    unix_pair(fds);
    ASSERT_RC(tc_poll_new(loop, fds[0], &c, &c.a), 0);
    ASSERT_RC(tc_poll_new(loop, fds[1], &c, &c.b), 0);
    ASSERT_RC(tc_poll_start(c.a, TC_POLL_WRITABLE, on_close_other), 0);
    ASSERT_RC(tc_poll_start(c.b, TC_POLL_WRITABLE, on_close_other), 0);
    RUN_UNTIL(loop, c.calls >= 1, 5000);
    run_nowait(loop, 3);
    assert_int_equal(c.calls, 1);
    close_loop_clean(loop);
    close(fds[0]);
    close(fds[1]);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_pipe_readable),
        cmocka_unit_test(test_socketpair_change_events),
        cmocka_unit_test(test_eventfd),
        cmocka_unit_test(test_pidfd),
        cmocka_unit_test(test_closed_while_watched),
        cmocka_unit_test(test_many_descriptors),
        cmocka_unit_test(test_close_drops_pending),
    };

    return cmocka_run_group_tests_name("poll", tests, NULL, NULL);
}
