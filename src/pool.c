/* The CPU pool: worker threads, a queue per priority, and the way back to
 * the loops.
 *
 * One mutex per pool guards the queues and the counters; idle workers wait
 * on work_cond, submitters of a full bounded queue on space_cond.  A submit
 * signals a sleeping worker only when no signal is already on its way, so a
 * burst of submits to a busy pool costs no futex calls.  Finished work is
 * pushed, without a lock, on its loop's pool_done stack; the push that finds
 * the stack empty queues one drain_done() call to the loop, which takes the
 * whole stack, runs the done callbacks oldest first, and puts the work
 * records back on their pool's freelist under one lock per batch.
 *
 * Invariants: a work record is QUEUED (on a queue), RUNNING (a worker took
 * it; it stays RUNNING once finished) or CANCELLED; its done callback runs
 * exactly once, from drain_done().  pool->outstanding counts records handed
 * out and not yet recycled; a freed pool is released when it drops to 0.
 * At most one drain_done() is queued per loop at any time. */
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define FREELIST_MAX 4096
#define MAX_THREADS 1024

enum work_state {
    W_QUEUED = 0,
    W_RUNNING,
    W_CANCELLED,
};

struct tc_work_s {
    /* Queue links under the pool lock; next also links the loop's done
     * stack, a recycled batch and the freelist. */
    tc_work_t *prev, *next;
    tc_pool_t *pool;
    tc_loop_t *loop;
    tc_work_fn work_fn;
    tc_work_done_cb done_cb;
    void *arg;
    uint64_t submit_ns;
    unsigned generation;        /* pool generation at submit (see fork) */
    int status;                 /* written by whoever finishes the work */
    unsigned char priority;
    unsigned char state;        /* guards: pool lock */
    bool loop_ref;              /* holds a tc__loop_ref on loop */
    atomic_bool cancel_flag;
};

/* Counters one worker writes and tc_pool_stats() reads. */
typedef struct worker {
    pthread_t tid;
    tc_pool_t *pool;
    atomic_uint_fast64_t completed, failed;
    atomic_uint_fast64_t wait_ns[TC_POOL_HIST_BUCKETS];
    atomic_uint_fast64_t run_ns[TC_POOL_HIST_BUCKETS];
    char pad[64];               /* keep neighbours off our cache lines */
} worker_t;

typedef struct queue {
    tc_work_t *head, *tail;
} queue_t;

struct tc_pool_s {
    pthread_mutex_t lock;       /* guards: every field up to 'registry' */
    pthread_cond_t work_cond;   /* idle workers wait for work */
    pthread_cond_t space_cond;  /* submitters wait for queue room */
    queue_t queues[TC_PRIORITY_COUNT];
    size_t queued, running, running_low;
    unsigned idle;              /* workers waiting on work_cond */
    unsigned wakes_pending;     /* signalled, not yet awake */
    unsigned space_waiters;
    unsigned nstarted;          /* workers[0..nstarted) are running */
    bool start_failed;          /* do not retry pthread_create each time */
    bool stopping;
    bool freed;
    size_t outstanding;         /* records handed out, not yet recycled */
    tc_work_t *freelist;
    size_t nfree;
    unsigned generation;        /* bumped in a child after fork */
    uint64_t submitted, cancelled;

    tc_pool_t *reg_prev, *reg_next;     /* guards: registry_lock */

    atomic_bool cancel_all;     /* a cancelling shutdown flags all work */
    /* Fixed at tc_pool_new. */
    unsigned nthreads;
    unsigned low_cap;           /* workers LOW work may occupy */
    size_t max_queued;
    bool block_when_full;
    size_t stack_size;
    worker_t *workers;
};

/* Every live pool, for the fork handlers.  Lock order: registry_lock, then
 * each pool's lock in list order. */
static pthread_mutex_t registry_lock = PTHREAD_MUTEX_INITIALIZER;
static tc_pool_t *registry;
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static int atfork_err;

/* The pool whose worker this thread is, to refuse a self-join. */
static _Thread_local tc_pool_t *current_pool;

static inline uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static inline unsigned
hist_bucket(uint64_t ns)
{
    if (ns == 0) {
        return 0;
    }
    unsigned b = 64u - (unsigned)__builtin_clzll(ns);
    return b < TC_POOL_HIST_BUCKETS ? b : TC_POOL_HIST_BUCKETS - 1;
}

/* Only the owning worker writes these: a plain add, not a locked one. */
static inline void
counter_bump(atomic_uint_fast64_t *c)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* ---- queues (pool lock held) ---- */

static void
queue_push(queue_t *q, tc_work_t *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail != NULL) {
        q->tail->next = w;
    } else {
        q->head = w;
    }
    q->tail = w;
}

static void
queue_unlink(queue_t *q, tc_work_t *w)
{
    if (w->prev != NULL) {
        w->prev->next = w->next;
    } else {
        q->head = w->next;
    }
    if (w->next != NULL) {
        w->next->prev = w->prev;
    } else {
        q->tail = w->prev;
    }
    w->prev = w->next = NULL;
}

/* The next work a worker may run, marked RUNNING, or NULL. */
static tc_work_t *
take_work(tc_pool_t *pool)
{
    for (unsigned p = 0; p < TC_PRIORITY_COUNT; p++) {
        tc_work_t *w = pool->queues[p].head;
        if (w == NULL) {
            continue;
        }
        if (p == TC_PRIORITY_LOW && pool->running_low >= pool->low_cap &&
            !pool->stopping) {
            continue;
        }
        queue_unlink(&pool->queues[p], w);
        w->state = W_RUNNING;
        pool->queued--;
        pool->running++;
        if (p == TC_PRIORITY_LOW) {
            pool->running_low++;
        }
        return w;
    }
    return NULL;
}

/* ---- the way back to the loop ---- */

static void drain_done(void *arg);

/* Queue the loop's one drain_done().  A worker waits out a failed
 * allocation rather than lose a completion; -ESHUTDOWN means the loop was
 * closed with work outstanding, which tc_loop_close() refuses. */
static void
schedule_drain(tc_loop_t *loop)
{
    if (tc_loop_is_owner_thread(loop)) {
        while (tc_loop_call_soon(loop, drain_done, loop) == -ENOMEM) {
            nanosleep(&(struct timespec){0, 1000000}, NULL);
        }
        return;
    }
    while (tc_loop_call_from_thread(loop, drain_done, loop) == -ENOMEM) {
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
}

/* Hand finished or cancelled work to its loop.  Thread: any. */
static void
push_done(tc_work_t *w)
{
    tc_loop_t *loop = w->loop;
    tc_work_t *head = atomic_load_explicit(&loop->pool_done,
                                           memory_order_relaxed);
    do {
        w->next = head;
    } while (!atomic_compare_exchange_weak_explicit(
        &loop->pool_done, &head, w, memory_order_release,
        memory_order_relaxed));
    /* Only the push onto an empty stack queues a drain: the one queued
     * before is still to run and will take this record too. */
    if (head == NULL) {
        schedule_drain(loop);
    }
}

static void
pool_destroy(tc_pool_t *pool)
{
    tc_work_t *w = pool->freelist;
    while (w != NULL) {
        tc_work_t *next = w->next;
        free(w);
        w = next;
    }
    pthread_cond_destroy(&pool->space_cond);
    pthread_cond_destroy(&pool->work_cond);
    pthread_mutex_destroy(&pool->lock);
    free(pool->workers);
    free(pool);
}

/* Put n delivered records of one pool back on its freelist. */
static void
recycle(tc_pool_t *pool, tc_work_t *list)
{
    tc_work_t *spill = NULL;
    pthread_mutex_lock(&pool->lock);
    while (list != NULL) {
        tc_work_t *w = list;
        list = w->next;
        bool current = w->generation == pool->generation;
        if (current) {
            pool->outstanding--;
        }
        if (current && !pool->freed && pool->nfree < FREELIST_MAX) {
            w->next = pool->freelist;
            pool->freelist = w;
            pool->nfree++;
        } else {
            w->next = spill;
            spill = w;
        }
    }
    bool last = pool->freed && pool->outstanding == 0;
    pthread_mutex_unlock(&pool->lock);
    while (spill != NULL) {
        tc_work_t *next = spill->next;
        free(spill);
        spill = next;
    }
    if (last) {
        pool_destroy(pool);
    }
}

/* Run the done callbacks of everything pushed on the loop's stack, oldest
 * first.  Thread: loop. */
static void
drain_done(void *arg)
{
    tc_loop_t *loop = arg;
    tc_work_t *list = atomic_exchange_explicit(&loop->pool_done, NULL,
                                               memory_order_acquire);
    tc_work_t *fifo = NULL;
    while (list != NULL) {
        tc_work_t *next = list->next;
        list->next = fifo;
        fifo = list;
        list = next;
    }

    size_t n = 0;
    tc_pool_t *batch_pool = NULL;
    tc_work_t *batch = NULL;
    while (fifo != NULL) {
        tc_work_t *w = fifo;
        fifo = w->next;
        if (w->done_cb != NULL) {
            w->done_cb(w, w->status, w->arg);
        }
        if (w->loop_ref) {
            tc__loop_unref(loop);
        }
        n++;
        /* Records go back in runs of one pool: one lock per run. */
        if (w->pool != batch_pool && batch != NULL) {
            recycle(batch_pool, batch);
            batch = NULL;
        }
        batch_pool = w->pool;
        w->next = batch;
        batch = w;
    }
    if (batch != NULL) {
        recycle(batch_pool, batch);
    }
    atomic_fetch_sub_explicit(&loop->pool_pending, n, memory_order_release);
}

/* ---- workers ---- */

static void
record_run(worker_t *me, int status, uint64_t submit_ns, uint64_t start_ns,
           uint64_t end_ns)
{
    counter_bump(status == 0 ? &me->completed : &me->failed);
    uint64_t wait = start_ns > submit_ns ? start_ns - submit_ns : 0;
    uint64_t run = end_ns > start_ns ? end_ns - start_ns : 0;
    counter_bump(&me->wait_ns[hist_bucket(wait)]);
    counter_bump(&me->run_ns[hist_bucket(run)]);
}

/* Thread: worker.  A finished work is handed to its loop only after the
 * counters say so, and while the next one is already taken: the loop never
 * sees a completion that tc_pool_stats() does not. */
static void *
worker_main(void *arg)
{
    worker_t *me = arg;
    tc_pool_t *pool = me->pool;
    tc_work_t *finished = NULL;

    current_pool = pool;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        tc_work_t *w = take_work(pool);
        if (w == NULL) {
            if (finished != NULL) {
                pthread_mutex_unlock(&pool->lock);
                push_done(finished);
                finished = NULL;
                pthread_mutex_lock(&pool->lock);
                continue;
            }
            if (pool->stopping) {
                break;
            }
            pool->idle++;
            pthread_cond_wait(&pool->work_cond, &pool->lock);
            pool->idle--;
            if (pool->wakes_pending > 0) {
                pool->wakes_pending--;
            }
            continue;
        }
        if (pool->space_waiters > 0) {
            pthread_cond_signal(&pool->space_cond);
        }
        pthread_mutex_unlock(&pool->lock);
        if (finished != NULL) {
            push_done(finished);    /* from now on it is its loop's */
        }

        uint64_t start_ns = now_ns();
        int status = w->work_fn(w, w->arg);
        uint64_t end_ns = now_ns();
        w->status = status;
        record_run(me, status, w->submit_ns, start_ns, end_ns);
        finished = w;

        pthread_mutex_lock(&pool->lock);
        pool->running--;
        if (w->priority == TC_PRIORITY_LOW) {
            pool->running_low--;
        }
    }
    pthread_mutex_unlock(&pool->lock);
    return NULL;
}

/* Start the workers not yet running.  Pool lock held.  Workers block every
 * signal: signals belong to the loops' threads. */
static int
start_workers(tc_pool_t *pool)
{
    pthread_attr_t attr;
    int rc = pthread_attr_init(&attr);
    if (rc != 0) {
        return -rc;
    }
    if (pool->stack_size > 0) {
        rc = pthread_attr_setstacksize(&attr, pool->stack_size);
        if (rc != 0) {
            pthread_attr_destroy(&attr);
            return -rc;
        }
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    while (pool->nstarted < pool->nthreads) {
        worker_t *wk = &pool->workers[pool->nstarted];
        wk->pool = pool;
        rc = pthread_create(&wk->tid, &attr, worker_main, wk);
        if (rc != 0) {
            break;
        }
        pool->nstarted++;
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        pool->start_failed = true;
        return pool->nstarted > 0 ? 0 : -rc;
    }
    return 0;
}

/* ---- fork ---- */

static void
atfork_prepare(void)
{
    pthread_mutex_lock(&registry_lock);
    for (tc_pool_t *p = registry; p != NULL; p = p->reg_next) {
        pthread_mutex_lock(&p->lock);
    }
}

static void
atfork_parent(void)
{
    for (tc_pool_t *p = registry; p != NULL; p = p->reg_next) {
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&registry_lock);
}

/* The child has no workers: forget them and the parent's queued work, so
 * the next submit starts a fresh set.  Records the parent's workers or
 * loops still hold belong to an older generation and are never counted. */
static void
reset_in_child(tc_pool_t *pool)
{
    for (unsigned p = 0; p < TC_PRIORITY_COUNT; p++) {
        tc_work_t *w = pool->queues[p].head;
        while (w != NULL) {
            tc_work_t *next = w->next;
            w->next = pool->freelist;
            pool->freelist = w;
            pool->nfree++;
            w = next;
        }
        pool->queues[p].head = pool->queues[p].tail = NULL;
    }
    pool->generation++;
    pool->queued = pool->running = pool->running_low = 0;
    pool->idle = pool->wakes_pending = pool->space_waiters = 0;
    pool->nstarted = 0;
    pool->start_failed = false;
    pool->outstanding = 0;
    pool->submitted = pool->cancelled = 0;
    memset(pool->workers, 0, pool->nthreads * sizeof(*pool->workers));
    /* Waiters of the parent vanished with their threads. */
    pthread_cond_init(&pool->work_cond, NULL);
    pthread_cond_init(&pool->space_cond, NULL);
}

static void
atfork_child(void)
{
    for (tc_pool_t *p = registry; p != NULL; p = p->reg_next) {
        reset_in_child(p);
        pthread_mutex_unlock(&p->lock);
    }
    pthread_mutex_unlock(&registry_lock);
}

static void
install_atfork(void)
{
    atfork_err = -pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ---- public API ---- */

int
tc_pool_new(const tc_pool_opts_t *opts, tc_pool_t **out)
{
    if (out == NULL) {
        return -EINVAL;
    }
    tc_pool_opts_t o = {0};
    if (opts != NULL) {
        o = *opts;
    }
    if (o.threads == 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        o.threads = n > 0 ? (unsigned)n : 1u;
    }
    if (o.threads > MAX_THREADS) {
        return -EINVAL;
    }
    pthread_once(&atfork_once, install_atfork);
    if (atfork_err != 0) {
        return atfork_err;
    }

    int err = -ENOMEM;
    tc_pool_t *pool = calloc(1, sizeof(*pool));
    if (pool == NULL) {
        return -ENOMEM;
    }
    pool->nthreads = o.threads;
    pool->low_cap = o.threads > 1 ? o.threads - 1 : 1;
    pool->max_queued = o.max_queued;
    pool->block_when_full = o.block_when_full;
    pool->stack_size = o.stack_size;
    pool->workers = calloc(o.threads, sizeof(*pool->workers));
    if (pool->workers == NULL) {
        goto fail;
    }
    int rc = pthread_mutex_init(&pool->lock, NULL);
    if (rc != 0) {
        err = -rc;
        goto fail_workers;
    }
    rc = pthread_cond_init(&pool->work_cond, NULL);
    if (rc != 0) {
        err = -rc;
        goto fail_lock;
    }
    rc = pthread_cond_init(&pool->space_cond, NULL);
    if (rc != 0) {
        err = -rc;
        goto fail_work_cond;
    }

    pthread_mutex_lock(&registry_lock);
    pool->reg_next = registry;
    if (registry != NULL) {
        registry->reg_prev = pool;
    }
    registry = pool;
    pthread_mutex_unlock(&registry_lock);
    *out = pool;
    return 0;

fail_work_cond:
    pthread_cond_destroy(&pool->work_cond);
fail_lock:
    pthread_mutex_destroy(&pool->lock);
fail_workers:
    free(pool->workers);
fail:
    free(pool);
    return err;
}

/* May the caller queue one more work?  Waits for room when the pool is
 * told to.  Pool lock held. */
static int
admit(tc_pool_t *pool)
{
    for (;;) {
        if (pool->stopping) {
            return -ESHUTDOWN;
        }
        if (pool->max_queued == 0 || pool->queued < pool->max_queued) {
            break;
        }
        if (!pool->block_when_full) {
            return -EAGAIN;
        }
        pool->space_waiters++;
        pthread_cond_wait(&pool->space_cond, &pool->lock);
        pool->space_waiters--;
    }
    if (pool->nstarted < pool->nthreads && !pool->start_failed) {
        return start_workers(pool);
    }
    return 0;
}

int
tc_pool_submit(tc_pool_t *pool, tc_loop_t *loop, tc_work_fn work_fn,
               tc_work_done_cb done_cb, void *arg, tc_priority_t priority,
               tc_work_t **out)
{
    if (pool == NULL || loop == NULL || work_fn == NULL ||
        (unsigned)priority >= TC_PRIORITY_COUNT) {
        return -EINVAL;
    }
    bool on_loop = tc_loop_is_owner_thread(loop);
    uint64_t submit_ns = now_ns();

    pthread_mutex_lock(&pool->lock);
    int err = admit(pool);
    if (err != 0) {
        pthread_mutex_unlock(&pool->lock);
        return err;
    }
    tc_work_t *w = pool->freelist;
    if (w != NULL) {
        pool->freelist = w->next;
        pool->nfree--;
    } else {
        w = malloc(sizeof(*w));
        if (w == NULL) {
            pthread_mutex_unlock(&pool->lock);
            return -ENOMEM;
        }
    }
    w->pool = pool;
    w->loop = loop;
    w->work_fn = work_fn;
    w->done_cb = done_cb;
    w->arg = arg;
    w->submit_ns = submit_ns;
    w->generation = pool->generation;
    w->status = 0;
    w->priority = (unsigned char)priority;
    w->state = W_QUEUED;
    w->loop_ref = on_loop;
    atomic_init(&w->cancel_flag, false);
    queue_push(&pool->queues[priority], w);
    pool->queued++;
    pool->submitted++;
    pool->outstanding++;
    atomic_fetch_add_explicit(&loop->pool_pending, 1, memory_order_relaxed);
    if (pool->idle > pool->wakes_pending) {
        pool->wakes_pending++;
        pthread_cond_signal(&pool->work_cond);
    }
    if (out != NULL) {
        *out = w;
    }
    pthread_mutex_unlock(&pool->lock);
    /* The done callback runs on this very thread, so it cannot have run
     * yet: the reference is in place before it is dropped. */
    if (on_loop) {
        tc__loop_ref(loop);
    }
    return 0;
}

int
tc_pool_cancel(tc_work_t *w)
{
    if (w == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(w->loop);
    tc_pool_t *pool = w->pool;
    pthread_mutex_lock(&pool->lock);
    if (w->state == W_CANCELLED) {
        pthread_mutex_unlock(&pool->lock);
        return -EALREADY;
    }
    atomic_store_explicit(&w->cancel_flag, true, memory_order_relaxed);
    if (w->state != W_QUEUED) {
        pthread_mutex_unlock(&pool->lock);
        return -EBUSY;
    }
    queue_unlink(&pool->queues[w->priority], w);
    w->state = W_CANCELLED;
    w->status = -ECANCELED;
    pool->queued--;
    pool->cancelled++;
    if (pool->space_waiters > 0) {
        pthread_cond_signal(&pool->space_cond);
    }
    pthread_mutex_unlock(&pool->lock);
    push_done(w);
    return 0;
}

bool
tc_work_is_cancelled(const tc_work_t *w)
{
    return w != NULL &&
           (atomic_load_explicit(&w->cancel_flag, memory_order_relaxed) ||
            atomic_load_explicit(&w->pool->cancel_all,
                                 memory_order_relaxed));
}

tc_loop_t *
tc_work_loop(const tc_work_t *w)
{
    return w != NULL ? w->loop : NULL;
}

int
tc_pool_shutdown(tc_pool_t *pool, tc_pool_shutdown_mode_t mode)
{
    if (pool == NULL ||
        (mode != TC_POOL_DRAIN && mode != TC_POOL_CANCEL)) {
        return -EINVAL;
    }
    if (current_pool == pool) {
        return -EDEADLK;
    }
    tc_work_t *cancelled = NULL;
    pthread_mutex_lock(&pool->lock);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->lock);
        return -EALREADY;
    }
    pool->stopping = true;
    if (mode == TC_POOL_CANCEL) {
        atomic_store_explicit(&pool->cancel_all, true, memory_order_relaxed);
        /* Walk backwards so the list comes out oldest first, by priority. */
        for (int p = TC_PRIORITY_COUNT - 1; p >= 0; p--) {
            tc_work_t *w = pool->queues[p].tail;
            while (w != NULL) {
                tc_work_t *prev = w->prev;
                w->state = W_CANCELLED;
                w->status = -ECANCELED;
                atomic_store_explicit(&w->cancel_flag, true,
                                      memory_order_relaxed);
                w->prev = NULL;
                w->next = cancelled;
                cancelled = w;
                pool->queued--;
                pool->cancelled++;
                w = prev;
            }
            pool->queues[p].head = pool->queues[p].tail = NULL;
        }
    }
    unsigned n = pool->nstarted;
    pthread_cond_broadcast(&pool->work_cond);
    pthread_cond_broadcast(&pool->space_cond);
    pthread_mutex_unlock(&pool->lock);

    while (cancelled != NULL) {
        tc_work_t *next = cancelled->next;  /* pushed, it is the loop's */
        push_done(cancelled);
        cancelled = next;
    }
    for (unsigned i = 0; i < n; i++) {
        pthread_join(pool->workers[i].tid, NULL);
    }
    return 0;
}

void
tc_pool_free(tc_pool_t *pool)
{
    if (pool == NULL) {
        return;
    }
    int err = tc_pool_shutdown(pool, TC_POOL_DRAIN);
    assert(err != -EDEADLK && "tc_pool_free from one of its workers");
    if (err == -EDEADLK) {
        return;
    }
    pthread_mutex_lock(&registry_lock);
    if (pool->reg_prev != NULL) {
        pool->reg_prev->reg_next = pool->reg_next;
    } else {
        registry = pool->reg_next;
    }
    if (pool->reg_next != NULL) {
        pool->reg_next->reg_prev = pool->reg_prev;
    }
    pthread_mutex_unlock(&registry_lock);

    pthread_mutex_lock(&pool->lock);
    pool->freed = true;
    bool last = pool->outstanding == 0;
    pthread_mutex_unlock(&pool->lock);
    if (last) {
        pool_destroy(pool);
    }
}

void
tc_pool_stats(tc_pool_t *pool, tc_pool_stats_t *out)
{
    if (out == NULL) {
        return;
    }
    memset(out, 0, sizeof(*out));
    if (pool == NULL) {
        return;
    }
    pthread_mutex_lock(&pool->lock);
    out->submitted = pool->submitted;
    out->cancelled = pool->cancelled;
    out->queued = pool->queued;
    out->running = pool->running;
    pthread_mutex_unlock(&pool->lock);
    out->threads = pool->nthreads;
    for (unsigned i = 0; i < pool->nthreads; i++) {
        worker_t *wk = &pool->workers[i];
        out->completed += atomic_load_explicit(&wk->completed,
                                               memory_order_relaxed);
        out->failed += atomic_load_explicit(&wk->failed,
                                            memory_order_relaxed);
        for (unsigned b = 0; b < TC_POOL_HIST_BUCKETS; b++) {
            out->wait_ns[b] += atomic_load_explicit(&wk->wait_ns[b],
                                                    memory_order_relaxed);
            out->run_ns[b] += atomic_load_explicit(&wk->run_ns[b],
                                                   memory_order_relaxed);
        }
    }
}

unsigned
tc_pool_threads(const tc_pool_t *pool)
{
    return pool != NULL ? pool->nthreads : 0;
}
