/* Watching a descriptor twincore does not own: readable and/or writable,
 * level-triggered, for code that does its own IO (a host's sockets, pipes,
 * eventfds, pidfds, a library's descriptors). */
#ifndef TWINCORE_POLL_H
#define TWINCORE_POLL_H

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    TC_POLL_READABLE = 1,
    TC_POLL_WRITABLE = 2,
};

/* status 0 and events the TC_POLL_* bits that are ready (a subset of those
 * watched; readable also at EOF or on an error condition of the file); or
 * status < 0 (-EBADF: the descriptor was found closed, e.g. closed after
 * tc_poll_start() before the loop applied the watch) with events 0, after
 * which the handle is stopped. */
typedef void (*tc_poll_cb)(tc_poll_t *poll, int status, int events);

/* Allocate a stopped watcher for fd, which stays the caller's: twincore
 * never reads, writes or closes it.  Returns 0, -EINVAL, -EBADF (fd is not
 * an open descriptor) or -ENOMEM. */
TC_EXTERN int tc_poll_new(tc_loop_t *loop, int fd, void *data,
                          tc_poll_t **out);

/* Watch for events (TC_POLL_* bits, at least one) and call cb while they
 * are ready, once per iteration.  Starting a started watcher changes its
 * events and callback.  Returns 0, -EINVAL, or -EBADF when fd is closed
 * (the watcher is then stopped).  Stop (or close) the watcher before
 * closing fd: epoll forgets a closed descriptor silently (no callback, no
 * spin), and a number reused for another file would be watched in its
 * stead. */
TC_EXTERN int tc_poll_start(tc_poll_t *poll, int events, tc_poll_cb cb);
/* Stop watching; harmless when stopped.  An event of this iteration not
 * yet delivered is dropped.  Returns 0 or -EINVAL. */
TC_EXTERN int tc_poll_stop(tc_poll_t *poll);
/* The events watched (0 when stopped), and the descriptor. */
TC_EXTERN int tc_poll_events(const tc_poll_t *poll);
TC_EXTERN int tc_poll_fd(const tc_poll_t *poll);

#ifdef __cplusplus
}
#endif
#endif
