/* The stream's layout and the interface between its two halves: the plain
 * stream (stream.c: the socket, the write queue, flow control, file ranges,
 * failures) and the codec driver (tls_stream.c: the handshake, the
 * encode/decode pump, the plaintext queue, close_notify and the linger of a
 * graceful close).  Only those two files include this header; tcp.c,
 * unix.c, server.c and process.c see the stream through internal.h, the
 * codec itself (TLS, tls.c) through tc__stream_codec_t.  Everything here
 * runs on the loop thread. */
#ifndef TWINCORE_STREAM_INTERNAL_H
#define TWINCORE_STREAM_INTERNAL_H

#include "internal.h"

enum {
    S_READING = 1u << 0,        /* the user wants on_read calls */
    S_CONNECTING = 1u << 1,
    S_EOF = 1u << 2,            /* peer shut down its write side */
    S_SHUT_PENDING = 1u << 3,   /* shutdown(SHUT_WR) once flushed */
    S_SHUT_DONE = 1u << 4,
    S_FAILED = 1u << 5,
    S_CLOSE_PENDING = 1u << 6,  /* tc_stream_close() waits for the flush */
    S_FLOW_PAUSED = 1u << 7,
    S_UNIX = 1u << 8,
    S_ERROR_PENDING = 1u << 9,  /* on_error to deliver from the loop */
    S_HANDSHAKE = 1u << 10,     /* codec handshake not yet complete */
    S_NOTIFY_SENT = 1u << 11,   /* codec close message emitted */
    S_PUMP_PENDING = 1u << 12,  /* run the codec from the loop (notify) */
    S_LINGER = 1u << 13,        /* closing: waiting for the peer's EOF */
};

/* A piece of the write queue (or of the codec's plaintext queue): a copy
 * (cap > 0, the bytes in data[]), memory lent by the user (cap 0, given
 * back through release), or a file range (release is
 * tc__stream_file_release, the file_range_t in data[]). */
typedef struct chunk {
    struct chunk *next;
    const char *base;       /* first unsent byte */
    size_t len;             /* unsent bytes */
    size_t cap;             /* copy chunks: bytes of data[]; refs: 0 */
    tc_release_cb release;  /* refs only */
    void *ctx;
    const void *ref_buf;    /* refs: what the release callback gets */
    char data[];
} chunk_t;

struct tc_stream_s {
    tc_handle_t h;
    int fd;
    unsigned flags;
    int error;
    ev_io rio, wio;
    ev_idle notify;         /* never started: fed to report late errors */
    /* The opening's deadline: the connect (S_CONNECTING) and, with a
     * codec, its handshake (S_HANDSHAKE) after it, one timeout for both;
     * or a handshake alone on a stream that was connected already. */
    ev_timer open_timer;
    /* A codec's graceful close waits this long for the peer's EOF
     * (S_LINGER, tls_stream.c). */
    ev_timer linger_timer;
    tc_stream_callbacks_t cbs;
    tc_connect_cb connect_cb;
    tc_close_cb graceful_cb;
    chunk_t *head, *tail;   /* the write queue: wire bytes */
    size_t queued;          /* unsent wire bytes + plaintext in phead */
    size_t low_water, high_water;
    chunk_t *spare;         /* a drained copy chunk kept for reuse */
    chunk_t *fdone;         /* sent file ranges to report from the loop */
    /* The codec (tls_stream.c); NULL: bytes go as they are. */
    const tc__stream_codec_t *codec;
    void *codec_st;
    chunk_t *phead, *ptail; /* plaintext waiting for the handshake */
};

/* A file range in a chunk's data[] (tc_stream_sendfile). */
typedef struct file_range {
    tc_stream_t *s;
    int fd;
    bool copy;              /* sendfile(2) refused: read and send */
    uint64_t off;           /* next byte of the file */
    uint64_t left;          /* bytes still to send */
    uint64_t sent;
    tc_sendfile_cb cb;
    void *ctx;
} file_range_t;

static inline struct ev_loop *
tc__stream_ev(const tc_stream_t *s)
{
    return s->h.loop->ev;
}

static inline bool
tc__stream_is_alive(const tc_stream_t *s)
{
    return !tc__handle_closing(&s->h) && !(s->flags & S_FAILED);
}

static inline void
tc__stream_start_writing(tc_stream_t *s)
{
    if (!ev_is_active(&s->wio)) {
        tc__io_start(tc__stream_ev(s), &s->wio);
    }
}

/* ---- stream.c, for the codec driver ---- */

/* A new chunk, not linked, with room bytes of data[]: a copy when release
 * is NULL (cap = room, base = data unless given; the caller fills it), else
 * a loan from base (cap 0) that release(ctx, ref_buf, status) gives back.
 * A loan without a release callback passes room 0. */
chunk_t *tc__stream_chunk_new(size_t room, const char *base, size_t len,
                              tc_release_cb release, void *ctx,
                              const void *ref_buf);
void tc__stream_release_chunk(chunk_t *c, int status);
void tc__stream_file_release(void *ctx, const void *buf, int status);
static inline bool
tc__stream_is_file(const chunk_t *c)
{
    return c->release == tc__stream_file_release;
}
/* Read the next piece of f: bytes read (0 at the end of the file) or a
 * negative code. */
ssize_t tc__stream_file_read(file_range_t *f, char *buf, size_t cap);
/* A finished range: off the queue, reported from the loop. */
void tc__stream_file_finished(tc_stream_t *s, chunk_t *c);

/* Record a failure once and report it now (inside a loop callback). */
void tc__stream_fail_now(tc_stream_t *s, int err);
/* Record a failure found inside a user's call; on_error runs from the
 * loop, never re-entrantly. */
void tc__stream_fail_later(tc_stream_t *s, int err);
/* Send what the socket takes: 0 or a negative code (queue left as is). */
int tc__stream_send_queue(tc_stream_t *s);
/* Send, then do what waited for the drain (inside a loop callback). */
void tc__stream_flush_queue(tc_stream_t *s);
/* Send from inside a user's call: failures are reported from the loop. */
void tc__stream_flush_user(tc_stream_t *s);
/* The write queue drained: the codec's turn, then shutdown or close. */
void tc__stream_queue_drained(tc_stream_t *s);
void tc__stream_update_rio(tc_stream_t *s);
void tc__stream_update_flow(tc_stream_t *s);
/* The peer shut down its write side (a clean end for a codec). */
void tc__stream_peer_eof(tc_stream_t *s);
/* recv() returned n <= 0: the peer's EOF (which a codec may call a
 * failure, e.g. TLS without close_notify), an error, or nothing yet. */
void tc__stream_read_gave_nothing(tc_stream_t *s, ssize_t n);
/* Start the opening's deadline, counted from now. */
void tc__stream_arm_open_timer(tc_stream_t *s, uint64_t timeout_ms);

/* ---- tls_stream.c, for the plain stream ---- */

/* A codec stream whose handshake is over and reported. */
static inline bool
tc__codec_ready(const tc_stream_t *s)
{
    return !(s->flags & (S_CONNECTING | S_HANDSHAKE)) && s->connect_cb == NULL;
}

/* Start the handshake of a connected stream (from the loop). */
void tc__codec_start(tc_stream_t *s);
/* Run the codec over its buffered input plus in (len may be 0).  The
 * stream may be closed or failed when it returns. */
void tc__codec_pump(tc_stream_t *s, const char *in, size_t len);
/* The socket is readable: receive wire bytes and pump them. */
void tc__codec_read_ready(tc_stream_t *s);
/* The wire queue drained: encode what waits, emit close_notify when a
 * shutdown or close asks for it.  false when the stream must not go on to
 * its own shutdown or close (more to send, or failed). */
bool tc__codec_drained(tc_stream_t *s);
/* The user's writes on a codec stream (tc_stream_writev, _write_ref) and
 * file ranges (tc_stream_sendfile; c is the range's chunk). */
int tc__codec_writev(tc_stream_t *s, const struct iovec *iov, int iovcnt,
                     size_t total);
int tc__codec_write_ref(tc_stream_t *s, const void *buf, size_t len,
                        tc_release_cb release, void *ctx);
void tc__codec_sendfile(tc_stream_t *s, chunk_t *c);
/* tc_stream_shutdown on a codec stream: emit close_notify when nothing
 * waits.  Returns 1 when the plain shutdown follows now, else what
 * tc_stream_shutdown returns. */
int tc__codec_shutdown(tc_stream_t *s);
/* tc_stream_close on a codec stream, before the plain close: emit
 * close_notify behind the queue.  Returns whether nothing of the user's
 * waits to be sent. */
bool tc__codec_close(tc_stream_t *s);
/* The end of a graceful close: shut down the write side, then drop input
 * until the peer's EOF, for a bounded time. */
int tc__codec_linger(tc_stream_t *s, tc_close_cb cb);
void tc__codec_linger_read(tc_stream_t *s);

#endif
