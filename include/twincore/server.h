/* Listening sockets, TCP or Unix.  Accepting survives descriptor exhaustion
 * (EMFILE/ENFILE): the server stops accepting, reports the error once, and
 * retries when twincore closes a descriptor or after a back-off timer,
 * without spinning and without dropping queued connections. */
#ifndef TWINCORE_SERVER_H
#define TWINCORE_SERVER_H

#include <sys/socket.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A new connection, owned by the callee (close it with tc_close()), or
 * conn == NULL and status < 0: an accept error such as -EMFILE.  The
 * server goes on accepting in either case. */
typedef void (*tc_connection_cb)(tc_server_t *server, tc_stream_t *conn,
                                 int status);

/* Adopt a listening stream socket made elsewhere (a host's, inherited,
 * socket activation): TCP or Unix, made non-blocking and close-on-exec;
 * accepted TCP connections get TCP_NODELAY.  The server owns fd from here
 * on, also when this fails (then it is closed): pass a dup() to keep one.
 * Returns 0, -EINVAL (not a listening stream socket, bad arguments),
 * -ENOTSOCK, -EBADF or -ENOMEM. */
TC_EXTERN int tc_server_open(tc_loop_t *loop, int fd,
                             tc_connection_cb on_conn, void *data,
                             tc_server_t **out);

/* Port the server listens on (TCP), or -EINVAL. */
TC_EXTERN int tc_server_port(const tc_server_t *server);
TC_EXTERN int tc_server_sockname(const tc_server_t *server,
                                 struct sockaddr *sa, socklen_t *len);
TC_EXTERN int tc_server_fd(const tc_server_t *server);
/* Stop and restart accepting; queued connections wait in the backlog. */
TC_EXTERN int tc_server_pause(tc_server_t *server);
TC_EXTERN int tc_server_resume(tc_server_t *server);
/* Connections accepted, and accept errors seen, so far. */
TC_EXTERN uint64_t tc_server_accepted(const tc_server_t *server);
TC_EXTERN uint64_t tc_server_accept_errors(const tc_server_t *server);

#ifdef __cplusplus
}
#endif
#endif
