/* The buffered stream transport shared by TCP and Unix connections, child
 * processes' pipes and adopted sockets (tc_stream_open).
 *
 * Reading: tc_stream_read_start() delivers bytes to on_read until
 * tc_stream_read_stop() (pause) or EOF.  Writing: tc_stream_write() sends at
 * once what the socket takes and queues the rest, in order; the queue is
 * flushed with sendmsg(), as writev() but without SIGPIPE.  Watermarks on
 * the queue's size call on_flow with paused = true (above high) and false
 * (back at or under low).  A connection failure (reset, broken pipe...) is
 * reported once, through on_error, and the stream then neither reads nor
 * writes: close it. */
#ifndef TWINCORE_STREAM_H
#define TWINCORE_STREAM_H

#include <sys/socket.h>
#include <sys/uio.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* buf is borrowed for the call. */
typedef void (*tc_stream_read_cb)(tc_stream_t *s, const char *buf,
                                  size_t len);
/* The peer shut down its write side; reading has stopped.  Without an
 * on_eof the stream closes itself after flushing what is queued, as
 * tc_stream_close(s, NULL) does: the handle is then freed, so an owner that
 * keeps a pointer to it or hangs data on it sets on_eof. */
typedef void (*tc_stream_eof_cb)(tc_stream_t *s);
/* The connection failed; status is a negative code.  Called at most once. */
typedef void (*tc_stream_error_cb)(tc_stream_t *s, int status);
/* Backpressure: paused when the write queue rose above the high watermark,
 * !paused when it drained to the low watermark. */
typedef void (*tc_stream_flow_cb)(tc_stream_t *s, bool paused);
/* Outcome of a connect: 0, or a negative code (then close the stream). */
typedef void (*tc_connect_cb)(tc_stream_t *s, int status);
/* Memory lent by tc_stream_write_ref() is no longer needed.  status is 0
 * once sent, or the error that discarded it (-ECANCELED on close). */
typedef void (*tc_release_cb)(void *ctx, const void *buf, int status);

typedef struct tc_stream_callbacks {
    tc_stream_read_cb on_read;
    tc_stream_eof_cb on_eof;       /* may be NULL */
    tc_stream_error_cb on_error;   /* may be NULL */
    tc_stream_flow_cb on_flow;     /* may be NULL */
} tc_stream_callbacks_t;

#define TC_STREAM_DEFAULT_HIGH_WATER (64u * 1024u)

/* Copy cbs into the stream.  Returns 0 or -EINVAL. */
TC_EXTERN int tc_stream_set_callbacks(tc_stream_t *s,
                                      const tc_stream_callbacks_t *cbs);
/* Start or resume reading (on a connecting stream: once it connects).
 * Returns 0, -EINVAL without on_read, or -EPIPE after EOF or failure. */
TC_EXTERN int tc_stream_read_start(tc_stream_t *s);
TC_EXTERN int tc_stream_read_stop(tc_stream_t *s);
TC_EXTERN bool tc_stream_is_reading(const tc_stream_t *s);

/* Queue len bytes of buf after any data already queued; copies what cannot
 * be written at once, the caller keeps buf.  Returns 0, -EPIPE after
 * shutdown, close or failure, or -ENOMEM. */
TC_EXTERN int tc_stream_write(tc_stream_t *s, const void *buf, size_t len);
/* The same for several buffers, sent as one ordered unit. */
TC_EXTERN int tc_stream_writev(tc_stream_t *s, const struct iovec *iov,
                               int iovcnt);
/* Lend buf without a copy; release(ctx, buf, status) runs exactly once,
 * when it is sent or discarded (also when this call fails). */
TC_EXTERN int tc_stream_write_ref(tc_stream_t *s, const void *buf,
                                  size_t len, tc_release_cb release,
                                  void *ctx);
/* A file range queued by tc_stream_sendfile() is done: status 0 with sent
 * bytes (fewer than asked when the file ended first), or the error that
 * discarded it (-ECANCELED on close) with what went out before. */
typedef void (*tc_sendfile_cb)(tc_stream_t *s, void *ctx, int status,
                               uint64_t sent);
/* Queue count bytes of the regular file fd from offset (count 0: up to its
 * end as of this call) after any data already queued; later writes go out
 * after it.  A plain stream sends it with sendfile(2), no copy (falling
 * back to reads when the file system refuses); a codec stream (TLS) reads
 * and encodes it a piece at a time as the socket drains.  The file's bytes
 * take no memory, so they do not count for the watermarks.  fd is
 * borrowed until cb, and its file position is not used or moved.  cb (may
 * be NULL) runs once from the loop, never inside this call.  Returns 0,
 * -EINVAL (not a regular file or block device), -EPIPE after shutdown,
 * close or failure, -ENOMEM, or fstat's error; then cb never runs. */
TC_EXTERN int tc_stream_sendfile(tc_stream_t *s, int fd, uint64_t offset,
                                 uint64_t count, tc_sendfile_cb cb,
                                 void *ctx);
/* Bytes queued and not yet taken by the kernel. */
TC_EXTERN size_t tc_stream_write_queue_size(const tc_stream_t *s);
/* Set the watermarks: low <= high.  high = 0 pauses on any queued byte.
 * Returns 0 or -EINVAL.  on_flow may run before this returns. */
TC_EXTERN int tc_stream_set_watermarks(tc_stream_t *s, size_t low,
                                       size_t high);
TC_EXTERN void tc_stream_get_watermarks(const tc_stream_t *s, size_t *low,
                                        size_t *high);

/* Half-close: shut down the write side once the queue is flushed; reading
 * goes on.  Further writes return -EPIPE.  Returns 0, -EINVAL (NULL or
 * closing), -ENOTCONN (failed), or the code of a failure met at once (also
 * reported through on_error). */
TC_EXTERN int tc_stream_shutdown(tc_stream_t *s);
/* Graceful close: flush the queue, then close; cb runs when closed (also
 * when the flush fails).  A TLS stream then shuts down its write side and
 * waits for the peer's EOF, for 2 s at most, before it closes (tls.h).
 * Returns 0, -EINVAL or -EALREADY.  tc_close() on a stream discards the
 * queue. */
TC_EXTERN int tc_stream_close(tc_stream_t *s, tc_close_cb cb);
/* Abort: discard the queue and reset the connection (RST for TCP). */
TC_EXTERN int tc_stream_abort(tc_stream_t *s, tc_close_cb cb);

TC_EXTERN int tc_stream_fd(const tc_stream_t *s);
TC_EXTERN bool tc_stream_is_unix(const tc_stream_t *s);
/* Addresses; *len is in/out as for getsockname(2).  Returns 0 or -errno. */
TC_EXTERN int tc_stream_peername(const tc_stream_t *s, struct sockaddr *sa,
                                 socklen_t *len);
TC_EXTERN int tc_stream_sockname(const tc_stream_t *s, struct sockaddr *sa,
                                 socklen_t *len);
/* TCP options; -ENOTSUP on Unix streams. */
TC_EXTERN int tc_stream_set_nodelay(tc_stream_t *s, bool on);
TC_EXTERN int tc_stream_set_keepalive(tc_stream_t *s, bool on,
                                      unsigned idle_s);

/* Adopt a connected, stream-type socket (made non-blocking and
 * close-on-exec).  The stream owns fd from then on, also on failure. */
TC_EXTERN int tc_stream_open(tc_loop_t *loop, int fd, void *data,
                             tc_stream_t **out);

#ifdef __cplusplus
}
#endif
#endif
