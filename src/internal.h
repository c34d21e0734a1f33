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
#include <sys/uio.h>

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
    TC__H_ACTIVE = 1u << 0,   /* started: counts for tc_handle_is_active */
    TC__H_CLOSING = 1u << 1,  /* tc_close called, close_cb not yet run */
};

/* Per-type hooks: close_impl stops watchers, fails pending work and closes
 * descriptors at tc_close() time; free_impl releases type-owned memory
 * after the user's close callback.  */
typedef struct tc__handle_vtable {
    void (*close_impl)(tc_handle_t *h);
    void (*free_impl)(tc_handle_t *h);
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
};

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
    ev_check check;                /* runs call-soon, closes, hook */
    ev_prepare prepare;            /* re-evaluates soon_idle */

    ev_async wakeup;               /* shared by all cross-thread calls */
    pthread_mutex_t xlock;         /* guards: xcalls, xclosed */
    tc__callvec_t xcalls, xspare;
    bool xclosed;

    tc_call_cb after_iteration;
    void *after_iteration_arg;

    tc_loop_stats_t stats;
    char *read_buf;                /* shared by all streams' reads */
    size_t read_buf_size;

    tc_handle_t *timers_active;    /* unused; timers walk handles */
    struct tc_server_s *starved;   /* servers waiting for descriptors */
};

/* Register a freshly allocated handle (zeroed by the caller). */
void tc__handle_init(tc_loop_t *loop, tc_handle_t *h, tc_handle_type_t type,
                     const tc__handle_vtable_t *vt, void *data);
void tc__handle_start(tc_handle_t *h);
void tc__handle_stop(tc_handle_t *h);
static inline bool
tc__handle_closing(const tc_handle_t *h)
{
    return (h->flags & TC__H_CLOSING) != 0;
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
/* A descriptor was closed: starved servers may accept again.  */
void tc__loop_fd_released(tc_loop_t *loop);

/* Stream internals shared with tcp.c / unix.c / server.c. */
int tc__stream_new(tc_loop_t *loop, int fd, bool is_unix, bool connecting,
                   void *data, tc_stream_t **out);
void tc__stream_connect_begin(tc_stream_t *s, tc_connect_cb cb,
                              uint64_t timeout_ms);

/* Server internals shared with tcp.c / unix.c. */
int tc__server_new(tc_loop_t *loop, int fd, bool is_unix, bool nodelay,
                   tc_connection_cb cb, void *data, tc_server_t **out);
void tc__server_set_unlink_path(tc_server_t *s, const char *path);
void tc__server_retry_starved(tc_loop_t *loop);

#endif
