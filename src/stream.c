/* The buffered stream transport shared by TCP and Unix connections, child
 * processes' pipes and adopted sockets (tc_stream_open).
 *
 * Invariants: bytes leave in the order they were queued; a write first goes
 * straight to the socket when nothing is queued, and only the remainder is
 * copied; the queue is flushed with sendmsg() (writev semantics without
 * SIGPIPE).  A failure is recorded once (FAILED) and reported once through
 * on_error; afterwards nothing is read or written.  Memory lent with
 * tc_stream_write_ref() goes back through its release callback exactly
 * once, whatever happens.
 *
 * A codec (TLS, tls.c) filters a stream: reads go socket -> codec ->
 * on_read, writes go codec -> the same write queue.  Its state machine
 * (handshake, pump, plaintext queue, close_notify, linger) is in
 * tls_stream.c; this file calls it where s->codec is set.  The layout and
 * the interface between the two are in stream_internal.h. */
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "stream_internal.h"

#define CHUNK_MIN (16u * 1024u)   /* copy chunks are at least this big */
#define EMIT_CHUNK (64u * 1024u)  /* codec output: a few records a chunk */
#define FLUSH_IOV 64              /* iovecs per sendmsg() */
#define FILE_PIECE (64u * 1024u)  /* a file range read without sendfile */
static void report_files(tc_stream_t *s);

tc_handle_t *
tc_stream_handle(tc_stream_t *stream)
{
    return stream != NULL ? &stream->h : NULL;
}

static inline struct ev_loop *
ev_of(const tc_stream_t *s)
{
    return tc__stream_ev(s);
}

chunk_t *
tc__stream_chunk_new(size_t room, const char *base, size_t len,
                     tc_release_cb release, void *ctx, const void *ref_buf)
{
    chunk_t *c = malloc(sizeof(*c) + room);
    if (c == NULL) {
        return NULL;
    }
    c->next = NULL;
    c->base = base != NULL || release != NULL ? base : c->data;
    c->len = len;
    c->cap = release == NULL ? room : 0;
    c->release = release;
    c->ctx = ctx;
    c->ref_buf = ref_buf;
    return c;
}

void
tc__stream_release_chunk(chunk_t *c, int status)
{
    if (c->release != NULL) {
        c->release(c->ctx, c->ref_buf, status);
    }
    free(c);
}

static void
release_list(chunk_t *c, int status)
{
    while (c != NULL) {
        chunk_t *next = c->next;
        tc__stream_release_chunk(c, status);
        c = next;
    }
}

/* Give every queued chunk back with status; the queues are empty after. */
static void
discard_queue(tc_stream_t *s, int status)
{
    chunk_t *c = s->head;
    chunk_t *p = s->phead;
    s->head = s->tail = NULL;
    s->phead = s->ptail = NULL;
    s->queued = 0;
    release_list(c, status);
    release_list(p, status);
}

/* A sent chunk: keep one small copy chunk for the next copy. */
static void
recycle_chunk(tc_stream_t *s, chunk_t *c)
{
    if (c->release == NULL && c->cap > 0 && c->cap <= EMIT_CHUNK &&
        s->spare == NULL) {
        s->spare = c;
        return;
    }
    tc__stream_release_chunk(c, 0);
}

static void
stop_io(tc_stream_t *s)
{
    tc__io_stop(ev_of(s), &s->rio);
    tc__io_stop(ev_of(s), &s->wio);
    ev_timer_stop(ev_of(s), &s->open_timer);
    ev_timer_stop(ev_of(s), &s->linger_timer);
}

/* Record a failure once and report it now (we are in a loop callback). */
void
tc__stream_fail_now(tc_stream_t *s, int err)
{
    if (s->flags & S_FAILED) {
        return;
    }
    s->flags |= S_FAILED;
    s->flags &= ~(S_ERROR_PENDING | S_FLOW_PAUSED | S_HANDSHAKE);
    s->error = err;
    stop_io(s);
    discard_queue(s, err);
    if (s->flags & S_CLOSE_PENDING) {
        tc_close(&s->h, s->graceful_cb);
        return;
    }
    if (s->connect_cb != NULL) {
        /* A codec's handshake failed: its connect callback reports it. */
        tc_connect_cb cb = s->connect_cb;
        s->connect_cb = NULL;
        cb(s, err);
        return;
    }
    if (s->cbs.on_error != NULL) {
        s->cbs.on_error(s, err);
    }
}

/* Record a failure found inside a user's call; on_error runs from the loop,
 * never re-entrantly. */
void
tc__stream_fail_later(tc_stream_t *s, int err)
{
    if (s->flags & (S_FAILED | S_ERROR_PENDING)) {
        return;
    }
    s->flags |= S_ERROR_PENDING;
    s->error = err;
    stop_io(s);
    ev_feed_event(ev_of(s), &s->notify, EV_CUSTOM);
}

/* The end of a graceful close, once the queue (and a codec's close
 * message) went out; a codec stream lingers first (tls_stream.c). */
static int
close_gracefully(tc_stream_t *s, tc_close_cb cb)
{
    if (s->codec == NULL || s->fd < 0 || (s->flags & S_FAILED)) {
        return tc_close(&s->h, cb);
    }
    return tc__codec_linger(s, cb);
}

/* A shutdown asked for while connecting, with nothing to flush first. */
static void
shutdown_if_drained(tc_stream_t *s)
{
    if (!tc__handle_closing(&s->h) && !(s->flags & S_FAILED) &&
        s->head == NULL && (s->flags & S_SHUT_PENDING) &&
        !(s->flags & S_SHUT_DONE)) {
        tc__stream_queue_drained(s);
    }
}

static void
notify_cb(struct ev_loop *ev, ev_idle *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_stream_t *s = TC__CONTAINER_OF(w, tc_stream_t, notify);
    if (s->fdone != NULL) {
        report_files(s);
        if (tc__handle_closing(&s->h)) {
            return;
        }
    }
    if (s->flags & S_ERROR_PENDING) {
        s->flags &= ~S_ERROR_PENDING;
        tc__stream_fail_now(s, s->error);
    } else if (!(s->flags & (S_CONNECTING | S_HANDSHAKE)) &&
               s->connect_cb != NULL) {
        if (s->codec != NULL) {
            /* Connected at once: the codec's handshake reports instead. */
            tc__codec_start(s);
            return;
        }
        /* A connect that completed at once still reports from the loop. */
        tc_connect_cb cb = s->connect_cb;
        s->connect_cb = NULL;
        if (s->flags & S_READING) {
            tc__io_start(ev_of(s), &s->rio);
        }
        if (s->head != NULL) {
            tc__stream_start_writing(s);
        }
        cb(s, 0);
        shutdown_if_drained(s);
    } else if (s->flags & S_PUMP_PENDING) {
        /* Input the codec buffered while reading was paused, or the start
         * of a handshake. */
        s->flags &= ~S_PUMP_PENDING;
        if (tc__stream_is_alive(s) && s->codec != NULL) {
            tc__codec_pump(s, NULL, 0);
        }
    }
}

void
tc__stream_update_flow(tc_stream_t *s)
{
    if (!(s->flags & S_FLOW_PAUSED)) {
        if (s->queued > s->high_water) {
            s->flags |= S_FLOW_PAUSED;
            if (s->cbs.on_flow != NULL) {
                s->cbs.on_flow(s, true);
            }
        }
    } else if (s->queued <= s->low_water) {
        s->flags &= ~S_FLOW_PAUSED;
        if (s->cbs.on_flow != NULL) {
            s->cbs.on_flow(s, false);
        }
    }
}

/* Watch for input while the user reads (once connected) or while a codec's
 * handshake needs it. */
void
tc__stream_update_rio(tc_stream_t *s)
{
    bool want = tc__stream_is_alive(s) &&
                ((s->flags & S_LINGER) ||
                 (!(s->flags & (S_ERROR_PENDING | S_EOF | S_CONNECTING)) &&
                  ((s->flags & S_HANDSHAKE) ||
                   ((s->flags & S_READING) && s->connect_cb == NULL))));
    if (want) {
        tc__io_start(ev_of(s), &s->rio);
    } else {
        tc__io_stop(ev_of(s), &s->rio);
    }
}

/* The queue drained: do what was waiting for it.  May free nothing but may
 * close the handle (graceful close). */
void
tc__stream_queue_drained(tc_stream_t *s)
{
    tc__io_stop(ev_of(s), &s->wio);
    if (s->codec != NULL && !tc__codec_drained(s)) {
        return;
    }
    if ((s->flags & S_SHUT_PENDING) && !(s->flags & S_SHUT_DONE)) {
        s->flags |= S_SHUT_DONE;
        if (shutdown(s->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
            tc__stream_fail_now(s, tc__neg_errno());
            return;
        }
    }
    if (s->flags & S_CLOSE_PENDING) {
        close_gracefully(s, s->graceful_cb);
    }
}

/* ---- file ranges (tc_stream_sendfile) ----------------------------------
 * A file range is a chunk of len 0 whose ctx is the file_range_t in its
 * data[]; tc__stream_release_chunk() reports it.  On a plain stream it
 * sits in the write queue and goes out with sendfile(2) when it reaches
 * the head (or through copies of FILE_PIECE inserted before it when
 * sendfile(2) refuses the file).  On a codec stream it waits in phead, and
 * later plaintext waits behind it; tls_stream.c reads and encodes it while
 * the wire queue is short.  Its bytes are not counted by the watermarks:
 * they take no memory.  A finished range is reported from the loop
 * (notify_cb).  file_range_t is in stream_internal.h. */
void
tc__stream_file_release(void *ctx, const void *buf, int status)
{
    (void)buf;
    file_range_t *f = ctx;
    if (f->cb != NULL) {
        f->cb(f->s, f->ctx, status, f->sent);
    }
}

/* A finished range: off the queue, reported from the loop. */
void
tc__stream_file_finished(tc_stream_t *s, chunk_t *c)
{
    c->next = s->fdone;
    s->fdone = c;
    ev_feed_event(ev_of(s), &s->notify, EV_CUSTOM);
}

/* Report finished ranges, oldest first.  Thread: loop, from notify_cb or
 * the close. */
static void
report_files(tc_stream_t *s)
{
    chunk_t *rev = NULL;
    while (s->fdone != NULL) {
        chunk_t *c = s->fdone;
        s->fdone = c->next;
        c->next = rev;
        rev = c;
    }
    release_list(rev, 0);
}

/* Read the next piece of f: bytes read (0 at the end of the file) or a
 * negative code. */
ssize_t
tc__stream_file_read(file_range_t *f, char *buf, size_t cap)
{
    size_t want = f->left < cap ? (size_t)f->left : cap;
    for (;;) {
        ssize_t n = pread(f->fd, buf, want, (off_t)f->off);
        if (n >= 0) {
            f->off += (uint64_t)n;
            f->left = n == 0 ? 0 : f->left - (uint64_t)n;
            f->sent += (uint64_t)n;
            return n;
        }
        if (errno != EINTR) {
            return tc__neg_errno();
        }
    }
}

/* Send the file range at the head of a plain stream's queue: 1 when it is
 * all sent (or the file ended), 0 when the socket is full, 2 when a copy of
 * its next piece was put before it, or a negative code. */
static int
send_file(tc_stream_t *s, file_range_t *f)
{
    while (f->left > 0) {
        if (f->copy) {
            chunk_t *c = tc__stream_chunk_new(FILE_PIECE, NULL, 0, NULL, NULL,
                                              NULL);
            if (c == NULL) {
                return -ENOMEM;
            }
            ssize_t n = tc__stream_file_read(f, c->data, FILE_PIECE);
            if (n <= 0) {
                free(c);
                if (n < 0) {
                    return (int)n;
                }
                break;
            }
            c->len = (size_t)n;
            c->next = s->head;
            s->head = c;
            s->queued += (size_t)n;
            return 2;
        }
        size_t want = f->left < 0x40000000u ? (size_t)f->left : 0x40000000u;
        off_t off = (off_t)f->off;
        ssize_t n = sendfile(s->fd, f->fd, &off, want);
        if (n > 0) {
            f->off += (uint64_t)n;
            f->left -= (uint64_t)n;
            f->sent += (uint64_t)n;
            continue;
        }
        if (n == 0) {
            break;   /* the file is shorter than it was */
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        if ((errno == EINVAL || errno == ENOSYS) && f->sent == 0) {
            f->copy = true;   /* a file sendfile(2) cannot read */
            continue;
        }
        return tc__neg_errno();
    }
    f->left = 0;
    return 1;
}

/* Send as much of the queue as the socket takes: 0, or a negative code for
 * a hard error (the queue is left as it is). */
int
tc__stream_send_queue(tc_stream_t *s)
{
    while (s->head != NULL) {
        if (tc__stream_is_file(s->head)) {
            int rc = send_file(s, s->head->ctx);
            if (rc < 0) {
                return rc;
            }
            if (rc == 0) {
                break;
            }
            if (rc == 1) {
                chunk_t *c = s->head;
                s->head = c->next;
                if (s->head == NULL) {
                    s->tail = NULL;
                }
                tc__stream_file_finished(s, c);
            }
            continue;
        }
        struct iovec iov[FLUSH_IOV];
        int n = 0;
        for (chunk_t *c = s->head;
             c != NULL && n < FLUSH_IOV && !tc__stream_is_file(c);
             c = c->next) {
            iov[n].iov_base = (void *)c->base;
            iov[n].iov_len = c->len;
            n++;
        }
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                break;
            }
            return tc__neg_errno();
        }
        size_t left = (size_t)sent;
        s->queued -= left;
        while (left > 0) {
            chunk_t *c = s->head;
            if (left < c->len) {
                c->base += left;
                c->len -= left;
                break;
            }
            left -= c->len;
            s->head = c->next;
            if (s->head == NULL) {
                s->tail = NULL;
            }
            recycle_chunk(s, c);
        }
        if ((size_t)sent == 0) {
            break;
        }
    }
    return 0;
}

/* Send as much of the queue as the socket takes, then do what waited for
 * the drain.  Thread: loop, inside a loop callback. */
void
tc__stream_flush_queue(tc_stream_t *s)
{
    int err = tc__stream_send_queue(s);
    if (err != 0) {
        tc__stream_fail_now(s, err);
        return;
    }
    if (s->flags & S_FLOW_PAUSED) {
        tc__stream_update_flow(s);
        if (tc__handle_closing(&s->h) || (s->flags & S_FAILED)) {
            return;
        }
    }
    if (s->head == NULL) {
        tc__stream_queue_drained(s);
    } else {
        tc__stream_start_writing(s);
    }
}

/* Send the queue from inside a user's call: a failure is reported from
 * the loop, and what waits for the drain runs there too. */
void
tc__stream_flush_user(tc_stream_t *s)
{
    if (ev_is_active(&s->wio)) {
        return;   /* the socket was full: write_ready sends it */
    }
    int err = tc__stream_send_queue(s);
    if (err != 0) {
        tc__stream_fail_later(s, err);
    } else if (s->head != NULL) {
        tc__stream_start_writing(s);
    }
}

static void
finish_connect(tc_stream_t *s, int status)
{
    s->flags &= ~S_CONNECTING;
    if (status == 0 && s->codec != NULL) {
        /* Connected: the handshake runs under the same timeout and the
         * connect callback waits for its outcome. */
        if (s->head == NULL) {
            tc__io_stop(ev_of(s), &s->wio);
        }
        tc__codec_start(s);
        return;
    }
    ev_timer_stop(ev_of(s), &s->open_timer);
    tc_connect_cb cb = s->connect_cb;
    s->connect_cb = NULL;
    if (status != 0) {
        s->flags |= S_FAILED;
        s->error = status;
        stop_io(s);
        discard_queue(s, status);
    } else {
        if (s->flags & S_READING) {
            tc__io_start(ev_of(s), &s->rio);
        }
        if (s->head == NULL) {
            tc__io_stop(ev_of(s), &s->wio);
        }
    }
    if (cb != NULL) {
        cb(s, status);
    }
    if (status == 0) {
        shutdown_if_drained(s);
    }
}

static void
write_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_stream_t *s = TC__CONTAINER_OF(w, tc_stream_t, wio);
    if (s->flags & S_CONNECTING) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
            err = errno;
        }
        finish_connect(s, -err);
        if (err != 0 || tc__handle_closing(&s->h) || s->head == NULL) {
            return;
        }
    }
    tc__stream_flush_queue(s);
}

/* The peer shut down its write side (a clean end for a codec). */
void
tc__stream_peer_eof(tc_stream_t *s)
{
    s->flags |= S_EOF;
    s->flags &= ~S_READING;
    tc__io_stop(ev_of(s), &s->rio);
    if (s->cbs.on_eof != NULL) {
        s->cbs.on_eof(s);
    } else {
        /* Nobody will ever close it otherwise: a descriptor per peer. */
        tc_stream_close(s, NULL);
    }
}

/* recv() returned n <= 0: the peer's EOF (which a codec may call a
 * failure, e.g. TLS without close_notify), an error, or nothing yet. */
void
tc__stream_read_gave_nothing(tc_stream_t *s, ssize_t n)
{
    if (n == 0) {
        int err = s->codec != NULL ? s->codec->eof_status(s->codec_st) : 0;
        if (err != 0) {
            tc__stream_fail_now(s, err);
        } else {
            tc__stream_peer_eof(s);
        }
        return;
    }
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) {
        return;
    }
    tc__stream_fail_now(s, tc__neg_errno());
}

static void
read_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_stream_t *s = TC__CONTAINER_OF(w, tc_stream_t, rio);
    if (s->flags & S_LINGER) {
        tc__codec_linger_read(s);
        return;
    }
    if (s->codec != NULL) {
        tc__codec_read_ready(s);
        return;
    }
    tc_loop_t *loop = s->h.loop;
    ssize_t n = recv(s->fd, loop->read_buf, loop->read_buf_size, 0);
    if (n > 0) {
        s->cbs.on_read(s, loop->read_buf, (size_t)n);
    } else {
        tc__stream_read_gave_nothing(s, n);
    }
}

/* The opening's deadline passed: the connect's or the handshake's. */
static void
open_timeout(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_stream_t *s = TC__CONTAINER_OF(w, tc_stream_t, open_timer);
    if (s->flags & S_CONNECTING) {
        finish_connect(s, -ETIMEDOUT);
    } else if (s->flags & S_HANDSHAKE) {
        tc__stream_fail_now(s, -ETIMEDOUT);
    }
}

static void
stream_close(tc_handle_t *h)
{
    tc_stream_t *s = TC__CONTAINER_OF(h, tc_stream_t, h);
    /* tc_close() during a graceful close cuts the flush short; the close
     * callback given to tc_stream_close() still runs unless replaced. */
    if ((s->flags & S_CLOSE_PENDING) && h->close_cb == NULL) {
        h->close_cb = s->graceful_cb;
    }
    stop_io(s);
    ev_idle_stop(ev_of(s), &s->notify);   /* drops a fed event */
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
        tc__loop_fd_released(h->loop);
    }
}

static void
stream_finish(tc_handle_t *h)
{
    tc_stream_t *s = TC__CONTAINER_OF(h, tc_stream_t, h);
    report_files(s);   /* sent before the close */
    discard_queue(s, -ECANCELED);
    if (s->connect_cb != NULL) {
        tc_connect_cb cb = s->connect_cb;
        s->connect_cb = NULL;
        cb(s, -ECANCELED);
    }
    if (s->codec != NULL) {
        s->codec->free(s->codec_st);
        s->codec = NULL;
        s->codec_st = NULL;
    }
    free(s->spare);
    s->spare = NULL;
}

static bool
stream_is_active(const tc_handle_t *h)
{
    const tc_stream_t *s = TC__CONTAINER_OF(h, tc_stream_t, h);
    return ev_is_active(&s->rio) || ev_is_active(&s->wio) ||
           (s->flags & (S_CONNECTING | S_HANDSHAKE));
}

static double
stream_next_timeout(const tc_handle_t *h)
{
    tc_stream_t *s = TC__CONTAINER_OF(h, tc_stream_t, h);
    /* One at most: a linger stops the opening's deadline. */
    ev_timer *t = ev_is_active(&s->linger_timer) ? &s->linger_timer
                  : ev_is_active(&s->open_timer)   ? &s->open_timer
                                                   : NULL;
    return t != NULL ? ev_timer_remaining(h->loop->ev, t) : -1.0;
}

static const tc__handle_vtable_t stream_vt = {
    .close_impl = stream_close,
    .finish_impl = stream_finish,
    .is_active = stream_is_active,
    .next_timeout = stream_next_timeout,
};

int
tc__stream_new(tc_loop_t *loop, int fd, bool is_unix, bool connecting,
               void *data, tc_stream_t **out)
{
    tc_stream_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    tc__handle_init(loop, &s->h, TC_HANDLE_STREAM, &stream_vt, data);
    s->fd = fd;
    s->flags = (is_unix ? S_UNIX : 0) | (connecting ? S_CONNECTING : 0);
    s->high_water = TC_STREAM_DEFAULT_HIGH_WATER;
    s->low_water = TC_STREAM_DEFAULT_HIGH_WATER / 4;
    ev_io_init(&s->rio, read_ready, fd, EV_READ);
    ev_io_init(&s->wio, write_ready, fd, EV_WRITE);
    ev_idle_init(&s->notify, notify_cb);
    ev_init(&s->open_timer, open_timeout);
    ev_init(&s->linger_timer, NULL);   /* tls_stream.c sets its callback */
    *out = s;
    return 0;
}

/* A connect or handshake timeout counts from the call, as every timer
 * does (timer.h): libev counts from the iteration's cached time, so the
 * clock is read first, or a connect begun at the end of a long callback
 * would time out early. */
void
tc__stream_arm_open_timer(tc_stream_t *s, uint64_t timeout_ms)
{
    tc_loop_update_time(s->h.loop);
    ev_timer_set(&s->open_timer, (double)timeout_ms / 1000.0, 0.);
    ev_timer_start(ev_of(s), &s->open_timer);
}

void
tc__stream_connect_begin(tc_stream_t *s, tc_connect_cb cb,
                         uint64_t timeout_ms)
{
    s->connect_cb = cb;
    if (s->flags & S_CONNECTING) {
        tc__io_start(ev_of(s), &s->wio);
        if (timeout_ms > 0) {
            tc__stream_arm_open_timer(s, timeout_ms);
        }
    } else {
        ev_feed_event(ev_of(s), &s->notify, EV_CUSTOM);
    }
}

int
tc_stream_open(tc_loop_t *loop, int fd, void *data, tc_stream_t **out)
{
    if (loop == NULL || out == NULL || fd < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -EINVAL;
    }
    int type = 0;
    socklen_t tlen = sizeof(type);
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);
    int err = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &slen) != 0) {
        err = tc__neg_errno();
    } else if (type != SOCK_STREAM) {
        err = -EINVAL;
    } else {
        err = tc__set_nonblock_cloexec(fd);
    }
    if (err == 0) {
        err = tc__stream_new(loop, fd, ss.ss_family == AF_UNIX, false, data,
                             out);
    }
    if (err != 0) {
        close(fd);
    }
    return err;
}

int
tc_stream_set_callbacks(tc_stream_t *s, const tc_stream_callbacks_t *cbs)
{
    if (s == NULL || cbs == NULL) {
        return -EINVAL;
    }
    s->cbs = *cbs;
    return 0;
}

int
tc_stream_read_start(tc_stream_t *s)
{
    if (s == NULL || s->cbs.on_read == NULL || tc__handle_closing(&s->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    if (s->flags & (S_EOF | S_FAILED | S_ERROR_PENDING)) {
        return -EPIPE;
    }
    s->flags |= S_READING;
    tc__stream_update_rio(s);
    if (s->codec != NULL && tc__codec_ready(s) &&
        s->codec->has_pending(s->codec_st)) {
        /* What the codec kept while paused does not wake epoll. */
        s->flags |= S_PUMP_PENDING;
        ev_feed_event(ev_of(s), &s->notify, EV_CUSTOM);
    }
    return 0;
}

int
tc_stream_read_stop(tc_stream_t *s)
{
    if (s == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    s->flags &= ~S_READING;
    tc__stream_update_rio(s);   /* a handshake still reads */
    return 0;
}

bool
tc_stream_is_reading(const tc_stream_t *s)
{
    return s != NULL && (s->flags & S_READING) != 0;
}

static int
check_writable(const tc_stream_t *s)
{
    if (tc__handle_closing(&s->h) ||
        (s->flags & (S_FAILED | S_ERROR_PENDING | S_SHUT_PENDING |
                     S_CLOSE_PENDING))) {
        return -EPIPE;
    }
    return 0;
}

/* Copy buf to the end of the write queue, into the tail chunk when it has
 * room, else into a new chunk of at least min bytes (the spare if it fits). */
static chunk_t *
append_copy_min(tc_stream_t *s, const char *buf, size_t len, size_t min)
{
    chunk_t *t = s->tail;
    if (t != NULL && t->cap > 0) {
        size_t used = (size_t)(t->base - t->data) + t->len;
        if (t->cap - used >= len) {
            memcpy(t->data + used, buf, len);
            t->len += len;
            return t;
        }
    }
    size_t cap = len > min ? len : min;
    chunk_t *c;
    if (s->spare != NULL && s->spare->cap >= cap) {
        c = s->spare;   /* a copy chunk already: only its bytes change */
        s->spare = NULL;
        c->next = NULL;
        c->base = c->data;
        c->len = len;
    } else {
        c = tc__stream_chunk_new(cap, NULL, len, NULL, NULL, NULL);
        if (c == NULL) {
            return NULL;
        }
    }
    memcpy(c->data, buf, len);
    if (s->tail != NULL) {
        s->tail->next = c;
    } else {
        s->head = c;
    }
    s->tail = c;
    return c;
}

static chunk_t *
append_copy(tc_stream_t *s, const char *buf, size_t len)
{
    return append_copy_min(s, buf, len, CHUNK_MIN);
}

int
tc__stream_emit(tc_stream_t *s, const void *buf, size_t len)
{
    if (len == 0) {
        return 0;
    }
    if (append_copy_min(s, buf, len, EMIT_CHUNK) == NULL) {
        return -ENOMEM;
    }
    s->queued += len;
    return 0;
}

/* Try the socket directly while nothing is queued; returns bytes sent or a
 * negative code for a hard error. */
static ssize_t
send_direct(tc_stream_t *s, const struct iovec *iov, int iovcnt)
{
    if (s->head != NULL || (s->flags & S_CONNECTING) || s->connect_cb) {
        return 0;
    }
    struct msghdr msg = {.msg_iov = (struct iovec *)iov,
                         .msg_iovlen = (size_t)iovcnt};
    for (;;) {
        /* One buffer (a line, a reply): send() spares the kernel the
         * msghdr and iovec copies of sendmsg(). */
        ssize_t n = iovcnt == 1
                        ? send(s->fd, iov[0].iov_base, iov[0].iov_len,
                               MSG_NOSIGNAL)
                        : sendmsg(s->fd, &msg, MSG_NOSIGNAL);
        if (n >= 0) {
            return n;
        }
        if (errno == EINTR) {
            continue;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            return 0;
        }
        return tc__neg_errno();
    }
}

int
tc_stream_writev(tc_stream_t *s, const struct iovec *iov, int iovcnt)
{
    if (s == NULL || (iov == NULL && iovcnt != 0) || iovcnt < 0 ||
        iovcnt > IOV_MAX) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    int err = check_writable(s);
    if (err != 0) {
        return err;
    }
    size_t total = 0;
    for (int i = 0; i < iovcnt; i++) {
        if (iov[i].iov_base == NULL && iov[i].iov_len != 0) {
            return -EINVAL;
        }
        total += iov[i].iov_len;
    }
    if (total == 0) {
        return 0;
    }
    if (s->codec != NULL) {
        return tc__codec_writev(s, iov, iovcnt, total);
    }
    ssize_t sent = send_direct(s, iov, iovcnt);
    if (sent < 0) {
        tc__stream_fail_later(s, (int)sent);
        return -EPIPE;
    }
    if ((size_t)sent == total) {
        return 0;
    }
    /* Copy the unsent remainder; on ENOMEM nothing of it is queued, and
     * what was already sent cannot be taken back, so fail the stream. */
    size_t skip = (size_t)sent;
    size_t added = 0;
    for (int i = 0; i < iovcnt; i++) {
        size_t len = iov[i].iov_len;
        const char *base = iov[i].iov_base;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        base += skip;
        len -= skip;
        skip = 0;
        if (append_copy(s, base, len) == NULL) {
            if (sent > 0 || added > 0) {
                tc__stream_fail_later(s, -ENOMEM);
            }
            return -ENOMEM;
        }
        added += len;
    }
    s->queued += added;
    tc__stream_start_writing(s);
    tc__stream_update_flow(s);
    return 0;
}

int
tc_stream_write(tc_stream_t *s, const void *buf, size_t len)
{
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    return tc_stream_writev(s, &iov, 1);
}

int
tc_stream_write_ref(tc_stream_t *s, const void *buf, size_t len,
                    tc_release_cb release, void *ctx)
{
    int err = 0;
    if (s == NULL || (buf == NULL && len != 0)) {
        err = -EINVAL;
    } else {
        TC__ASSERT_LOOP_THREAD(s->h.loop);
        err = check_writable(s);
    }
    if (err != 0 || len == 0) {
        if (release != NULL) {
            release(ctx, buf, err);
        }
        return err;
    }
    if (s->codec != NULL) {
        return tc__codec_write_ref(s, buf, len, release, ctx);
    }
    struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
    ssize_t sent = send_direct(s, &iov, 1);
    if (sent < 0) {
        tc__stream_fail_later(s, (int)sent);
        if (release != NULL) {
            release(ctx, buf, -EPIPE);
        }
        return -EPIPE;
    }
    if ((size_t)sent == len) {
        if (release != NULL) {
            release(ctx, buf, 0);
        }
        return 0;
    }
    chunk_t *c = tc__stream_chunk_new(0, (const char *)buf + sent,
                                      len - (size_t)sent, release, ctx, buf);
    if (c == NULL) {
        if (sent > 0) {
            tc__stream_fail_later(s, -ENOMEM);
        }
        if (release != NULL) {
            release(ctx, buf, -ENOMEM);
        }
        return -ENOMEM;
    }
    if (s->tail != NULL) {
        s->tail->next = c;
    } else {
        s->head = c;
    }
    s->tail = c;
    s->queued += c->len;
    tc__stream_start_writing(s);
    tc__stream_update_flow(s);
    return 0;
}

int
tc_stream_sendfile(tc_stream_t *s, int fd, uint64_t offset, uint64_t count,
                   tc_sendfile_cb cb, void *ctx)
{
    if (s == NULL || fd < 0 || offset > (uint64_t)INT64_MAX) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    int err = check_writable(s);
    if (err != 0) {
        return err;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        return tc__neg_errno();
    }
    if (!S_ISREG(sb.st_mode) && !S_ISBLK(sb.st_mode)) {
        return -EINVAL;   /* sendfile(2) reads pages: not a pipe/socket */
    }
    if (count == 0) {
        uint64_t size = sb.st_size > 0 ? (uint64_t)sb.st_size : 0;
        count = offset < size ? size - offset : 0;
    }
    chunk_t *c = tc__stream_chunk_new(sizeof(file_range_t), NULL, 0,
                                      tc__stream_file_release, NULL, NULL);
    if (c == NULL) {
        return -ENOMEM;
    }
    file_range_t *f = (file_range_t *)(void *)c->data;
    *f = (file_range_t){.s = s, .fd = fd, .off = offset, .left = count,
                        .cb = cb, .ctx = ctx};
    c->ctx = f;
    if (s->codec != NULL) {
        tc__codec_sendfile(s, c);
        return 0;
    }
    if (s->tail != NULL) {
        s->tail->next = c;
    } else {
        s->head = c;
    }
    s->tail = c;
    if (!(s->flags & S_CONNECTING) && s->connect_cb == NULL) {
        tc__stream_flush_user(s);
    } else {
        tc__stream_start_writing(s);
    }
    return 0;
}

size_t
tc_stream_write_queue_size(const tc_stream_t *s)
{
    return s != NULL ? s->queued : 0;
}

int
tc_stream_set_watermarks(tc_stream_t *s, size_t low, size_t high)
{
    if (s == NULL || low > high) {
        return -EINVAL;
    }
    s->low_water = low;
    s->high_water = high;
    if (!(s->flags & S_FAILED) && !tc__handle_closing(&s->h)) {
        tc__stream_update_flow(s);
    }
    return 0;
}

void
tc_stream_get_watermarks(const tc_stream_t *s, size_t *low, size_t *high)
{
    if (s == NULL) {
        return;
    }
    if (low != NULL) {
        *low = s->low_water;
    }
    if (high != NULL) {
        *high = s->high_water;
    }
}

int
tc_stream_shutdown(tc_stream_t *s)
{
    if (s == NULL || tc__handle_closing(&s->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    if (s->flags & (S_FAILED | S_ERROR_PENDING)) {
        return -ENOTCONN;
    }
    if (s->flags & S_SHUT_PENDING) {
        return 0;
    }
    s->flags |= S_SHUT_PENDING;
    if (s->codec != NULL) {
        int rc = tc__codec_shutdown(s);   /* close_notify first */
        if (rc != 1) {
            return rc;
        }
    }
    if (s->head == NULL && !(s->flags & S_CONNECTING) &&
        s->connect_cb == NULL) {
        s->flags |= S_SHUT_DONE;
        if (shutdown(s->fd, SHUT_WR) != 0 && errno != ENOTCONN) {
            int err = tc__neg_errno();
            tc__stream_fail_later(s, err);
            return err;
        }
    }
    return 0;
}

int
tc_stream_close(tc_stream_t *s, tc_close_cb cb)
{
    if (s == NULL) {
        return -EINVAL;
    }
    if (tc__handle_closing(&s->h) || (s->flags & S_CLOSE_PENDING)) {
        return -EALREADY;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    bool drained = s->codec != NULL ? tc__codec_close(s) : s->head == NULL;
    if (s->flags & (S_FAILED | S_ERROR_PENDING)) {
        return tc_close(&s->h, cb);
    }
    if (drained) {
        return close_gracefully(s, cb);
    }
    s->flags |= S_CLOSE_PENDING;
    s->flags &= ~S_READING;
    s->graceful_cb = cb;
    tc__stream_update_rio(s);   /* a handshake still reads */
    return 0;
}

int
tc_stream_abort(tc_stream_t *s, tc_close_cb cb)
{
    if (s == NULL) {
        return -EINVAL;
    }
    if (tc__handle_closing(&s->h)) {
        return -EALREADY;
    }
    if (!(s->flags & S_UNIX) && s->fd >= 0) {
        /* Linger zero: close() sends RST and drops unsent data. */
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    return tc_close(&s->h, cb);
}

int
tc_stream_fd(const tc_stream_t *s)
{
    return s != NULL ? s->fd : -EINVAL;
}

bool
tc_stream_is_unix(const tc_stream_t *s)
{
    return s != NULL && (s->flags & S_UNIX) != 0;
}

int
tc_stream_peername(const tc_stream_t *s, struct sockaddr *sa, socklen_t *len)
{
    if (s == NULL || sa == NULL || len == NULL || s->fd < 0) {
        return -EINVAL;
    }
    return getpeername(s->fd, sa, len) == 0 ? 0 : tc__neg_errno();
}

int
tc_stream_sockname(const tc_stream_t *s, struct sockaddr *sa, socklen_t *len)
{
    if (s == NULL || sa == NULL || len == NULL || s->fd < 0) {
        return -EINVAL;
    }
    return getsockname(s->fd, sa, len) == 0 ? 0 : tc__neg_errno();
}

int
tc_stream_set_nodelay(tc_stream_t *s, bool on)
{
    if (s == NULL || s->fd < 0) {
        return -EINVAL;
    }
    if (s->flags & S_UNIX) {
        return -ENOTSUP;
    }
    int v = on ? 1 : 0;
    return setsockopt(s->fd, IPPROTO_TCP, TCP_NODELAY, &v, sizeof(v)) == 0
               ? 0
               : tc__neg_errno();
}

int
tc_stream_set_keepalive(tc_stream_t *s, bool on, unsigned idle_s)
{
    if (s == NULL || s->fd < 0) {
        return -EINVAL;
    }
    if (s->flags & S_UNIX) {
        return -ENOTSUP;
    }
    int v = on ? 1 : 0;
    if (setsockopt(s->fd, SOL_SOCKET, SO_KEEPALIVE, &v, sizeof(v)) != 0) {
        return tc__neg_errno();
    }
    if (on && idle_s > 0) {
        int idle = idle_s > INT_MAX ? INT_MAX : (int)idle_s;
        if (setsockopt(s->fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle,
                       sizeof(idle)) != 0) {
            return tc__neg_errno();
        }
    }
    return 0;
}
