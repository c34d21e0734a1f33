/* TCP: listening sockets and outgoing connections.  TCP_NODELAY is on by
 * default both ways, since the transport already coalesces small writes. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

int
tc_tcp_listen(tc_loop_t *loop, const char *host, int port,
              const tc_tcp_listen_opts_t *opts, tc_connection_cb on_conn,
              void *data, tc_server_t **out)
{
    if (loop == NULL || on_conn == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    tc_tcp_listen_opts_t defaults = {0};
    if (opts == NULL) {
        opts = &defaults;
    }
    if (opts->backlog < 0) {
        return -EINVAL;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    int err = tc_sockaddr_from_numeric(host != NULL ? host : "0.0.0.0", port,
                                       &ss, &len);
    if (err != 0) {
        return err;
    }
    int fd = tc__socket(ss.ss_family, SOCK_STREAM);
    if (fd < 0) {
        return fd;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) {
        goto fail_errno;
    }
    if (opts->reuseport &&
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
        goto fail_errno;
    }
    if (ss.ss_family == AF_INET6) {
        int v6only = opts->ipv6_only ? 1 : 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only,
                       sizeof(v6only)) != 0) {
            goto fail_errno;
        }
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0 ||
        listen(fd, opts->backlog > 0 ? opts->backlog : SOMAXCONN) != 0) {
        goto fail_errno;
    }
    err = tc__server_new(loop, fd, false, !opts->no_nodelay, on_conn, data,
                         out);
    if (err != 0) {
        goto fail;
    }
    return 0;

fail_errno:
    err = tc__neg_errno();
fail:
    close(fd);
    return err;
}

/* Start a non-blocking connect to a resolved address. */
static int
connect_addr(tc_loop_t *loop, const struct sockaddr *sa, socklen_t len,
             const tc_tcp_connect_opts_t *opts, tc_connect_cb cb, void *data,
             tc_stream_t **out)
{
    int fd = tc__socket(sa->sa_family, SOCK_STREAM);
    if (fd < 0) {
        return fd;
    }
    int err;
    if (!opts->no_nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    bool connecting = false;
    if (connect(fd, sa, len) != 0) {
        if (errno != EINPROGRESS) {
            err = tc__neg_errno();
            close(fd);
            return err;
        }
        connecting = true;
    }
    tc_stream_t *s;
    err = tc__stream_new(loop, fd, false, connecting, data, &s);
    if (err != 0) {
        close(fd);
        return err;
    }
    if (opts->keepalive) {
        tc_stream_set_keepalive(s, true, opts->keepalive_idle_s);
    }
    tc__stream_connect_begin(s, cb, opts->timeout_ms);
    *out = s;
    return 0;
}

int
tc_tcp_connect(tc_loop_t *loop, const char *host, int port,
               const tc_tcp_connect_opts_t *opts, tc_connect_cb cb,
               void *data, tc_stream_t **out)
{
    if (loop == NULL || host == NULL || cb == NULL || out == NULL ||
        port <= 0 || port > 65535) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    tc_tcp_connect_opts_t defaults = {0};
    if (opts == NULL) {
        opts = &defaults;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    int err = tc_sockaddr_from_numeric(host, port, &ss, &len);
    if (err != 0) {
        return err;
    }
    return connect_addr(loop, (struct sockaddr *)&ss, len, opts, cb, data,
                        out);
}
