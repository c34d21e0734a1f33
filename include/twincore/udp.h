/* UDP sockets: datagrams in and out, IPv4 and IPv6.  A send the kernel
 * cannot take now is queued (copied) and sent in order when it can. */
#ifndef TWINCORE_UDP_H
#define TWINCORE_UDP_H

#include <sys/socket.h>

#include "common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* One datagram: buf/len borrowed for the call, from its sender.  On a
 * receive error (an ICMP error on a connected socket), buf is NULL and
 * status is the negative code; receiving goes on. */
typedef void (*tc_udp_recv_cb)(tc_udp_t *udp, const char *buf, size_t len,
                               const struct sockaddr *from, socklen_t fromlen,
                               int status);

typedef struct tc_udp_opts {
    bool reuseaddr;
    bool reuseport;
    bool ipv6_only;
    bool broadcast;
} tc_udp_opts_t;

/* Bind a UDP socket to host:port (numeric; port 0 picks one).  opts may be
 * NULL.  Returns 0, -EINVAL or a negated errno. */
TC_EXTERN int tc_udp_bind(tc_loop_t *loop, const char *host, int port,
                          const tc_udp_opts_t *opts, void *data,
                          tc_udp_t **out);
TC_EXTERN int tc_udp_recv_start(tc_udp_t *udp, tc_udp_recv_cb cb);
TC_EXTERN int tc_udp_recv_stop(tc_udp_t *udp);
/* Send one datagram to addr (NULL: the connected peer).  Returns 0 (sent or
 * queued), -EMSGSIZE, -EINVAL, -ENOMEM or a negated errno. */
TC_EXTERN int tc_udp_send(tc_udp_t *udp, const void *buf, size_t len,
                          const struct sockaddr *addr, socklen_t addrlen);
/* The same, to a numeric host and port. */
TC_EXTERN int tc_udp_send_to(tc_udp_t *udp, const void *buf, size_t len,
                             const char *host, int port);
/* Set a default peer (and filter to it). */
TC_EXTERN int tc_udp_connect(tc_udp_t *udp, const char *host, int port);
TC_EXTERN size_t tc_udp_send_queue_size(const tc_udp_t *udp);
TC_EXTERN int tc_udp_sockname(const tc_udp_t *udp, struct sockaddr *sa,
                              socklen_t *len);
TC_EXTERN int tc_udp_port(const tc_udp_t *udp);
TC_EXTERN int tc_udp_fd(const tc_udp_t *udp);

#ifdef __cplusplus
}
#endif
#endif
