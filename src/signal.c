/* Signal handlers that run on the loop thread, not in signal context.
 *
 * Our own sigaction handler marks the signal pending in its loop's bitmask
 * and writes the loop's wakeup eventfd (both async-signal-safe); the loop
 * then calls every started handle for that signal.  libev's ev_signal is
 * not used: its wakeup reaches epoll only while ev_run() blocks, so an
 * embedding host would not wake.  One loop at a time owns a signal; the
 * handler that was installed before the first start is restored after the
 * last stop (Python's, for instance). */
#include <signal.h>
#include <unistd.h>

#include "internal.h"

struct tc_signal_s {
    tc_handle_t h;
    tc_signal_cb cb;
    int signum;                 /* 0 while stopped */
    tc_signal_t *next_active;   /* loop->signals */
};

static pthread_mutex_t owners_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
    _Atomic(tc_loop_t *) loop;  /* read by the handler, lock-free */
    unsigned watchers;          /* guarded by owners_lock */
    struct sigaction previous;  /* guarded by owners_lock */
} owners[NSIG];

/* Signal context: only atomics and write(2). */
static void
on_signal(int signum)
{
    int saved_errno = errno;
    tc_loop_t *loop = atomic_load(&owners[signum].loop);
    if (loop != NULL) {
        atomic_fetch_or(&loop->signals_pending[signum / 64],
                        (uint64_t)1 << (signum % 64));
        uint64_t one = 1;
        ssize_t rc = write(loop->wakeup_fd, &one, sizeof(one));
        (void)rc;   /* a full eventfd is already readable */
    }
    errno = saved_errno;
}

void
tc__signal_dispatch(tc_loop_t *loop)
{
    for (int word = 0; word < TC__SIGNAL_WORDS; word++) {
        uint64_t bits = atomic_exchange(&loop->signals_pending[word], 0);
        while (bits != 0) {
            int bit = __builtin_ctzll(bits);
            bits &= bits - 1;
            int signum = word * 64 + bit;
            /* A callback may stop or close handles: take the next first. */
            tc_signal_t *s = loop->signals;
            while (s != NULL) {
                tc_signal_t *next = s->next_active;
                if (s->signum == signum) {
                    s->cb(s, signum);
                }
                s = next;
            }
        }
    }
}

static void
stop_quietly(tc_signal_t *s)
{
    if (s->signum == 0) {
        return;
    }
    tc_signal_t **p = &s->h.loop->signals;
    while (*p != NULL && *p != s) {
        p = &(*p)->next_active;
    }
    if (*p == s) {
        *p = s->next_active;
    }
    s->next_active = NULL;
    tc__loop_unref(s->h.loop);
    pthread_mutex_lock(&owners_lock);
    if (--owners[s->signum].watchers == 0) {
        sigaction(s->signum, &owners[s->signum].previous, NULL);
        atomic_store(&owners[s->signum].loop, NULL);
    }
    pthread_mutex_unlock(&owners_lock);
    s->signum = 0;
}

static void
signal_close(tc_handle_t *h)
{
    stop_quietly(TC__CONTAINER_OF(h, tc_signal_t, h));
}

static bool
signal_is_active(const tc_handle_t *h)
{
    return TC__CONTAINER_OF(h, tc_signal_t, h)->signum != 0;
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
    tc_loop_t *loop = s->h.loop;
    TC__ASSERT_LOOP_THREAD(loop);
    if (s->signum == signum) {
        s->cb = cb;
        return 0;
    }
    stop_quietly(s);
    pthread_mutex_lock(&owners_lock);
    tc_loop_t *owner = atomic_load(&owners[signum].loop);
    if (owner != NULL && owner != loop) {
        pthread_mutex_unlock(&owners_lock);
        return -EBUSY;
    }
    if (owners[signum].watchers == 0) {
        struct sigaction sa;
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigfillset(&sa.sa_mask);
        atomic_store(&owners[signum].loop, loop);
        if (sigaction(signum, &sa, &owners[signum].previous) != 0) {
            int err = tc__neg_errno();
            atomic_store(&owners[signum].loop, NULL);
            pthread_mutex_unlock(&owners_lock);
            return err;
        }
    }
    owners[signum].watchers++;
    pthread_mutex_unlock(&owners_lock);
    s->cb = cb;
    s->signum = signum;
    s->next_active = loop->signals;
    loop->signals = s;
    tc__loop_ref(loop);   /* a watched signal keeps the loop running */
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
