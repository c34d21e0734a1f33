/* TCP: listen on IPv4 and IPv6 (port 0 reports its port), connect with
 * callbacks that run exactly once (success, refusal, timeout, cancel),
 * socket options, address helpers, and bad input refused with codes. */
#include "helpers.h"

#include <twincore/pool.h>
#include <twincore/resolve.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* A connection: client or accepted, with counters. */
typedef struct conn {
    tc_stream_t *s;
    int connects;
    int connect_status;
    payload_check_t chk;
    uint64_t received;
    char text[256];
    size_t text_len;
    int eofs, errors, closed;
    bool echo;
} conn_t;

typedef struct server_ctx {
    tc_server_t *srv;
    tc_loop_t *loop;
    int conns;
    int errors;
    int last_error;
    conn_t *accepted[64];
    bool echo;
} server_ctx_t;

static void
c_read(tc_stream_t *s, const char *buf, size_t len)
{
    conn_t *c = tc_handle_data(tc_stream_handle(s));

    c->received += len;
    payload_check_feed(&c->chk, buf, len);
    if (c->text_len + len <= sizeof(c->text)) {
        memcpy(c->text + c->text_len, buf, len);
        c->text_len += len;
    }
    if (c->echo) {
        ASSERT_RC(tc_stream_write(s, buf, len), 0);
    }
}

static void
c_eof(tc_stream_t *s)
{
    ((conn_t *)tc_handle_data(tc_stream_handle(s)))->eofs++;
}

static void
c_error(tc_stream_t *s, int status)
{
    (void)status;
    ((conn_t *)tc_handle_data(tc_stream_handle(s)))->errors++;
}

static const tc_stream_callbacks_t conn_cbs = {
    .on_read = c_read,
    .on_eof = c_eof,
    .on_error = c_error,
};

static void
c_connected(tc_stream_t *s, int status)
{
    conn_t *c = tc_handle_data(tc_stream_handle(s));

    c->connects++;
    c->connect_status = status;
}

static void
c_closed(tc_handle_t *h)
{
    conn_t *c = tc_handle_data(h);

    c->closed++;
}

static void
free_conn(tc_handle_t *h)
{
    free(tc_handle_data(h));
}

static void
on_conn(tc_server_t *srv, tc_stream_t *s, int status)
{
    server_ctx_t *sc = tc_handle_data(tc_server_handle(srv));

    if (status != 0) {
        assert_null(s);
        sc->errors++;
        sc->last_error = status;
        return;
    }
    assert_non_null(s);
    conn_t *c = calloc(1, sizeof(*c));
    assert_non_null(c);
    c->s = s;
    c->echo = sc->echo;
    payload_check_init(&c->chk, 0);
    tc_handle_set_data(tc_stream_handle(s), c);
    ASSERT_RC(tc_stream_set_callbacks(s, &conn_cbs), 0);
    ASSERT_RC(tc_stream_read_start(s), 0);
    if (sc->conns < 64) {
        sc->accepted[sc->conns] = c;
    }
    sc->conns++;
}

/* Close the accepted connections (their memory goes in the close cb). */
static void
close_accepted(server_ctx_t *sc)
{
    for (int i = 0; i < sc->conns && i < 64; i++) {
        ASSERT_RC(tc_close(tc_stream_handle(sc->accepted[i]->s), free_conn),
                  0);
    }
}

static void
listen_on(tc_loop_t *loop, const char *host, server_ctx_t *sc)
{
    memset(sc, 0, sizeof(*sc));
    sc->loop = loop;
    sc->echo = true;
    ASSERT_RC(tc_tcp_listen(loop, host, 0, NULL, on_conn, sc, &sc->srv), 0);
}

/* ---- round trips ------------------------------------------------------ */

static void
roundtrip(const char *host, int family)
{
    tc_loop_t *loop;
    server_ctx_t sc;
    conn_t cl = {0};
    struct sockaddr_storage ss, peer;
    socklen_t len = sizeof(ss), plen = sizeof(peer);

    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, host, &sc);
    assert_int_equal(tc_handle_type(tc_server_handle(sc.srv)),
                     TC_HANDLE_SERVER);
    assert_true(tc_handle_is_active(tc_server_handle(sc.srv)));
    int port = tc_server_port(sc.srv);
    assert_true(port > 0 && port < 65536);
    assert_true(tc_server_fd(sc.srv) >= 0);
    assert_int_equal(sock_port(tc_server_fd(sc.srv)), port);
    ASSERT_RC(tc_server_sockname(sc.srv, (struct sockaddr *)&ss, &len), 0);
    assert_int_equal(ss.ss_family, family);

    payload_check_init(&cl.chk, 0);
    ASSERT_RC(tc_tcp_connect(loop, host, port, NULL, c_connected, &cl, &cl.s),
              0);
    assert_non_null(cl.s);
    ASSERT_RC(tc_stream_set_callbacks(cl.s, &conn_cbs), 0);
    RUN_UNTIL(loop, cl.connects > 0 && sc.conns > 0, 5000);
    ASSERT_RC(cl.connect_status, 0);
    ASSERT_RC(tc_stream_read_start(cl.s), 0);
    ASSERT_RC(tc_stream_write(cl.s, "ping", 4), 0);
    RUN_UNTIL(loop, cl.text_len >= 4, 5000);
    assert_memory_equal(cl.text, "ping", 4);
    assert_int_equal(cl.connects, 1);
    assert_int_equal(sc.conns, 1);
    assert_int_equal(sc.errors, 0);
    assert_int_equal(tc_server_accepted(sc.srv), 1);

    /* The accepted stream's peer is the client's own address. */
    len = sizeof(ss);
    ASSERT_RC(tc_stream_sockname(cl.s, (struct sockaddr *)&ss, &len), 0);
    ASSERT_RC(tc_stream_peername(sc.accepted[0]->s, (struct sockaddr *)&peer,
                                 &plen),
              0);
    assert_int_equal(len, plen);
    assert_memory_equal(&ss, &peer, len);
    assert_false(tc_stream_is_unix(cl.s));
    assert_ptr_equal(tc_handle_loop(tc_stream_handle(sc.accepted[0]->s)),
                     loop);

    ASSERT_RC(tc_close(tc_stream_handle(cl.s), c_closed), 0);
    RUN_UNTIL(loop, sc.accepted[0]->eofs > 0 || sc.accepted[0]->errors > 0,
              5000);
    close_accepted(&sc);
    ASSERT_RC(tc_close(tc_server_handle(sc.srv), NULL), 0);
    RUN_UNTIL(loop, cl.closed > 0, 5000);
    assert_int_equal(cl.closed, 1);
    assert_int_equal(cl.connects, 1);
    close_loop_clean(loop);
}

static void
test_roundtrip_ipv4(void **state)
{
    (void)state;
    roundtrip("127.0.0.1", AF_INET);
}

static void
test_roundtrip_ipv6(void **state)
{
    (void)state;
    if (!have_ipv6()) {
        skip();
    }
    roundtrip("::1", AF_INET6);
}

/* Fifty clients each send 64 KiB of their own pattern and get it echoed. */
static void
test_many_clients_echo(void **state)
{
    enum { N = 50, SIZE = 65536 };
    tc_loop_t *loop;
    server_ctx_t sc;
    static conn_t cl[N];
    char *buf = malloc(SIZE);
    int port;

    (void)state;
    assert_non_null(buf);
    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "127.0.0.1", &sc);
    port = tc_server_port(sc.srv);
    for (int i = 0; i < N; i++) {
        memset(&cl[i], 0, sizeof(cl[i]));
        payload_check_init(&cl[i].chk, (uint64_t)i + 100);
        ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", port, NULL, c_connected,
                                 &cl[i], &cl[i].s),
                  0);
        ASSERT_RC(tc_stream_set_callbacks(cl[i].s, &conn_cbs), 0);
        payload_fill(buf, SIZE, (uint64_t)i + 100, 0);
        /* Queued before the connection completes. */
        ASSERT_RC(tc_stream_write(cl[i].s, buf, SIZE), 0);
    }
    free(buf);
    RUN_UNTIL(loop, sc.conns == N, 10000);
    for (int i = 0; i < N; i++) {
        ASSERT_RC(tc_stream_read_start(cl[i].s), 0);
    }
    for (int i = 0; i < N; i++) {
        RUN_UNTIL(loop, cl[i].received >= SIZE || cl[i].errors, 20000);
        assert_int_equal(cl[i].received, SIZE);
        assert_false(cl[i].chk.bad);
        assert_int_equal(cl[i].connects, 1);
        ASSERT_RC(cl[i].connect_status, 0);
    }
    assert_int_equal(tc_server_accepted(sc.srv), N);
    close_loop(loop);
    for (int i = 0; i < sc.conns && i < 64; i++) {
        free(sc.accepted[i]);
    }
}

/* ---- listen ----------------------------------------------------------- */

static void
test_listen_errors(void **state)
{
    tc_loop_t *loop;
    server_ctx_t sc;
    tc_server_t *sentinel = (tc_server_t *)&sc;
    tc_server_t *out = sentinel;
    tc_tcp_listen_opts_t bad_backlog = {.backlog = -5};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "127.0.0.1", &sc);
    int port = tc_server_port(sc.srv);

    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", port, NULL, on_conn, &sc, &out),
              -EADDRINUSE);
    assert_ptr_equal(out, sentinel);
    ASSERT_RC(tc_tcp_listen(loop, "not-an-ip", 0, NULL, on_conn, &sc, &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_listen(loop, "256.1.1.1", 0, NULL, on_conn, &sc, &out),
              -EINVAL);
    /* "" is every interface now (test_listen_every_interface). */
    ASSERT_RC(tc_tcp_listen(loop, " ", 0, NULL, on_conn, &sc, &out), -EINVAL);
    ASSERT_RC(tc_tcp_listen(loop, "::1::2", 0, NULL, on_conn, &sc, &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", -1, NULL, on_conn, &sc, &out),
              -EINVAL);
    ASSERT_RC(
        tc_tcp_listen(loop, "127.0.0.1", 65536, NULL, on_conn, &sc, &out),
        -EINVAL);
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", 0, &bad_backlog, on_conn, &sc,
                            &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_listen(NULL, "127.0.0.1", 0, NULL, on_conn, &sc, &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", 0, NULL, NULL, &sc, &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", 0, NULL, on_conn, &sc, NULL),
              -EINVAL);
    assert_ptr_equal(out, sentinel);
    /* Nothing was left half-made by the failures. */
    assert_int_equal(tc_loop_open_handles(loop), 1);
    ASSERT_RC(tc_close(tc_server_handle(sc.srv), NULL), 0);
    close_loop_clean(loop);
}

static int
int_opt(int fd, int level, int name)
{
    int v = -1;
    socklen_t len = sizeof(v);

    assert_int_equal(getsockopt(fd, level, name, &v, &len), 0);
    return v;
}

static void
test_listen_options(void **state)
{
    tc_loop_t *loop;
    server_ctx_t a, b;
    tc_tcp_listen_opts_t rp = {.reuseport = true};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    memset(&a, 0, sizeof(a));
    memset(&b, 0, sizeof(b));
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", 0, &rp, on_conn, &a, &a.srv),
              0);
    int fd = tc_server_fd(a.srv);
    assert_true(int_opt(fd, SOL_SOCKET, SO_REUSEADDR) != 0);
    assert_true(int_opt(fd, SOL_SOCKET, SO_REUSEPORT) != 0);
    /* A second reuseport listener shares the port. */
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", tc_server_port(a.srv), &rp,
                            on_conn, &b, &b.srv),
              0);
    assert_int_equal(tc_server_port(b.srv), tc_server_port(a.srv));
    ASSERT_RC(tc_close(tc_server_handle(a.srv), NULL), 0);
    ASSERT_RC(tc_close(tc_server_handle(b.srv), NULL), 0);

    if (have_ipv6()) {
        tc_tcp_listen_opts_t v6 = {.ipv6_only = true};
        ASSERT_RC(tc_tcp_listen(loop, "::", 0, &v6, on_conn, &a, &a.srv), 0);
        assert_true(int_opt(tc_server_fd(a.srv), IPPROTO_IPV6, IPV6_V6ONLY) !=
                    0);
        ASSERT_RC(tc_close(tc_server_handle(a.srv), NULL), 0);
    }
    /* NULL host listens on every IPv4 address. */
    ASSERT_RC(tc_tcp_listen(loop, NULL, 0, NULL, on_conn, &a, &a.srv), 0);
    struct sockaddr_in sin;
    socklen_t len = sizeof(sin);
    ASSERT_RC(tc_server_sockname(a.srv, (struct sockaddr *)&sin, &len), 0);
    assert_int_equal(sin.sin_family, AF_INET);
    assert_int_equal(sin.sin_addr.s_addr, htonl(INADDR_ANY));
    ASSERT_RC(tc_close(tc_server_handle(a.srv), NULL), 0);
    close_loop_clean(loop);
}

/* TCP_NODELAY is on by default both ways; keepalive on request. */
static void
test_nodelay_and_keepalive(void **state)
{
    tc_loop_t *loop;
    server_ctx_t sc, sn;
    conn_t c1 = {0}, c2 = {0};
    tc_tcp_listen_opts_t nagle = {.no_nodelay = true};
    tc_tcp_connect_opts_t co = {.no_nodelay = true, .keepalive = true,
                                .keepalive_idle_s = 77};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "127.0.0.1", &sc);
    memset(&sn, 0, sizeof(sn));
    ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", 0, &nagle, on_conn, &sn,
                            &sn.srv),
              0);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", tc_server_port(sc.srv), NULL,
                             c_connected, &c1, &c1.s),
              0);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", tc_server_port(sn.srv), &co,
                             c_connected, &c2, &c2.s),
              0);
    ASSERT_RC(tc_stream_set_callbacks(c1.s, &conn_cbs), 0);
    ASSERT_RC(tc_stream_set_callbacks(c2.s, &conn_cbs), 0);
    RUN_UNTIL(loop, c1.connects && c2.connects && sc.conns && sn.conns, 5000);
    ASSERT_RC(c1.connect_status, 0);
    ASSERT_RC(c2.connect_status, 0);

    assert_true(int_opt(tc_stream_fd(c1.s), IPPROTO_TCP, TCP_NODELAY) != 0);
    assert_true(int_opt(tc_stream_fd(sc.accepted[0]->s), IPPROTO_TCP,
                        TCP_NODELAY) != 0);
    assert_int_equal(int_opt(tc_stream_fd(c2.s), IPPROTO_TCP, TCP_NODELAY), 0);
    assert_int_equal(
        int_opt(tc_stream_fd(sn.accepted[0]->s), IPPROTO_TCP, TCP_NODELAY), 0);
    assert_int_equal(int_opt(tc_stream_fd(c1.s), SOL_SOCKET, SO_KEEPALIVE), 0);
    assert_true(int_opt(tc_stream_fd(c2.s), SOL_SOCKET, SO_KEEPALIVE) != 0);
    assert_int_equal(int_opt(tc_stream_fd(c2.s), IPPROTO_TCP, TCP_KEEPIDLE),
                     77);
    close_loop(loop);
    free(sc.accepted[0]);
    free(sn.accepted[0]);
}

/* ---- connect ---------------------------------------------------------- */

static void
test_connect_bad_args(void **state)
{
    tc_loop_t *loop;
    conn_t c = {0};
    tc_stream_t *sentinel = (tc_stream_t *)&c;
    tc_stream_t *out = sentinel;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_tcp_connect(loop, "1.2.3.4.5", 80, NULL, c_connected, &c,
                             &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", -1, NULL, c_connected, &c,
                             &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", 70000, NULL, c_connected, &c,
                             &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", 0, NULL, c_connected, &c,
                             &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_connect(loop, NULL, 80, NULL, c_connected, &c, &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_connect(NULL, "127.0.0.1", 80, NULL, c_connected, &c,
                             &out),
              -EINVAL);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", 80, NULL, c_connected, &c,
                             NULL),
              -EINVAL);
    /* A name needs a resolver, which this loop does not have. */
    ASSERT_ERR(tc_tcp_connect(loop, "localhost", 80, NULL, c_connected, &c,
                              &out));
    assert_ptr_equal(out, sentinel);
    run_nowait(loop, 2);
    assert_int_equal(c.connects, 0);
    close_loop_clean(loop);
}

/* A bound socket that does not listen: connecting is refused. */
static void
test_connect_refused(void **state)
{
    tc_loop_t *loop;
    conn_t c = {0};
    int port;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET,
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};

    (void)state;
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    port = sock_port(fd);
    ASSERT_RC(tc_loop_new(&loop), 0);
    int rc = tc_tcp_connect(loop, "127.0.0.1", port, NULL, c_connected, &c,
                            &c.s);
    if (rc != 0) {
        /* Refused at once: then cb is never called. */
        ASSERT_RC(rc, -ECONNREFUSED);
        run_nowait(loop, 2);
        assert_int_equal(c.connects, 0);
    } else {
        ASSERT_RC(tc_stream_set_callbacks(c.s, &conn_cbs), 0);
        RUN_UNTIL(loop, c.connects > 0, 5000);
        run_for(loop, 20);
        assert_int_equal(c.connects, 1);
        ASSERT_RC(c.connect_status, -ECONNREFUSED);
        /* The failure is the connect callback's; on_error stays quiet. */
        assert_int_equal(c.errors, 0);
        ASSERT_RC(tc_stream_write(c.s, "x", 1), -EPIPE);
        ASSERT_RC(tc_close(tc_stream_handle(c.s), c_closed), 0);
        RUN_UNTIL(loop, c.closed > 0, 5000);
        assert_int_equal(c.connects, 1);
    }
    close(fd);
    close_loop_clean(loop);
}

/* Fill a raw listener's accept queue (backlog 0, never accepting) until a
 * connect attempt stays unanswered; further SYNs are then dropped. */
static bool
fill_backlog(int lfd_port, int *fds, int max, int *n)
{
    *n = 0;
    while (*n < max) {
        int fd = tcp_connect_raw("127.0.0.1", lfd_port, true);
        struct pollfd p = {.fd = fd, .events = POLLOUT};

        fds[(*n)++] = fd;
        if (poll(&p, 1, 200) == 0) {
            return true;
        }
    }
    return false;
}

static void
test_connect_timeout(void **state)
{
    tc_loop_t *loop;
    conn_t c = {0};
    int port, fds[32], n;
    int lfd = tcp_listener("127.0.0.1", 0, &port);
    tc_tcp_connect_opts_t opts = {.timeout_ms = 200};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    bool full = fill_backlog(port, fds, 32, &n);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", port, &opts, c_connected, &c,
                             &c.s),
              0);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &conn_cbs), 0);
    RUN_UNTIL(loop, c.connects > 0, 10000);
    run_for(loop, 50);
    assert_int_equal(c.connects, 1);
    if (full) {
        ASSERT_RC(c.connect_status, -ETIMEDOUT);
        ASSERT_RC(tc_stream_write(c.s, "x", 1), -EPIPE);
    } else {
        print_message("# backlog never filled; timeout path not forced\n");
        assert_true(c.connect_status == 0 || c.connect_status == -ETIMEDOUT);
    }
    ASSERT_RC(tc_close(tc_stream_handle(c.s), c_closed), 0);
    RUN_UNTIL(loop, c.closed > 0, 5000);
    assert_int_equal(c.connects, 1);
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
    close(lfd);
    close_loop_clean(loop);
}

/* A connect that succeeded is not failed later by its timeout. */
static void
test_connect_timeout_disarmed_on_success(void **state)
{
    tc_loop_t *loop;
    server_ctx_t sc;
    conn_t c = {0};
    tc_tcp_connect_opts_t opts = {.timeout_ms = 30};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "127.0.0.1", &sc);
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", tc_server_port(sc.srv), &opts,
                             c_connected, &c, &c.s),
              0);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &conn_cbs), 0);
    RUN_UNTIL(loop, c.connects > 0, 5000);
    ASSERT_RC(c.connect_status, 0);
    run_for(loop, 80);
    assert_int_equal(c.connects, 1);
    assert_int_equal(c.errors, 0);
    /* The connection still works. */
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "hi", 2), 0);
    RUN_UNTIL(loop, c.text_len == 2, 5000);
    close_loop(loop);
    free(sc.accepted[0]);
}

/* Reading requested while connecting begins once connected. */
static void
test_read_start_while_connecting(void **state)
{
    tc_loop_t *loop;
    server_ctx_t sc;
    conn_t c = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "127.0.0.1", &sc);
    sc.echo = false;
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", tc_server_port(sc.srv), NULL,
                             c_connected, &c, &c.s),
              0);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &conn_cbs), 0);
    int rc = tc_stream_read_start(c.s);
    assert_true(rc == 0 || rc == -ENOTCONN);
    RUN_UNTIL(loop, c.connects > 0 && sc.conns > 0, 5000);
    ASSERT_RC(tc_stream_write(sc.accepted[0]->s, "welcome", 7), 0);
    RUN_UNTIL(loop, c.text_len == 7, 5000);
    assert_memory_equal(c.text, "welcome", 7);
    close_loop(loop);
    free(sc.accepted[0]);
}

/* Closing a stream that is still connecting completes the connect with
 * -ECANCELED, once, before the close callback. */
static void
on_connect_then_closed(tc_handle_t *h)
{
    conn_t *c = tc_handle_data(h);

    assert_int_equal(c->connects, 1);
    c->closed++;
}

static void
test_close_while_connecting(void **state)
{
    tc_loop_t *loop;
    conn_t c = {0};
    int port, fds[32], n;
    int lfd = tcp_listener("127.0.0.1", 0, &port);

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    (void)fill_backlog(port, fds, 32, &n);
    ASSERT_RC(
        tc_tcp_connect(loop, "127.0.0.1", port, NULL, c_connected, &c, &c.s),
        0);
    ASSERT_RC(tc_stream_write(c.s, "queued", 6), 0);
    ASSERT_RC(tc_close(tc_stream_handle(c.s), on_connect_then_closed), 0);
    assert_int_equal(c.connects, 0); /* never inside tc_close */
    RUN_UNTIL(loop, c.closed > 0, 5000);
    run_nowait(loop, 2);
    assert_int_equal(c.connects, 1);
    ASSERT_RC(c.connect_status, -ECANCELED);
    assert_int_equal(c.closed, 1);
    for (int i = 0; i < n; i++) {
        close(fds[i]);
    }
    close(lfd);
    close_loop_clean(loop);
}

/* A half-close requested while connecting happens once connected, with or
 * without data queued before it: the server sees the data, then EOF. */
static void
shutdown_while_connecting(const char *data)
{
    tc_loop_t *loop;
    server_ctx_t sc;
    conn_t c = {0};
    size_t n = strlen(data);

    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "127.0.0.1", &sc);
    sc.echo = false;
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", tc_server_port(sc.srv), NULL,
                             c_connected, &c, &c.s),
              0);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &conn_cbs), 0);
    if (n > 0) {
        ASSERT_RC(tc_stream_write(c.s, data, n), 0);
    }
    ASSERT_RC(tc_stream_shutdown(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "late", 4), -EPIPE);
    RUN_UNTIL(loop, c.connects > 0 && sc.conns > 0, 5000);
    ASSERT_RC(c.connect_status, 0);
    conn_t *srv_side = sc.accepted[0];
    RUN_UNTIL(loop, srv_side->eofs > 0 || srv_side->errors > 0, 5000);
    assert_int_equal(srv_side->eofs, 1);
    assert_int_equal(srv_side->text_len, n);
    assert_memory_equal(srv_side->text, data, n);
    /* The client still reads what the server sends back. */
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    ASSERT_RC(tc_stream_write(srv_side->s, "back", 4), 0);
    RUN_UNTIL(loop, c.text_len == 4, 5000);
    close_loop(loop);
    free(srv_side);
}

static void
test_shutdown_while_connecting_with_data(void **state)
{
    (void)state;
    shutdown_while_connecting("queued");
}

static void
test_shutdown_while_connecting_no_data(void **state)
{
    (void)state;
    shutdown_while_connecting("");
}

/* ---- address helpers -------------------------------------------------- */

static void
test_sockaddr_helpers(void **state)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char buf[128];

    (void)state;
    ASSERT_RC(tc_sockaddr_from_numeric("127.0.0.1", 8080, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    ASSERT_RC(tc_sockaddr_format((struct sockaddr *)&ss, len, buf,
                                 sizeof(buf)),
              0);
    assert_string_equal(buf, "127.0.0.1:8080");
    ASSERT_RC(tc_sockaddr_format((struct sockaddr *)&ss, len, buf, 5),
              -ENOSPC);

    ASSERT_RC(tc_sockaddr_from_numeric("::1", 443, &ss, &len), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    ASSERT_RC(tc_sockaddr_format((struct sockaddr *)&ss, len, buf,
                                 sizeof(buf)),
              0);
    assert_string_equal(buf, "[::1]:443");

    ASSERT_RC(tc_sockaddr_from_numeric("example.com", 80, &ss, &len),
              -EINVAL);
    ASSERT_RC(tc_sockaddr_from_numeric("127.0.0.1", -1, &ss, &len), -EINVAL);
    ASSERT_RC(tc_sockaddr_from_numeric("127.0.0.1", 65536, &ss, &len),
              -EINVAL);
    ASSERT_RC(tc_sockaddr_from_numeric(NULL, 80, &ss, &len), -EINVAL);
    ASSERT_RC(tc_sockaddr_from_numeric("127.0.0.1", 80, NULL, &len), -EINVAL);

    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    strcpy(sun.sun_path, "/tmp/x.sock");
    ASSERT_RC(tc_sockaddr_format((struct sockaddr *)&sun, sizeof(sun), buf,
                                 sizeof(buf)),
              0);
    assert_string_equal(buf, "/tmp/x.sock");

    struct sockaddr odd = {.sa_family = AF_APPLETALK};
    ASSERT_RC(tc_sockaddr_format(&odd, sizeof(odd), buf, sizeof(buf)),
              -EAFNOSUPPORT);
}

/* ---- host names (resolved on the pool) ---------------------------------- */

static void
accept_into(tc_server_t *server, tc_stream_t *conn, int status)
{
    int *accepted = tc_handle_data(tc_server_handle(server));

    if (status == 0) {
        (*accepted)++;
        tc_close(tc_stream_handle(conn), NULL);
    }
}

static void
test_connect_by_name(void **state)
{
    tc_loop_t *loop;
    tc_pool_t *pool;
    tc_server_t *server;
    int accepted = 0;
    conn_t c = {0}, bad = {0}, dropped = {0};
    tc_tcp_listen_opts_t dual = {.ipv6_only = false};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_pool_new(NULL, &pool), 0);
    tc_loop_set_resolver_pool(loop, pool);
    /* "::" with v6only off takes IPv4 too: whichever address "localhost"
     * resolves to first, it is served. */
    ASSERT_RC(tc_tcp_listen(loop, "::", 0, &dual, accept_into, &accepted,
                            &server), 0);
    int port = tc_server_port(server);

    ASSERT_RC(tc_tcp_connect(loop, "localhost", port, NULL, c_connected, &c,
                             &c.s), 0);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &conn_cbs), 0);
    /* Written before the name is even resolved: queued, then sent. */
    ASSERT_RC(tc_stream_write(c.s, "hi", 2), 0);
    RUN_UNTIL(loop, c.connects > 0 && accepted > 0, 10000);
    ASSERT_RC(c.connect_status, 0);

    /* A name that cannot exist: the callback reports a lookup failure. */
    ASSERT_RC(tc_tcp_connect(loop, "nonexistent.invalid", port, NULL,
                             c_connected, &bad, &bad.s), 0);
    RUN_UNTIL(loop, bad.connects > 0, 20000);
    assert_true(bad.connect_status == TC_ENONAME ||
                bad.connect_status == TC_EAGAIN_NAME ||
                bad.connect_status == TC_ENAMEFAIL);

    /* Closed while the lookup runs: no callback comes afterwards. */
    ASSERT_RC(tc_tcp_connect(loop, "localhost", port, NULL, c_connected,
                             &dropped, &dropped.s), 0);
    ASSERT_RC(tc_close(tc_stream_handle(dropped.s), NULL), 0);
    run_for(loop, 100);
    assert_int_equal(dropped.connects, 0);

    assert_int_equal(c.connects, 1);
    assert_int_equal(bad.connects, 1);
    ASSERT_RC(tc_close(tc_stream_handle(c.s), NULL), 0);
    ASSERT_RC(tc_close(tc_stream_handle(bad.s), NULL), 0);
    ASSERT_RC(tc_close(tc_server_handle(server), NULL), 0);
    run_for(loop, 20);
    tc_loop_set_resolver_pool(loop, NULL);
    close_loop_clean(loop);
    ASSERT_RC(tc_pool_shutdown(pool, TC_POOL_DRAIN), 0);
    tc_pool_free(pool);
}

/* ---- local address of a connect; every interface -------------------- */

static void
test_connect_bind(void **state)
{
    tc_loop_t *loop;
    server_ctx_t sc;
    conn_t cl = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "127.0.0.1", &sc);
    int port = tc_server_port(sc.srv);
    /* A free port to bind to: the kernel's pick, released again. */
    int probe = tcp_listener("127.0.0.1", 1, &(int){0});
    int local_port = sock_port(probe);
    close(probe);

    tc_tcp_connect_opts_t bad = {.bind_host = "localhost"};
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", port, &bad, c_connected, &cl,
                             &cl.s), -EINVAL);
    bad = (tc_tcp_connect_opts_t){.bind_port = 70000};
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", port, &bad, c_connected, &cl,
                             &cl.s), -EINVAL);

    tc_tcp_connect_opts_t opts = {.bind_host = "127.0.0.1",
                                  .bind_port = local_port};
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", port, &opts, c_connected,
                             &cl, &cl.s), 0);
    ASSERT_RC(tc_stream_set_callbacks(cl.s, &conn_cbs), 0);
    RUN_UNTIL(loop, cl.connects > 0 && sc.conns > 0, 5000);
    ASSERT_RC(cl.connect_status, 0);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof(peer);
    ASSERT_RC(tc_stream_peername(sc.accepted[0]->s, (struct sockaddr *)&peer,
                                 &plen), 0);
    assert_int_equal(ntohs(((struct sockaddr_in *)&peer)->sin_port),
                     local_port);

    /* The same local address again, while it is in use: the callback
     * reports it (or the call does, at once). */
    conn_t c2 = {0};
    int rc = tc_tcp_connect(loop, "127.0.0.1", port, &opts, c_connected, &c2,
                            &c2.s);
    if (rc == 0) {
        RUN_UNTIL(loop, c2.connects > 0, 5000);
        ASSERT_RC(c2.connect_status, -EADDRINUSE);
        ASSERT_RC(tc_close(tc_stream_handle(c2.s), NULL), 0);
    } else {
        ASSERT_RC(rc, -EADDRINUSE);
    }
    ASSERT_RC(tc_close(tc_stream_handle(cl.s), c_closed), 0);
    close_accepted(&sc);
    ASSERT_RC(tc_close(tc_server_handle(sc.srv), NULL), 0);
    close_loop_clean(loop);
}

/* "" listens on every interface: IPv4 and (where there is IPv6) IPv6
 * clients reach the one socket. */
static void
test_listen_every_interface(void **state)
{
    tc_loop_t *loop;
    server_ctx_t sc;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    listen_on(loop, "", &sc);
    int port = tc_server_port(sc.srv);
    assert_true(port > 0);
    conn_t c4 = {0}, c6 = {0};
    ASSERT_RC(tc_tcp_connect(loop, "127.0.0.1", port, NULL, c_connected, &c4,
                             &c4.s), 0);
    RUN_UNTIL(loop, c4.connects > 0 && sc.conns > 0, 5000);
    ASSERT_RC(c4.connect_status, 0);
    int want = 1;
    if (have_ipv6()) {
        ASSERT_RC(tc_tcp_connect(loop, "::1", port, NULL, c_connected, &c6,
                                 &c6.s), 0);
        RUN_UNTIL(loop, c6.connects > 0 && sc.conns > 1, 5000);
        ASSERT_RC(c6.connect_status, 0);
        ASSERT_RC(tc_close(tc_stream_handle(c6.s), NULL), 0);
        want = 2;
    }
    assert_int_equal(sc.conns, want);
    ASSERT_RC(tc_close(tc_stream_handle(c4.s), NULL), 0);
    close_accepted(&sc);
    ASSERT_RC(tc_close(tc_server_handle(sc.srv), NULL), 0);
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_ipv4),
        cmocka_unit_test(test_roundtrip_ipv6),
        cmocka_unit_test(test_many_clients_echo),
        cmocka_unit_test(test_listen_errors),
        cmocka_unit_test(test_listen_options),
        cmocka_unit_test(test_nodelay_and_keepalive),
        cmocka_unit_test(test_connect_bad_args),
        cmocka_unit_test(test_connect_refused),
        cmocka_unit_test(test_connect_by_name),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_connect_timeout_disarmed_on_success),
        cmocka_unit_test(test_read_start_while_connecting),
        cmocka_unit_test(test_close_while_connecting),
        cmocka_unit_test(test_shutdown_while_connecting_with_data),
        cmocka_unit_test(test_shutdown_while_connecting_no_data),
        cmocka_unit_test(test_sockaddr_helpers),
        cmocka_unit_test(test_connect_bind),
        cmocka_unit_test(test_listen_every_interface),
    };

    return cmocka_run_group_tests_name("tcp", tests, NULL, NULL);
}
