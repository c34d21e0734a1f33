/* TCP: listening sockets and outgoing connections.  TCP_NODELAY is on by
 * default both ways, since the transport already coalesces small writes. */
#include <fcntl.h>
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
    bool any = host != NULL && host[0] == '\0';
    int err = tc_sockaddr_from_numeric(any ? "::" : host != NULL ? host
                                                                 : "0.0.0.0",
                                       port, &ss, &len);
    if (err != 0) {
        return err;
    }
    int fd = tc__socket(ss.ss_family, SOCK_STREAM);
    if (fd == -EAFNOSUPPORT && any) {
        /* No IPv6 here: every interface is every IPv4 one. */
        err = tc_sockaddr_from_numeric("0.0.0.0", port, &ss, &len);
        if (err != 0) {
            return err;
        }
        fd = tc__socket(AF_INET, SOCK_STREAM);
    }
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
        int v6only = opts->ipv6_only && !any ? 1 : 0;
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

/* Bind fd (of family) to the connect's local address, if it has one.
 * Returns 0 or a negative code. */
static int
bind_local(int fd, int family, const tc_tcp_connect_opts_t *opts)
{
    if (opts->bind_host == NULL && opts->bind_port == 0) {
        return 0;
    }
    const char *host = opts->bind_host;
    if (host == NULL) {
        host = family == AF_INET6 ? "::" : "0.0.0.0";
    }
    struct sockaddr_storage ss;
    socklen_t len;
    int err = tc_sockaddr_from_numeric(host, opts->bind_port, &ss, &len);
    if (err != 0) {
        return err;
    }
    if (ss.ss_family != family) {
        return -EINVAL;   /* bind() would say EINVAL or EAFNOSUPPORT */
    }
    return bind(fd, (struct sockaddr *)&ss, len) == 0 ? 0 : tc__neg_errno();
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
    err = bind_local(fd, sa->sa_family, opts);
    if (err != 0) {
        close(fd);
        return err;
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

/* A connect that waits for its host name: the stream exists at once, on a
 * placeholder IPv4 socket whose descriptor number the real socket takes
 * over (dup3) if the name resolves to IPv6.  Its io watchers are not
 * started before, so libev never saw the placeholder. */
typedef struct pending_connect {
    tc_stream_t *s;
    tc__resolve_req_t *req;
    tc_connect_cb cb;
    tc_tcp_connect_opts_t opts;
    char bind_host[64];       /* opts.bind_host points here: the caller's
                               * string need not outlive the lookup */
} pending_connect_t;

static void
forget_lookup(void *arg)
{
    pending_connect_t *p = arg;
    tc__resolve_cancel(p->req);
    free(p);
}

static void
name_resolved(void *arg, int status, const struct sockaddr *sa,
              socklen_t len)
{
    pending_connect_t *p = arg;
    tc_stream_t *s = p->s;
    tc_handle_t *h = tc_stream_handle(s);
    h->close_hook = NULL;
    tc_connect_cb cb = p->cb;
    tc_tcp_connect_opts_t opts = p->opts;
    free(p);
    if (status != 0) {
        cb(s, status);
        return;
    }
    int fd = tc_stream_fd(s);
    if (sa->sa_family != AF_INET) {
        int fd6 = tc__socket(sa->sa_family, SOCK_STREAM);
        if (fd6 < 0 || dup3(fd6, fd, O_CLOEXEC) < 0) {
            int err = fd6 < 0 ? fd6 : tc__neg_errno();
            if (fd6 >= 0) {
                close(fd6);
            }
            cb(s, err);
            return;
        }
        close(fd6);
    }
    if (!opts.no_nodelay) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    }
    if (opts.keepalive) {
        tc_stream_set_keepalive(s, true, opts.keepalive_idle_s);
    }
    int err = bind_local(fd, sa->sa_family, &opts);
    if (err != 0) {
        cb(s, err);
        return;
    }
    if (connect(fd, sa, len) != 0 && errno != EINPROGRESS) {
        cb(s, tc__neg_errno());
        return;
    }
    /* Connected or in progress: writability reports it either way. */
    tc__stream_connect_begin(s, cb, opts.timeout_ms);
}

static int
connect_name(tc_loop_t *loop, const char *host, int port,
             const tc_tcp_connect_opts_t *opts, tc_connect_cb cb, void *data,
             tc_stream_t **out)
{
    pending_connect_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    int fd = tc__socket(AF_INET, SOCK_STREAM);
    if (fd < 0) {
        free(p);
        return fd;
    }
    tc_stream_t *s;
    int err = tc__stream_new(loop, fd, false, true, data, &s);
    if (err != 0) {
        close(fd);
        free(p);
        return err;
    }
    p->s = s;
    p->cb = cb;
    p->opts = *opts;
    if (opts->bind_host != NULL) {
        if (strlen(opts->bind_host) >= sizeof(p->bind_host)) {
            free(p);
            tc_close(tc_stream_handle(s), NULL);
            return -EINVAL;
        }
        strcpy(p->bind_host, opts->bind_host);
        p->opts.bind_host = p->bind_host;
    }
    err = tc__resolve_one(loop, host, port, name_resolved, p, &p->req);
    if (err != 0) {
        free(p);
        tc_close(tc_stream_handle(s), NULL);   /* never reported */
        return err == -ENOTSUP ? -EINVAL : err;
    }
    tc_stream_handle(s)->close_hook = forget_lookup;
    tc_stream_handle(s)->close_hook_arg = p;
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
    if (opts->bind_port < 0 || opts->bind_port > 65535 ||
        (opts->bind_host != NULL &&
         tc_sockaddr_from_numeric(opts->bind_host, 0, &ss, &len) != 0)) {
        return -EINVAL;
    }
    if (tc_sockaddr_from_numeric(host, port, &ss, &len) != 0) {
        /* Not numeric: a name, resolved on the loop's resolver pool. */
        return connect_name(loop, host, port, opts, cb, data, out);
    }
    return connect_addr(loop, (struct sockaddr *)&ss, len, opts, cb, data,
                        out);
}
