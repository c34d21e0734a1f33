/* bench/servers/libev_echo.c: an echo server on plain libev, what twincore's
 * C transport is compared with to see what it adds to libev.
 *
 * Same behaviour as raw_epoll_echo.c: one read per readiness, written
 * straight back; what the socket does not take is kept and the watcher
 * switches from EV_READ to EV_WRITE until it has been sent. TCP_NODELAY on
 * every connection; SIGTERM or SIGINT breaks the loop.
 *
 * usage: libev_echo PORT     (listens on 127.0.0.1)
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

#define BUF_LEN (64 * 1024)

typedef struct conn {
    ev_io io;                   /* first: the watcher is the connection */
    size_t off;                 /* pending[off, len) is still to be sent */
    size_t len;
    char *pending;
} conn_t;

static char buf[BUF_LEN];

static void
conn_close(struct ev_loop *loop, conn_t *c)
{
    ev_io_stop(loop, &c->io);
    close(c->io.fd);
    free(c->pending);
    free(c);
}

static void
watch(struct ev_loop *loop, conn_t *c, int events)
{
    ev_io_stop(loop, &c->io);
    ev_io_set(&c->io, c->io.fd, events);
    ev_io_start(loop, &c->io);
}

static int
send_or_keep(struct ev_loop *loop, conn_t *c, size_t len)
{
    ssize_t n = send(c->io.fd, buf, len, MSG_NOSIGNAL);

    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            return -1;
        }
        n = 0;
    }
    if ((size_t)n == len) {
        return 0;
    }
    if (c->pending == NULL) {
        c->pending = malloc(BUF_LEN);
        if (c->pending == NULL) {
            return -1;
        }
    }
    memcpy(c->pending, buf + n, len - (size_t)n);
    c->off = 0;
    c->len = len - (size_t)n;
    watch(loop, c, EV_WRITE);
    return 0;
}

static void
on_io(struct ev_loop *loop, ev_io *w, int revents)
{
    conn_t *c = (conn_t *)w;
    ssize_t n;
    int rc = 0;

    if (revents & EV_WRITE) {
        n = send(w->fd, c->pending + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n < 0) {
            rc = errno == EAGAIN || errno == EINTR ? 0 : -1;
        } else {
            c->off += (size_t)n;
            if (c->off == c->len) {
                watch(loop, c, EV_READ);
            }
        }
    } else {
        n = recv(w->fd, buf, BUF_LEN, 0);
        if (n == 0) {
            rc = -1;
        } else if (n < 0) {
            rc = errno == EAGAIN || errno == EINTR ? 0 : -1;
        } else {
            rc = send_or_keep(loop, c, (size_t)n);
        }
    }
    if (rc < 0) {
        conn_close(loop, c);
    }
}

static void
on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    for (;;) {
        int one = 1;
        conn_t *c;
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            return;     /* EAGAIN, or EMFILE: retried on the next event. */
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        ev_io_init(&c->io, on_io, fd, EV_READ);
        ev_io_start(loop, &c->io);
    }
}

static void
on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

int
main(int argc, char **argv)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    ev_signal sigterm;
    ev_signal sigint;
    ev_io accept_io;
    int one = 1;
    int fd;

    if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: libev_echo PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    addr.sin_port = htons((uint16_t)atoi(argv[1]));
    fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (loop == NULL || fd < 0) {
        perror("libev_echo");
        return 1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 1024) < 0) {
        perror("libev_echo: listen");
        return 1;
    }
    ev_io_init(&accept_io, on_accept, fd, EV_READ);
    ev_io_start(loop, &accept_io);
    ev_signal_init(&sigterm, on_signal, SIGTERM);
    ev_signal_start(loop, &sigterm);
    ev_signal_init(&sigint, on_signal, SIGINT);
    ev_signal_start(loop, &sigint);
    ev_run(loop, 0);
    close(fd);
    return 0;
}
