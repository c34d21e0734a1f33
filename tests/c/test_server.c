/* Listening servers: accepted connections are counted and owned by the
 * callee; pause/resume leaves connections waiting in the backlog; under
 * descriptor exhaustion (RLIMIT_NOFILE lowered here) the server reports
 * -EMFILE once, does not spin, drops nothing, and accepts the waiting
 * connections once descriptors are free again. */
#include "helpers.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

typedef struct sctx {
    tc_loop_t *loop;
    tc_server_t *srv;
    int conns;
    int errors;
    int last_error;
    int closed;
    bool close_server_on_first;
    bool keep_conns;             /* else each conn is closed at once */
    tc_stream_t *kept[64];
    int nkept;
} sctx_t;

static void
on_conn(tc_server_t *srv, tc_stream_t *conn, int status)
{
    sctx_t *c = tc_handle_data(tc_server_handle(srv));

    if (status != 0) {
        assert_null(conn);
        c->errors++;
        c->last_error = status;
        return;
    }
    assert_non_null(conn);
    assert_int_equal(tc_handle_type(tc_stream_handle(conn)), TC_HANDLE_STREAM);
    assert_ptr_equal(tc_handle_loop(tc_stream_handle(conn)), c->loop);
    c->conns++;
    if (c->keep_conns && c->nkept < 64) {
        c->kept[c->nkept++] = conn;
    } else {
        /* Closing releases a descriptor: a starved server may retry. */
        ASSERT_RC(tc_close(tc_stream_handle(conn), NULL), 0);
    }
    if (c->close_server_on_first) {
        c->close_server_on_first = false;
        ASSERT_RC(tc_close(tc_server_handle(srv), NULL), 0);
    }
}

static void
server_closed(tc_handle_t *h)
{
    ((sctx_t *)tc_handle_data(h))->closed++;
}

static void
start_server(tc_loop_t *loop, sctx_t *c, int backlog)
{
    tc_tcp_listen_opts_t opts = {.backlog = backlog};

    memset(c, 0, sizeof(*c));
    c->loop = loop;
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", 0, &opts, on_conn, c, &c->srv),
              0);
}

/* Raw clients, connected (the handshake completes in the backlog). */
static void
connect_clients(int port, int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        fds[i] = tcp_connect_raw("127.0.0.1", port, true);
    }
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLOUT};

        assert_int_equal(poll(&p, 1, 5000), 1);
    }
}

static void
close_fds(int *fds, int n)
{
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
            fds[i] = -1;
        }
    }
}

static void
test_bad_args(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    (void)state;
    ASSERT_RC(tc_server_port(NULL), -EINVAL);
    ASSERT_ERR(tc_server_fd(NULL));
    ASSERT_RC(tc_server_pause(NULL), -EINVAL);
    ASSERT_RC(tc_server_resume(NULL), -EINVAL);
    ASSERT_RC(tc_server_sockname(NULL, (struct sockaddr *)&ss, &len), -EINVAL);
    assert_int_equal(tc_server_accepted(NULL), 0);
    assert_int_equal(tc_server_accept_errors(NULL), 0);
    assert_null(tc_server_handle(NULL));
}

static void
test_accept_counts(void **state)
{
    enum { N = 20 };
    tc_loop_t *loop;
    sctx_t c;
    int fds[N];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    start_server(loop, &c, 64);
    connect_clients(tc_server_port(c.srv), fds, N);
    RUN_UNTIL(loop, c.conns == N, 5000);
    run_for(loop, 20);
    assert_int_equal(c.conns, N);
    assert_int_equal(c.errors, 0);
    assert_int_equal(tc_server_accepted(c.srv), N);
    assert_int_equal(tc_server_accept_errors(c.srv), 0);
    close_fds(fds, N);
    ASSERT_RC(tc_close(tc_server_handle(c.srv), server_closed), 0);
    RUN_UNTIL(loop, c.closed == 1, 5000);
    close_loop_clean(loop);
}

static void
test_pause_resume(void **state)
{
    enum { N = 3 };
    tc_loop_t *loop;
    sctx_t c;
    int fds[N];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    start_server(loop, &c, 16);
    ASSERT_RC(tc_server_pause(c.srv), 0);
    ASSERT_RC(tc_server_pause(c.srv), 0);
    assert_false(tc_handle_is_active(tc_server_handle(c.srv)));
    connect_clients(tc_server_port(c.srv), fds, N);
    run_for(loop, 40);
    assert_int_equal(c.conns, 0);
    ASSERT_RC(tc_server_resume(c.srv), 0);
    assert_true(tc_handle_is_active(tc_server_handle(c.srv)));
    RUN_UNTIL(loop, c.conns == N, 5000);
    ASSERT_RC(tc_server_resume(c.srv), 0);
    run_for(loop, 20);
    assert_int_equal(c.conns, N);
    close_fds(fds, N);
    ASSERT_RC(tc_close(tc_server_handle(c.srv), NULL), 0);
    close_loop_clean(loop);
}

/* Closing the server from its own callback: no further callbacks. */
static void
test_close_in_callback(void **state)
{
    enum { N = 5 };
    tc_loop_t *loop;
    sctx_t c;
    int fds[N];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    start_server(loop, &c, 16);
    c.close_server_on_first = true;
    connect_clients(tc_server_port(c.srv), fds, N);
    RUN_UNTIL(loop, c.conns > 0, 5000);
    run_for(loop, 30);
    assert_int_equal(c.conns, 1);
    assert_int_equal(c.errors, 0);
    close_fds(fds, N);
    close_loop_clean(loop);
}

/* Accepted connections belong to the callee and work both ways. */
static void
test_accepted_conn_is_usable(void **state)
{
    tc_loop_t *loop;
    sctx_t c;
    int fd;
    char buf[8];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    start_server(loop, &c, 16);
    c.keep_conns = true;
    fd = tcp_connect_raw("127.0.0.1", tc_server_port(c.srv), false);
    RUN_UNTIL(loop, c.conns == 1, 5000);
    assert_false(tc_stream_is_unix(c.kept[0]));
    ASSERT_RC(tc_stream_write(c.kept[0], "hello", 5), 0);
    RUN_UNTIL(loop, tc_stream_write_queue_size(c.kept[0]) == 0, 5000);
    assert_int_equal(read(fd, buf, sizeof(buf)), 5);
    assert_memory_equal(buf, "hello", 5);
    /* Closing the server leaves accepted connections open. */
    ASSERT_RC(tc_close(tc_server_handle(c.srv), NULL), 0);
    run_nowait(loop, 2);
    assert_int_equal(tc_loop_open_handles(loop), 1);
    ASSERT_RC(tc_stream_write(c.kept[0], "again", 5), 0);
    RUN_UNTIL(loop, tc_stream_write_queue_size(c.kept[0]) == 0, 5000);
    assert_int_equal(read(fd, buf, sizeof(buf)), 5);
    close(fd);
    close_loop(loop);
}

/* ---- descriptor exhaustion -------------------------------------------- */

#define FILLERS 8
#define WAITING 5

typedef struct emfile_state {
    struct rlimit saved;
    bool lowered;
    int fillers[FILLERS];
    int clients[WAITING + 1];
} emfile_state_t;

static emfile_state_t emfile;

static int
emfile_setup(void **state)
{
    (void)state;
    memset(&emfile, 0, sizeof(emfile));
    for (int i = 0; i < FILLERS; i++) {
        emfile.fillers[i] = -1;
    }
    for (int i = 0; i <= WAITING; i++) {
        emfile.clients[i] = -1;
    }
    return getrlimit(RLIMIT_NOFILE, &emfile.saved);
}

static void
restore_rlimit(void)
{
    if (emfile.lowered) {
        setrlimit(RLIMIT_NOFILE, &emfile.saved);
        emfile.lowered = false;
    }
}

/* Runs even when the test failed: the next tests need descriptors. */
static int
emfile_teardown(void **state)
{
    (void)state;
    restore_rlimit();
    close_fds(emfile.fillers, FILLERS);
    close_fds(emfile.clients, WAITING + 1);
    return 0;
}

/* Lower the soft limit to the lowest free descriptor: no new one can be
 * made until one of those below it is closed. */
static void
exhaust_descriptors(void)
{
    int probe = dup(0);
    struct rlimit lim = emfile.saved;

    assert_true(probe >= 0);
    close(probe);
    lim.rlim_cur = (rlim_t)probe;
    assert_int_equal(setrlimit(RLIMIT_NOFILE, &lim), 0);
    emfile.lowered = true;
    assert_int_equal(dup(0), -1);
    assert_int_equal(errno, EMFILE);
}

static void
emfile_episode(bool free_through_twincore)
{
    tc_loop_t *loop;
    sctx_t c;
    tc_loop_stats_t st0, st1;
    int pair[2];
    tc_stream_t *victim = NULL;

    ASSERT_RC(tc_loop_new(&loop), 0);
    start_server(loop, &c, 64);
    int port = tc_server_port(c.srv);
    connect_clients(port, emfile.clients, WAITING);
    if (free_through_twincore) {
        /* A descriptor twincore owns and will close later. */
        unix_pair(pair);
        close(pair[1]);
        ASSERT_RC(tc_stream_open(loop, pair[0], NULL, &victim), 0);
    } else {
        for (int i = 0; i < FILLERS; i++) {
            emfile.fillers[i] = dup(0);
            assert_true(emfile.fillers[i] >= 0);
        }
    }
    exhaust_descriptors();

    /* Starved: reported, no connection accepted, and no spinning. */
    tc_loop_stats(loop, &st0);
    run_for(loop, 300);
    tc_loop_stats(loop, &st1);
    uint64_t iterations = st1.iterations - st0.iterations;
    print_message("# starved 300 ms: %d error callbacks, %llu accept "
                  "errors, %llu iterations\n",
                  c.errors,
                  (unsigned long long)tc_server_accept_errors(c.srv),
                  (unsigned long long)iterations);
    assert_int_equal(c.conns, 0);
    assert_true(c.errors >= 1);
    assert_true(c.errors <= 3);
    ASSERT_RC(c.last_error, -EMFILE);
    assert_true(tc_server_accept_errors(c.srv) >= (uint64_t)c.errors);
    assert_true(tc_server_accept_errors(c.srv) < 100);
    assert_true(iterations < 1000);

    /* Free descriptors: every waiting connection is accepted. */
    if (free_through_twincore) {
        ASSERT_RC(tc_close(tc_stream_handle(victim), NULL), 0);
    } else {
        close_fds(emfile.fillers, FILLERS);
    }
    RUN_UNTIL(loop, c.conns == WAITING, 15000);
    assert_int_equal(tc_server_accepted(c.srv), WAITING);
    int errors_before = c.errors;

    /* The server goes on working with the limit restored. */
    restore_rlimit();
    emfile.clients[WAITING] = tcp_connect_raw("127.0.0.1", port, false);
    RUN_UNTIL(loop, c.conns == WAITING + 1, 5000);
    assert_int_equal(c.errors, errors_before);
    assert_true(tc_handle_is_active(tc_server_handle(c.srv)));
    close_fds(emfile.clients, WAITING + 1);
    ASSERT_RC(tc_close(tc_server_handle(c.srv), NULL), 0);
    close_loop_clean(loop);
}

static void
test_emfile_recovers_when_fds_closed(void **state)
{
    (void)state;
    emfile_episode(false);
}

static void
test_emfile_recovers_when_twincore_closes(void **state)
{
    (void)state;
    emfile_episode(true);
}

/* A listening socket made elsewhere: adopted, it accepts; anything else
 * is refused with -EINVAL and closed (the server owns fd either way). */
static void
test_open_adopts_listener(void **state)
{
    tc_loop_t *loop;
    sctx_t c;
    tc_server_t *srv = NULL;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    memset(&c, 0, sizeof(c));
    c.loop = loop;
    int port;
    int lfd = tcp_listener("127.0.0.1", 16, &port);
    ASSERT_RC(tc_server_open(NULL, -1, on_conn, &c, &srv), -EINVAL);
    ASSERT_RC(tc_server_open(loop, dup(lfd), NULL, &c, &srv), -EINVAL);
    int pair[2];
    unix_pair(pair);
    ASSERT_RC(tc_server_open(loop, pair[0], on_conn, &c, &srv), -EINVAL);
    assert_false(fd_is_open(pair[0]));   /* owned, closed on failure */
    close(pair[1]);
    assert_null(srv);

    ASSERT_RC(tc_server_open(loop, lfd, on_conn, &c, &c.srv), 0);
    assert_int_equal(tc_server_fd(c.srv), lfd);
    assert_int_equal(tc_server_port(c.srv), port);
    int fds[3];
    connect_clients(port, fds, 3);
    RUN_UNTIL(loop, c.conns == 3, 5000);
    assert_int_equal(c.errors, 0);
    /* Paused, it leaves connections in the backlog; resumed, it takes
     * them. */
    ASSERT_RC(tc_server_pause(c.srv), 0);
    int more[2];
    connect_clients(port, more, 2);
    run_for(loop, 30);
    assert_int_equal(c.conns, 3);
    ASSERT_RC(tc_server_resume(c.srv), 0);
    RUN_UNTIL(loop, c.conns == 5, 5000);
    ASSERT_RC(tc_close(tc_server_handle(c.srv), NULL), 0);
    close_loop_clean(loop);
    assert_false(fd_is_open(lfd) && sock_port(lfd) == port);
    for (int i = 0; i < 3; i++) {
        close(fds[i]);
    }
    close(more[0]);
    close(more[1]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_accept_counts),
        cmocka_unit_test(test_pause_resume),
        cmocka_unit_test(test_close_in_callback),
        cmocka_unit_test(test_accepted_conn_is_usable),
        cmocka_unit_test(test_open_adopts_listener),
        cmocka_unit_test_setup_teardown(test_emfile_recovers_when_fds_closed,
                                        emfile_setup, emfile_teardown),
        cmocka_unit_test_setup_teardown(
            test_emfile_recovers_when_twincore_closes, emfile_setup,
            emfile_teardown),
    };

    return cmocka_run_group_tests_name("server", tests, NULL, NULL);
}
