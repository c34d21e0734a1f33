/* UDP: round trips over IPv4 and IPv6 with the sender's address, datagram
 * boundaries and order, a connected socket's filter and ICMP errors, and
 * sends the kernel refuses for now (EAGAIN/ENOBUFS) queued in order rather
 * than lost.
 *
 * Loopback UDP never runs out of send buffer (the kernel orphans each
 * datagram at once), so the refusals are injected: this executable defines
 * sendto() and sendmsg(), which the statically linked library calls, and
 * fails chosen calls on one descriptor before passing on to the C library. */
#include "helpers.h"

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- fault injection -------------------------------------------------- */

static int fault_fd = -1;
static int fault_left;      /* calls on fault_fd still to fail */
static int fault_errno = EAGAIN;
static int send_calls;      /* calls seen on fault_fd */

ssize_t
sendto(int fd, const void *buf, size_t len, int flags,
       const struct sockaddr *addr, socklen_t addrlen)
{
    static ssize_t (*real)(int, const void *, size_t, int,
                           const struct sockaddr *, socklen_t);

    if (real == NULL) {
        *(void **)&real = dlsym(RTLD_NEXT, "sendto");
    }
    if (fd == fault_fd) {
        send_calls++;
        if (fault_left > 0) {
            fault_left--;
            errno = fault_errno;
            return -1;
        }
    }
    return real(fd, buf, len, flags, addr, addrlen);
}

ssize_t
sendmsg(int fd, const struct msghdr *msg, int flags)
{
    static ssize_t (*real)(int, const struct msghdr *, int);

    if (real == NULL) {
        *(void **)&real = dlsym(RTLD_NEXT, "sendmsg");
    }
    if (fd == fault_fd) {
        send_calls++;
        if (fault_left > 0) {
            fault_left--;
            errno = fault_errno;
            return -1;
        }
    }
    return real(fd, msg, flags);
}

static void
fault_reset(void)
{
    fault_fd = -1;
    fault_left = 0;
    fault_errno = EAGAIN;
    send_calls = 0;
}

/* ---- receiving -------------------------------------------------------- */

#define MAX_DGRAMS 256

typedef struct rx {
    tc_udp_t *u;
    int count;
    int errors;
    int last_error;
    size_t len[MAX_DGRAMS];
    bool intact[MAX_DGRAMS];
    char first[64];
    size_t first_len;
    struct sockaddr_storage from;
    socklen_t fromlen;
    bool null_buf_with_ok_status;
    bool reply;                 /* echo each datagram to its sender */
} rx_t;

/* Datagram k carries payload seed k: its content shows which it is. */
static void
on_recv(tc_udp_t *u, const char *buf, size_t len, const struct sockaddr *from,
        socklen_t fromlen, int status)
{
    rx_t *r = tc_handle_data(tc_udp_handle(u));

    if (status != 0) {
        assert_null(buf);
        r->errors++;
        r->last_error = status;
        return;
    }
    if (buf == NULL) {
        r->null_buf_with_ok_status = true;
        return;
    }
    if (r->count < MAX_DGRAMS) {
        payload_check_t chk;

        payload_check_init(&chk, (uint64_t)r->count);
        r->intact[r->count] = payload_check_feed(&chk, buf, len);
        r->len[r->count] = len;
    }
    if (r->count == 0) {
        r->first_len = len < sizeof(r->first) ? len : sizeof(r->first);
        memcpy(r->first, buf, r->first_len);
        assert_non_null(from);
        assert_true(fromlen <= sizeof(r->from));
        memcpy(&r->from, from, fromlen);
        r->fromlen = fromlen;
    }
    r->count++;
    if (r->reply) {
        ASSERT_RC(tc_udp_send(u, buf, len, from, fromlen), 0);
    }
}

static void
open_udp(tc_loop_t *loop, const char *host, rx_t *r, bool recv)
{
    memset(r, 0, sizeof(*r));
    ASSERT_RC(tc_udp_bind(loop, host, 0, NULL, r, &r->u), 0);
    if (recv) {
        ASSERT_RC(tc_udp_recv_start(r->u, on_recv), 0);
    }
}

static int
addr_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET6) {
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    }
    return ntohs(((const struct sockaddr_in *)ss)->sin_port);
}

/* ---- tests ------------------------------------------------------------ */

static void
roundtrip(const char *host, int family)
{
    tc_loop_t *loop;
    rx_t a, b;
    char msg[100];

    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, host, &a, true);
    open_udp(loop, host, &b, true);
    b.reply = true;
    assert_int_equal(tc_handle_type(tc_udp_handle(a.u)), TC_HANDLE_UDP);
    assert_true(tc_udp_fd(a.u) >= 0);
    int pa = tc_udp_port(a.u), pb = tc_udp_port(b.u);
    assert_true(pa > 0 && pb > 0 && pa != pb);
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    ASSERT_RC(tc_udp_sockname(b.u, (struct sockaddr *)&ss, &len), 0);
    assert_int_equal(ss.ss_family, family);

    payload_fill(msg, sizeof(msg), 0, 0);
    ASSERT_RC(tc_udp_send_to(a.u, msg, sizeof(msg), host, pb), 0);
    RUN_UNTIL(loop, b.count == 1 && a.count == 1, 5000);
    /* b saw a's address, and its reply came back intact. */
    assert_int_equal(b.from.ss_family, family);
    assert_int_equal(addr_port(&b.from), pa);
    assert_int_equal(a.len[0], sizeof(msg));
    assert_true(a.intact[0]);
    assert_int_equal(addr_port(&a.from), pb);
    assert_int_equal(tc_udp_send_queue_size(a.u), 0);
    ASSERT_RC(tc_close(tc_udp_handle(a.u), NULL), 0);
    ASSERT_RC(tc_close(tc_udp_handle(b.u), NULL), 0);
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

/* Sizes from 0 to 60000 bytes: each datagram arrives whole, in order. */
static void
test_boundaries_and_order(void **state)
{
    enum { N = 120, BATCH = 10 };
    tc_loop_t *loop;
    rx_t a, b;
    static char buf[60000];
    size_t sizes[N];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, "127.0.0.1", &a, false);
    open_udp(loop, "127.0.0.1", &b, true);
    for (int i = 0; i < N; i++) {
        sizes[i] = i == 0 ? 0 : (i == 1 ? 60000 : (size_t)(i * 97) % 1500);
        payload_fill(buf, sizes[i], (uint64_t)i, 0);
        ASSERT_RC(tc_udp_send_to(a.u, buf, sizes[i], "127.0.0.1",
                                 tc_udp_port(b.u)),
                  0);
        /* Batches keep the receiver's kernel buffer from overflowing. */
        if (i % BATCH == BATCH - 1) {
            RUN_UNTIL(loop, b.count == i + 1, 5000);
        }
    }
    RUN_UNTIL(loop, b.count == N, 5000);
    assert_false(b.null_buf_with_ok_status);
    for (int i = 0; i < N; i++) {
        assert_int_equal(b.len[i], sizes[i]);
        assert_true(b.intact[i]);
    }
    close_loop(loop);
}

/* The kernel refuses for now: the datagram is queued (copied), later
 * sends queue behind it, and all arrive in order. */
static void
queued_when_refused(int err)
{
    tc_loop_t *loop;
    rx_t a, b;
    char buf[3][500];

    fault_reset();
    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, "127.0.0.1", &a, false);
    open_udp(loop, "127.0.0.1", &b, true);
    fault_fd = tc_udp_fd(a.u);
    fault_errno = err;
    fault_left = 2; /* the first send, and the first retry */
    for (int i = 0; i < 3; i++) {
        payload_fill(buf[i], sizeof(buf[i]), (uint64_t)i, 0);
        ASSERT_RC(tc_udp_send_to(a.u, buf[i], sizeof(buf[i]), "127.0.0.1",
                                 tc_udp_port(b.u)),
                  0);
        /* The queue holds a copy: the caller's buffer is free to change. */
        memset(buf[i], 0, sizeof(buf[i]));
    }
    if (send_calls == 0) {
        fail_msg("tc_udp_send used neither sendto nor sendmsg: extend the "
                 "fault injection in this test");
    }
    assert_int_equal(tc_udp_send_queue_size(a.u), 3 * sizeof(buf[0]));
    assert_true(tc_handle_is_active(tc_udp_handle(a.u)));
    RUN_UNTIL(loop, b.count == 3, 5000);
    run_nowait(loop, 2);
    assert_int_equal(b.count, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(b.len[i], sizeof(buf[i]));
        assert_true(b.intact[i]);
    }
    assert_int_equal(fault_left, 0);
    assert_int_equal(tc_udp_send_queue_size(a.u), 0);
    assert_int_equal(a.errors, 0);
    fault_reset();
    close_loop(loop);
}

static void
test_queued_on_eagain(void **state)
{
    (void)state;
    queued_when_refused(EAGAIN);
}

static void
test_queued_on_enobufs(void **state)
{
    (void)state;
    queued_when_refused(ENOBUFS);
}

/* Closing with a queue frees it; nothing is sent after close. */
static void
test_close_with_queue(void **state)
{
    tc_loop_t *loop;
    rx_t a, b;

    (void)state;
    fault_reset();
    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, "127.0.0.1", &a, false);
    open_udp(loop, "127.0.0.1", &b, true);
    fault_fd = tc_udp_fd(a.u);
    fault_left = 1000000;
    for (int i = 0; i < 5; i++) {
        ASSERT_RC(tc_udp_send_to(a.u, "x", 1, "127.0.0.1", tc_udp_port(b.u)),
                  0);
    }
    assert_int_equal(tc_udp_send_queue_size(a.u), 5);
    ASSERT_RC(tc_close(tc_udp_handle(a.u), NULL), 0);
    ASSERT_RC(tc_udp_send_to(a.u, "y", 1, "127.0.0.1", tc_udp_port(b.u)),
              -EPIPE);
    fault_reset();
    run_for(loop, 30);
    assert_int_equal(b.count, 0);
    close_loop(loop);
}

static void
test_zero_length(void **state)
{
    tc_loop_t *loop;
    rx_t a, b;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, "127.0.0.1", &a, false);
    open_udp(loop, "127.0.0.1", &b, true);
    ASSERT_RC(tc_udp_send_to(a.u, "", 0, "127.0.0.1", tc_udp_port(b.u)), 0);
    ASSERT_RC(tc_udp_send_to(a.u, NULL, 0, "127.0.0.1", tc_udp_port(b.u)),
              0);
    RUN_UNTIL(loop, b.count == 2 || b.null_buf_with_ok_status, 5000);
    /* An empty datagram is data, not an error: buf is not NULL. */
    assert_false(b.null_buf_with_ok_status);
    assert_int_equal(b.len[0], 0);
    assert_int_equal(b.len[1], 0);
    close_loop(loop);
}

/* A connected socket sends to its peer by default and hears only it. */
static void
test_connected_filter(void **state)
{
    tc_loop_t *loop;
    rx_t a, b, c;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, "127.0.0.1", &a, true);
    open_udp(loop, "127.0.0.1", &b, true);
    open_udp(loop, "127.0.0.1", &c, false);
    ASSERT_RC(tc_udp_connect(a.u, "127.0.0.1", tc_udp_port(b.u)), 0);
    ASSERT_RC(tc_udp_send(a.u, "to-b", 4, NULL, 0), 0);
    RUN_UNTIL(loop, b.count == 1, 5000);
    assert_memory_equal(b.first, "to-b", 4);
    /* c's datagram is filtered out; b's, sent after it, arrives. */
    ASSERT_RC(tc_udp_send_to(c.u, "from-c", 6, "127.0.0.1", tc_udp_port(a.u)),
              0);
    ASSERT_RC(tc_udp_send_to(b.u, "from-b", 6, "127.0.0.1", tc_udp_port(a.u)),
              0);
    RUN_UNTIL(loop, a.count >= 1, 5000);
    run_for(loop, 20);
    assert_int_equal(a.count, 1);
    assert_memory_equal(a.first, "from-b", 6);
    close_loop(loop);
}

/* ICMP port unreachable on a connected socket: buf NULL, the code, and
 * receiving goes on. */
static void
test_icmp_error_reported(void **state)
{
    tc_loop_t *loop;
    rx_t a, b, dead;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, "127.0.0.1", &a, true);
    open_udp(loop, "127.0.0.1", &b, false);
    open_udp(loop, "127.0.0.1", &dead, false);
    int dead_port = tc_udp_port(dead.u);
    ASSERT_RC(tc_close(tc_udp_handle(dead.u), NULL), 0);
    run_nowait(loop, 2);
    ASSERT_RC(tc_udp_connect(a.u, "127.0.0.1", dead_port), 0);
    int rc = tc_udp_send(a.u, "anyone?", 7, NULL, 0);
    assert_true(rc == 0 || rc == -ECONNREFUSED);
    if (rc == 0) {
        RUN_UNTIL(loop, a.errors > 0, 5000);
        ASSERT_RC(a.last_error, -ECONNREFUSED);
    }
    /* Still receiving. */
    ASSERT_RC(tc_udp_connect(a.u, "127.0.0.1", tc_udp_port(b.u)), 0);
    ASSERT_RC(tc_udp_send_to(b.u, "alive", 5, "127.0.0.1", tc_udp_port(a.u)),
              0);
    RUN_UNTIL(loop, a.count == 1, 5000);
    assert_memory_equal(a.first, "alive", 5);
    assert_true(tc_handle_is_active(tc_udp_handle(a.u)));
    close_loop(loop);
}

static void
test_recv_stop_start(void **state)
{
    tc_loop_t *loop;
    rx_t a, b;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    open_udp(loop, "127.0.0.1", &a, false);
    open_udp(loop, "127.0.0.1", &b, true);
    ASSERT_RC(tc_udp_recv_stop(b.u), 0);
    ASSERT_RC(tc_udp_recv_stop(b.u), 0);
    ASSERT_RC(tc_udp_send_to(a.u, "wait", 4, "127.0.0.1", tc_udp_port(b.u)),
              0);
    run_for(loop, 30);
    assert_int_equal(b.count, 0);
    ASSERT_RC(tc_udp_recv_start(b.u, on_recv), 0);
    RUN_UNTIL(loop, b.count == 1, 5000);
    assert_memory_equal(b.first, "wait", 4);
    close_loop(loop);
}

static void
test_bad_args(void **state)
{
    tc_loop_t *loop;
    rx_t a;
    tc_udp_t *out = NULL;
    static char big[70000];
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
                                .sin6_port = htons(9),
                                .sin6_addr = IN6ADDR_LOOPBACK_INIT};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_udp_bind(loop, "nope", 0, NULL, NULL, &out), -EINVAL);
    ASSERT_RC(tc_udp_bind(loop, "127.0.0.1", -1, NULL, NULL, &out), -EINVAL);
    ASSERT_RC(tc_udp_bind(loop, "127.0.0.1", 65536, NULL, NULL, &out),
              -EINVAL);
    ASSERT_RC(tc_udp_bind(NULL, "127.0.0.1", 0, NULL, NULL, &out), -EINVAL);
    ASSERT_RC(tc_udp_bind(loop, "127.0.0.1", 0, NULL, NULL, NULL), -EINVAL);
    assert_null(out);
    open_udp(loop, "127.0.0.1", &a, false);
    /* A port in use. */
    ASSERT_RC(tc_udp_bind(loop, "127.0.0.1", tc_udp_port(a.u), NULL, NULL,
                          &out),
              -EADDRINUSE);
    ASSERT_RC(tc_udp_recv_start(a.u, NULL), -EINVAL);
    ASSERT_RC(tc_udp_recv_start(NULL, on_recv), -EINVAL);
    ASSERT_RC(tc_udp_recv_stop(NULL), -EINVAL);
    ASSERT_RC(tc_udp_send(NULL, "x", 1, NULL, 0), -EINVAL);
    ASSERT_RC(tc_udp_send(a.u, NULL, 1, NULL, 0), -EINVAL);
    ASSERT_RC(tc_udp_send_to(a.u, "x", 1, "nope", 9), -EINVAL);
    ASSERT_RC(tc_udp_send_to(a.u, "x", 1, "127.0.0.1", -9), -EINVAL);
    ASSERT_RC(tc_udp_send_to(a.u, "x", 1, NULL, 9), -EINVAL);
    ASSERT_RC(tc_udp_send_to(a.u, big, sizeof(big), "127.0.0.1", 9),
              -EMSGSIZE);
    /* No destination on an unconnected socket. */
    ASSERT_ERR(tc_udp_send(a.u, "x", 1, NULL, 0));
    /* An IPv6 destination from an IPv4 socket. */
    ASSERT_ERR(tc_udp_send(a.u, "x", 1, (struct sockaddr *)&sin6,
                           sizeof(sin6)));
    ASSERT_RC(tc_udp_connect(a.u, "nope", 9), -EINVAL);
    ASSERT_RC(tc_udp_connect(NULL, "127.0.0.1", 9), -EINVAL);
    ASSERT_RC(tc_udp_connect(a.u, NULL, 9), -EINVAL);
    ASSERT_RC(tc_udp_port(NULL), -EINVAL);
    ASSERT_ERR(tc_udp_fd(NULL));
    assert_int_equal(tc_udp_send_queue_size(a.u), 0);
    ASSERT_RC(tc_close(tc_udp_handle(a.u), NULL), 0);
    /* A closing socket takes nothing more. */
    ASSERT_ERR(tc_udp_send_to(a.u, "x", 1, "127.0.0.1", 9));
    ASSERT_ERR(tc_udp_recv_start(a.u, on_recv));
    ASSERT_ERR(tc_udp_connect(a.u, "127.0.0.1", 9));
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_ipv4),
        cmocka_unit_test(test_roundtrip_ipv6),
        cmocka_unit_test(test_boundaries_and_order),
        cmocka_unit_test(test_queued_on_eagain),
        cmocka_unit_test(test_queued_on_enobufs),
        cmocka_unit_test(test_close_with_queue),
        cmocka_unit_test(test_zero_length),
        cmocka_unit_test(test_connected_filter),
        cmocka_unit_test(test_icmp_error_reported),
        cmocka_unit_test(test_recv_stop_start),
        cmocka_unit_test(test_bad_args),
    };

    return cmocka_run_group_tests_name("udp", tests, NULL, NULL);
}
