/* TCP listeners and connections.  Connections are tc_stream_t; listeners
 * are tc_server_t (shared with Unix sockets, see server.h). */
#ifndef TWINCORE_TCP_H
#define TWINCORE_TCP_H

#include "server.h"
#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_tcp_listen_opts {
    int backlog;        /* 0: SOMAXCONN */
    bool reuseport;     /* SO_REUSEPORT */
    bool ipv6_only;     /* IPV6_V6ONLY on an IPv6 address */
    bool no_nodelay;    /* accepted connections keep Nagle's algorithm */
} tc_tcp_listen_opts_t;

typedef struct tc_tcp_connect_opts {
    uint64_t timeout_ms;    /* 0: no timeout; else -ETIMEDOUT */
    bool no_nodelay;        /* keep Nagle's algorithm */
    bool keepalive;
    unsigned keepalive_idle_s;
    /* Bind the socket to this local numeric address before connecting
     * (NULL: the kernel picks, unless bind_port is set: then the wildcard
     * of the peer's family); bind_port 0 picks a free port. */
    const char *bind_host;
    int bind_port;
} tc_tcp_connect_opts_t;

/* Listen on host ("127.0.0.1", "::1", "0.0.0.0", "::"; NULL = "0.0.0.0";
 * "" = every interface, IPv6 and IPv4 on one dual-stack socket where the
 * system has IPv6, else "0.0.0.0") and port (0: the kernel picks; read it
 * with tc_server_port()).
 * SO_REUSEADDR is always set.  on_conn runs for each accepted connection.
 * opts may be NULL.  Returns 0, -EINVAL for a bad address or port, or a
 * negated errno from socket/bind/listen (-EADDRINUSE...). */
TC_EXTERN int tc_tcp_listen(tc_loop_t *loop, const char *host, int port,
                            const tc_tcp_listen_opts_t *opts,
                            tc_connection_cb on_conn, void *data,
                            tc_server_t **out);

/* Connect to host:port without blocking.  *out is a stream that is
 * connecting; cb runs once with 0 or a negative code (-ECONNREFUSED,
 * -ETIMEDOUT, TC_ENONAME...).  host is a numeric address, or a name when
 * the loop has a resolver pool (tc_loop_set_resolver_pool(); without one a
 * name is -EINVAL); the lookup runs on the pool and timeout_ms counts from
 * when it completes.  Writes made before the connection completes are
 * queued.  A bind address that fails to bind is reported through cb
 * (-EADDRINUSE, -EADDRNOTAVAIL, -EINVAL for the other family).  Returns 0
 * or a negative code (cb is then never called and *out is not set):
 * -EINVAL also for a bind_host that is not numeric or a bad bind_port. */
TC_EXTERN int tc_tcp_connect(tc_loop_t *loop, const char *host, int port,
                             const tc_tcp_connect_opts_t *opts,
                             tc_connect_cb cb, void *data,
                             tc_stream_t **out);

/* Fill ss from a numeric host and port.  Returns 0 or -EINVAL. */
TC_EXTERN int tc_sockaddr_from_numeric(const char *host, int port,
                                       struct sockaddr_storage *ss,
                                       socklen_t *len);
/* Format sa as "host:port" or "[host]:port" or the Unix path.  Returns 0 or
 * -ENOSPC / -EAFNOSUPPORT. */
TC_EXTERN int tc_sockaddr_format(const struct sockaddr *sa, socklen_t len,
                                 char *buf, size_t size);

#ifdef __cplusplus
}
#endif
#endif
