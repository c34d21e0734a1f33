/* The buffered stream transport, over TCP and Unix socket pairs: bytes
 * arrive intact and in order (64 MiB through small socket buffers, copies
 * and lent buffers, mixed write calls); watermarks pause and resume in
 * pairs; reading pauses; EOF and half-close both ways; a reset is reported
 * once; graceful close flushes, close discards, abort resets. */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MiB (1024u * 1024u)
/* Small kernel buffers force partial writes and a deep queue.  A TCP
 * receive buffer much under 32 KiB stalls loopback transfers on delayed
 * ACKs, so only the send side goes down to 4 KiB. */
#define SMALL_SND 4096
#define SMALL_RCV 32768

typedef enum kind { KIND_TCP, KIND_UNIX } kind_t;

typedef struct end {
    tc_loop_t *loop;
    tc_stream_t *s;
    const char *name;
    payload_check_t chk;
    uint64_t received;
    int reads;
    int eofs;
    int errors;
    int last_error;
    int reads_after_error;
    int reads_after_eof;
    bool flow[64];
    size_t flow_queue[64];   /* queue size seen by each on_flow */
    int nflow;
    int closed;
    bool stop_after_read;    /* read_stop in the first on_read */
    bool close_in_read;
    bool shutdown_on_eof;    /* tc_stream_shutdown from on_eof */
    char text[256];          /* small reads, for exact content checks */
    size_t text_len;
} end_t;

static void e_closed(tc_handle_t *h);

static end_t *
end_of(tc_stream_t *s)
{
    return tc_handle_data(tc_stream_handle(s));
}

static void
e_read(tc_stream_t *s, const char *buf, size_t len)
{
    end_t *e = end_of(s);

    assert_non_null(buf);
    assert_true(len > 0);
    if (e->errors > 0) {
        e->reads_after_error++;
    }
    if (e->eofs > 0) {
        e->reads_after_eof++;
    }
    e->reads++;
    payload_check_feed(&e->chk, buf, len);
    e->received += len;
    if (e->text_len + len <= sizeof(e->text)) {
        memcpy(e->text + e->text_len, buf, len);
        e->text_len += len;
    }
    if (e->stop_after_read) {
        e->stop_after_read = false;
        ASSERT_RC(tc_stream_read_stop(s), 0);
    }
    if (e->close_in_read) {
        e->close_in_read = false;
        ASSERT_RC(tc_close(tc_stream_handle(s), e_closed), 0);
    }
}

static void
e_eof(tc_stream_t *s)
{
    end_t *e = end_of(s);

    e->eofs++;
    if (e->shutdown_on_eof) {
        ASSERT_RC(tc_stream_shutdown(s), 0);
    }
}

static void
e_error(tc_stream_t *s, int status)
{
    end_t *e = end_of(s);

    e->errors++;
    e->last_error = status;
}

static void
e_flow(tc_stream_t *s, bool paused)
{
    end_t *e = end_of(s);

    if (e->nflow < 64) {
        e->flow[e->nflow] = paused;
        e->flow_queue[e->nflow] = tc_stream_write_queue_size(s);
        e->nflow++;
    }
}

static void
e_closed(tc_handle_t *h)
{
    end_t *e = tc_handle_data(h);

    e->closed++;
}

static const tc_stream_callbacks_t all_cbs = {
    .on_read = e_read,
    .on_eof = e_eof,
    .on_error = e_error,
    .on_flow = e_flow,
};

/* Adopt fd as a stream for e, reading with every callback set. */
static void
open_end(tc_loop_t *loop, int fd, end_t *e, const char *name, uint64_t seed,
         bool read)
{
    memset(e, 0, sizeof(*e));
    e->loop = loop;
    e->name = name;
    payload_check_init(&e->chk, seed);
    ASSERT_RC(tc_stream_open(loop, fd, e, &e->s), 0);
    ASSERT_RC(tc_stream_set_callbacks(e->s, &all_cbs), 0);
    if (read) {
        ASSERT_RC(tc_stream_read_start(e->s), 0);
    }
}

static void
raw_pair(kind_t kind, int fds[2])
{
    if (kind == KIND_TCP) {
        tcp_pair(fds);
    } else {
        unix_pair(fds);
    }
}

/* Two connected streams a and b on loop, buffers made small. */
static void
stream_pair(tc_loop_t *loop, kind_t kind, end_t *a, end_t *b, uint64_t seed)
{
    int fds[2];

    raw_pair(kind, fds);
    open_end(loop, fds[0], a, "a", seed, true);
    open_end(loop, fds[1], b, "b", seed, true);
    set_bufsizes(tc_stream_fd(a->s), SMALL_SND, SMALL_RCV);
    set_bufsizes(tc_stream_fd(b->s), SMALL_SND, SMALL_RCV);
}

static void
assert_flow_paired(const end_t *e)
{
    for (int i = 0; i < e->nflow; i++) {
        if (e->flow[i] != (i % 2 == 0)) {
            fail_msg("on_flow #%d of %s was paused=%d: events must go "
                     "true, false, true, false...",
                     i, e->name, (int)e->flow[i]);
        }
    }
    assert_true(e->nflow % 2 == 0);
}

/* ---- arguments and options ------------------------------------------- */

static void
test_bad_args(void **state)
{
    tc_loop_t *loop;
    end_t a;
    int fds[2];
    char buf[8] = "abcdefg";
    struct iovec iov = {.iov_base = buf, .iov_len = 3};
    tc_stream_t *s = NULL;
    size_t lo, hi;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    unix_pair(fds);
    memset(&a, 0, sizeof(a));
    ASSERT_RC(tc_stream_open(loop, fds[0], &a, &a.s), 0);
    /* No on_read yet: reading cannot start. */
    ASSERT_RC(tc_stream_read_start(a.s), -EINVAL);
    ASSERT_RC(tc_stream_set_callbacks(a.s, NULL), -EINVAL);
    ASSERT_RC(tc_stream_set_callbacks(NULL, &all_cbs), -EINVAL);
    tc_stream_callbacks_t none = {0};
    ASSERT_RC(tc_stream_set_callbacks(a.s, &none), 0);
    ASSERT_RC(tc_stream_read_start(a.s), -EINVAL);
    ASSERT_RC(tc_stream_read_start(NULL), -EINVAL);
    ASSERT_RC(tc_stream_read_stop(NULL), -EINVAL);
    ASSERT_RC(tc_stream_write(NULL, buf, 3), -EINVAL);
    ASSERT_RC(tc_stream_write(a.s, NULL, 3), -EINVAL);
    ASSERT_RC(tc_stream_writev(NULL, &iov, 1), -EINVAL);
    ASSERT_RC(tc_stream_writev(a.s, NULL, 1), -EINVAL);
    ASSERT_RC(tc_stream_writev(a.s, &iov, -1), -EINVAL);
    ASSERT_RC(tc_stream_set_watermarks(NULL, 0, 0), -EINVAL);
    tc_stream_get_watermarks(a.s, &lo, &hi);
    ASSERT_RC(tc_stream_set_watermarks(a.s, 10, 5), -EINVAL);
    size_t lo2, hi2;
    tc_stream_get_watermarks(a.s, &lo2, &hi2);
    assert_int_equal(lo, lo2);
    assert_int_equal(hi, hi2);
    ASSERT_RC(tc_stream_shutdown(NULL), -EINVAL);
    ASSERT_RC(tc_stream_close(NULL, NULL), -EINVAL);
    ASSERT_RC(tc_stream_abort(NULL, NULL), -EINVAL);
    ASSERT_ERR(tc_stream_fd(NULL));
    ASSERT_RC(tc_stream_open(loop, fds[1], NULL, NULL), -EINVAL);
    ASSERT_ERR(tc_stream_open(loop, -1, NULL, &s));
    assert_null(s);
    /* Nothing was written by the refused calls. */
    assert_int_equal(tc_stream_write_queue_size(a.s), 0);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), NULL), 0);
    close_loop_clean(loop);
}

/* The stream owns fd from tc_stream_open on, also when it fails. */
static void
test_open_failure_closes_fd(void **state)
{
    tc_loop_t *loop;
    tc_stream_t *s = NULL;
    int fds[2], udp;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    unix_pair(fds);
    ASSERT_ERR(tc_stream_open(NULL, fds[0], NULL, &s));
    assert_null(s);
    assert_false(fd_is_open(fds[0]));
    close(fds[1]);

    /* Not a stream socket. */
    udp = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(udp >= 0);
    ASSERT_ERR(tc_stream_open(loop, udp, NULL, &s));
    assert_null(s);
    assert_false(fd_is_open(udp));
    close_loop_clean(loop);
}

static void
test_open_sets_flags_and_options(void **state)
{
    tc_loop_t *loop;
    end_t u, v, t, w;
    int fds[2], tfds[2], on;
    socklen_t len = sizeof(on);
    size_t lo, hi;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    unix_pair(fds);
    int flags = fcntl(fds[0], F_GETFD);
    assert_int_equal(fcntl(fds[0], F_SETFD, flags & ~FD_CLOEXEC), 0);
    open_end(loop, fds[0], &u, "u", 1, false);
    open_end(loop, fds[1], &v, "v", 1, false);
    assert_int_equal(tc_stream_fd(u.s), fds[0]);
    assert_true(fcntl(fds[0], F_GETFL) & O_NONBLOCK);
    assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
    assert_true(tc_stream_is_unix(u.s));
    assert_int_equal(tc_handle_type(tc_stream_handle(u.s)), TC_HANDLE_STREAM);
    assert_false(tc_stream_is_reading(u.s));
    ASSERT_RC(tc_stream_set_nodelay(u.s, true), -ENOTSUP);
    ASSERT_RC(tc_stream_set_keepalive(u.s, true, 10), -ENOTSUP);
    tc_stream_get_watermarks(u.s, &lo, &hi);
    assert_int_equal(hi, TC_STREAM_DEFAULT_HIGH_WATER);
    assert_true(lo <= hi);

    tcp_pair(tfds);
    open_end(loop, tfds[0], &t, "t", 1, false);
    open_end(loop, tfds[1], &w, "w", 1, false);
    assert_false(tc_stream_is_unix(t.s));
    ASSERT_RC(tc_stream_set_nodelay(t.s, false), 0);
    assert_int_equal(getsockopt(tfds[0], IPPROTO_TCP, TCP_NODELAY, &on, &len),
                     0);
    assert_int_equal(on, 0);
    ASSERT_RC(tc_stream_set_nodelay(t.s, true), 0);
    assert_int_equal(getsockopt(tfds[0], IPPROTO_TCP, TCP_NODELAY, &on, &len),
                     0);
    assert_true(on != 0);
    ASSERT_RC(tc_stream_set_keepalive(t.s, true, 42), 0);
    assert_int_equal(getsockopt(tfds[0], SOL_SOCKET, SO_KEEPALIVE, &on, &len),
                     0);
    assert_true(on != 0);
    assert_int_equal(getsockopt(tfds[0], IPPROTO_TCP, TCP_KEEPIDLE, &on, &len),
                     0);
    assert_int_equal(on, 42);
    ASSERT_RC(tc_stream_set_keepalive(t.s, false, 0), 0);
    assert_int_equal(getsockopt(tfds[0], SOL_SOCKET, SO_KEEPALIVE, &on, &len),
                     0);
    assert_int_equal(on, 0);

    /* Addresses: our name is the peer's peer name. */
    struct sockaddr_storage a1, a2;
    socklen_t l1 = sizeof(a1), l2 = sizeof(a2);
    ASSERT_RC(tc_stream_sockname(t.s, (struct sockaddr *)&a1, &l1), 0);
    ASSERT_RC(tc_stream_peername(w.s, (struct sockaddr *)&a2, &l2), 0);
    assert_int_equal(l1, l2);
    assert_memory_equal(&a1, &a2, l1);
    ASSERT_RC(tc_stream_peername(t.s, (struct sockaddr *)&a1, &l1), 0);
    assert_int_equal(((struct sockaddr_in *)&a1)->sin_family, AF_INET);
    socklen_t tiny = 0;
    ASSERT_ERR(tc_stream_peername(NULL, (struct sockaddr *)&a1, &tiny));

    close_loop(loop);
}

/* ---- bytes arrive intact ---------------------------------------------- */

#define BIG (64u * MiB)

static void
big_write_copy(kind_t kind)
{
    tc_loop_t *loop;
    end_t a, b;
    char *buf;

    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, kind, &a, &b, 7);
    buf = malloc(BIG);
    assert_non_null(buf);
    payload_fill(buf, BIG, 7, 0);
    ASSERT_RC(tc_stream_write(a.s, buf, BIG), 0);
    /* The caller keeps buf: scribbling on it must not reach the peer. */
    memset(buf, 0x5a, BIG);
    free(buf);
    assert_true(tc_stream_write_queue_size(a.s) > 0);
    assert_true(tc_stream_write_queue_size(a.s) <= BIG);

    RUN_UNTIL(loop, b.received >= BIG || b.errors || b.eofs, 90000);
    assert_int_equal(b.received, BIG);
    if (b.chk.bad) {
        fail_msg("byte %llu differs", (unsigned long long)b.chk.first_bad);
    }
    assert_int_equal(b.chk.hash, payload_hash(7, BIG));
    assert_int_equal(tc_stream_write_queue_size(a.s), 0);
    assert_int_equal(a.errors + b.errors + a.eofs + b.eofs, 0);
    /* Far above the default high watermark, so: paused once, resumed. */
    assert_int_equal(a.nflow, 2);
    assert_flow_paired(&a);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), NULL), 0);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), NULL), 0);
    close_loop_clean(loop);
}

static void
test_big_write_copy_tcp(void **state)
{
    (void)state;
    big_write_copy(KIND_TCP);
}

static void
test_big_write_copy_unix(void **state)
{
    (void)state;
    big_write_copy(KIND_UNIX);
}

typedef struct lent {
    char *buf;
    int releases;
    int status;
    size_t queue_at_release;
    tc_stream_t *s;
} lent_t;

static void
on_release(void *ctx, const void *buf, int status)
{
    lent_t *l = ctx;

    assert_ptr_equal(buf, l->buf);
    l->releases++;
    l->status = status;
    if (l->s != NULL) {
        l->queue_at_release = tc_stream_write_queue_size(l->s);
    }
}

static void
big_write_ref(kind_t kind)
{
    tc_loop_t *loop;
    end_t a, b;
    lent_t l = {0};

    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, kind, &a, &b, 11);
    l.buf = malloc(BIG);
    l.s = a.s;
    assert_non_null(l.buf);
    payload_fill(l.buf, BIG, 11, 0);
    ASSERT_RC(tc_stream_write_ref(a.s, l.buf, BIG, on_release, &l), 0);
    RUN_UNTIL(loop, b.received >= BIG || b.errors || b.eofs, 90000);
    RUN_UNTIL(loop, l.releases > 0, 10000);
    run_nowait(loop, 2);
    assert_int_equal(b.received, BIG);
    assert_false(b.chk.bad);
    assert_int_equal(b.chk.hash, payload_hash(11, BIG));
    assert_int_equal(l.releases, 1);
    ASSERT_RC(l.status, 0);
    assert_int_equal(l.queue_at_release, 0);
    free(l.buf);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), NULL), 0);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), NULL), 0);
    close_loop_clean(loop);
}

static void
test_big_write_ref_tcp(void **state)
{
    (void)state;
    big_write_ref(KIND_TCP);
}

static void
test_big_write_ref_unix(void **state)
{
    (void)state;
    big_write_ref(KIND_UNIX);
}

/* write, writev and write_ref interleaved, sizes from 1 byte to 300 KiB:
 * one ordered byte stream arrives. */
#define MIX_OPS 300

static void
mixed_writes(kind_t kind)
{
    tc_loop_t *loop;
    end_t a, b;
    static lent_t lent[MIX_OPS];
    uint64_t off = 0;
    uint64_t x = 0x2545f4914f6cdd1dull;
    char *scratch = malloc(300 * 1024);
    int nlent = 0;

    assert_non_null(scratch);
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, kind, &a, &b, 3);
    for (int op = 0; op < MIX_OPS; op++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t len = 1 + (size_t)(x % (op % 10 == 0 ? 300 * 1024 : 2000));

        switch (op % 3) {
        case 0:
            payload_fill(scratch, len, 3, off);
            ASSERT_RC(tc_stream_write(a.s, scratch, len), 0);
            break;
        case 1: {
            /* Three pieces sent as one unit, one of them empty. */
            size_t l1 = len / 3, l2 = len - l1;
            struct iovec iov[3] = {
                {.iov_base = scratch, .iov_len = l1},
                {.iov_base = scratch + l1, .iov_len = 0},
                {.iov_base = scratch + l1, .iov_len = l2},
            };
            payload_fill(scratch, len, 3, off);
            ASSERT_RC(tc_stream_writev(a.s, iov, 3), 0);
            break;
        }
        default: {
            lent_t *l = &lent[nlent++];

            memset(l, 0, sizeof(*l));
            l->buf = malloc(len);
            assert_non_null(l->buf);
            payload_fill(l->buf, len, 3, off);
            ASSERT_RC(tc_stream_write_ref(a.s, l->buf, len, on_release, l),
                      0);
            break;
        }
        }
        off += len;
        /* Now and then let the loop flush part of the queue. */
        if (op % 7 == 0) {
            run_nowait(loop, 1);
        }
    }
    RUN_UNTIL(loop, b.received >= off || b.errors || b.eofs, 60000);
    run_nowait(loop, 2);
    assert_int_equal(b.received, off);
    if (b.chk.bad) {
        fail_msg("byte %llu of %llu differs",
                 (unsigned long long)b.chk.first_bad,
                 (unsigned long long)off);
    }
    for (int i = 0; i < nlent; i++) {
        assert_int_equal(lent[i].releases, 1);
        ASSERT_RC(lent[i].status, 0);
        free(lent[i].buf);
    }
    assert_flow_paired(&a);
    free(scratch);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), NULL), 0);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), NULL), 0);
    close_loop_clean(loop);
}

static void
test_mixed_writes_tcp(void **state)
{
    (void)state;
    mixed_writes(KIND_TCP);
}

static void
test_mixed_writes_unix(void **state)
{
    (void)state;
    mixed_writes(KIND_UNIX);
}

/* Both directions at once, each side verifying the other's stream. */
static void
test_bidirectional(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    const size_t n = 8 * MiB;
    char *buf = malloc(n);

    (void)state;
    assert_non_null(buf);
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_TCP, &a, &b, 5);
    payload_fill(buf, n, 5, 0);
    ASSERT_RC(tc_stream_write(a.s, buf, n), 0);
    ASSERT_RC(tc_stream_write(b.s, buf, n), 0);
    free(buf);
    RUN_UNTIL(loop, (a.received >= n && b.received >= n) || a.errors ||
                        b.errors,
              60000);
    assert_int_equal(a.received, n);
    assert_int_equal(b.received, n);
    assert_false(a.chk.bad);
    assert_false(b.chk.bad);
    close_loop(loop);
}

/* A zero-length lent buffer is still released exactly once. */
static void
test_write_ref_empty_and_refused(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    lent_t l0 = {.buf = "x"}, l1 = {.buf = "abc"};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_UNIX, &a, &b, 1);
    int rc = tc_stream_write_ref(a.s, l0.buf, 0, on_release, &l0);
    assert_true(rc == 0 || rc == -EINVAL);
    ASSERT_RC(tc_stream_shutdown(a.s), 0);
    /* Refused after shutdown: released anyway, with an error. */
    ASSERT_RC(tc_stream_write_ref(a.s, l1.buf, 3, on_release, &l1), -EPIPE);
    RUN_UNTIL(loop, l0.releases > 0 && l1.releases > 0, 5000);
    run_nowait(loop, 2);
    assert_int_equal(l0.releases, 1);
    assert_int_equal(l1.releases, 1);
    assert_true(l1.status < 0);
    close_loop(loop);
}

/* ---- backpressure ----------------------------------------------------- */

static void
write_chunks(end_t *e, size_t total, uint64_t *off, uint64_t seed)
{
    char chunk[16384];

    for (size_t done = 0; done < total; done += sizeof(chunk)) {
        payload_fill(chunk, sizeof(chunk), seed, *off);
        ASSERT_RC(tc_stream_write(e->s, chunk, sizeof(chunk)), 0);
        *off += sizeof(chunk);
    }
}

static void
backpressure(kind_t kind)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;
    const size_t low = 16 * 1024, high = 64 * 1024;

    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, kind, &a, &b, 9);
    ASSERT_RC(tc_stream_read_stop(b.s), 0);
    ASSERT_RC(tc_stream_set_watermarks(a.s, low, high), 0);
    size_t lo, hi;
    tc_stream_get_watermarks(a.s, &lo, &hi);
    assert_int_equal(lo, low);
    assert_int_equal(hi, high);

    for (int cycle = 1; cycle <= 3; cycle++) {
        /* The peer does not read: the queue rises above high. */
        write_chunks(&a, 1 * MiB, &off, 9);
        run_for(loop, 10);
        assert_int_equal(a.nflow, 2 * cycle - 1);
        assert_true(a.flow[2 * cycle - 2]);
        assert_true(a.flow_queue[2 * cycle - 2] > high);
        /* Writing on while paused is allowed and never refused. */
        write_chunks(&a, 256 * 1024, &off, 9);
        assert_int_equal(a.nflow, 2 * cycle - 1);
        /* The peer drains: resumed once, at or under low. */
        ASSERT_RC(tc_stream_read_start(b.s), 0);
        RUN_UNTIL(loop, b.received >= off || b.errors, 30000);
        run_nowait(loop, 2);
        assert_int_equal(a.nflow, 2 * cycle);
        assert_false(a.flow[2 * cycle - 1]);
        assert_true(a.flow_queue[2 * cycle - 1] <= low);
        ASSERT_RC(tc_stream_read_stop(b.s), 0);
    }
    assert_flow_paired(&a);
    assert_false(b.chk.bad);
    assert_int_equal(b.received, off);
    close_loop(loop);
}

static void
test_backpressure_tcp(void **state)
{
    (void)state;
    backpressure(KIND_TCP);
}

static void
test_backpressure_unix(void **state)
{
    (void)state;
    backpressure(KIND_UNIX);
}

/* Changing the watermarks re-evaluates the queue against them. */
static void
test_watermarks_reevaluated(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_UNIX, &a, &b, 13);
    ASSERT_RC(tc_stream_read_stop(b.s), 0);
    ASSERT_RC(tc_stream_set_watermarks(a.s, 32 * MiB, 64 * MiB), 0);
    write_chunks(&a, 1 * MiB, &off, 13);
    run_for(loop, 10);
    assert_int_equal(a.nflow, 0);
    size_t queued = tc_stream_write_queue_size(a.s);
    assert_true(queued > 4096);

    /* Lowered under the queue: paused (now or on the next iteration). */
    ASSERT_RC(tc_stream_set_watermarks(a.s, 1024, 4096), 0);
    run_nowait(loop, 1);
    assert_int_equal(a.nflow, 1);
    assert_true(a.flow[0]);
    /* Raised above it: resumed now, or (as asyncio does) only once the
     * queue drains; either way the events stay paired. */
    ASSERT_RC(tc_stream_set_watermarks(a.s, 32 * MiB, 64 * MiB), 0);
    run_nowait(loop, 1);
    assert_true(a.nflow == 1 || a.nflow == 2);

    /* high = 0 pauses on any queued byte, and resumes only when empty. */
    ASSERT_RC(tc_stream_set_watermarks(a.s, 0, 0), 0);
    run_nowait(loop, 1);
    assert_true(a.nflow % 2 == 1);
    assert_true(a.flow[a.nflow - 1]);
    ASSERT_RC(tc_stream_read_start(b.s), 0);
    RUN_UNTIL(loop, b.received >= off || b.errors, 30000);
    run_nowait(loop, 2);
    assert_true(a.nflow == 2 || a.nflow == 4);
    assert_false(a.flow[a.nflow - 1]);
    assert_int_equal(a.flow_queue[a.nflow - 1], 0);
    assert_flow_paired(&a);
    close_loop(loop);
}

/* ---- reading: pause and resume ---------------------------------------- */

static void
read_stop_start(kind_t kind)
{
    tc_loop_t *loop;
    end_t a;
    int fds[2];

    ASSERT_RC(tc_loop_new(&loop), 0);
    raw_pair(kind, fds);
    open_end(loop, fds[0], &a, "a", 0, true);
    assert_true(tc_stream_is_reading(a.s));
    a.stop_after_read = true;
    assert_int_equal(write(fds[1], "first", 5), 5);
    RUN_UNTIL(loop, a.reads > 0, 5000);
    assert_false(tc_stream_is_reading(a.s));
    assert_int_equal(a.text_len, 5);
    /* Paused: data waits in the kernel. */
    assert_int_equal(write(fds[1], "second", 6), 6);
    run_for(loop, 30);
    assert_int_equal(a.reads, 1);
    /* Stopping twice is harmless; resuming delivers what waited. */
    ASSERT_RC(tc_stream_read_stop(a.s), 0);
    ASSERT_RC(tc_stream_read_start(a.s), 0);
    ASSERT_RC(tc_stream_read_start(a.s), 0);
    assert_true(tc_stream_is_reading(a.s));
    RUN_UNTIL(loop, a.text_len >= 11, 5000);
    assert_memory_equal(a.text, "firstsecond", 11);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), NULL), 0);
    close(fds[1]);
    close_loop_clean(loop);
}

static void
test_read_stop_start_tcp(void **state)
{
    (void)state;
    read_stop_start(KIND_TCP);
}

static void
test_read_stop_start_unix(void **state)
{
    (void)state;
    read_stop_start(KIND_UNIX);
}

/* ---- EOF and half-close ----------------------------------------------- */

/* The raw peer shuts down its write side: on_eof once, reading stops, and
 * we can still send to the peer. */
static void
peer_eof(kind_t kind)
{
    tc_loop_t *loop;
    end_t a;
    int fds[2];
    char buf[64];

    ASSERT_RC(tc_loop_new(&loop), 0);
    raw_pair(kind, fds);
    open_end(loop, fds[0], &a, "a", 0, true);
    assert_int_equal(write(fds[1], "bye", 3), 3);
    assert_int_equal(shutdown(fds[1], SHUT_WR), 0);
    RUN_UNTIL(loop, a.eofs > 0, 5000);
    run_for(loop, 20);
    assert_int_equal(a.eofs, 1);
    assert_int_equal(a.errors, 0);
    assert_int_equal(a.text_len, 3);
    assert_int_equal(a.reads_after_eof, 0);
    assert_false(tc_stream_is_reading(a.s));
    ASSERT_RC(tc_stream_read_start(a.s), -EPIPE);
    /* The other direction still works. */
    ASSERT_RC(tc_stream_write(a.s, "reply", 5), 0);
    ASSERT_RC(tc_stream_shutdown(a.s), 0);
    RUN_UNTIL(loop, tc_stream_write_queue_size(a.s) == 0, 5000);
    run_nowait(loop, 2);
    set_nonblock(fds[1], false);
    size_t got = 0;
    for (int i = 0; i < 100; i++) {
        ssize_t n = read(fds[1], buf + got, sizeof(buf) - got);
        if (n <= 0) {
            assert_int_equal(n, 0); /* our shutdown reached the peer */
            break;
        }
        got += (size_t)n;
    }
    assert_int_equal(got, 5);
    assert_memory_equal(buf, "reply", 5);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), NULL), 0);
    close(fds[1]);
    close_loop_clean(loop);
}

static void
test_peer_eof_tcp(void **state)
{
    (void)state;
    peer_eof(KIND_TCP);
}

static void
test_peer_eof_unix(void **state)
{
    (void)state;
    peer_eof(KIND_UNIX);
}

/* Without on_eof the stream closes itself after flushing what was queued
 * (issue 11.9: it used to shut down its write side and stay open, one
 * descriptor per peer), also when its owner had shut down first. */
static void
eof_without_callback(bool shut_first)
{
    tc_loop_t *loop;
    end_t a;
    int fds[2];
    uint64_t off = 0;
    payload_check_t chk;
    bool eof = false;
    tc_stream_callbacks_t cbs = {.on_read = e_read, .on_error = e_error};

    ASSERT_RC(tc_loop_new(&loop), 0);
    tcp_pair(fds);
    open_end(loop, fds[0], &a, "a", 0, false);
    ASSERT_RC(tc_stream_set_callbacks(a.s, &cbs), 0);
    ASSERT_RC(tc_stream_read_start(a.s), 0);
    set_bufsizes(fds[0], SMALL_SND, 0);
    set_bufsizes(fds[1], 0, SMALL_RCV);
    write_chunks(&a, 2 * MiB, &off, 21);
    assert_true(tc_stream_write_queue_size(a.s) > 0);
    if (shut_first) {
        ASSERT_RC(tc_stream_shutdown(a.s), 0);
    }
    assert_int_equal(shutdown(fds[1], SHUT_WR), 0);
    set_nonblock(fds[1], true);
    payload_check_init(&chk, 21);
    watchdog_t wd;
    watchdog_start(loop, &wd, 30000);
    while (!eof && !watchdog_expired(&wd)) {
        run_nowait(loop, 1);
        if (drain_fd(fds[1], &chk, &eof) == 0) {
            usleep(200);
        }
    }
    watchdog_stop(&wd);
    assert_true(eof);
    assert_int_equal(chk.offset, off);
    assert_false(chk.bad);
    assert_int_equal(a.errors, 0);
    /* Closed and freed: nothing is left open, its descriptor included. */
    run_nowait(loop, 2);
    assert_int_equal(tc_loop_open_handles(loop), 0);
    assert_int_equal(walk_count(loop), 0);
    assert_false(fd_is_open(fds[0]));
    close(fds[1]);
    close_loop_clean(loop);
}

static void
test_eof_without_callback_flushes_then_closes(void **state)
{
    (void)state;
    eof_without_callback(false);
}

static void
test_eof_without_callback_after_shutdown_closes(void **state)
{
    (void)state;
    eof_without_callback(true);
}

/* Half-close in both directions between two streams. */
static void
half_close_both_ways(kind_t kind)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;
    struct iovec iov = {.iov_base = "z", .iov_len = 1};
    lent_t l = {.buf = "ref"};

    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, kind, &a, &b, 17);
    write_chunks(&a, 1 * MiB, &off, 17);
    ASSERT_RC(tc_stream_shutdown(a.s), 0);
    /* Nothing is accepted after shutdown, and nothing vanishes. */
    ASSERT_RC(tc_stream_write(a.s, "x", 1), -EPIPE);
    ASSERT_RC(tc_stream_writev(a.s, &iov, 1), -EPIPE);
    ASSERT_RC(tc_stream_write_ref(a.s, l.buf, 3, on_release, &l), -EPIPE);
    RUN_UNTIL(loop, b.eofs > 0 || b.errors > 0, 30000);
    assert_int_equal(b.received, off);
    assert_false(b.chk.bad);
    assert_int_equal(b.eofs, 1);
    assert_int_equal(l.releases, 1);

    /* b can still talk to a, which still reads. */
    ASSERT_RC(tc_stream_write(b.s, "pong", 4), 0);
    RUN_UNTIL(loop, a.text_len >= 4 || a.errors, 5000);
    assert_memory_equal(a.text, "pong", 4);
    assert_int_equal(a.eofs, 0);
    ASSERT_RC(tc_stream_shutdown(b.s), 0);
    RUN_UNTIL(loop, a.eofs > 0 || a.errors > 0, 5000);
    run_for(loop, 20);
    assert_int_equal(a.eofs, 1);
    assert_int_equal(b.eofs, 1);
    assert_int_equal(a.errors + b.errors, 0);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), e_closed), 0);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), e_closed), 0);
    RUN_UNTIL(loop, a.closed && b.closed, 5000);
    assert_int_equal(a.closed, 1);
    assert_int_equal(b.closed, 1);
    close_loop_clean(loop);
}

static void
test_half_close_tcp(void **state)
{
    (void)state;
    half_close_both_ways(KIND_TCP);
}

static void
test_half_close_unix(void **state)
{
    (void)state;
    half_close_both_ways(KIND_UNIX);
}

/* ---- failures --------------------------------------------------------- */

/* The peer resets while we have a big queue: on_error exactly once with
 * -ECONNRESET or -EPIPE; then writes fail with -EPIPE and nothing more is
 * delivered. */
static void
reset_mid_write(bool reading)
{
    tc_loop_t *loop;
    end_t a;
    int fds[2];
    uint64_t off = 0;
    lent_t l = {0};
    char peek[4096];

    ASSERT_RC(tc_loop_new(&loop), 0);
    tcp_pair(fds);
    open_end(loop, fds[0], &a, "a", 0, reading);
    set_bufsizes(fds[0], SMALL_SND, SMALL_RCV);
    set_bufsizes(fds[1], SMALL_SND, SMALL_RCV);
    write_chunks(&a, 8 * MiB, &off, 23);
    l.buf = malloc(MiB);
    assert_non_null(l.buf);
    ASSERT_RC(tc_stream_write_ref(a.s, l.buf, MiB, on_release, &l), 0);
    run_for(loop, 10);
    assert_true(tc_stream_write_queue_size(a.s) > MiB);
    /* Unread data and linger 0: the peer's close is a reset. */
    assert_true(read(fds[1], peek, sizeof(peek)) > 0);
    close_reset(fds[1]);
    RUN_UNTIL(loop, a.errors > 0, 10000);
    run_for(loop, 30);
    assert_int_equal(a.errors, 1);
    if (a.last_error != -ECONNRESET && a.last_error != -EPIPE) {
        fail_msg("on_error got %s (%d)", tc_err_name(a.last_error),
                 a.last_error);
    }
    assert_int_equal(a.eofs, 0);
    assert_int_equal(a.reads_after_error, 0);
    ASSERT_RC(tc_stream_write(a.s, "more", 4), -EPIPE);
    ASSERT_RC(tc_stream_read_start(a.s), -EPIPE);
    /* The lent buffer was discarded with an error, once. */
    RUN_UNTIL(loop, l.releases > 0, 5000);
    ASSERT_ERR(l.status);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), e_closed), 0);
    RUN_UNTIL(loop, a.closed > 0, 5000);
    assert_int_equal(l.releases, 1);
    assert_int_equal(a.errors, 1);
    free(l.buf);
    close_loop_clean(loop);
}

static void
test_reset_mid_write_reading(void **state)
{
    (void)state;
    reset_mid_write(true);
}

static void
test_reset_mid_write_not_reading(void **state)
{
    (void)state;
    reset_mid_write(false);
}

/* ---- closing ---------------------------------------------------------- */

/* tc_stream_close flushes the queue, then closes: the peer gets every
 * byte, then EOF. */
static void
graceful_close(kind_t kind)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;

    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, kind, &a, &b, 29);
    write_chunks(&a, 4 * MiB, &off, 29);
    assert_true(tc_stream_write_queue_size(a.s) > 0);
    ASSERT_RC(tc_stream_close(a.s, e_closed), 0);
    ASSERT_RC(tc_stream_write(a.s, "x", 1), -EPIPE);
    ASSERT_RC(tc_stream_close(a.s, e_closed), -EALREADY);
    RUN_UNTIL(loop, (a.closed && b.eofs) || b.errors, 30000);
    run_for(loop, 10);
    assert_int_equal(b.received, off);
    assert_false(b.chk.bad);
    assert_int_equal(b.eofs, 1);
    assert_int_equal(b.errors, 0);
    assert_int_equal(a.closed, 1);
    assert_int_equal(a.errors, 0);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), NULL), 0);
    close_loop_clean(loop);
}

static void
test_graceful_close_tcp(void **state)
{
    (void)state;
    graceful_close(KIND_TCP);
}

static void
test_graceful_close_unix(void **state)
{
    (void)state;
    graceful_close(KIND_UNIX);
}

/* tc_close discards the queue: lent buffers come back with -ECANCELED
 * and the close callback runs once. */
static void
test_close_discards(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;
    lent_t l = {0};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_TCP, &a, &b, 31);
    ASSERT_RC(tc_stream_read_stop(b.s), 0);
    write_chunks(&a, 2 * MiB, &off, 31);
    l.buf = malloc(MiB);
    assert_non_null(l.buf);
    ASSERT_RC(tc_stream_write_ref(a.s, l.buf, MiB, on_release, &l), 0);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), e_closed), 0);
    ASSERT_RC(tc_stream_write(a.s, "x", 1), -EPIPE);
    RUN_UNTIL(loop, a.closed > 0, 5000);
    assert_int_equal(l.releases, 1);
    ASSERT_RC(l.status, -ECANCELED);
    assert_int_equal(a.closed, 1);
    /* No callback of a closed stream runs. */
    assert_int_equal(a.nflow, 1);
    ASSERT_RC(tc_stream_read_start(b.s), 0);
    RUN_UNTIL(loop, b.eofs > 0 || b.errors > 0, 10000);
    assert_true(b.received < off + MiB);
    assert_false(b.chk.bad);
    free(l.buf);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), NULL), 0);
    close_loop_clean(loop);
}

/* tc_stream_abort discards and resets: the peer sees -ECONNRESET. */
static void
test_abort_resets(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_TCP, &a, &b, 37);
    ASSERT_RC(tc_stream_read_stop(b.s), 0);
    write_chunks(&a, 2 * MiB, &off, 37);
    assert_true(tc_stream_write_queue_size(a.s) > 0);
    ASSERT_RC(tc_stream_abort(a.s, e_closed), 0);
    ASSERT_RC(tc_stream_write(a.s, "x", 1), -EPIPE);
    ASSERT_RC(tc_stream_read_start(b.s), 0);
    RUN_UNTIL(loop, (a.closed && (b.errors || b.eofs)), 10000);
    run_for(loop, 20);
    assert_int_equal(a.closed, 1);
    assert_int_equal(b.eofs, 0);
    assert_int_equal(b.errors, 1);
    ASSERT_RC(b.last_error, -ECONNRESET);
    assert_true(b.received < off);
    assert_false(b.chk.bad);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), NULL), 0);
    close_loop_clean(loop);
}

/* Closing from inside on_read: nothing more is delivered. */
static void
test_close_inside_read(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_UNIX, &a, &b, 41);
    b.close_in_read = true;
    write_chunks(&a, 1 * MiB, &off, 41);
    RUN_UNTIL(loop, b.reads > 0, 5000);
    run_for(loop, 30);
    assert_int_equal(b.reads, 1);
    assert_int_equal(b.eofs + b.errors, 0);
    assert_int_equal(b.closed, 1);
    assert_int_equal(tc_loop_open_handles(loop), 1);
    close_loop(loop);
}

/* Callbacks may be swapped while running; reads go to the new set. */
static void
test_set_callbacks_while_reading(void **state)
{
    tc_loop_t *loop;
    end_t a;
    int fds[2];
    tc_stream_callbacks_t only_read = {.on_read = e_read};

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    unix_pair(fds);
    open_end(loop, fds[0], &a, "a", 0, true);
    ASSERT_RC(tc_stream_set_callbacks(a.s, &only_read), 0);
    assert_int_equal(write(fds[1], "abc", 3), 3);
    RUN_UNTIL(loop, a.text_len == 3, 5000);
    /* Without on_eof or on_error, the peer going away harms nothing. */
    close(fds[1]);
    run_for(loop, 30);
    close_loop(loop);
}

/* A graceful close still flushing counts as open (tc_loop_close says
 * -EBUSY).  Whatever closes it next, tc_close from a tc_loop_walk sweep
 * included, the callback given to tc_stream_close still runs, once: it is
 * where the caller releases what hangs on the stream. */
static void
test_graceful_close_then_tc_close(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    uint64_t off = 0;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_UNIX, &a, &b, 43);
    ASSERT_RC(tc_stream_read_stop(b.s), 0);
    write_chunks(&a, 1 * MiB, &off, 43);
    ASSERT_RC(tc_stream_close(a.s, e_closed), 0);
    run_nowait(loop, 2);
    assert_int_equal(a.closed, 0);
    int rc = tc_close(tc_stream_handle(a.s), NULL);
    assert_true(rc == 0 || rc == -EALREADY);
    ASSERT_RC(tc_close(tc_stream_handle(b.s), NULL), 0);
    run_for(loop, 50);
    assert_int_equal(a.closed, 1);
    close_loop(loop);
}

/* ---- sendfile: file ranges in the write queue --------------------------- */

/* A temporary file holding bytes [0, len) of payload seed (unlinked: it
 * goes away with the descriptor). */
static int
payload_file(uint64_t len, uint64_t seed)
{
    char path[] = "/tmp/tc-sendfile-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    static char buf[1024 * 1024];
    for (uint64_t off = 0; off < len; off += sizeof(buf)) {
        size_t n = len - off < sizeof(buf) ? (size_t)(len - off)
                                            : sizeof(buf);
        payload_fill(buf, n, seed, off);
        assert_int_equal(pwrite(fd, buf, n, (off_t)off), (ssize_t)n);
    }
    return fd;
}

typedef struct sf_done {
    int calls;
    int status[4];
    uint64_t sent[4];
    void *ctx[4];
    bool inside;            /* set while the test is inside a call */
    int calls_inside;
} sf_done_t;

static sf_done_t sfd;

static void
sf_cb(tc_stream_t *s, void *ctx, int status, uint64_t sent)
{
    (void)s;
    if (sfd.inside) {
        sfd.calls_inside++;
    }
    if (sfd.calls < 4) {
        sfd.status[sfd.calls] = status;
        sfd.sent[sfd.calls] = sent;
        sfd.ctx[sfd.calls] = ctx;
    }
    sfd.calls++;
}

static void
write_payload(tc_stream_t *s, uint64_t off, size_t len, uint64_t seed)
{
    char *buf = malloc(len);
    assert_non_null(buf);
    payload_fill(buf, len, seed, off);
    ASSERT_RC(tc_stream_write(s, buf, len), 0);
    free(buf);
}

/* 256 MiB: writes, a file range, writes queued behind it, the rest of the
 * file; the reader sees one checksummed stream, in order. */
static void
sendfile_in_order(kind_t kind)
{
    tc_loop_t *loop;
    end_t a, b;
    int fds[2];
    const uint64_t total = 256ull * MiB;
    const uint64_t mid = 100ull * MiB;
    int file = payload_file(total, 51);

    ASSERT_RC(tc_loop_new(&loop), 0);
    raw_pair(kind, fds);
    open_end(loop, fds[0], &a, "a", 51, false);
    open_end(loop, fds[1], &b, "b", 51, true);
    memset(&sfd, 0, sizeof(sfd));
    sfd.inside = true;
    write_payload(a.s, 0, 1000, 51);
    ASSERT_RC(tc_stream_sendfile(a.s, file, 1000, mid - 1000, sf_cb, &a),
              0);
    write_payload(a.s, mid, 3000, 51);
    ASSERT_RC(tc_stream_sendfile(a.s, file, mid + 3000, 0, sf_cb, &b), 0);
    ASSERT_RC(tc_stream_close(a.s, e_closed), 0);
    sfd.inside = false;
    assert_int_equal(sfd.calls_inside, 0);
    RUN_UNTIL(loop, b.eofs == 1, 60000);
    assert_false(b.chk.bad);
    assert_int_equal(b.received, total);
    assert_int_equal(sfd.calls, 2);
    ASSERT_RC(sfd.status[0], 0);
    ASSERT_RC(sfd.status[1], 0);
    assert_int_equal(sfd.sent[0], mid - 1000);
    assert_int_equal(sfd.sent[1], total - mid - 3000);
    assert_ptr_equal(sfd.ctx[0], &a);
    assert_ptr_equal(sfd.ctx[1], &b);
    assert_int_equal(a.errors + b.errors, 0);
    assert_int_equal(a.closed, 1);
    /* The file's own position was never used. */
    assert_int_equal(lseek(file, 0, SEEK_CUR), 0);
    close(file);
    close_loop(loop);
}

static void
test_sendfile_in_order_tcp(void **state)
{
    (void)state;
    sendfile_in_order(KIND_TCP);
}

static void
test_sendfile_in_order_unix(void **state)
{
    (void)state;
    sendfile_in_order(KIND_UNIX);
}

/* Refused ranges: bad arguments, not a file, after shutdown; a count past
 * the end sends what there is; a range of nothing completes. */
static void
test_sendfile_edges(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    int fds[2], p[2];
    int file = payload_file(5000, 52);

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    raw_pair(KIND_UNIX, fds);
    open_end(loop, fds[0], &a, "a", 52, false);
    open_end(loop, fds[1], &b, "b", 52, true);
    memset(&sfd, 0, sizeof(sfd));
    assert_int_equal(pipe(p), 0);
    ASSERT_RC(tc_stream_sendfile(NULL, file, 0, 0, sf_cb, NULL), -EINVAL);
    ASSERT_RC(tc_stream_sendfile(a.s, -1, 0, 0, sf_cb, NULL), -EINVAL);
    ASSERT_RC(tc_stream_sendfile(a.s, p[0], 0, 0, sf_cb, NULL), -EINVAL);
    ASSERT_RC(tc_stream_sendfile(a.s, fds[1], 0, 0, sf_cb, NULL), -EINVAL);
    ASSERT_RC(tc_stream_sendfile(a.s, 1000, 0, 0, sf_cb, NULL), -EBADF);
    ASSERT_RC(tc_stream_sendfile(a.s, file, 0, 3000, sf_cb, NULL), 0);
    ASSERT_RC(tc_stream_sendfile(a.s, file, 3000, 99999, sf_cb, NULL), 0);
    ASSERT_RC(tc_stream_sendfile(a.s, file, 7000, 0, sf_cb, NULL), 0);
    ASSERT_RC(tc_stream_shutdown(a.s), 0);
    ASSERT_RC(tc_stream_sendfile(a.s, file, 0, 0, sf_cb, NULL), -EPIPE);
    RUN_UNTIL(loop, b.eofs == 1 && sfd.calls == 3, 10000);
    assert_false(b.chk.bad);
    assert_int_equal(b.received, 5000);
    assert_int_equal(sfd.sent[0], 3000);
    assert_int_equal(sfd.sent[1], 2000);   /* the file ended first */
    assert_int_equal(sfd.sent[2], 0);
    ASSERT_RC(sfd.status[2], 0);
    close(p[0]);
    close(p[1]);
    close(file);
    close_loop(loop);
}

/* Closing the stream cancels a range still queued: -ECANCELED with what
 * went out before. */
static void
test_sendfile_cancelled_by_close(void **state)
{
    tc_loop_t *loop;
    end_t a, b;
    int file = payload_file(8 * MiB, 53);

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    stream_pair(loop, KIND_UNIX, &a, &b, 53);
    ASSERT_RC(tc_stream_read_stop(b.s), 0);   /* nobody reads */
    memset(&sfd, 0, sizeof(sfd));
    ASSERT_RC(tc_stream_sendfile(a.s, file, 0, 0, sf_cb, NULL), 0);
    run_for(loop, 30);
    assert_int_equal(sfd.calls, 0);
    ASSERT_RC(tc_close(tc_stream_handle(a.s), NULL), 0);
    run_nowait(loop, 3);
    assert_int_equal(sfd.calls, 1);
    ASSERT_RC(sfd.status[0], -ECANCELED);
    assert_true(sfd.sent[0] < 8 * MiB);
    close(file);
    close_loop(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_open_failure_closes_fd),
        cmocka_unit_test(test_open_sets_flags_and_options),
        cmocka_unit_test(test_big_write_copy_tcp),
        cmocka_unit_test(test_big_write_copy_unix),
        cmocka_unit_test(test_big_write_ref_tcp),
        cmocka_unit_test(test_big_write_ref_unix),
        cmocka_unit_test(test_mixed_writes_tcp),
        cmocka_unit_test(test_mixed_writes_unix),
        cmocka_unit_test(test_bidirectional),
        cmocka_unit_test(test_write_ref_empty_and_refused),
        cmocka_unit_test(test_backpressure_tcp),
        cmocka_unit_test(test_backpressure_unix),
        cmocka_unit_test(test_watermarks_reevaluated),
        cmocka_unit_test(test_read_stop_start_tcp),
        cmocka_unit_test(test_read_stop_start_unix),
        cmocka_unit_test(test_peer_eof_tcp),
        cmocka_unit_test(test_peer_eof_unix),
        cmocka_unit_test(test_eof_without_callback_flushes_then_closes),
        cmocka_unit_test(test_eof_without_callback_after_shutdown_closes),
        cmocka_unit_test(test_half_close_tcp),
        cmocka_unit_test(test_half_close_unix),
        cmocka_unit_test(test_reset_mid_write_reading),
        cmocka_unit_test(test_reset_mid_write_not_reading),
        cmocka_unit_test(test_graceful_close_tcp),
        cmocka_unit_test(test_graceful_close_unix),
        cmocka_unit_test(test_close_discards),
        cmocka_unit_test(test_abort_resets),
        cmocka_unit_test(test_close_inside_read),
        cmocka_unit_test(test_graceful_close_then_tc_close),
        cmocka_unit_test(test_set_callbacks_while_reading),
        cmocka_unit_test(test_sendfile_in_order_tcp),
        cmocka_unit_test(test_sendfile_in_order_unix),
        cmocka_unit_test(test_sendfile_edges),
        cmocka_unit_test(test_sendfile_cancelled_by_close),
    };

    return cmocka_run_group_tests_name("stream", tests, NULL, NULL);
}
