/* The codec driver: the state machine that runs a stream's codec (TLS, see
 * tls.c) between the socket and the user.  stream.c keeps the socket, the
 * write queue and flow control; this file keeps what a codec adds.
 *
 * Reads go socket -> codec -> on_read, writes go codec -> the stream's
 * write queue (tc__stream_emit).  Until the handshake completes, written
 * plaintext waits in a second queue (phead) and the connect callback, if
 * any, is held back to report the handshake; the opening's deadline
 * (open_timer) covers the handshake too.  The queue size and the
 * watermarks count both: plaintext not yet encoded plus wire bytes not yet
 * sent.  Shutdown and graceful close first emit the codec's close message
 * (close_notify); a graceful close then lingers until the peer's EOF.  The
 * loop's read buffer is split: wire bytes are received into its upper half
 * and plaintext is decoded into the lower one.  Thread: loop, all of it. */
#include <sys/socket.h>
#include <unistd.h>

#include "stream_internal.h"

#define LINGER_S 2.0              /* a graceful close waits this long at
                                   * most for the peer's EOF */
#define FILE_AHEAD (256u * 1024u) /* encoded file bytes in flight */

static void
linger_expired(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_stream_t *s = TC__CONTAINER_OF(w, tc_stream_t, linger_timer);
    tc_close(&s->h, s->graceful_cb);
}

/* The end of a graceful close, once the queue (and the close message)
 * went out: shut down the write side and drop what still arrives until
 * the peer's EOF, for at most LINGER_S.  Closing a socket while input
 * arrives (a TLS 1.3 server's session tickets reach a client that closes
 * right after its handshake) sends a reset instead of FIN, and a reset
 * makes the peer lose what it has not read yet: the tail of this very
 * stream.  As asyncio's TLS transport does, wait for the peer to close. */
int
tc__codec_linger(tc_stream_t *s, tc_close_cb cb)
{
    if (!(s->flags & S_SHUT_DONE)) {
        s->flags |= S_SHUT_DONE;
        if (shutdown(s->fd, SHUT_WR) != 0) {
            return tc_close(&s->h, cb);
        }
    }
    s->flags |= S_CLOSE_PENDING | S_LINGER;
    s->flags &= ~S_READING;
    s->graceful_cb = cb;
    tc__io_stop(tc__stream_ev(s), &s->wio);
    tc__io_start(tc__stream_ev(s), &s->rio);
    ev_timer_stop(tc__stream_ev(s), &s->open_timer);
    ev_timer_stop(tc__stream_ev(s), &s->linger_timer);
    ev_init(&s->linger_timer, linger_expired);
    ev_timer_set(&s->linger_timer, LINGER_S, 0.);
    ev_timer_start(tc__stream_ev(s), &s->linger_timer);
    return 0;
}

/* Lingering: drop input until EOF (or an error), then close. */
void
tc__codec_linger_read(tc_stream_t *s)
{
    tc_loop_t *loop = s->h.loop;
    for (int i = 0; i < 16; i++) {
        ssize_t n = recv(s->fd, loop->read_buf, loop->read_buf_size, 0);
        if (n > 0) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                      errno == EINTR)) {
            return;
        }
        break;   /* EOF or a reset: done */
    }
    tc_close(&s->h, s->graceful_cb);
}

/* At least FILE_AHEAD wire bytes wait to be sent. */
static bool
wire_full(const tc_stream_t *s)
{
    size_t n = 0;
    for (const chunk_t *c = s->head; c != NULL; c = c->next) {
        n += c->len;
        if (n >= FILE_AHEAD) {
            return true;
        }
    }
    return false;
}

/* Move the plaintext queued during the handshake, or behind a file range,
 * through the codec; a file range is read and encoded while fewer than
 * FILE_AHEAD wire bytes wait, and the rest waits for the drain
 * (tc__codec_drained). */
static int
encode_waiting(tc_stream_t *s)
{
    while (s->phead != NULL) {
        chunk_t *c = s->phead;
        if (tc__stream_is_file(c)) {
            file_range_t *f = c->ctx;
            while (f->left > 0 && !wire_full(s)) {
                char buf[16 * 1024];
                ssize_t n = tc__stream_file_read(f, buf, sizeof(buf));
                if (n < 0) {
                    return (int)n;
                }
                if (n == 0) {
                    break;
                }
                struct iovec iov = {.iov_base = buf, .iov_len = (size_t)n};
                int err = s->codec->encode(s->codec_st, &iov, 1);
                if (err != 0) {
                    return err;
                }
            }
            if (f->left > 0) {
                return 0;   /* tc__codec_drained() goes on */
            }
            f->left = 0;
            s->phead = c->next;
            if (s->phead == NULL) {
                s->ptail = NULL;
            }
            tc__stream_file_finished(s, c);
            continue;
        }
        struct iovec iov = {.iov_base = (void *)c->base, .iov_len = c->len};
        int err = s->codec->encode(s->codec_st, &iov, 1);
        if (err != 0) {
            return err;
        }
        s->phead = c->next;
        if (s->phead == NULL) {
            s->ptail = NULL;
        }
        s->queued -= c->len;
        tc__stream_release_chunk(c, 0);
    }
    return 0;
}

bool
tc__codec_drained(tc_stream_t *s)
{
    if (!tc__codec_ready(s)) {
        return false;   /* the handshake's records, not the user's data */
    }
    if (s->phead != NULL) {
        /* A file range's turn (and what waits behind it). */
        int err = encode_waiting(s);
        if (err != 0) {
            tc__stream_fail_now(s, err);
            return false;
        }
        if (s->head != NULL) {
            tc__stream_start_writing(s);
            return false;
        }
    }
    if ((s->flags & (S_SHUT_PENDING | S_CLOSE_PENDING)) &&
        !(s->flags & S_NOTIFY_SENT)) {
        s->flags |= S_NOTIFY_SENT;
        int err = s->codec->close_notify(s->codec_st);
        if (err != 0) {
            tc__stream_fail_now(s, err);
            return false;
        }
        if (s->head != NULL) {
            tc__stream_start_writing(s);   /* the shutdown follows the alert */
            return false;
        }
    }
    return true;
}

/* The codec's handshake completed: send what waited for it, report it. */
static void
handshake_done(tc_stream_t *s)
{
    s->flags &= ~S_HANDSHAKE;
    ev_timer_stop(tc__stream_ev(s), &s->open_timer);
    int err = encode_waiting(s);
    if (err != 0) {
        tc__stream_fail_now(s, err);
        return;
    }
    tc_connect_cb cb = s->connect_cb;
    s->connect_cb = NULL;
    tc__stream_update_rio(s);
    if (cb != NULL) {
        cb(s, 0);
        if (!tc__stream_is_alive(s)) {
            return;
        }
    }
    if (s->head != NULL) {
        tc__stream_flush_queue(s);
    } else {
        tc__stream_queue_drained(s);   /* a shutdown or close meanwhile */
    }
}

/* Advance the handshake, then turn input into on_read calls while the user
 * reads.  Wire bytes are in the upper half of the loop's read buffer;
 * plaintext is decoded into its lower half (or the whole buffer when in is
 * NULL). */
void
tc__codec_pump(tc_stream_t *s, const char *in, size_t len)
{
    const tc__stream_codec_t *c = s->codec;
    void *st = s->codec_st;
    tc_loop_t *loop = s->h.loop;
    char *out = loop->read_buf;
    size_t cap = in != NULL ? loop->read_buf_size / 2 : loop->read_buf_size;
    if (len > 0) {
        c->input(st, in, len);
    }
    if (s->flags & S_HANDSHAKE) {
        int rc = c->handshake(st);
        if (rc < 0) {
            (void)tc__stream_send_queue(s);   /* the alert, if it fits */
            tc__stream_fail_now(s, rc);
            goto done;
        }
        if (s->head != NULL) {
            tc__stream_flush_queue(s);   /* the handshake's own records */
        }
        if (!tc__stream_is_alive(s)) {
            goto done;
        }
        if (rc == 0) {
            goto done;
        }
        handshake_done(s);
        if (!tc__stream_is_alive(s)) {
            goto done;
        }
    }
    size_t got = 0;
    ssize_t n = 0;
    while ((s->flags & S_READING) && tc__stream_is_alive(s)) {
        n = c->read(st, out + got, cap - got);
        if (n <= 0) {
            break;
        }
        got += (size_t)n;
        if (got == cap) {
            got = 0;
            s->cbs.on_read(s, out, cap);
        }
    }
    if (got > 0 && tc__stream_is_alive(s)) {
        s->cbs.on_read(s, out, got);
    }
    if (!tc__stream_is_alive(s)) {
        goto done;
    }
    if (n == TC_EOF) {
        /* While reading is paused the codec keeps the close message, and
         * has_pending() brings it back when reading resumes. */
        if (s->flags & S_READING) {
            tc__stream_peer_eof(s);
        }
    } else if (n < 0) {
        (void)tc__stream_send_queue(s);
        tc__stream_fail_now(s, (int)n);
        goto done;
    }
    if (tc__stream_is_alive(s) && s->head != NULL) {
        tc__stream_flush_queue(s);   /* what reads produced (key updates) */
    }
done:;
    int err = c->input_end(st, tc__stream_is_alive(s));
    if (!tc__stream_is_alive(s)) {
        return;
    }
    if (err != 0) {
        tc__stream_fail_now(s, err);
        return;
    }
    tc__stream_update_rio(s);
}

void
tc__codec_start(tc_stream_t *s)
{
    s->flags |= S_HANDSHAKE;
    s->flags &= ~S_PUMP_PENDING;
    tc__codec_pump(s, NULL, 0);
}

void
tc__codec_read_ready(tc_stream_t *s)
{
    tc_loop_t *loop = s->h.loop;
    size_t half = loop->read_buf_size / 2;
    char *in = loop->read_buf + half;
    ssize_t n = recv(s->fd, in, loop->read_buf_size - half, 0);
    if (n > 0) {
        tc__codec_pump(s, in, (size_t)n);
    } else {
        tc__stream_read_gave_nothing(s, n);
    }
}

int
tc__stream_set_codec(tc_stream_t *s, const tc__stream_codec_t *codec,
                     void *st, tc_connect_cb cb, uint64_t timeout_ms)
{
    int err = 0;
    if (s == NULL || codec == NULL || st == NULL ||
        tc__handle_closing(&s->h)) {
        err = -EINVAL;
    } else if (s->codec != NULL) {
        err = -EALREADY;
    } else if (s->flags & (S_FAILED | S_ERROR_PENDING | S_EOF |
                           S_SHUT_PENDING | S_CLOSE_PENDING)) {
        err = -EPIPE;
    } else if (((s->flags & S_CONNECTING) || s->connect_cb != NULL) &&
               cb != NULL) {
        err = -EINVAL;
    }
    if (err != 0) {
        if (codec != NULL && st != NULL) {
            codec->free(st);
        }
        return err;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    s->codec = codec;
    s->codec_st = st;
    /* A connect in progress (or still resolving a name) has its deadline
     * from tc__stream_connect_begin(), and it goes on over the handshake. */
    if (timeout_ms > 0 && !(s->flags & S_CONNECTING) &&
        !ev_is_active(&s->open_timer)) {
        tc__stream_arm_open_timer(s, timeout_ms);
    }
    if ((s->flags & S_CONNECTING) || s->connect_cb != NULL) {
        return 0;   /* the handshake starts once connected */
    }
    /* Connected: start from the loop, so that a client's first flight
     * and any failure are never reported inside this call. */
    s->connect_cb = cb;
    s->flags |= S_HANDSHAKE | S_PUMP_PENDING;
    tc__stream_update_rio(s);
    ev_feed_event(tc__stream_ev(s), &s->notify, EV_CUSTOM);
    return 0;
}

void *
tc__stream_codec_state(const tc_stream_t *s, const tc__stream_codec_t *codec)
{
    return s != NULL && s->codec == codec ? s->codec_st : NULL;
}

/* Queue plaintext (or a file range) behind the handshake or a file. */
static void
plain_append(tc_stream_t *s, chunk_t *c)
{
    c->next = NULL;
    if (s->ptail != NULL) {
        s->ptail->next = c;
    } else {
        s->phead = c;
    }
    s->ptail = c;
    s->queued += c->len;
}

/* Encode and send now once the handshake is over, else keep one copy of
 * the plaintext for then. */
int
tc__codec_writev(tc_stream_t *s, const struct iovec *iov, int iovcnt,
                 size_t total)
{
    if (!tc__codec_ready(s) || s->phead != NULL) {
        chunk_t *c = tc__stream_chunk_new(total, NULL, total, NULL, NULL,
                                          NULL);
        if (c == NULL) {
            return -ENOMEM;
        }
        size_t off = 0;
        for (int i = 0; i < iovcnt; i++) {
            if (iov[i].iov_len > 0) {
                memcpy(c->data + off, iov[i].iov_base, iov[i].iov_len);
                off += iov[i].iov_len;
            }
        }
        plain_append(s, c);
    } else {
        int err = s->codec->encode(s->codec_st, iov, iovcnt);
        if (err != 0) {
            tc__stream_fail_later(s, err);
            return err == -ENOMEM ? -ENOMEM : -EPIPE;
        }
        tc__stream_flush_user(s);
    }
    tc__stream_update_flow(s);
    return 0;
}

int
tc__codec_write_ref(tc_stream_t *s, const void *buf, size_t len,
                    tc_release_cb release, void *ctx)
{
    if (tc__codec_ready(s) && s->phead == NULL) {
        /* Encoding copies: the buffer is free as soon as it is done. */
        struct iovec iov = {.iov_base = (void *)buf, .iov_len = len};
        int err = tc__codec_writev(s, &iov, 1, len);
        if (release != NULL) {
            release(ctx, buf, err);
        }
        return err;
    }
    chunk_t *c = tc__stream_chunk_new(0, buf, len, release, ctx, buf);
    if (c == NULL) {
        if (release != NULL) {
            release(ctx, buf, -ENOMEM);
        }
        return -ENOMEM;
    }
    plain_append(s, c);
    tc__stream_update_flow(s);
    return 0;
}

void
tc__codec_sendfile(tc_stream_t *s, chunk_t *c)
{
    bool idle = tc__codec_ready(s) && s->head == NULL && s->phead == NULL;
    plain_append(s, c);
    if (!idle) {
        return;
    }
    /* Nothing to wait for: start reading the file now. */
    int err = encode_waiting(s);
    if (err != 0) {
        tc__stream_fail_later(s, err);
        return;
    }
    tc__stream_flush_user(s);
    if (s->head == NULL && s->phead != NULL &&
        !(s->flags & S_ERROR_PENDING)) {
        /* The socket took it all: go on from the loop, where
         * tc__codec_drained() encodes the next piece. */
        tc__stream_start_writing(s);
    }
}

int
tc__codec_shutdown(tc_stream_t *s)
{
    /* close_notify first; without a handshake yet, handshake_done() sends
     * it, and with a queue, tc__codec_drained(). */
    if (!tc__codec_ready(s) || s->head != NULL || s->phead != NULL) {
        return 0;
    }
    s->flags |= S_NOTIFY_SENT;
    int err = s->codec->close_notify(s->codec_st);
    if (err == 0) {
        tc__stream_flush_user(s);
    } else {
        tc__stream_fail_later(s, err);
    }
    if (s->flags & S_ERROR_PENDING) {
        return s->error;
    }
    if (s->head != NULL) {
        return 0;   /* the stream shuts down after the alert */
    }
    return 1;
}

bool
tc__codec_close(tc_stream_t *s)
{
    if (tc__codec_ready(s) && s->phead == NULL &&
        !(s->flags & (S_NOTIFY_SENT | S_FAILED | S_ERROR_PENDING))) {
        /* Say goodbye behind the queue (or at once) with close_notify. */
        s->flags |= S_NOTIFY_SENT;
        if (s->codec->close_notify(s->codec_st) == 0 && s->head != NULL) {
            tc__stream_flush_user(s);
        }
    }
    if (!tc__codec_ready(s) && s->phead == NULL) {
        return true;   /* nothing of the user's to wait for */
    }
    return s->head == NULL && s->phead == NULL;
}
