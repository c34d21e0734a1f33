/* Poll handles: an ev_io on a descriptor the caller owns, level-triggered
 * as libev's are.  A watch that changed is checked just before libev hands
 * it to epoll_ctl (the loop's prepare phase): a descriptor closed by then
 * would fail with EBADF, on which Debian's libev asserts, so we stop the
 * watcher and feed it EV_ERROR instead, which the callback gets as status
 * -EBADF.  libev's own EV_ERROR (a release build of it) arrives the same
 * way, with the watcher stopped. */
#include <fcntl.h>

#include "internal.h"

struct tc_poll_s {
    tc_handle_t h;
    ev_io w;
    tc_poll_cb cb;
    int fd;
    /* On the loop's poll_changed list until its next prepare phase. */
    struct tc_poll_s *changed_prev, *changed_next;
    bool changed;
};

static void
unlist_changed(tc_poll_t *p)
{
    if (!p->changed) {
        return;
    }
    if (p->changed_prev != NULL) {
        p->changed_prev->changed_next = p->changed_next;
    } else {
        p->h.loop->poll_changed = p->changed_next;
    }
    if (p->changed_next != NULL) {
        p->changed_next->changed_prev = p->changed_prev;
    }
    p->changed_prev = p->changed_next = NULL;
    p->changed = false;
}

static void
list_changed(tc_poll_t *p)
{
    if (p->changed) {
        return;
    }
    tc_loop_t *loop = p->h.loop;
    p->changed = true;
    p->changed_prev = NULL;
    p->changed_next = loop->poll_changed;
    if (loop->poll_changed != NULL) {
        loop->poll_changed->changed_prev = p;
    }
    loop->poll_changed = p;
}

bool
tc__poll_check_changed(tc_loop_t *loop)
{
    bool fed = false;
    while (loop->poll_changed != NULL) {
        tc_poll_t *p = loop->poll_changed;
        unlist_changed(p);
        if (ev_is_active(&p->w) && fcntl(p->fd, F_GETFD) < 0 &&
            errno == EBADF) {
            tc__io_stop(loop->ev, &p->w);
            ev_feed_event(loop->ev, &p->w, EV_ERROR);
            fed = true;
        }
    }
    return fed;
}

static int
to_ev(int events)
{
    return ((events & TC_POLL_READABLE) ? EV_READ : 0) |
           ((events & TC_POLL_WRITABLE) ? EV_WRITE : 0);
}

static void
poll_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)ev;
    tc_poll_t *p = TC__CONTAINER_OF(w, tc_poll_t, w);
    if (revents & EV_ERROR) {
        tc__io_stop(p->h.loop->ev, &p->w);   /* libev may have already */
        p->cb(p, -EBADF, 0);
        return;
    }
    int events = ((revents & EV_READ) ? TC_POLL_READABLE : 0) |
                 ((revents & EV_WRITE) ? TC_POLL_WRITABLE : 0);
    if (events != 0) {
        p->cb(p, 0, events);
    }
}

static void
poll_close(tc_handle_t *h)
{
    tc_poll_t *p = TC__CONTAINER_OF(h, tc_poll_t, h);
    unlist_changed(p);
    tc__io_stop(h->loop->ev, &p->w);   /* drops a fed EV_ERROR too */
}

static bool
poll_is_active(const tc_handle_t *h)
{
    const tc_poll_t *p = TC__CONTAINER_OF(h, tc_poll_t, h);
    return ev_is_active(&p->w);
}

static const tc__handle_vtable_t poll_vt = {
    .close_impl = poll_close,
    .is_active = poll_is_active,
};

tc_handle_t *
tc_poll_handle(tc_poll_t *poll)
{
    return poll != NULL ? &poll->h : NULL;
}

int
tc_poll_new(tc_loop_t *loop, int fd, void *data, tc_poll_t **out)
{
    if (loop == NULL || out == NULL || fd < 0) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    if (fcntl(fd, F_GETFD) < 0) {
        return -EBADF;
    }
    tc_poll_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    tc__handle_init(loop, &p->h, TC_HANDLE_POLL, &poll_vt, data);
    p->fd = fd;
    ev_io_init(&p->w, poll_ready, fd, 0);
    *out = p;
    return 0;
}

int
tc_poll_start(tc_poll_t *p, int events, tc_poll_cb cb)
{
    if (p == NULL || cb == NULL || events == 0 ||
        (events & ~(TC_POLL_READABLE | TC_POLL_WRITABLE)) != 0 ||
        tc__handle_closing(&p->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(p->h.loop);
    struct ev_loop *ev = p->h.loop->ev;
    p->cb = cb;
    if (ev_is_active(&p->w) && (p->w.events & (EV_READ | EV_WRITE)) ==
                                   to_ev(events)) {
        return 0;
    }
    if (fcntl(p->fd, F_GETFD) < 0 && errno == EBADF) {
        tc__io_stop(ev, &p->w);
        return -EBADF;
    }
    /* ev_io_set only on a stopped watcher; the restart also drops an event
     * of the old set that is pending but not delivered. */
    tc__io_stop(ev, &p->w);
    ev_io_set(&p->w, p->fd, to_ev(events));
    tc__io_start(ev, &p->w);
    list_changed(p);
    return 0;
}

int
tc_poll_stop(tc_poll_t *p)
{
    if (p == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(p->h.loop);
    tc__io_stop(p->h.loop->ev, &p->w);
    return 0;
}

int
tc_poll_events(const tc_poll_t *p)
{
    if (p == NULL || !ev_is_active(&p->w)) {
        return 0;
    }
    return ((p->w.events & EV_READ) ? TC_POLL_READABLE : 0) |
           ((p->w.events & EV_WRITE) ? TC_POLL_WRITABLE : 0);
}

int
tc_poll_fd(const tc_poll_t *p)
{
    return p != NULL ? p->fd : -EINVAL;
}
