/* The loop: a libev loop plus the queues twincore adds to it.
 *
 * Each iteration: prepare (decide whether epoll may block) -> epoll -> IO,
 * timer and wakeup callbacks -> our after-callbacks phase (call-soon queue,
 * close callbacks, the after-iteration hook).  That phase hangs on libev's
 * invoke-pending callback, not on an ev_check watcher: libev runs check
 * watchers *before* the IO and timer callbacks of the same iteration.
 * Our own watchers are unref'd so that only user handles keep
 * tc_loop_run(TC_RUN_DEFAULT) going, except the idle watcher, which is
 * started only while queued work must run. */
#include <math.h>
#include <poll.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define TC__READ_BUF_SIZE (64u * 1024u)

/* The pre-poll wait for pool completions: at most this long, looking at
 * the backend for IO every POLL_CHECK_NS, and after a miss skipped for
 * up to 2^SPIN_MAX_BACKOFF - 1 iterations (work that outlasts the wait,
 * such as hashing megabytes, then costs it almost nothing). */
#define SPIN_NS 50000u
#define SPIN_POLL_CHECK_NS 5000u
#define SPIN_MAX_BACKOFF 6u

int
tc__callvec_push(tc__callvec_t *v, tc_call_cb fn, void *arg)
{
    if (v->len == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        tc__call_t *items = realloc(v->items, cap * sizeof(*items));
        if (items == NULL) {
            return -ENOMEM;
        }
        v->items = items;
        v->cap = cap;
    }
    v->items[v->len].fn = fn;
    v->items[v->len].arg = arg;
    v->len++;
    return 0;
}

static double
monotonic_s(void)
{
    return (double)tc__now_ns() / 1e9;   /* as CPython's time.monotonic() */
}

int
tc__mutex_init_short(pthread_mutex_t *m)
{
#ifdef PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP
    pthread_mutexattr_t attr;
    if (pthread_mutexattr_init(&attr) != 0) {
        return -ENOMEM;
    }
    pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ADAPTIVE_NP);
    int rc = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return -rc;
#else
    return -pthread_mutex_init(m, NULL);
#endif
}

unsigned
tc__usable_cpus(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof(set), &set) == 0) {
        int n = CPU_COUNT(&set);
        return n > 0 ? (unsigned)n : 1;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* Ask the kernel for a short time slice for the thread that runs a loop:
 * with EEVDF (Linux 6.12 and later) a thread with a shorter slice may
 * preempt a CPU-bound one when it wakes, so the loop runs its due timers
 * and IO at once while the pool's workers keep every CPU busy, instead of
 * waiting for a worker's slice (milliseconds) to end.  Its share of CPU
 * time is unchanged.  Once per thread; older kernels ignore the field, and
 * a policy other than the default one, or a raised priority, is left
 * alone.  Threads and processes it starts (pool workers, subprocesses)
 * get the default slice back (reset on fork).  (The kernel reports its
 * default slice, 0.75-3 ms, in sched_runtime.) */
#define SHORT_SLICE_NS 100000u     /* the kernel's lower bound */
struct sched_attr_v1 {    /* <linux/sched/types.h> clashes with glibc's */
    uint32_t size, sched_policy;
    uint64_t sched_flags;
    int32_t sched_nice;
    uint32_t sched_priority;
    uint64_t sched_runtime, sched_deadline, sched_period;
    uint32_t sched_util_min, sched_util_max;
};

static void
request_short_slice(void)
{
    static _Thread_local bool done;
    if (done) {
        return;
    }
    done = true;
#if defined(SYS_sched_getattr) && defined(SYS_sched_setattr)
    struct sched_attr_v1 attr;
    memset(&attr, 0, sizeof(attr));
    if (syscall(SYS_sched_getattr, 0, &attr, sizeof(attr), 0) != 0 ||
        attr.sched_policy != SCHED_OTHER || attr.sched_nice < 0 ||
        attr.sched_runtime <= SHORT_SLICE_NS) {
        return;
    }
    attr.size = sizeof(attr);
    attr.sched_runtime = SHORT_SLICE_NS;
    attr.sched_flags = 0x01;   /* SCHED_FLAG_RESET_ON_FORK */
    (void)syscall(SYS_sched_setattr, 0, &attr, 0);
#endif
}

static inline tc_loop_t *
loop_of(struct ev_loop *ev)
{
    return ev_userdata(ev);
}

/* libev calls this right after epoll returns; invoke_pending reads the
 * clock, after libev read its own to pick the timers that are due, so that
 * in a timer's callback the cached time is never before its due time. */
static void
after_poll(struct ev_loop *ev) EV_NOEXCEPT
{
    loop_of(ev)->polled = true;
}

static void
before_poll(struct ev_loop *ev) EV_NOEXCEPT
{
    (void)ev;
}

static bool
has_queued_work(const tc_loop_t *loop)
{
    return loop->soon.len > 0 || loop->closing_head != NULL;
}

/* Work for the after-phase: ours, or what events fed earlier and run
 * before this poll queued where we cannot see it (see invoke_pending). */
static bool
must_not_block(const tc_loop_t *loop)
{
    return has_queued_work(loop) || loop->fed_ran || loop->poll_fed;
}

/* True when the backend has events ready (IO, the wakeup eventfd). */
static bool
backend_ready(tc_loop_t *loop)
{
    struct pollfd pfd = {.fd = tc_loop_backend_fd(loop), .events = POLLIN};
    return pfd.fd >= 0 && poll(&pfd, 1, 0) > 0;
}

/* Wait briefly for cross-thread calls (pool completions) by polling rather
 * than in epoll: a sleeping loop costs each completion an eventfd write
 * and a wake-up, which on some machines take tens of microseconds.  Only
 * with pool work outstanding and nothing else to do; it ends at once when
 * the backend has IO ready, and backs off after misses.  The GIL is not
 * held here, so the workers run Python meanwhile.  Returns true when calls
 * are queued. */
static bool
spin_for_thread_calls(tc_loop_t *loop)
{
    if (loop->spin_ns == 0 || atomic_load(&loop->pool_pending) == 0) {
        return false;
    }
    if (loop->spin_skip > 0) {
        loop->spin_skip--;
        return false;
    }
    unsigned seen = atomic_load_explicit(&loop->xposted,
                                         memory_order_relaxed);
    pthread_mutex_lock(&loop->xlock);
    bool found = loop->xcalls.len > 0;
    loop->xspinning = !found;
    pthread_mutex_unlock(&loop->xlock);
    if (found) {
        return true;
    }
    uint64_t start = tc__now_ns();
    uint64_t deadline = start + loop->spin_ns;
    uint64_t next_check = start + SPIN_POLL_CHECK_NS;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&loop->xposted, memory_order_relaxed) !=
            seen) {
            break;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if ((i & 31) == 0) {
            uint64_t now = tc__now_ns();
            if (now >= deadline) {
                break;
            }
            if (now >= next_check) {
                if (backend_ready(loop)) {
                    break;
                }
                next_check = now + SPIN_POLL_CHECK_NS;
            }
        }
    }
    pthread_mutex_lock(&loop->xlock);
    loop->xspinning = false;
    found = loop->xcalls.len > 0;
    pthread_mutex_unlock(&loop->xlock);
    loop->stats.spin_waits++;
    loop->stats.spin_ns += tc__now_ns() - start;
    if (found) {
        loop->stats.spin_hits++;
        loop->spin_misses = 0;
    } else {
        if (loop->spin_misses < SPIN_MAX_BACKOFF) {
            loop->spin_misses++;
        }
        loop->spin_skip = (1u << loop->spin_misses) - 1;
    }
    return found;
}

static void
prepare_cb(struct ev_loop *ev, ev_prepare *w, int revents)
{
    (void)w;
    (void)revents;
    tc_loop_t *loop = loop_of(ev);
    loop->in_prepare_phase = true;
    /* tc_loop_run() calls this once before ev_run() does: what the first
     * call fed must keep the poll from blocking in the second. */
    if (loop->poll_changed != NULL && tc__poll_check_changed(loop)) {
        loop->poll_fed = true;
    }
    loop->fd_changes = false;   /* libev applies them right after this */
    /* Completions found by the wait run now; what they queue for a
     * binding's after-phase keeps the poll from blocking (fed_ran). */
    if (!must_not_block(loop) && spin_for_thread_calls(loop)) {
        tc__loop_run_thread_calls(loop);
        loop->fed_ran = true;
    }
    /* An active idle watcher makes libev poll with a zero timeout. */
    if (must_not_block(loop)) {
        if (!ev_is_active(&loop->soon_idle)) {
            ev_idle_start(ev, &loop->soon_idle);
        }
    } else {
        if (ev_is_active(&loop->soon_idle)) {
            ev_idle_stop(ev, &loop->soon_idle);
        }
        tc__timers_before_poll(loop);
    }
}

static void
idle_cb(struct ev_loop *ev, ev_idle *w, int revents)
{
    (void)ev;
    (void)w;
    (void)revents;
}

static void
bound_cb(struct ev_loop *ev, ev_timer *w, int revents)
{
    (void)ev;
    (void)w;
    (void)revents;   /* firing ends the iteration's wait: all it does */
}

static void
run_soon(tc_loop_t *loop)
{
    if (loop->soon.len == 0) {
        return;
    }
    /* Swap first: calls queued while these run wait for the next turn. */
    tc__callvec_t batch = loop->soon;
    loop->soon = loop->soon_spare;
    loop->soon.len = 0;
    for (size_t i = 0; i < batch.len; i++) {
        batch.items[i].fn(batch.items[i].arg);
    }
    loop->stats.soon_calls += batch.len;
    batch.len = 0;
    loop->soon_spare = batch;
}

static void
run_closing(tc_loop_t *loop, bool all)
{
    while (loop->closing_head != NULL) {
        tc_handle_t *h = loop->closing_head;
        if (!all && h->closed_at_iteration >= loop->stats.iterations) {
            break;
        }
        loop->closing_head = h->next_closing;
        if (loop->closing_head == NULL) {
            loop->closing_tail = NULL;
        }
        tc__handle_finish_close(h);
    }
}

/* libev calls this once for the prepare watchers and once for everything
 * the poll produced; only the second is followed by our phase.
 *
 * An event fed after the second call (a stream's notify fed from a soon
 * call or the after-iteration hook, e.g. reading resumed over plaintext
 * TLS already decoded) runs in the first call of the next iteration, or
 * in the one ev_run() begins with, before the poll.  What it queued for
 * our phase (soon calls, a binding's own events) must not wait for epoll,
 * which may never fire: once anything but our prepare watcher ran, the
 * poll does not block until our phase has run. */
static void
invoke_pending(struct ev_loop *ev)
{
    tc_loop_t *loop = loop_of(ev);
    if (loop->polled) {
        loop->polled = false;
        loop->now_mono = monotonic_s();
    }
    int fed = ev_pending_count(ev) - (ev_is_pending(&loop->prepare) ? 1 : 0);
    ev_invoke_pending(ev);
    if (loop->in_prepare_phase) {
        loop->in_prepare_phase = false;
        if (fed > 0) {
            loop->fed_ran = true;
        }
        if (must_not_block(loop) && !ev_is_active(&loop->soon_idle)) {
            ev_idle_start(ev, &loop->soon_idle);
        }
        return;
    }
    loop->fed_ran = false;
    loop->poll_fed = false;
    run_soon(loop);
    run_closing(loop, false);
    if (loop->after_iteration != NULL) {
        loop->after_iteration(loop->after_iteration_arg);
    }
    loop->stats.iterations++;
}

void
tc__loop_run_thread_calls(tc_loop_t *loop)
{
    pthread_mutex_lock(&loop->xlock);
    tc__callvec_t batch = loop->xcalls;
    loop->xcalls = loop->xspare;
    loop->xcalls.len = 0;
    pthread_mutex_unlock(&loop->xlock);

    for (size_t i = 0; i < batch.len; i++) {
        batch.items[i].fn(batch.items[i].arg);
    }
    loop->stats.thread_calls += batch.len;
    batch.len = 0;
    /* Only the loop thread touches xspare, but a producer may be growing
     * xcalls right now: the swap back happens under the lock next time. */
    pthread_mutex_lock(&loop->xlock);
    loop->xspare = batch;
    pthread_mutex_unlock(&loop->xlock);
}

static void
wakeup_cb(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    tc_loop_t *loop = loop_of(ev);
    uint64_t count;
    /* Reset the eventfd before taking the queue: a call pushed after the
     * swap writes it again. */
    while (read(w->fd, &count, sizeof(count)) < 0 && errno == EINTR) {
    }
    loop->stats.wakeups++;
    tc__signal_dispatch(loop);
    tc__loop_run_thread_calls(loop);
}

int
tc_loop_new(tc_loop_t **out)
{
    if (out == NULL) {
        return -EINVAL;
    }
    tc_loop_t *loop = calloc(1, sizeof(*loop));
    if (loop == NULL) {
        return -ENOMEM;
    }
    int err = -ENOMEM;
    loop->read_buf = malloc(TC__READ_BUF_SIZE);
    if (loop->read_buf == NULL) {
        goto fail;
    }
    loop->read_buf_size = TC__READ_BUF_SIZE;
    loop->ev = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV);
    if (loop->ev == NULL) {
        loop->ev = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
    }
    if (loop->ev == NULL) {
        err = errno ? -errno : -ENOMEM;
        goto fail;
    }
    loop->wakeup_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (loop->wakeup_fd < 0) {
        err = tc__neg_errno();
        goto fail_ev;
    }
    if (tc__mutex_init_short(&loop->xlock) != 0) {
        goto fail_fd;
    }
    loop->owner = pthread_self();
    loop->backend_fd = -2;
    loop->now_mono = monotonic_s();
    loop->spin_ns = tc__usable_cpus() > 1 ? SPIN_NS : 0;
    atomic_init(&loop->xposted, 0);
    ev_set_userdata(loop->ev, loop);
    ev_set_loop_release_cb(loop->ev, before_poll, after_poll);

    ev_prepare_init(&loop->prepare, prepare_cb);
    ev_prepare_start(loop->ev, &loop->prepare);
    ev_unref(loop->ev);
    ev_set_invoke_pending_cb(loop->ev, invoke_pending);
    ev_io_init(&loop->wakeup_io, wakeup_cb, loop->wakeup_fd, EV_READ);
    tc__io_start(loop->ev, &loop->wakeup_io);
    ev_unref(loop->ev);
    ev_idle_init(&loop->soon_idle, idle_cb);
    ev_init(&loop->bound, bound_cb);
    tc__timers_init(loop);
    /* Register the wakeup fd with epoll now (libev does so only inside
     * ev_run): an embedding host may poll the backend fd first. */
    loop->in_prepare_phase = true;
    ev_run(loop->ev, EVRUN_NOWAIT);
    loop->stats.iterations = 0;
    loop->fd_changes = false;
    *out = loop;
    return 0;

fail_fd:
    close(loop->wakeup_fd);
fail_ev:
    ev_loop_destroy(loop->ev);
fail:
    free(loop->read_buf);
    free(loop);
    return err;
}

int
tc_loop_close(tc_loop_t *loop)
{
    if (loop == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    if (loop->running) {
        return -EBUSY;
    }
    if (loop->open_handles > 0) {
        return -EBUSY;
    }
    /* Pool work for this loop whose completion is not delivered yet: a
     * worker would write into the freed loop. */
    if (atomic_load(&loop->pool_pending) != 0) {
        return -EBUSY;
    }
    /* Refuse new cross-thread calls, then run the ones already queued:
     * nothing that was accepted is dropped. */
    pthread_mutex_lock(&loop->xlock);
    loop->xclosed = true;
    pthread_mutex_unlock(&loop->xlock);
    while (loop->soon.len > 0 || loop->closing_head != NULL ||
           loop->xcalls.len > 0) {
        tc__loop_run_thread_calls(loop);
        run_soon(loop);
        run_closing(loop, true);
    }
    if (loop->open_handles > 0) {
        /* A close callback opened a new handle. */
        pthread_mutex_lock(&loop->xlock);
        loop->xclosed = false;
        pthread_mutex_unlock(&loop->xlock);
        return -EBUSY;
    }
    ev_ref(loop->ev);
    ev_prepare_stop(loop->ev, &loop->prepare);
    ev_ref(loop->ev);
    tc__io_stop(loop->ev, &loop->wakeup_io);
    close(loop->wakeup_fd);
    tc__timers_fini(loop);
    ev_idle_stop(loop->ev, &loop->soon_idle);
    ev_timer_stop(loop->ev, &loop->bound);
    ev_loop_destroy(loop->ev);
    pthread_mutex_destroy(&loop->xlock);
    free(loop->soon.items);
    free(loop->soon_spare.items);
    free(loop->xcalls.items);
    free(loop->xspare.items);
    free(loop->read_buf);
    free(loop);
    return 0;
}

int
tc_loop_run(tc_loop_t *loop, tc_run_mode_t mode)
{
    if (loop == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    int flags;
    switch (mode) {
    case TC_RUN_DEFAULT:
        flags = 0;
        break;
    case TC_RUN_ONCE:
        flags = EVRUN_ONCE;
        break;
    case TC_RUN_NOWAIT:
        flags = EVRUN_NOWAIT;
        break;
    default:
        return -EINVAL;
    }
    if (loop->running) {
        return -EBUSY;
    }
    request_short_slice();
    loop->running = true;
    loop->stop_requested = false;
    loop->now_mono = monotonic_s();
    /* Queued work left from before the run must not wait on epoll. */
    prepare_cb(loop->ev, &loop->prepare, 0);
    /* ev_run() starts with an invoke-pending of its own: not the end of an
     * iteration, so the flag prepare_cb set stays for it. */
    bool alive = ev_run(loop->ev, flags);
    loop->running = false;
    return alive ? 1 : 0;
}

int
tc_loop_run_timeout(tc_loop_t *loop, double timeout_s)
{
    if (loop == NULL || timeout_s != timeout_s) {
        return -EINVAL;
    }
    if (timeout_s < 0.0 || timeout_s == 0.0) {
        int rc = tc_loop_run(loop, timeout_s < 0.0 ? TC_RUN_ONCE
                                                   : TC_RUN_NOWAIT);
        return rc < 0 ? rc : 0;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    if (loop->running) {
        return -EBUSY;
    }
    if (timeout_s > 1e9) {
        timeout_s = 1e9;   /* libev's arithmetic; "a long time" anyway */
    }
    /* A timer of our own bounds the wait.  It counts as active while it
     * is armed, so the iteration waits for it even when no handle is
     * active, as select() with nothing to watch would sleep.  Its firing
     * is an event like any other: the iteration ends. */
    ev_timer_set(&loop->bound, timeout_s, 0.0);
    ev_now_update(loop->ev);
    ev_timer_start(loop->ev, &loop->bound);
    int rc = tc_loop_run(loop, TC_RUN_ONCE);
    ev_timer_stop(loop->ev, &loop->bound);
    /* ev_run()'s "still active" counted our timer: not worth reporting. */
    return rc < 0 ? rc : 0;
}

void
tc_loop_stop(tc_loop_t *loop)
{
    if (loop == NULL) {
        return;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    loop->stop_requested = true;
    ev_break(loop->ev, EVBREAK_ALL);
}

uint64_t
tc_loop_now(const tc_loop_t *loop)
{
    return (uint64_t)(loop->now_mono * 1000.0);
}

double
tc_loop_now_s(const tc_loop_t *loop)
{
    return loop->now_mono;
}

void
tc_loop_update_time(tc_loop_t *loop)
{
    loop->now_mono = monotonic_s();
    ev_now_update(loop->ev);
}

int
tc_loop_call_soon(tc_loop_t *loop, tc_call_cb fn, void *arg)
{
    if (loop == NULL || fn == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    return tc__callvec_push(&loop->soon, fn, arg);
}

int
tc_loop_call_from_thread(tc_loop_t *loop, tc_call_cb fn, void *arg)
{
    if (loop == NULL || fn == NULL) {
        return -EINVAL;
    }
    pthread_mutex_lock(&loop->xlock);
    if (loop->xclosed) {
        pthread_mutex_unlock(&loop->xlock);
        return -ESHUTDOWN;
    }
    int err = tc__callvec_push(&loop->xcalls, fn, arg);
    if (err == 0) {
        atomic_fetch_add_explicit(&loop->xposted, 1, memory_order_relaxed);
    }
    /* The first call of a batch sends the wakeup; the rest ride on it.
     * Writing under the lock keeps the loop alive while we touch it.  A
     * loop polling for calls needs no wakeup: it looks under this lock
     * before it sleeps. */
    if (err == 0 && loop->xcalls.len == 1 && !loop->xspinning) {
        uint64_t one = 1;
        while (write(loop->wakeup_fd, &one, sizeof(one)) < 0 &&
               errno == EINTR) {
        }
    }
    pthread_mutex_unlock(&loop->xlock);
    return err;
}

void
tc_loop_walk(tc_loop_t *loop, tc_walk_cb cb, void *arg)
{
    if (loop == NULL || cb == NULL) {
        return;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    tc_handle_t *h = loop->handles;
    while (h != NULL) {
        tc_handle_t *next = h->next;   /* cb may close h */
        cb(h, arg);
        h = next;
    }
}

size_t
tc_loop_open_handles(const tc_loop_t *loop)
{
    return loop != NULL ? loop->open_handles : 0;
}

static void
embed_noop(struct ev_loop *ev, ev_embed *w, int revents)
{
    (void)ev;
    (void)w;
    (void)revents;
}

int
tc_loop_backend_fd(const tc_loop_t *cloop)
{
    if (cloop == NULL) {
        return -EINVAL;
    }
    tc_loop_t *loop = (tc_loop_t *)cloop;
    if (loop->backend_fd != -2) {
        return loop->backend_fd;
    }
    /* libev does not export its epoll descriptor, but embedding a loop
     * watches exactly that descriptor with a public ev_io. */
    loop->backend_fd = -ENOTSUP;
    if (!(ev_backend(loop->ev) & ev_embeddable_backends())) {
        return loop->backend_fd;
    }
    struct ev_loop *outer = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV);
    if (outer == NULL) {
        return -ENOMEM;
    }
    ev_embed embed;
    ev_embed_init(&embed, embed_noop, loop->ev);
    ev_embed_start(outer, &embed);
    loop->backend_fd = embed.io.fd;
    ev_embed_stop(outer, &embed);
    ev_loop_destroy(outer);
    return loop->backend_fd;
}

int
tc_loop_backend_timeout(tc_loop_t *loop)
{
    if (loop == NULL) {
        return -1;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    if (must_not_block(loop) || loop->fd_changes ||
        ev_pending_count(loop->ev) > 0) {
        return 0;
    }
    double best = -1.0;
    for (tc_handle_t *h = loop->handles; h != NULL; h = h->next) {
        if (h->vt->next_timeout == NULL || tc__handle_closing(h)) {
            continue;
        }
        double t = h->vt->next_timeout(h);
        if (t >= 0.0 && (best < 0.0 || t < best)) {
            best = t;
        }
    }
    if (best < 0.0) {
        return -1;
    }
    double ms = ceil(best * 1000.0);
    return ms > (double)INT32_MAX ? INT32_MAX : (int)ms;
}

void
tc_loop_stats(const tc_loop_t *loop, tc_loop_stats_t *out)
{
    if (loop != NULL && out != NULL) {
        *out = loop->stats;
    }
}

void *
tc_loop_data(const tc_loop_t *loop)
{
    return loop != NULL ? loop->data : NULL;
}

void
tc_loop_set_data(tc_loop_t *loop, void *data)
{
    if (loop != NULL) {
        loop->data = data;
    }
}

bool
tc_loop_is_owner_thread(const tc_loop_t *loop)
{
    return loop != NULL && pthread_equal(loop->owner, pthread_self());
}

int
tc_loop_adopt(tc_loop_t *loop)
{
    if (loop == NULL) {
        return -EINVAL;
    }
    if (loop->running) {
        return -EBUSY;
    }
    loop->owner = pthread_self();
    return 0;
}

void
tc_loop_set_after_iteration(tc_loop_t *loop, tc_call_cb fn, void *arg)
{
    if (loop == NULL) {
        return;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    loop->after_iteration = fn;
    loop->after_iteration_arg = arg;
}

void
tc__loop_ref(tc_loop_t *loop)
{
    TC__ASSERT_LOOP_THREAD(loop);
    loop->extra_refs++;
    ev_ref(loop->ev);
}

void
tc__loop_unref(tc_loop_t *loop)
{
    TC__ASSERT_LOOP_THREAD(loop);
    assert(loop->extra_refs > 0);
    loop->extra_refs--;
    ev_unref(loop->ev);
}
