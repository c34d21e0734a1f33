/* Name resolution: getaddrinfo() runs on a pool worker, its answer comes
 * back on the loop.  A loop given a resolver pool also lets
 * tc_tcp_connect() take host names. */
#ifndef TWINCORE_RESOLVE_H
#define TWINCORE_RESOLVE_H

#include <netdb.h>
#include <sys/socket.h>

#include "common.h"
#include "pool.h"

#ifdef __cplusplus
extern "C" {
#endif

/* <netdb.h> defines it only with POSIX features on (_POSIX_C_SOURCE). */
struct addrinfo;

/* status is 0 and res the list of addresses (borrowed: freed after the
 * callback returns), or res is NULL and status one of TC_ENONAME (no such
 * name), TC_EAGAIN_NAME (try again later), TC_ENAMEFAIL, -ENOMEM, a
 * negated errno, or -ECANCELED when the pool shut down first. */
typedef void (*tc_getaddrinfo_cb)(int status, const struct addrinfo *res,
                                  void *data);

/* Resolve host and port (0..65535; numeric service) for stream sockets,
 * family AF_UNSPEC, AF_INET or AF_INET6, on pool (NULL: the loop's
 * resolver pool); cb runs on loop's thread.  Returns 0, -EINVAL, -ENOTSUP
 * without a pool, -ENOMEM or what tc_pool_submit() returns (cb is then
 * never called). */
TC_EXTERN int tc_getaddrinfo(tc_loop_t *loop, tc_pool_t *pool,
                             const char *host, int port, int family,
                             tc_getaddrinfo_cb cb, void *data);

/* Use pool (NULL: none) for the loop's name lookups, tc_tcp_connect()
 * included.  The loop borrows the pool: keep it until the loop is closed
 * or another is set, and until lookups already submitted to it are done.
 * Thread: any (a lookup started meanwhile uses the old or the new one). */
TC_EXTERN void tc_loop_set_resolver_pool(tc_loop_t *loop, tc_pool_t *pool);
/* The loop's resolver pool, or NULL.  Thread: any. */
TC_EXTERN tc_pool_t *tc_loop_resolver_pool(const tc_loop_t *loop);

#ifdef __cplusplus
}
#endif
#endif
