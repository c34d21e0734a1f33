/* Listening sockets, TCP or Unix.
 *
 * Descriptor exhaustion (EMFILE, ENFILE, ENOBUFS, ENOMEM) must neither spin
 * the CPU (the listener stays readable) nor drop the listener: the server
 * stops watching, reports the error once per episode, and retries when
 * twincore closes a descriptor or a back-off timer (10 ms doubling to 1 s)
 * fires.  Connections keep waiting in the kernel's backlog meanwhile. */
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"

#define ACCEPTS_PER_WAKEUP 64
#define BACKOFF_MIN_S 0.010
#define BACKOFF_MAX_S 1.0

struct tc_server_s {
    tc_handle_t h;
    int fd;
    ev_io io;
    ev_timer backoff;
    tc_connection_cb cb;
    bool is_unix;
    bool nodelay;
    bool paused;        /* by the user */
    bool starved;       /* waiting for descriptors */
    bool in_episode;    /* exhaustion reported, no accept succeeded since */
    double backoff_s;
    uint64_t accepted, errors;
    char *unlink_path;
    dev_t unlink_dev;   /* the file unlink_path named when bound */
    ino_t unlink_ino;
    struct tc_server_s *next_starved;
};

tc_handle_t *
tc_server_handle(tc_server_t *server)
{
    return server != NULL ? &server->h : NULL;
}

static void
unlink_starved(tc_server_t *s)
{
    tc_server_t **p = &s->h.loop->starved;
    while (*p != NULL) {
        if (*p == s) {
            *p = s->next_starved;
            break;
        }
        p = &(*p)->next_starved;
    }
    s->next_starved = NULL;
    s->starved = false;
}

static void
starve(tc_server_t *s, int err)
{
    struct ev_loop *ev = s->h.loop->ev;
    tc__io_stop(ev, &s->io);
    if (!s->starved) {
        s->starved = true;
        s->next_starved = s->h.loop->starved;
        s->h.loop->starved = s;
    }
    s->backoff_s = s->backoff_s == 0.0 ? BACKOFF_MIN_S : s->backoff_s * 2;
    if (s->backoff_s > BACKOFF_MAX_S) {
        s->backoff_s = BACKOFF_MAX_S;
    }
    ev_timer_stop(ev, &s->backoff);
    ev_timer_set(&s->backoff, s->backoff_s, 0.);
    ev_timer_start(ev, &s->backoff);
    s->errors++;
    if (!s->in_episode) {
        s->in_episode = true;
        s->cb(s, NULL, err);
    }
}

static void
retry(tc_server_t *s)
{
    ev_timer_stop(s->h.loop->ev, &s->backoff);
    unlink_starved(s);
    if (!s->paused) {
        tc__io_start(s->h.loop->ev, &s->io);
    }
}

void
tc__loop_fd_released(tc_loop_t *loop)
{
    while (loop->starved != NULL) {
        retry(loop->starved);
    }
}

static void
backoff_fire(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)revents;
    retry(TC__CONTAINER_OF(w, tc_server_t, backoff));
}

static void
accept_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_server_t *s = TC__CONTAINER_OF(w, tc_server_t, io);
    for (int i = 0; i < ACCEPTS_PER_WAKEUP; i++) {
        int fd = accept4(s->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            switch (errno) {
            case EAGAIN:
#if EAGAIN != EWOULDBLOCK
            case EWOULDBLOCK:
#endif
                return;
            case EINTR:
            case ECONNABORTED:
            case EPROTO:
            case EPERM:
                continue;   /* this connection only */
            case EMFILE:
            case ENFILE:
            case ENOBUFS:
            case ENOMEM:
                starve(s, tc__neg_errno());
                return;
            default:
                s->errors++;
                s->cb(s, NULL, tc__neg_errno());
                return;
            }
        }
        s->in_episode = false;
        s->backoff_s = 0.0;
        if (s->nodelay) {
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        }
        tc_stream_t *conn;
        int err = tc__stream_new(s->h.loop, fd, s->is_unix, false, NULL,
                                 &conn);
        if (err != 0) {
            close(fd);
            s->errors++;
            s->cb(s, NULL, err);
            return;
        }
        s->accepted++;
        s->cb(s, conn, 0);
        /* The callback may have closed or paused the server. */
        if (tc__handle_closing(&s->h) || !ev_is_active(&s->io)) {
            return;
        }
    }
}

static void
server_close(tc_handle_t *h)
{
    tc_server_t *s = TC__CONTAINER_OF(h, tc_server_t, h);
    tc__io_stop(h->loop->ev, &s->io);
    ev_timer_stop(h->loop->ev, &s->backoff);
    if (s->starved) {
        unlink_starved(s);
    }
    if (s->unlink_path != NULL) {
        tc__unix_unlink_own(s->unlink_path, s->unlink_dev, s->unlink_ino);
    }
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
}

static void
server_finish(tc_handle_t *h)
{
    tc_server_t *s = TC__CONTAINER_OF(h, tc_server_t, h);
    free(s->unlink_path);
    s->unlink_path = NULL;
}

static bool
server_is_active(const tc_handle_t *h)
{
    const tc_server_t *s = TC__CONTAINER_OF(h, tc_server_t, h);
    return ev_is_active(&s->io) || s->starved;
}

static double
server_next_timeout(const tc_handle_t *h)
{
    tc_server_t *s = TC__CONTAINER_OF(h, tc_server_t, h);
    if (!ev_is_active(&s->backoff)) {
        return -1.0;
    }
    return ev_timer_remaining(h->loop->ev, &s->backoff);
}

static const tc__handle_vtable_t server_vt = {
    .close_impl = server_close,
    .finish_impl = server_finish,
    .is_active = server_is_active,
    .next_timeout = server_next_timeout,
};

int
tc__server_new(tc_loop_t *loop, int fd, bool is_unix, bool nodelay,
               tc_connection_cb cb, void *data, tc_server_t **out)
{
    tc_server_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    tc__handle_init(loop, &s->h, TC_HANDLE_SERVER, &server_vt, data);
    s->fd = fd;
    s->cb = cb;
    s->is_unix = is_unix;
    s->nodelay = nodelay;
    ev_io_init(&s->io, accept_ready, fd, EV_READ);
    ev_init(&s->backoff, backoff_fire);
    tc__io_start(loop->ev, &s->io);
    *out = s;
    return 0;
}

int
tc_server_open(tc_loop_t *loop, int fd, tc_connection_cb on_conn, void *data,
               tc_server_t **out)
{
    if (loop == NULL || on_conn == NULL || out == NULL || fd < 0) {
        if (fd >= 0) {
            close(fd);
        }
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    int type = 0, listening = 0;
    socklen_t tlen = sizeof(type), llen = sizeof(listening);
    struct sockaddr_storage ss;
    socklen_t slen = sizeof(ss);
    int err = 0;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &tlen) != 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &llen) != 0 ||
        getsockname(fd, (struct sockaddr *)&ss, &slen) != 0) {
        err = tc__neg_errno();
    } else if (type != SOCK_STREAM || !listening) {
        err = -EINVAL;
    } else {
        err = tc__set_nonblock_cloexec(fd);
    }
    if (err == 0) {
        bool is_unix = ss.ss_family == AF_UNIX;
        err = tc__server_new(loop, fd, is_unix, !is_unix, on_conn, data, out);
    }
    if (err != 0) {
        close(fd);
    }
    return err;
}

void
tc__server_set_unlink_path(tc_server_t *s, const char *path, dev_t dev,
                           ino_t ino)
{
    free(s->unlink_path);
    s->unlink_path = path != NULL ? strdup(path) : NULL;
    s->unlink_dev = dev;
    s->unlink_ino = ino;
}

int
tc_server_port(const tc_server_t *s)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (s == NULL || s->is_unix ||
        getsockname(s->fd, (struct sockaddr *)&ss, &len) != 0) {
        return -EINVAL;
    }
    if (ss.ss_family == AF_INET) {
        return ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return -EINVAL;
}

int
tc_server_sockname(const tc_server_t *s, struct sockaddr *sa, socklen_t *len)
{
    if (s == NULL || sa == NULL || len == NULL || s->fd < 0) {
        return -EINVAL;
    }
    return getsockname(s->fd, sa, len) == 0 ? 0 : tc__neg_errno();
}

int
tc_server_fd(const tc_server_t *s)
{
    return s != NULL ? s->fd : -EINVAL;
}

int
tc_server_pause(tc_server_t *s)
{
    if (s == NULL || tc__handle_closing(&s->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    s->paused = true;
    tc__io_stop(s->h.loop->ev, &s->io);
    return 0;
}

int
tc_server_resume(tc_server_t *s)
{
    if (s == NULL || tc__handle_closing(&s->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    s->paused = false;
    if (!s->starved) {
        tc__io_start(s->h.loop->ev, &s->io);
    }
    return 0;
}

uint64_t
tc_server_accepted(const tc_server_t *s)
{
    return s != NULL ? s->accepted : 0;
}

uint64_t
tc_server_accept_errors(const tc_server_t *s)
{
    return s != NULL ? s->errors : 0;
}
