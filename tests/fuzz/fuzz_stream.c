/* libFuzzer target: the stream transport (src/stream.c) against a peer that
 * the fuzzer drives.
 *
 * One connection per input, TCP loopback or an AF_UNIX socketpair, with
 * small socket buffers so that writes queue.  twincore owns one end (a
 * tc_stream_t); the other is a raw non-blocking socket.  Each input byte
 * picks an operation, the next bytes its arguments: the peer writes, reads
 * partially, half-closes, closes or resets; twincore writes (copy, writev,
 * write_ref), pauses and resumes reading, moves its watermarks, shuts down,
 * closes gracefully or aborts; the loop runs a few NOWAIT iterations.
 *
 * Checked on every input:
 *   - bytes arrive in order, each exactly once, on both sides (payload
 *     bytes depend on their offset), and with no failure none is lost;
 *   - callbacks in a legal order: on_read only while reading and never
 *     after EOF, an error or close; on_eof and on_error at most once;
 *     on_flow alternates paused/resumed and matches the watermarks;
 *   - write results are 0, -EPIPE (only when shut, closed or failing) or
 *     -ENOMEM; every lent buffer is released exactly once;
 *   - the close callback runs exactly once and tc_loop_close() returns 0;
 *     ASan/LSan see no overflow, use after free or leak. */
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"
#include "twincore.h"

#define SEED_IN 0x1111u     /* peer -> twincore */
#define SEED_OUT 0x2222u    /* twincore -> peer */
#define MAX_BYTES (4u << 20)    /* per direction per input */
#define MAX_REFS 512
#define DRAIN_MS 10000     /* wall-clock bound of each final drain */
#define STALL_MS 300        /* ... when TCP may stall (see may_stall) */

typedef struct ref {
    int released;
    int status;
    size_t len;
} ref_t;

typedef struct fz_stream {
    tc_loop_t *loop;
    tc_stream_t *s;
    int peer;
    bool tcp;
    bool have_eof_cb;

    /* peer -> twincore */
    uint64_t in_sent, in_recv;
    bool peer_shut_wr, peer_closed;
    /* twincore -> peer */
    uint64_t out_accepted, out_peer_recv;
    bool peer_saw_eof, peer_saw_error;

    bool reading;           /* as the model believes */
    bool eof_seen, error_seen, error_expected;
    int error;
    bool flow_paused;
    int flow_calls;
    bool shut_called, close_started, closed, aborted;
    bool stalled;           /* a drain gave up on a TCP stall */
    int close_cbs;

    ref_t refs[MAX_REFS];
    int nrefs;
    uint8_t buf[1 << 16];
} fz_stream_t;

static fz_stream_t *cur;    /* one input at a time */
static bool tracing;        /* FUZZ_TRACE=1: print each step (repro) */

static void
trace(const fz_stream_t *f, const char *what, long arg)
{
    if (tracing) {
        fprintf(stderr,
                "%-12s %6ld | in %llu/%llu out %llu/%llu queue %zu%s%s%s%s"
                "%s%s%s\n",
                what, arg, (unsigned long long)f->in_recv,
                (unsigned long long)f->in_sent,
                (unsigned long long)f->out_peer_recv,
                (unsigned long long)f->out_accepted,
                f->closed ? 0 : tc_stream_write_queue_size(f->s),
                f->reading ? " reading" : "", f->eof_seen ? " eof" : "",
                f->error_seen ? " error" : "",
                f->shut_called ? " shut" : "",
                f->close_started ? " closing" : "",
                f->peer_shut_wr ? " peer-shut" : "",
                f->peer_closed ? " peer-closed" : "");
    }
}

/* ---- callbacks ---------------------------------------------------------- */

static void
on_read(tc_stream_t *s, const char *buf, size_t len)
{
    fz_stream_t *f = tc_handle_data(tc_stream_handle(s));
    CHECK(f == cur && s == f->s);
    CHECK(len > 0);
    CHECK(f->reading);
    CHECK(!f->eof_seen && !f->error_seen && !f->close_started);
    CHECK(f->in_recv + len <= f->in_sent);
    CHECK(fz_verify((const uint8_t *)buf, len, SEED_IN, f->in_recv));
    f->in_recv += len;
}

static void
on_eof(tc_stream_t *s)
{
    fz_stream_t *f = tc_handle_data(tc_stream_handle(s));
    CHECK(!f->eof_seen && !f->error_seen && !f->close_started);
    CHECK(f->peer_shut_wr || f->peer_closed);
    CHECK(!tc_stream_is_reading(s));
    f->eof_seen = true;
    f->reading = false;
}

static void
on_error(tc_stream_t *s, int status)
{
    fz_stream_t *f = tc_handle_data(tc_stream_handle(s));
    CHECK(status < 0);
    CHECK(!f->error_seen && !f->close_started);
    f->error_seen = true;
    f->error = status;
    f->flow_paused = false;     /* a failed stream forgets its flow state */
}

static void
on_flow(tc_stream_t *s, bool paused)
{
    fz_stream_t *f = tc_handle_data(tc_stream_handle(s));
    size_t low, high;
    CHECK(!f->error_seen && !f->closed);
    CHECK(paused != f->flow_paused);
    tc_stream_get_watermarks(s, &low, &high);
    if (paused) {
        CHECK(tc_stream_write_queue_size(s) > high);
    } else {
        CHECK(tc_stream_write_queue_size(s) <= low);
    }
    f->flow_paused = paused;
    f->flow_calls++;
}

static void
on_close(tc_handle_t *h)
{
    fz_stream_t *f = tc_handle_data(h);
    CHECK(f == cur);
    f->close_cbs++;
    f->closed = true;
}

static void
on_release(void *ctx, const void *buf, int status)
{
    ref_t *r = ctx;
    CHECK(r->released == 0);
    CHECK(status <= 0);
    r->released++;
    r->status = status;
    free((void *)buf);
}

/* ---- the peer ----------------------------------------------------------- */

static void
peer_write(fz_stream_t *f, size_t len)
{
    if (f->peer_closed || f->peer_shut_wr || f->in_sent >= MAX_BYTES) {
        return;
    }
    fz_fill(f->buf, len, SEED_IN, f->in_sent);
    ssize_t n = send(f->peer, f->buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
        f->in_sent += (uint64_t)n;
    }
}

/* Read up to len bytes (0: all there is); returns bytes read. */
static size_t
peer_read(fz_stream_t *f, size_t len)
{
    if (f->peer_closed || f->peer_saw_eof || f->peer_saw_error) {
        return 0;
    }
    size_t total = 0;
    bool all = len == 0;
    while (all || total < len) {
        size_t want = sizeof(f->buf);
        if (!all && len - total < want) {
            want = len - total;
        }
        ssize_t n = recv(f->peer, f->buf, want, MSG_DONTWAIT);
        if (n > 0) {
            CHECK(f->out_peer_recv + (uint64_t)n <= f->out_accepted);
            CHECK(fz_verify(f->buf, (size_t)n, SEED_OUT, f->out_peer_recv));
            f->out_peer_recv += (uint64_t)n;
            total += (size_t)n;
            continue;
        }
        if (n == 0) {
            /* EOF: twincore shut down, closed or hit EOF without on_eof. */
            CHECK(f->shut_called || f->close_started || f->error_seen ||
                  f->error_expected || !f->have_eof_cb);
            f->peer_saw_eof = true;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK &&
                   errno != EINTR) {
            f->peer_saw_error = true;
        }
        break;
    }
    return total;
}

static void
peer_close(fz_stream_t *f, bool reset)
{
    if (f->peer_closed) {
        return;
    }
    if (reset && f->tcp) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(f->peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close(f->peer);
    f->peer = -1;
    f->peer_closed = true;
}

/* ---- twincore's side ---------------------------------------------------- */

/* TCP resets a connection closed with input unread, or that receives
 * data once closed; the RST discards what the kernel had not delivered. */
static bool
lossy_close(const fz_stream_t *f)
{
    return f->tcp && f->close_started && f->in_recv < f->in_sent;
}

static bool
peer_done_writing(const fz_stream_t *f)
{
    return f->peer_shut_wr || f->peer_closed;
}

static bool
writable_in_model(const fz_stream_t *f)
{
    return !f->shut_called && !f->close_started && !f->error_seen;
}

/* A write refused with -EPIPE: legal when the model knows why; otherwise
 * the stream must be failing and report it through on_error. */
static void
account_write(fz_stream_t *f, int rc, size_t len)
{
    CHECK(rc == 0 || rc == -EPIPE || rc == -ENOMEM);
    if (rc == 0) {
        CHECK(writable_in_model(f) || len == 0);
        f->out_accepted += len;
        return;
    }
    if (rc == -EPIPE && writable_in_model(f)) {
        bool auto_shut = !f->have_eof_cb && peer_done_writing(f);
        if (!auto_shut) {
            f->error_expected = true;
        }
    }
}

static void
tc_write_copy(fz_stream_t *f, size_t len)
{
    if (f->out_accepted >= MAX_BYTES || f->closed) {
        return;
    }
    fz_fill(f->buf, len, SEED_OUT, f->out_accepted);
    account_write(f, tc_stream_write(f->s, f->buf, len), len);
}

static void
tc_write_vec(fz_stream_t *f, fz_in_t *in)
{
    struct iovec iov[4];
    int cnt = fz_u8(in) % 5;
    size_t total = 0;
    for (int i = 0; i < cnt; i++) {
        size_t len = fz_u16(in) % (sizeof(f->buf) / 4);
        iov[i].iov_base = len ? f->buf + total : NULL;
        iov[i].iov_len = len;
        total += len;
    }
    if (f->out_accepted >= MAX_BYTES || f->closed) {
        return;
    }
    fz_fill(f->buf, total, SEED_OUT, f->out_accepted);
    account_write(f, tc_stream_writev(f->s, iov, cnt), total);
}

static void
tc_write_lent(fz_stream_t *f, size_t len)
{
    if (f->out_accepted >= MAX_BYTES || f->closed || f->nrefs >= MAX_REFS) {
        return;
    }
    uint8_t *mem = malloc(len ? len : 1);
    CHECK(mem != NULL);
    fz_fill(mem, len, SEED_OUT, f->out_accepted);
    ref_t *r = &f->refs[f->nrefs++];
    r->len = len;
    int rc = tc_stream_write_ref(f->s, mem, len, on_release, r);
    CHECK(r->released <= 1);
    if (rc != 0) {
        CHECK(r->released == 1);   /* a refused buffer comes back at once */
    }
    account_write(f, rc, len);
}

static void
run_nowait(fz_stream_t *f, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK(tc_loop_run(f->loop, TC_RUN_NOWAIT) >= 0);
    }
}

static void
op(fz_stream_t *f, uint8_t code, fz_in_t *in)
{
    int rc;
    trace(f, "op", code % 18);
    switch (code % 18) {
    case 0:
    case 1:
        peer_write(f, fz_u16(in) % sizeof(f->buf));
        break;
    case 2:
        peer_read(f, fz_u16(in) % sizeof(f->buf) + 1);
        break;
    case 3:
        tc_write_copy(f, fz_u16(in) % sizeof(f->buf));
        break;
    case 4:
        tc_write_vec(f, in);
        break;
    case 5:
        tc_write_lent(f, fz_u16(in) % sizeof(f->buf));
        break;
    case 6:
        if (!f->closed && !f->close_started) {
            CHECK(tc_stream_read_stop(f->s) == 0);
            CHECK(!tc_stream_is_reading(f->s));
            f->reading = false;
        }
        break;
    case 7:
        if (!f->closed && !f->close_started) {
            rc = tc_stream_read_start(f->s);
            if (rc == 0) {
                CHECK(!f->eof_seen && !f->error_seen);
                f->reading = true;
            } else {
                /* EOF or a failure, reported or about to be. */
                CHECK(rc == -EPIPE);
                if (!f->eof_seen && !f->error_seen &&
                    (f->have_eof_cb || !peer_done_writing(f))) {
                    f->error_expected = true;
                }
            }
        }
        break;
    case 8: {
        size_t low = (size_t)fz_u16(in) * (fz_u8(in) % 4 + 1);
        size_t high = (size_t)fz_u16(in) * (fz_u8(in) % 4 + 1);
        if (!f->closed) {
            rc = tc_stream_set_watermarks(f->s, low, high);
            CHECK(rc == (low > high ? -EINVAL : 0));
        }
        break;
    }
    case 9:
        if (!f->closed && !f->close_started) {
            /* 0, -ENOTCONN once failed, or what shutdown(2) said (the
             * stream then fails). */
            rc = tc_stream_shutdown(f->s);
            CHECK(rc <= 0 && rc != -EINVAL);
            if (rc != 0 && !f->error_seen) {
                f->error_expected = true;
            }
            f->shut_called = true;
        }
        break;
    case 10:
        if (!f->peer_closed && !f->peer_shut_wr) {
            shutdown(f->peer, SHUT_WR);
            f->peer_shut_wr = true;
        }
        break;
    case 11:
        peer_close(f, false);
        break;
    case 12:
        peer_close(f, true);
        break;
    case 13:
    case 14:
        run_nowait(f, fz_u8(in) % 8 + 1);
        break;
    case 15:
        if (!f->closed && !f->close_started) {
            rc = tc_stream_close(f->s, on_close);
            CHECK(rc == 0);
            f->close_started = true;
            f->reading = false;
        }
        break;
    case 16:
        if (fz_u8(in) % 4 == 0 && !f->closed && !f->close_started) {
            rc = tc_stream_abort(f->s, on_close);
            CHECK(rc == 0);
            f->close_started = f->aborted = true;
            f->reading = false;
        }
        break;
    case 17:
        peer_read(f, 0);
        break;
    }
}

/* ---- setup and the end of an input -------------------------------------- */

static int listener = -1;   /* TCP, kept across inputs */
static struct sockaddr_in listen_addr;

static void
tcp_pair(int fds[2])
{
    if (listener < 0) {
        listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(listener >= 0);
        listen_addr.sin_family = AF_INET;
        listen_addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        CHECK(bind(listener, (struct sockaddr *)&listen_addr,
                   sizeof(listen_addr)) == 0);
        socklen_t len = sizeof(listen_addr);
        CHECK(getsockname(listener, (struct sockaddr *)&listen_addr,
                          &len) == 0);
        CHECK(listen(listener, 16) == 0);
    }
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    CHECK(c >= 0);
    CHECK(connect(c, (struct sockaddr *)&listen_addr,
                  sizeof(listen_addr)) == 0);
    int a = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
    CHECK(a >= 0);
    int one = 1;
    setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fds[0] = a;
    fds[1] = c;
}

static void
set_bufs(int fd, int size)
{
    setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof(size));
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* TCP can stall for seconds when twincore does not read: its full
 * receive buffer drops the peer's segments, and with them the ACKs that
 * would open its send window (retransmits back off exponentially).  A
 * drain that may meet this waits briefly and is not judged. */
static bool
may_stall(const fz_stream_t *f)
{
    return f->tcp && !f->reading && f->in_recv < f->in_sent;
}

/* One step of a final drain: an iteration, the peer reads what there is,
 * and when nothing moved, a short wait for the kernel (TCP with small
 * windows needs real time).  False once the deadline passed. */
static bool
drain_step(fz_stream_t *f, uint64_t deadline)
{
    trace(f, "drain", 0);
    if (may_stall(f) && now_ms() + DRAIN_MS - STALL_MS > deadline) {
        f->stalled = true;
        return false;
    }
    run_nowait(f, 1);
    if (peer_read(f, 0) == 0) {
        struct pollfd p[2] = {
            {.fd = tc_loop_backend_fd(f->loop), .events = POLLIN},
            {.fd = f->peer, .events = POLLIN},
        };
        poll(p, f->peer >= 0 ? 2 : 1, 5);
    }
    return now_ms() < deadline;
}

/* Drain twincore's queue into the peer; returns when everything accepted
 * has arrived or something ended the connection. */
static void
drain_out(fz_stream_t *f)
{
    uint64_t deadline = now_ms() + DRAIN_MS;
    for (;;) {
        /* A graceful close that completed during the drain still has bytes
         * in flight in the kernel: keep reading until the peer's EOF. */
        if ((f->closed && f->aborted) || f->error_seen || f->peer_closed ||
            f->peer_saw_eof || f->peer_saw_error) {
            return;
        }
        if (f->out_peer_recv == f->out_accepted &&
            (f->closed || tc_stream_write_queue_size(f->s) == 0)) {
            return;
        }
        if (!drain_step(f, deadline)) {
            CHECK(f->stalled);
            return;
        }
    }
}

static void
finish(fz_stream_t *f)
{
    /* Both directions move from here on, as a live peer's would. */
    if (!f->closed && !f->close_started && !f->reading && !f->eof_seen &&
        !f->error_seen) {
        int rc = tc_stream_read_start(f->s);
        f->reading = rc == 0;
        /* Refused: a silent EOF (no on_eof), else a failure. */
        if (rc != 0 && (f->have_eof_cb || !peer_done_writing(f))) {
            f->error_expected = true;
        }
    }
    /* twincore -> peer: with no failure, everything accepted arrives. */
    if (!f->closed && !f->aborted) {
        drain_out(f);
        if (!f->error_seen && !f->peer_closed && !f->peer_saw_error &&
            !f->error_expected && !lossy_close(f) && !f->stalled) {
            CHECK(f->out_peer_recv == f->out_accepted);
        }
    }
    /* peer -> twincore: half-close and read to EOF; no byte lost. */
    if (!f->closed && !f->close_started && !f->error_seen &&
        !f->peer_closed && !f->eof_seen) {
        if (!f->peer_shut_wr) {
            shutdown(f->peer, SHUT_WR);
            f->peer_shut_wr = true;
        }
        uint64_t deadline = now_ms() + DRAIN_MS;
        while (f->reading && !f->error_seen) {
            CHECK(drain_step(f, deadline));
            if (!f->have_eof_cb && !tc_stream_is_reading(f->s)) {
                f->reading = false;     /* EOF without on_eof */
            }
        }
        if (!f->error_seen && !f->error_expected) {
            CHECK(!f->reading);
            CHECK(f->in_recv == f->in_sent);
        }
    }
    /* A failure that a write or read_start revealed is reported. */
    if (f->error_expected && !f->close_started) {
        run_nowait(f, 4);
        CHECK(f->error_seen);
    }
    /* A graceful close finishes once the peer reads the rest. */
    uint64_t deadline = now_ms() + DRAIN_MS;
    while (f->close_started && !f->closed) {
        if (!drain_step(f, deadline)) {
            CHECK(f->stalled);
            break;      /* tc_close() below cuts the flush short */
        }
        if (!f->peer_closed && (f->peer_saw_eof || f->peer_saw_error)) {
            peer_close(f, true);
        }
    }
    if (!f->closed && (!f->close_started || f->stalled)) {
        if (f->tcp) {
            /* No TIME_WAIT pile-up over a long run. */
            struct linger lg = {.l_onoff = 1, .l_linger = 0};
            setsockopt(tc_stream_fd(f->s), SOL_SOCKET, SO_LINGER, &lg,
                       sizeof(lg));
        }
        int rc = tc_close(tc_stream_handle(f->s), on_close);
        CHECK(rc == 0 || (rc == -EALREADY && f->close_started));
        f->close_started = true;
    }
    for (int i = 0; i < 100 && !f->closed; i++) {
        run_nowait(f, 1);
    }
    CHECK(f->closed && f->close_cbs == 1);
    peer_close(f, true);
    CHECK(tc_loop_close(f->loop) == 0);
    for (int i = 0; i < f->nrefs; i++) {
        CHECK(f->refs[i].released == 1);
        if (f->refs[i].status != 0) {
            CHECK(f->error_seen || f->aborted || f->close_started);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_stream_t state;
    fz_stream_t *f = &state;
    fz_in_t in = {data, size};
    uint8_t cfg = fz_u8(&in);
    int fds[2];

    memset(f, 0, sizeof(*f));
    cur = f;
    tracing = getenv("FUZZ_TRACE") != NULL;
    f->tcp = cfg & 1;
    /* A stream without on_eof closes and frees itself at the peer's EOF
     * (stream.h), and this harness keeps its pointer: it always sets
     * on_eof; test_stream.c covers the stream without one. */
    f->have_eof_cb = true;
    if (f->tcp) {
        tcp_pair(fds);
    } else {
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    }
    /* Small buffers make writes queue.  TCP gets larger ones: with a
     * window of a segment or two it crawls at one delayed ACK per step. */
    static const int unix_bufs[4] = {0, 2048, 8192, 65536};
    static const int tcp_bufs[4] = {0, 32768, 49152, 65536};
    int bs = (f->tcp ? tcp_bufs : unix_bufs)[(cfg >> 2) & 3];
    if (bs > 0) {
        set_bufs(fds[0], bs);
        set_bufs(fds[1], bs);
    }
    f->peer = fds[1];
    CHECK(fcntl(f->peer, F_SETFL, O_NONBLOCK) == 0);
    CHECK(tc_loop_new(&f->loop) == 0);
    CHECK(tc_stream_open(f->loop, fds[0], f, &f->s) == 0);
    tc_stream_callbacks_t cbs = {
        .on_read = on_read,
        .on_eof = f->have_eof_cb ? on_eof : NULL,
        .on_error = on_error,
        .on_flow = (cfg & 16) ? NULL : on_flow,
    };
    CHECK(tc_stream_set_callbacks(f->s, &cbs) == 0);
    if (!(cfg & 32)) {
        CHECK(tc_stream_read_start(f->s) == 0);
        f->reading = true;
    }
    while (in.n > 0 && !f->closed) {
        op(f, fz_u8(&in), &in);
    }
    finish(f);
    cur = NULL;
    return 0;
}
