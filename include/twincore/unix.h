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
    bool unlink_existing;   /* remove a stale socket file first */
    bool unlink_on_close;   /* remove the socket file when closed */
} tc_unix_listen_opts_t;

/* Listen on path (at most 107 bytes; "@name" for Linux's abstract
 * namespace).  opts may be NULL.  Returns 0, -ENAMETOOLONG, -EINVAL, or a
 * negated errno from bind/listen (-EADDRINUSE...). */
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
