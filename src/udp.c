/* UDP sockets.  Receiving drains up to a batch of datagrams per readiness
 * event.  Sending goes straight to the kernel; a datagram it cannot take
 * now (EAGAIN, ENOBUFS) is copied to a queue and sent, in order, when the
 * socket is writable again, so nothing is dropped on our side. */
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define RECV_BATCH 32

typedef struct dgram {
    struct dgram *next;
    struct sockaddr_storage addr;
    socklen_t addrlen;      /* 0: connected peer */
    size_t len;
    char data[];
} dgram_t;

struct tc_udp_s {
    tc_handle_t h;
    int fd;
    ev_io rio, wio;
    tc_udp_recv_cb cb;
    dgram_t *head, *tail;
    size_t queued;
};

tc_handle_t *
tc_udp_handle(tc_udp_t *udp)
{
    return udp != NULL ? &udp->h : NULL;
}

static void
recv_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_udp_t *u = TC__CONTAINER_OF(w, tc_udp_t, rio);
    tc_loop_t *loop = u->h.loop;
    for (int i = 0; i < RECV_BATCH; i++) {
        struct sockaddr_storage from;
        socklen_t fromlen = sizeof(from);
        ssize_t n = recvfrom(u->fd, loop->read_buf, loop->read_buf_size, 0,
                             (struct sockaddr *)&from, &fromlen);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return;
            }
            if (errno == EINTR) {
                continue;
            }
            u->cb(u, NULL, 0, NULL, 0, tc__neg_errno());
        } else {
            u->cb(u, loop->read_buf, (size_t)n, (struct sockaddr *)&from,
                  fromlen, 0);
        }
        /* The callback may have stopped receiving or closed the socket. */
        if (!ev_is_active(&u->rio)) {
            return;
        }
    }
}

static ssize_t
send_one(tc_udp_t *u, const void *buf, size_t len,
         const struct sockaddr *addr, socklen_t addrlen)
{
    for (;;) {
        ssize_t n = sendto(u->fd, buf, len, MSG_NOSIGNAL, addr, addrlen);
        if (n >= 0 || errno != EINTR) {
            return n;
        }
    }
}

static void
send_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    tc_udp_t *u = TC__CONTAINER_OF(w, tc_udp_t, wio);
    while (u->head != NULL) {
        dgram_t *d = u->head;
        ssize_t n = send_one(u, d->data, d->len,
                             d->addrlen ? (struct sockaddr *)&d->addr : NULL,
                             d->addrlen);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
                      errno == ENOBUFS)) {
            return;
        }
        int err = n < 0 ? tc__neg_errno() : 0;
        u->head = d->next;
        if (u->head == NULL) {
            u->tail = NULL;
        }
        u->queued -= d->len;
        free(d);
        if (err != 0 && u->cb != NULL) {
            /* A queued datagram that failed is reported, not dropped
             * silently. */
            u->cb(u, NULL, 0, NULL, 0, err);
            if (tc__handle_closing(&u->h)) {
                return;
            }
        }
    }
    tc__io_stop(ev, &u->wio);
}

static void
udp_close(tc_handle_t *h)
{
    tc_udp_t *u = TC__CONTAINER_OF(h, tc_udp_t, h);
    tc__io_stop(h->loop->ev, &u->rio);
    tc__io_stop(h->loop->ev, &u->wio);
    if (u->fd >= 0) {
        close(u->fd);
        u->fd = -1;
        tc__loop_fd_released(h->loop);
    }
}

static void
udp_finish(tc_handle_t *h)
{
    tc_udp_t *u = TC__CONTAINER_OF(h, tc_udp_t, h);
    while (u->head != NULL) {
        dgram_t *d = u->head;
        u->head = d->next;
        free(d);
    }
    u->tail = NULL;
    u->queued = 0;
}

static bool
udp_is_active(const tc_handle_t *h)
{
    const tc_udp_t *u = TC__CONTAINER_OF(h, tc_udp_t, h);
    return ev_is_active(&u->rio) || ev_is_active(&u->wio);
}

static const tc__handle_vtable_t udp_vt = {
    .close_impl = udp_close,
    .finish_impl = udp_finish,
    .is_active = udp_is_active,
};

int
tc_udp_bind(tc_loop_t *loop, const char *host, int port,
            const tc_udp_opts_t *opts, void *data, tc_udp_t **out)
{
    if (loop == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    tc_udp_opts_t defaults = {0};
    if (opts == NULL) {
        opts = &defaults;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    int err = tc_sockaddr_from_numeric(host != NULL ? host : "0.0.0.0", port,
                                       &ss, &len);
    if (err != 0) {
        return err;
    }
    int fd = tc__socket(ss.ss_family, SOCK_DGRAM);
    if (fd < 0) {
        return fd;
    }
    int one = 1;
    if ((opts->reuseaddr &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0) ||
        (opts->reuseport &&
         setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) ||
        (opts->broadcast &&
         setsockopt(fd, SOL_SOCKET, SO_BROADCAST, &one, sizeof(one)) != 0)) {
        goto fail_errno;
    }
    if (ss.ss_family == AF_INET6) {
        int v6only = opts->ipv6_only ? 1 : 0;
        if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only,
                       sizeof(v6only)) != 0) {
            goto fail_errno;
        }
    }
    if (bind(fd, (struct sockaddr *)&ss, len) != 0) {
        goto fail_errno;
    }
    tc_udp_t *u = calloc(1, sizeof(*u));
    if (u == NULL) {
        err = -ENOMEM;
        goto fail;
    }
    tc__handle_init(loop, &u->h, TC_HANDLE_UDP, &udp_vt, data);
    u->fd = fd;
    ev_io_init(&u->rio, recv_ready, fd, EV_READ);
    ev_io_init(&u->wio, send_ready, fd, EV_WRITE);
    *out = u;
    return 0;

fail_errno:
    err = tc__neg_errno();
fail:
    close(fd);
    return err;
}

int
tc_udp_recv_start(tc_udp_t *u, tc_udp_recv_cb cb)
{
    if (u == NULL || cb == NULL || tc__handle_closing(&u->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(u->h.loop);
    u->cb = cb;
    tc__io_start(u->h.loop->ev, &u->rio);
    return 0;
}

int
tc_udp_recv_stop(tc_udp_t *u)
{
    if (u == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(u->h.loop);
    tc__io_stop(u->h.loop->ev, &u->rio);
    return 0;
}

int
tc_udp_send(tc_udp_t *u, const void *buf, size_t len,
            const struct sockaddr *addr, socklen_t addrlen)
{
    if (u == NULL || (buf == NULL && len != 0) ||
        (addr != NULL && (addrlen == 0 || addrlen > sizeof(
                                              struct sockaddr_storage)))) {
        return -EINVAL;
    }
    if (tc__handle_closing(&u->h)) {
        return -EPIPE;
    }
    TC__ASSERT_LOOP_THREAD(u->h.loop);
    if (len > 65507) {
        return -EMSGSIZE;
    }
    if (u->head == NULL) {
        ssize_t n = send_one(u, buf, len, addr, addr ? addrlen : 0);
        if (n >= 0) {
            return 0;
        }
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != ENOBUFS) {
            return tc__neg_errno();
        }
    }
    dgram_t *d = malloc(sizeof(*d) + len);
    if (d == NULL) {
        return -ENOMEM;
    }
    d->next = NULL;
    d->len = len;
    d->addrlen = addr != NULL ? addrlen : 0;
    if (addr != NULL) {
        memcpy(&d->addr, addr, addrlen);
    }
    if (len > 0) {
        memcpy(d->data, buf, len);
    }
    if (u->tail != NULL) {
        u->tail->next = d;
    } else {
        u->head = d;
    }
    u->tail = d;
    u->queued += len;
    tc__io_start(u->h.loop->ev, &u->wio);
    return 0;
}

int
tc_udp_send_to(tc_udp_t *u, const void *buf, size_t len, const char *host,
               int port)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    int err = tc_sockaddr_from_numeric(host, port, &ss, &sslen);
    if (err != 0) {
        return err;
    }
    return tc_udp_send(u, buf, len, (struct sockaddr *)&ss, sslen);
}

int
tc_udp_connect(tc_udp_t *u, const char *host, int port)
{
    if (u == NULL) {
        return -EINVAL;
    }
    struct sockaddr_storage ss;
    socklen_t len;
    int err = tc_sockaddr_from_numeric(host, port, &ss, &len);
    if (err != 0) {
        return err;
    }
    return connect(u->fd, (struct sockaddr *)&ss, len) == 0
               ? 0
               : tc__neg_errno();
}

size_t
tc_udp_send_queue_size(const tc_udp_t *u)
{
    return u != NULL ? u->queued : 0;
}

int
tc_udp_sockname(const tc_udp_t *u, struct sockaddr *sa, socklen_t *len)
{
    if (u == NULL || sa == NULL || len == NULL || u->fd < 0) {
        return -EINVAL;
    }
    return getsockname(u->fd, sa, len) == 0 ? 0 : tc__neg_errno();
}

int
tc_udp_port(const tc_udp_t *u)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (tc_udp_sockname(u, (struct sockaddr *)&ss, &len) != 0) {
        return -EINVAL;
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
}

int
tc_udp_fd(const tc_udp_t *u)
{
    return u != NULL ? u->fd : -EINVAL;
}
