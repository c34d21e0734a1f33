/* Signal handlers on the loop thread, over ev_signal.  libev lets one loop
 * at a time own a signal; a second claim would abort inside libev, so this
 * file keeps its own table of owners and answers -EBUSY instead. */
#include <signal.h>

#include "internal.h"

struct tc_signal_s {
    tc_handle_t h;
    ev_signal w;
    tc_signal_cb cb;
    int signum;
};

static pthread_mutex_t owners_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    tc_loop_t *loop;      /* guarded by owners_lock */
    unsigned watchers;
} owners[NSIG];

static void
signal_fire(struct ev_loop *ev, ev_signal *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_signal_t *s = TC__CONTAINER_OF(w, tc_signal_t, w);
    s->cb(s, s->signum);
}

static void
release_owner(int signum)
{
    pthread_mutex_lock(&owners_lock);
    if (--owners[signum].watchers == 0) {
        owners[signum].loop = NULL;
    }
    pthread_mutex_unlock(&owners_lock);
}

static void
stop_quietly(tc_signal_t *s)
{
    if (ev_is_active(&s->w)) {
        ev_signal_stop(s->h.loop->ev, &s->w);
        release_owner(s->signum);
    }
}

static void
signal_close(tc_handle_t *h)
{
    stop_quietly(TC__CONTAINER_OF(h, tc_signal_t, h));
}

static bool
signal_is_active(const tc_handle_t *h)
{
    return ev_is_active(&TC__CONTAINER_OF(h, tc_signal_t, h)->w);
}

static const tc__handle_vtable_t signal_vt = {
    .close_impl = signal_close,
    .is_active = signal_is_active,
};

tc_handle_t *
tc_signal_handle(tc_signal_t *sig)
{
    return sig != NULL ? &sig->h : NULL;
}

int
tc_signal_new(tc_loop_t *loop, void *data, tc_signal_t **out)
{
    if (loop == NULL || out == NULL) {
        return -EINVAL;
    }
    tc_signal_t *s = calloc(1, sizeof(*s));
    if (s == NULL) {
        return -ENOMEM;
    }
    tc__handle_init(loop, &s->h, TC_HANDLE_SIGNAL, &signal_vt, data);
    ev_init(&s->w, signal_fire);
    *out = s;
    return 0;
}

int
tc_signal_start(tc_signal_t *s, tc_signal_cb cb, int signum)
{
    if (s == NULL || cb == NULL || signum <= 0 || signum >= NSIG ||
        signum == SIGKILL || signum == SIGSTOP || tc__handle_closing(&s->h)) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    stop_quietly(s);
    pthread_mutex_lock(&owners_lock);
    if (owners[signum].loop != NULL && owners[signum].loop != s->h.loop) {
        pthread_mutex_unlock(&owners_lock);
        return -EBUSY;
    }
    owners[signum].loop = s->h.loop;
    owners[signum].watchers++;
    pthread_mutex_unlock(&owners_lock);
    s->cb = cb;
    s->signum = signum;
    ev_signal_set(&s->w, signum);
    ev_signal_start(s->h.loop->ev, &s->w);
    return 0;
}

int
tc_signal_stop(tc_signal_t *s)
{
    if (s == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(s->h.loop);
    stop_quietly(s);
    return 0;
}
