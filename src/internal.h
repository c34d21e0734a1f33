/* Private structures and tc__ functions shared between src/ files.  Nothing
 * here is part of the public API; layouts change freely. */
#ifndef TWINCORE_INTERNAL_H
#define TWINCORE_INTERNAL_H

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>

#include <ev.h>

#include "twincore.h"

#ifdef NDEBUG
#define TC__ASSERT_LOOP_THREAD(loop) ((void)(loop))
#else
#define TC__ASSERT_LOOP_THREAD(loop)                                        \
    assert(pthread_equal((loop)->owner, pthread_self()) &&                  \
           "twincore: loop object used from a thread that does not own it")
#endif

#define TC__CONTAINER_OF(ptr, type, member)                                 \
    ((type *)(void *)((char *)(ptr) - offsetof(type, member)))

enum {
    TC__H_CLOSING = 1u << 1,  /* tc_close called, close_cb not yet run */
};

/* Per-type hooks: close_impl stops watchers and closes descriptors at
 * tc_close() time; finish_impl, on a later iteration and before the user's
 * close callback, completes pending requests with -ECANCELED and frees what
 * the type owns.  The handle itself is freed after the close callback. */
typedef struct tc__handle_vtable {
    void (*close_impl)(tc_handle_t *h);
    void (*finish_impl)(tc_handle_t *h);   /* may be NULL */
    bool (*is_active)(const tc_handle_t *h);
    /* Seconds until the handle's earliest timer, or < 0 for none. */
    double (*next_timeout)(const tc_handle_t *h);  /* may be NULL */
} tc__handle_vtable_t;

struct tc_handle_s {
    tc_loop_t *loop;
    const tc__handle_vtable_t *vt;
    tc_handle_type_t type;
    unsigned flags;
    void *data;
    tc_close_cb close_cb;
    tc_handle_t *prev, *next;     /* loop's list of all handles */
    tc_handle_t *next_closing;    /* loop's list of pending close cbs */
    uint64_t closed_at_iteration;
    /* Called first thing in tc_close(), for work another file keeps on the
     * handle's behalf (a name lookup in tcp.c). */
    void (*close_hook)(void *arg);
    void *close_hook_arg;
};

#define TC__SIGNAL_WORDS 2   /* bits for signal numbers below 128 */

typedef struct tc__call {
    tc_call_cb fn;
    void *arg;
} tc__call_t;

/* A growable FIFO of calls; the producer side appends, the consumer swaps
 * the whole vector out and runs it. */
typedef struct tc__callvec {
    tc__call_t *items;
    size_t len, cap;
} tc__callvec_t;

struct tc_loop_s {
    struct ev_loop *ev;
    pthread_t owner;
    void *data;
    bool running;
    bool stop_requested;

    tc_handle_t *handles;          /* all handles, newest first */
    size_t open_handles;           /* not closing */
    tc_handle_t *closing_head, *closing_tail;

    tc__callvec_t soon, soon_spare;
    ev_idle soon_idle;             /* keeps epoll from blocking */
    ev_prepare prepare;            /* re-evaluates soon_idle */
    ev_timer bound;                /* tc_loop_run_timeout()'s bound */
    /* timer.c: armed timers by due time, and the timerfd that ends the
     * poll when the earliest is due (-1: none; timer_fd_due -1: idle). */
    struct tc_timer_s **timer_heap;
    size_t timer_heap_len, timer_heap_cap;
    int timer_fd;
    ev_io timer_io;
    double timer_fd_due;
    bool in_prepare_phase;         /* invoke_pending: no after-phase */
    bool fed_ran;                  /* fed events ran before the poll */

    /* Cross-thread calls wake the loop through an eventfd of our own, not
     * ev_async: libev writes an async's fd only while blocked inside
     * ev_run(), and an embedding host polls the backend fd itself. */
    int wakeup_fd;
    ev_io wakeup_io;
    pthread_mutex_t xlock;         /* guards: xcalls, xclosed */
    tc__callvec_t xcalls, xspare;
    bool xclosed;
    /* The loop waits for cross-thread calls by polling, not in epoll:
     * producers skip the eventfd write (guards: xlock).  xposted counts
     * pushes so the spinner can watch without the lock. */
    bool xspinning;
    atomic_uint xposted;
    /* The pre-poll wait for pool completions (loop.c): its bound, 0 when
     * the process may use one CPU only, and its back-off after misses. */
    uint64_t spin_ns;
    unsigned spin_misses, spin_skip;

    tc_call_cb after_iteration;
    void *after_iteration_arg;

    tc_loop_stats_t stats;
    char *read_buf;                /* shared by all streams' reads */
    size_t read_buf_size;

    bool fd_changes;               /* io watchers changed since prepare */
    struct tc_signal_s *signals;   /* started signal handles */
    _Atomic uint64_t signals_pending[TC__SIGNAL_WORDS];  /* set in handler */
    struct tc_server_s *starved;   /* servers waiting for descriptors */
    struct tc_poll_s *poll_changed;  /* poll handles to check (poll.c) */
    bool poll_fed;                 /* an EV_ERROR fed this iteration */
    double now_mono;               /* cached, seconds */
    bool polled;                   /* now_mono is due for a refresh */
    int backend_fd;                /* -2: not looked up yet */
    unsigned extra_refs;           /* tc__loop_ref() count */
    /* tc_pool_t used for host names; set from any thread. */
    _Atomic(void *) resolver_pool;
    /* pool.c: work completed for this loop, a lock-free stack drained by
     * one tc_loop_call_from_thread per batch; and the count of work not
     * yet delivered (tc_loop_close must refuse while it is not 0). */
    _Atomic(struct tc_work_s *) pool_done;
    atomic_size_t pool_pending;
};

/* Initialise a mutex that is only ever held for a few instructions and
 * that two threads on different CPUs take in turn: on glibc it spins
 * briefly before it sleeps, so a waiter does not pay a futex sleep and
 * wake-up (tens of microseconds on some machines) for a wait shorter
 * than that.  Returns 0 or a negated errno. */
int tc__mutex_init_short(pthread_mutex_t *m);
/* The CPUs this process may run on (affinity), at least 1 (loop.c).
 * Thread: any. */
unsigned tc__usable_cpus(void);
/* The loop's precise timer wake-up (timer.c): set up with the loop, torn
 * down with it, and pointed at the earliest timer before each poll.
 * Thread: loop. */
void tc__timers_init(tc_loop_t *loop);
void tc__timers_fini(tc_loop_t *loop);
void tc__timers_before_poll(tc_loop_t *loop);
/* Run queued cross-thread calls now (loop.c).  Thread: loop. */
void tc__loop_run_thread_calls(tc_loop_t *loop);
/* Before libev hands changed poll watches to epoll_ctl, stop those whose
 * descriptor is closed and report -EBADF (poll.c): Debian's libev asserts
 * on EBADF there.  Returns true when it fed such an event (the poll must
 * then not block).  Thread: loop. */
bool tc__poll_check_changed(tc_loop_t *loop);
/* Call the handles of signals that arrived (signal.c).  Thread: loop. */
void tc__signal_dispatch(tc_loop_t *loop);

/* Keep tc_loop_run(TC_RUN_DEFAULT) from returning while the caller has
 * work outstanding (pool tasks, name lookups).  Thread: loop. */
void tc__loop_ref(tc_loop_t *loop);
void tc__loop_unref(tc_loop_t *loop);


/* Resolve host:port to its first stream address on the loop's resolver
 * pool (resolve.c).  cb runs once on the loop thread with 0 and the
 * address (borrowed for the call), or a negative code; never when this
 * returns an error: -ENOTSUP without a resolver pool, -EINVAL, -ENOMEM,
 * -ESHUTDOWN.  *out (may be NULL) is for tc__resolve_cancel(), valid until
 * cb runs.  Work outstanding keeps the loop running. */
typedef struct tc__resolve_req tc__resolve_req_t;
typedef void (*tc__resolve_cb)(void *arg, int status,
                               const struct sockaddr *sa, socklen_t len);
int tc__resolve_one(tc_loop_t *loop, const char *host, int port,
                    tc__resolve_cb cb, void *arg, tc__resolve_req_t **out);
/* Forget a lookup: its cb is never called.  Thread: loop. */
void tc__resolve_cancel(tc__resolve_req_t *req);

/* libev applies io watcher changes to epoll only inside ev_run(); an
 * embedding host must not block on the backend fd while some are pending,
 * so every start/stop goes through these and marks the loop. */
static inline void
tc__io_start(struct ev_loop *ev, ev_io *w)
{
    if (!ev_is_active(w)) {
        ((tc_loop_t *)ev_userdata(ev))->fd_changes = true;
        ev_io_start(ev, w);
    }
}

static inline void
tc__io_stop(struct ev_loop *ev, ev_io *w)
{
    if (ev_is_active(w)) {
        ((tc_loop_t *)ev_userdata(ev))->fd_changes = true;
    }
    ev_io_stop(ev, w);   /* also drops a pending event */
}

/* Register a freshly allocated handle (zeroed by the caller). */
void tc__handle_init(tc_loop_t *loop, tc_handle_t *h, tc_handle_type_t type,
                     const tc__handle_vtable_t *vt, void *data);
/* Unlink, finish, call back and free one closing handle. */
void tc__handle_finish_close(tc_handle_t *h);
static inline bool
tc__handle_closing(const tc_handle_t *h)
{
    return (h->flags & TC__H_CLOSING) != 0;
}

/* CLOCK_MONOTONIC in nanoseconds.  Thread: any. */
static inline uint64_t
tc__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Negated errno of the last failed call (never 0). */
static inline int
tc__neg_errno(void)
{
    return errno > 0 ? -errno : -EIO;
}

int tc__callvec_push(tc__callvec_t *v, tc_call_cb fn, void *arg);

/* Descriptor helpers (net.c). */
int tc__set_nonblock_cloexec(int fd);
int tc__socket(int domain, int type);
/* A descriptor was closed: starved servers may accept again (server.c). */
void tc__loop_fd_released(tc_loop_t *loop);

/* Stream internals shared with tcp.c / unix.c / server.c / process.c; the
 * stream's layout is in stream_internal.h, for stream.c and the codec
 * driver (tls_stream.c) only. */
int tc__stream_new(tc_loop_t *loop, int fd, bool is_unix, bool connecting,
                   void *data, tc_stream_t **out);
void tc__stream_connect_begin(tc_stream_t *s, tc_connect_cb cb,
                              uint64_t timeout_ms);

/* A codec is a filter inside a stream (TLS, tls.c): the socket carries its
 * wire format, the user reads and writes plaintext, and everything else of
 * the stream (queue, watermarks, half-close, pause, close) stays the same.
 * The codec driver (tls_stream.c) calls these on the loop thread; the codec
 * hands wire bytes to the write queue with tc__stream_emit() and reads wire
 * bytes from what input() lent it.  Codes are 0 or negative (TC_ETLS_*,
 * -ENOMEM). */
typedef struct tc__stream_codec {
    /* Advance the handshake: 1 done, 0 needs more input, or a code. */
    int (*handshake)(void *st);
    /* Plaintext into buf: bytes (> 0), 0 when more input is needed, TC_EOF
     * after the peer's close message, or a code. */
    ssize_t (*read)(void *st, char *buf, size_t cap);
    /* Wire bytes from the socket, lent until input_end(). */
    void (*input)(void *st, const char *buf, size_t len);
    /* Forget the lent bytes, copying those not yet read when keep (then
     * 0 or -ENOMEM). */
    int (*input_end)(void *st, bool keep);
    /* Input is buffered that read() can use without the socket. */
    bool (*has_pending)(void *st);
    /* Turn plaintext into emitted wire bytes: 0 or a code. */
    int (*encode)(void *st, const struct iovec *iov, int iovcnt);
    /* Emit the close message (close_notify): 0 or a code. */
    int (*close_notify)(void *st);
    /* The socket reached EOF: 0 when the peer closed cleanly before, else
     * the code to report (TC_ETLS_NO_CLOSE_NOTIFY). */
    int (*eof_status)(void *st);
    void (*free)(void *st);
} tc__stream_codec_t;

/* Put a codec on a stream (tls_stream.c); the stream owns st from then on
 * (also on failure: codec->free).  On a stream whose connect is still
 * pending the handshake starts once connected, that connect callback
 * reports its outcome (cb must be NULL) and the connect's timeout covers
 * it.  On a
 * connected stream the handshake starts on the next iteration; cb (may be
 * NULL) runs once with its outcome, else a failure goes to on_error;
 * timeout_ms (0: none) bounds it with -ETIMEDOUT.  Returns 0, -EINVAL,
 * -EALREADY (a codec is set) or -EPIPE (closed, failed, EOF). */
int tc__stream_set_codec(tc_stream_t *s, const tc__stream_codec_t *codec,
                         void *st, tc_connect_cb cb, uint64_t timeout_ms);
/* The codec state when s carries this codec, else NULL. */
void *tc__stream_codec_state(const tc_stream_t *s,
                             const tc__stream_codec_t *codec);
/* Append wire bytes to the write queue (copied); the stream sends them
 * after what is queued.  Returns 0 or -ENOMEM. */
int tc__stream_emit(tc_stream_t *s, const void *buf, size_t len);

/* Server internals shared with tcp.c / unix.c. */
int tc__server_new(tc_loop_t *loop, int fd, bool is_unix, bool nodelay,
                   tc_connection_cb cb, void *data, tc_server_t **out);
/* Unlink path at close if it is still the file (dev, ino). */
void tc__server_set_unlink_path(tc_server_t *s, const char *path, dev_t dev,
                                ino_t ino);
/* Unlink path only if it is the file (dev, ino) (unix.c). */
void tc__unix_unlink_own(const char *path, dev_t dev, ino_t ino);

#endif
