/* bench/servers/raw_epoll_echo.c: the least an epoll echo server can do, the
 * limit the other peers are measured against.
 *
 * Level-triggered epoll; one read per readiness event, written straight
 * back. What the socket does not take is kept and the connection stops
 * reading until it has been sent, so memory stays bounded and no byte is
 * lost or reordered. TCP_NODELAY on every connection; SIGTERM or SIGINT
 * (through a signalfd) ends the process with status 0.
 *
 * usage: raw_epoll_echo PORT     (listens on 127.0.0.1)
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define BUF_LEN (64 * 1024)
#define MAX_EVENTS 256

typedef struct conn {
    int fd;
    size_t off;                 /* pending[off, len) is still to be sent */
    size_t len;
    char *pending;
} conn_t;

/* The listener and the signalfd are told apart from connections by these
 * addresses in epoll's data field. */
static char listener_tag;
static char signal_tag;

static int
listen_on(int port)
{
    struct sockaddr_in addr = {.sin_family = AF_INET,
                               .sin_port = htons((uint16_t)port),
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    if (fd < 0) {
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        listen(fd, 1024) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static void
conn_close(conn_t *c)
{
    close(c->fd);           /* Also removes it from the epoll set. */
    free(c->pending);
    free(c);
}

static void
set_events(int epfd, conn_t *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};

    epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
}

/* Sends buf; keeps what the socket refuses and waits for EPOLLOUT.
 * Returns -1 when the connection is gone. */
static int
send_or_keep(int epfd, conn_t *c, const char *buf, size_t len)
{
    ssize_t n = send(c->fd, buf, len, MSG_NOSIGNAL);

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
    /* Reading stopped while anything was pending, so this is the whole
     * backlog and it fits: it came from one read of at most BUF_LEN. */
    memmove(c->pending, buf + n, len - (size_t)n);
    c->off = 0;
    c->len = len - (size_t)n;
    set_events(epfd, c, EPOLLOUT);
    return 0;
}

static int
on_readable(int epfd, conn_t *c, char *buf)
{
    ssize_t n = recv(c->fd, buf, BUF_LEN, 0);

    if (n == 0) {
        return -1;
    }
    if (n < 0) {
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    return send_or_keep(epfd, c, buf, (size_t)n);
}

static int
on_writable(int epfd, conn_t *c)
{
    ssize_t n = send(c->fd, c->pending + c->off, c->len - c->off,
                     MSG_NOSIGNAL);

    if (n < 0) {
        return errno == EAGAIN || errno == EINTR ? 0 : -1;
    }
    c->off += (size_t)n;
    if (c->off == c->len) {
        c->off = 0;
        c->len = 0;
        set_events(epfd, c, EPOLLIN);
    }
    return 0;
}

static void
accept_all(int epfd, int lfd)
{
    for (;;) {
        struct epoll_event ev = {.events = EPOLLIN};
        int one = 1;
        conn_t *c;
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            return;     /* EAGAIN, or EMFILE: retried on the next event. */
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        c = calloc(1, sizeof(*c));
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        ev.data.ptr = c;
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
            conn_close(c);
        }
    }
}

int
main(int argc, char **argv)
{
    static char buf[BUF_LEN];
    struct epoll_event events[MAX_EVENTS];
    struct epoll_event ev = {.events = EPOLLIN};
    sigset_t mask;
    int epfd;
    int lfd;
    int sfd;

    if (argc != 2 || atoi(argv[1]) <= 0 || atoi(argv[1]) > 65535) {
        fprintf(stderr, "usage: raw_epoll_echo PORT\n");
        return 2;
    }
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);
    sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    lfd = listen_on(atoi(argv[1]));
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (sfd < 0 || lfd < 0 || epfd < 0) {
        perror("raw_epoll_echo");
        return 1;
    }
    ev.data.ptr = &listener_tag;
    epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &ev);
    ev.data.ptr = &signal_tag;
    epoll_ctl(epfd, EPOLL_CTL_ADD, sfd, &ev);

    for (;;) {
        int n = epoll_wait(epfd, events, MAX_EVENTS, -1);

        if (n < 0 && errno != EINTR) {
            perror("raw_epoll_echo: epoll_wait");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            void *p = events[i].data.ptr;
            conn_t *c = p;
            int rc = 0;

            if (p == &signal_tag) {
                return 0;   /* Open connections close with the process. */
            }
            if (p == &listener_tag) {
                accept_all(epfd, lfd);
                continue;
            }
            if (events[i].events & EPOLLOUT) {
                rc = on_writable(epfd, c);
            } else if (events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)) {
                rc = on_readable(epfd, c, buf);
            }
            if (rc < 0) {
                conn_close(c);
            }
        }
    }
}
