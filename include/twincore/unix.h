/* Unix domain stream sockets. */
#ifndef TWINCORE_UNIX_H
#define TWINCORE_UNIX_H

#include "server.h"
#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_unix_listen_opts {
    int backlog;            /* 0: SOMAXCONN */
    /* Replace a stale socket file: one nothing listens on (a connect to it
     * is refused).  A live one is never replaced: -EADDRINUSE.  Other
     * files are never removed. */
    bool unlink_existing;
    /* At close, remove the socket file if it is still the one this
     * listener made (same device and inode), never one that another
     * server bound at the path since. */
    bool unlink_on_close;
} tc_unix_listen_opts_t;

/* Listen on path (at most 107 bytes; "@name" for Linux's abstract
 * namespace, where the unlink options do not apply).  opts may be NULL.
 * With unlink_existing, a live listener on path sees one connection that
 * closes at once (the probe).  Returns 0, -ENAMETOOLONG, -EINVAL,
 * -EADDRINUSE while something listens on path, or a negated errno from
 * bind/listen. */
TC_EXTERN int tc_unix_listen(tc_loop_t *loop, const char *path,
                             const tc_unix_listen_opts_t *opts,
                             tc_connection_cb on_conn, void *data,
                             tc_server_t **out);
/* Connect to path; as tc_tcp_connect(). */
TC_EXTERN int tc_unix_connect(tc_loop_t *loop, const char *path,
                              tc_connect_cb cb, void *data,
                              tc_stream_t **out);

#ifdef __cplusplus
}
#endif
#endif
