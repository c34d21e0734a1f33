/* The CPU pool: worker threads, a queue per priority, and the way back to
 * the loops.
 *
 * One mutex per pool guards the queues and the counters; idle workers wait
 * on work_cond, submitters of a full bounded queue on space_cond.  A worker
 * that runs out of work first polls for a few microseconds (one at a time)
 * before it sleeps, and submits signal a sleeping worker only when no
 * signal is already on its way, so a busy pool costs few futex calls.
 *
 * Finished work is pushed, without a lock, on its loop's pool_done stack;
 * the push that finds the stack empty queues one drain_done() call to the
 * loop, which takes the whole stack and runs the done callbacks oldest
 * first.  Submits those callbacks make to the same pool are staged and
 * queued under one lock per STAGE_MAX, reusing the records just delivered;
 * the rest go back to the pool's freelist under that same lock.
 *
 * A work function may end its work and take the next work of its own kind
 * that this worker would take anyway (tc_work_take_next): the worker's
 * 'current' follows, its return value is the last one's status, and the
 * works ended on the way wait on the worker's batch list until it returns.
 *
 * Invariants: a work record is STAGED (in a drain's private list), QUEUED
 * (on a queue), RUNNING (a worker took it; it stays RUNNING once finished)
 * or CANCELLED; its done callback runs exactly once, from drain_done().
 * pool->outstanding counts records handed out and not yet recycled; a freed
 * pool is released when it drops to 0.  At most one drain_done() is queued
 * per loop at any time.  The wait and run times of one task in
 * TIMING_SAMPLE are measured: three clock reads per task would cost more
 * than a tiny task itself. */
#include <sched.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

#define FREELIST_MAX 4096
#define MAX_THREADS 1024
#define STAGE_MAX 32            /* staged submits queued per lock */
#define TIMING_SAMPLE 8         /* a power of two */
#define SPIN_NS 50000u          /* how long an idle worker polls */

enum work_state {
    W_STAGED = 0,
    W_QUEUED,
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
    uint64_t submit_ns;         /* 0: not timed */
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
    tc_work_t *current;         /* guards: pool lock; the work it runs */
    /* Worker only: work finished by tc_work_take_next(), handed to its
     * loops once the work function returns; when current started. */
    tc_work_t *batch_head, *batch_tail;
    uint64_t start_ns;
    atomic_uint_fast64_t completed, failed, timed;
    atomic_uint_fast64_t wait_ns[TC_POOL_HIST_BUCKETS];
    atomic_uint_fast64_t run_ns[TC_POOL_HIST_BUCKETS];
    char pad[64];               /* keep neighbours off our cache lines */
} worker_t;

typedef struct queue {
    tc_work_t *head, *tail;
    size_t len;
} queue_t;

struct tc_pool_s {
    pthread_mutex_t lock;       /* guards: every field up to 'registry' */
    pthread_cond_t work_cond;   /* idle workers wait for work */
    pthread_cond_t space_cond;  /* submitters wait for queue room */
    queue_t queues[TC_PRIORITY_COUNT];
    size_t queued, running, running_low;
    unsigned idle;              /* workers waiting on work_cond */
    unsigned wakes_pending;     /* signalled, not yet awake */
    bool spinning;              /* a worker polls work_seq before sleeping */
    unsigned space_waiters;
    unsigned nstarted;          /* workers[0..nstarted) are running */
    bool start_failed;          /* do not retry pthread_create each time */
    bool stopping;
    bool freed;
    bool detached;              /* freed by a worker: no one joins */
    bool join_claimed;          /* a tc_pool_shutdown() joins the workers */
    size_t outstanding;         /* records handed out, not yet recycled */
    tc_work_t *freelist;
    size_t nfree;
    unsigned generation;        /* bumped in a child after fork */
    uint64_t submitted, cancelled;

    tc_pool_t *reg_prev, *reg_next;     /* guards: registry_lock */

    atomic_bool cancel_all;     /* a cancelling shutdown flags all work */
    atomic_uint work_seq;       /* bumped by each submit, for the spinner */
    /* Workers run, no shutdown, no bound: submits from a drain may be
     * staged without the lock.  Written under the lock. */
    atomic_bool stage_ok;
    /* Fixed at tc_pool_new. */
    unsigned nthreads;
    unsigned low_cap;           /* workers LOW work may occupy */
    size_t max_queued;
    bool block_when_full;
    size_t stack_size;
    uint64_t spin_ns;           /* 0 on a single CPU */
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
/* This worker, for tc_work_take_next(). */
static _Thread_local worker_t *current_worker;

/* A drain_done() running on this thread, for one pool at a time: records
 * its done callbacks released (cache) and the submits they made (staged),
 * put back and queued together by flush_drain(). */
typedef struct drain_ctx {
    tc_loop_t *loop;
    tc_pool_t *pool;
    tc_work_t *cache;
    size_t delivered;           /* records of pool delivered so far */
    tc_work_t *staged_head, *staged_tail;
    size_t nstaged;
} drain_ctx_t;

static _Thread_local drain_ctx_t *current_drain;
/* Which submits of this thread are timed. */
static _Thread_local unsigned timing_tick;

/* Pools whose wakes tc_pool_defer_wakes_end() owes, each pinned (counted
 * outstanding) so that tc_pool_free() cannot destroy it meanwhile. */
#define DEFERRED_MAX 4
typedef struct wake_scope {
    tc_pool_t *pools[DEFERRED_MAX];
    unsigned n;
} wake_scope_t;

static _Thread_local wake_scope_t *current_wakes;

static inline uint64_t
now_ns(void)
{
    return tc__now_ns();
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
    q->len++;
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
    q->len--;
}

/* The queue whose head a worker may run next, or -1. */
static int
next_queue(const tc_pool_t *pool)
{
    for (unsigned p = 0; p < TC_PRIORITY_COUNT; p++) {
        if (pool->queues[p].head == NULL) {
            continue;
        }
        if (p == TC_PRIORITY_LOW && pool->running_low >= pool->low_cap &&
            !pool->stopping) {
            continue;
        }
        return (int)p;
    }
    return -1;
}

/* Take the head of queue p, marked RUNNING. */
static tc_work_t *
take_head(tc_pool_t *pool, int p)
{
    tc_work_t *w = pool->queues[p].head;
    queue_unlink(&pool->queues[p], w);
    w->state = W_RUNNING;
    pool->queued--;
    pool->running++;
    if (p == TC_PRIORITY_LOW) {
        pool->running_low++;
    }
    return w;
}

/* The next work a worker may run, marked RUNNING, or NULL. */
static tc_work_t *
take_work(tc_pool_t *pool)
{
    int p = next_queue(pool);
    return p < 0 ? NULL : take_head(pool, p);
}

/* Count work as running, or no longer (n = -1).  Pool lock held. */
static void
count_running(tc_pool_t *pool, const tc_work_t *w, int n)
{
    bool low = w->priority == TC_PRIORITY_LOW;
    if (n > 0) {
        pool->running++;
        pool->running_low += low;
    } else {
        pool->running--;
        pool->running_low -= low;
    }
}

/* Let spinning and sleeping workers know about new work.  Pool lock held.
 * The spinner takes one item; sleepers are signalled for the rest, never
 * twice for the same item. */
static void
wake_workers(tc_pool_t *pool)
{
    atomic_store_explicit(&pool->work_seq,
                          atomic_load_explicit(&pool->work_seq,
                                               memory_order_relaxed) + 1,
                          memory_order_relaxed);
    /* Work a worker may take now: LOW work beyond its cap waits for a
     * LOW task to end, and that worker goes on with it. */
    size_t want = pool->queues[TC_PRIORITY_HIGH].len +
                  pool->queues[TC_PRIORITY_NORMAL].len;
    size_t low = pool->queues[TC_PRIORITY_LOW].len;
    if (pool->stopping || pool->running_low + low <= pool->low_cap) {
        want += low;
    } else if (pool->running_low < pool->low_cap) {
        want += pool->low_cap - pool->running_low;
    }
    if (pool->spinning && want > 0) {
        want--;
    }
    while (pool->wakes_pending < want && pool->idle > pool->wakes_pending) {
        pool->wakes_pending++;
        pthread_cond_signal(&pool->work_cond);
    }
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

/* Hand finished or cancelled work to loop: newest..oldest, linked newest
 * first, all of that loop, go on its stack at once, so that the loop
 * never takes part of a batch and wakes again for the rest.  Thread: any.
 * Returns whether the loop had taken every earlier completion. */
static bool
push_run(tc_loop_t *loop, tc_work_t *newest, tc_work_t *oldest)
{
    tc_work_t *head = atomic_load_explicit(&loop->pool_done,
                                           memory_order_relaxed);
    do {
        oldest->next = head;
    } while (!atomic_compare_exchange_weak_explicit(
        &loop->pool_done, &head, newest, memory_order_release,
        memory_order_relaxed));
    /* Only the push onto an empty stack queues a drain: the one queued
     * before is still to run and will take this record too. */
    if (head == NULL) {
        schedule_drain(loop);
    }
    return head == NULL;
}

static bool
push_done(tc_work_t *w)
{
    return push_run(w->loop, w, w);
}

/* push_done() for a list linked oldest first: one push per run of work of
 * the same loop.  Returns what the last push returned. */
static bool
push_done_list(tc_work_t *list)
{
    bool idle = true;
    while (list != NULL) {
        tc_loop_t *loop = list->loop;
        tc_work_t *oldest = list, *newest = NULL;
        while (list != NULL && list->loop == loop) {
            tc_work_t *next = list->next;
            list->next = newest;
            newest = list;
            list = next;
        }
        idle = push_run(loop, newest, oldest);
    }
    return idle;
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

static void
free_list(tc_work_t *w)
{
    while (w != NULL) {
        tc_work_t *next = w->next;
        free(w);
        w = next;
    }
}

/* Queue the drain's staged submits and, unless keep_cache, put its spare
 * records back, under one lock.  Staged work meeting a shutdown is
 * cancelled.  Thread: loop. */
static void
flush_drain(drain_ctx_t *ctx, bool keep_cache)
{
    tc_pool_t *pool = ctx->pool;
    if (pool == NULL) {
        return;
    }
    tc_work_t *cancelled = NULL, *spill = NULL;
    size_t ncancelled = 0;
    pthread_mutex_lock(&pool->lock);
    tc_work_t *w = ctx->staged_head;
    while (w != NULL) {
        tc_work_t *next = w->next;
        if (w->state == W_STAGED && !pool->stopping) {
            w->state = W_QUEUED;
            queue_push(&pool->queues[w->priority], w);
            pool->queued++;
        } else {
            w->state = W_CANCELLED;
            w->status = -ECANCELED;
            atomic_store_explicit(&w->cancel_flag, true,
                                  memory_order_relaxed);
            w->next = cancelled;
            cancelled = w;
            ncancelled++;
        }
        w = next;
    }
    pool->submitted += ctx->nstaged;
    pool->cancelled += ncancelled;
    pool->outstanding += ctx->nstaged;
    pool->outstanding -= ctx->delivered;
    while (!keep_cache && ctx->cache != NULL) {
        w = ctx->cache;
        ctx->cache = w->next;
        if (!pool->freed && pool->nfree < FREELIST_MAX) {
            w->next = pool->freelist;
            pool->freelist = w;
            pool->nfree++;
        } else {
            w->next = spill;
            spill = w;
        }
    }
    if (ctx->nstaged > ncancelled) {
        wake_workers(pool);
    }
    bool last = pool->freed && pool->outstanding == 0;
    pthread_mutex_unlock(&pool->lock);

    ctx->staged_head = ctx->staged_tail = NULL;
    ctx->nstaged = 0;
    ctx->delivered = 0;
    while (cancelled != NULL) {
        w = cancelled->next;
        push_done(cancelled);
        cancelled = w;
    }
    free_list(spill);
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

    drain_ctx_t ctx = {.loop = loop};
    drain_ctx_t *outer = current_drain;  /* a callback may run another loop */
    current_drain = &ctx;
    size_t n = 0;
    while (fifo != NULL) {
        tc_work_t *w = fifo;
        fifo = w->next;
        if (w->pool != ctx.pool) {
            flush_drain(&ctx, false);
            ctx.pool = w->pool;
        }
        if (w->done_cb != NULL) {
            w->done_cb(w, w->status, w->arg);
        }
        if (w->loop_ref) {
            tc__loop_unref(loop);
        }
        n++;
        if (w->generation != ctx.pool->generation) {
            free(w);    /* a parent's record in a child: never counted */
        } else {
            w->next = ctx.cache;
            ctx.cache = w;
            ctx.delivered++;
        }
    }
    flush_drain(&ctx, false);
    current_drain = outer;
    atomic_fetch_sub_explicit(&loop->pool_pending, n, memory_order_release);
}

/* ---- workers ---- */

static void
record_run(worker_t *me, uint64_t submit_ns, uint64_t start_ns,
           uint64_t end_ns)
{
    uint64_t wait = start_ns > submit_ns ? start_ns - submit_ns : 0;
    uint64_t run = end_ns > start_ns ? end_ns - start_ns : 0;
    counter_bump(&me->timed);
    counter_bump(&me->wait_ns[hist_bucket(wait)]);
    counter_bump(&me->run_ns[hist_bucket(run)]);
}

/* The machine's online CPUs, at least one. */
static unsigned
online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

/* Poll for a submit for a few microseconds: a worker that finds work this
 * way costs the submitter no futex wake and itself no sleep. */
static void
spin_for_work(tc_pool_t *pool, unsigned seq)
{
    uint64_t deadline = now_ns() + pool->spin_ns;
    for (unsigned i = 1;; i++) {
        if (atomic_load_explicit(&pool->work_seq, memory_order_relaxed) !=
            seq) {
            return;
        }
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if ((i & 63) == 0 && now_ns() > deadline) {
            return;
        }
    }
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
    bool spun = false;
    bool loop_idle = true;      /* the last push found its loop caught up */

    current_pool = pool;
    current_worker = me;
    pthread_mutex_lock(&pool->lock);
    for (;;) {
        tc_work_t *w = take_work(pool);
        if (w == NULL) {
            if (finished != NULL) {
                pthread_mutex_unlock(&pool->lock);
                loop_idle = push_done_list(finished);
                finished = NULL;
                pthread_mutex_lock(&pool->lock);
                continue;
            }
            if (pool->stopping) {
                break;
            }
            /* Spin only while the loop keeps up: a loop still busy with
             * earlier completions sends its next submits in a batch
             * anyway, and a spinner would take CPU time it needs. */
            if (!spun && !pool->spinning && pool->spin_ns > 0 && loop_idle) {
                spun = true;
                pool->spinning = true;
                unsigned seq = atomic_load_explicit(&pool->work_seq,
                                                    memory_order_relaxed);
                pthread_mutex_unlock(&pool->lock);
                spin_for_work(pool, seq);
                pthread_mutex_lock(&pool->lock);
                pool->spinning = false;
                continue;
            }
            spun = false;
            pool->idle++;
            pthread_cond_wait(&pool->work_cond, &pool->lock);
            pool->idle--;
            if (pool->wakes_pending > 0) {
                pool->wakes_pending--;
            }
            continue;
        }
        spun = false;
        me->current = w;
        if (pool->space_waiters > 0) {
            pthread_cond_signal(&pool->space_cond);
        }
        pthread_mutex_unlock(&pool->lock);
        if (finished != NULL) {
            loop_idle = push_done_list(finished);   /* now its loop's */
        }

        me->start_ns = w->submit_ns != 0 ? now_ns() : 0;
        int status = w->work_fn(w, w->arg);
        /* The status is the last taken work's (tc_work_take_next). */
        w = me->current;
        if (w->submit_ns != 0) {
            record_run(me, w->submit_ns, me->start_ns, now_ns());
        }
        w->status = status;
        counter_bump(status == 0 ? &me->completed : &me->failed);
        /* The works it ended on the way go with it, in one push. */
        w->next = NULL;
        if (me->batch_tail != NULL) {
            me->batch_tail->next = w;
            finished = me->batch_head;
        } else {
            finished = w;
        }
        me->batch_head = me->batch_tail = NULL;

        pthread_mutex_lock(&pool->lock);
        me->current = NULL;
        count_running(pool, w, -1);
    }
    /* Freed by one of us: nobody joins, and each worker pins the pool
     * until it is out (see free_from_worker). */
    bool detached = pool->detached;
    bool last = false;
    if (detached) {
        pool->outstanding--;
        last = pool->outstanding == 0;
    }
    pthread_mutex_unlock(&pool->lock);
    if (detached) {
        pthread_detach(pthread_self());
        if (last) {
            pool_destroy(pool);
        }
    }
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
 * loops still hold belong to an older generation and are never counted;
 * the ones the workers were running are abandoned (nothing points to them
 * that the child may touch, and the fork could not wait for them). */
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
        pool->queues[p].len = 0;
    }
    pool->generation++;
    pool->queued = pool->running = pool->running_low = 0;
    pool->idle = pool->wakes_pending = pool->space_waiters = 0;
    pool->nstarted = 0;
    pool->join_claimed = false;
    pool->start_failed = false;
    pool->spinning = false;
    atomic_store_explicit(&pool->stage_ok, false, memory_order_relaxed);
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
    /* A fork inside a wake scope: the pins went with the reset counts. */
    if (current_wakes != NULL) {
        current_wakes->n = 0;
    }
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
        o.threads = online_cpus();
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
    pool->spin_ns = tc__usable_cpus() > 1 ? SPIN_NS : 0;
    pool->workers = calloc(o.threads, sizeof(*pool->workers));
    if (pool->workers == NULL) {
        goto fail;
    }
    int rc = -tc__mutex_init_short(&pool->lock);
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
        wake_workers(pool);     /* wakes this thread may have deferred */
        pthread_cond_wait(&pool->space_cond, &pool->lock);
        pool->space_waiters--;
    }
    if (pool->nstarted < pool->nthreads && !pool->start_failed) {
        int err = start_workers(pool);
        if (err != 0) {
            return err;
        }
        atomic_store_explicit(&pool->stage_ok, pool->max_queued == 0,
                              memory_order_relaxed);
    }
    return 0;
}

static void
fill_work(tc_work_t *w, tc_pool_t *pool, tc_loop_t *loop, tc_work_fn work_fn,
          tc_work_done_cb done_cb, void *arg, tc_priority_t priority,
          bool on_loop)
{
    w->prev = w->next = NULL;
    w->pool = pool;
    w->loop = loop;
    w->work_fn = work_fn;
    w->done_cb = done_cb;
    w->arg = arg;
    w->submit_ns = (timing_tick++ & (TIMING_SAMPLE - 1)) == 0 ? now_ns() : 0;
    w->generation = pool->generation;
    w->status = 0;
    w->priority = (unsigned char)priority;
    w->state = W_STAGED;
    w->loop_ref = on_loop;
    atomic_init(&w->cancel_flag, false);
}

/* Take a few records off the freelist for staged submits.  They count as
 * delivered: the flush counts them again as staged or puts them back. */
static void
refill_cache(drain_ctx_t *ctx)
{
    tc_pool_t *pool = ctx->pool;
    pthread_mutex_lock(&pool->lock);
    for (int i = 0; i < STAGE_MAX && pool->freelist != NULL; i++) {
        tc_work_t *w = pool->freelist;
        pool->freelist = w->next;
        pool->nfree--;
        pool->outstanding++;
        ctx->delivered++;
        w->next = ctx->cache;
        ctx->cache = w;
    }
    pthread_mutex_unlock(&pool->lock);
}

/* A submit from a done callback: no lock, a record the drain released.
 * Returns false when the submit must take the locked path. */
static bool
stage(tc_pool_t *pool, tc_loop_t *loop, tc_work_fn work_fn,
      tc_work_done_cb done_cb, void *arg, tc_priority_t priority,
      tc_work_t **out)
{
    drain_ctx_t *ctx = current_drain;
    if (ctx == NULL || ctx->pool != pool || ctx->loop != loop ||
        !atomic_load_explicit(&pool->stage_ok, memory_order_relaxed)) {
        return false;
    }
    if (ctx->nstaged == STAGE_MAX) {
        flush_drain(ctx, true);     /* keep the workers fed meanwhile */
    }
    if (ctx->cache == NULL) {
        refill_cache(ctx);
    }
    tc_work_t *w = ctx->cache;
    if (w != NULL) {
        ctx->cache = w->next;
    } else {
        w = malloc(sizeof(*w));
        if (w == NULL) {
            return false;
        }
    }
    fill_work(w, pool, loop, work_fn, done_cb, arg, priority, true);
    if (ctx->staged_tail != NULL) {
        ctx->staged_tail->next = w;
    } else {
        ctx->staged_head = w;
    }
    ctx->staged_tail = w;
    ctx->nstaged++;
    atomic_fetch_add_explicit(&loop->pool_pending, 1, memory_order_relaxed);
    tc__loop_ref(loop);
    if (out != NULL) {
        *out = w;
    }
    return true;
}

/* Pool lock held.  Whether the wake is left to the open wake scope: the
 * submitter holds a lock the work needs (the GIL), so a worker woken, or
 * polling, now would only block on it (on one CPU, preempt the caller
 * first).  Never with a submitter waiting for room. */
static bool
defer_wake(tc_pool_t *pool)
{
    wake_scope_t *scope = current_wakes;
    if (scope == NULL || pool->stopping) {
        return false;
    }
    for (unsigned i = 0; i < scope->n; i++) {
        if (scope->pools[i] == pool) {
            return true;
        }
    }
    if (scope->n == DEFERRED_MAX) {
        return false;
    }
    scope->pools[scope->n++] = pool;
    pool->outstanding++;    /* the pin */
    return true;
}

void
tc_pool_defer_wakes_begin(void)
{
    static _Thread_local wake_scope_t scope;
    scope.n = 0;
    current_wakes = &scope;
}

void
tc_pool_defer_wakes_end(void)
{
    wake_scope_t *scope = current_wakes;
    current_wakes = NULL;
    if (scope == NULL) {
        return;
    }
    for (unsigned i = 0; i < scope->n; i++) {
        tc_pool_t *pool = scope->pools[i];
        pthread_mutex_lock(&pool->lock);
        wake_workers(pool);
        pool->outstanding--;
        bool last = pool->freed && pool->outstanding == 0;
        pthread_mutex_unlock(&pool->lock);
        if (last) {
            pool_destroy(pool);
        }
    }
    scope->n = 0;
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
    if (stage(pool, loop, work_fn, done_cb, arg, priority, out)) {
        return 0;
    }
    bool on_loop = tc_loop_is_owner_thread(loop);

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
    fill_work(w, pool, loop, work_fn, done_cb, arg, priority, on_loop);
    w->state = W_QUEUED;
    queue_push(&pool->queues[priority], w);
    pool->queued++;
    pool->submitted++;
    pool->outstanding++;
    atomic_fetch_add_explicit(&loop->pool_pending, 1, memory_order_relaxed);
    if (!defer_wake(pool)) {
        wake_workers(pool);
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
    if (w->state == W_STAGED) {
        /* This thread's drain still holds it: its flush reports it. */
        w->state = W_CANCELLED;
        pthread_mutex_unlock(&pool->lock);
        return 0;
    }
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

void *
tc_work_arg(const tc_work_t *w)
{
    return w != NULL ? w->arg : NULL;
}

tc_work_t *
tc_work_take_next(tc_work_t *work, int status)
{
    worker_t *me = current_worker;
    if (work == NULL || me == NULL || me->current != work) {
        return NULL;
    }
    tc_pool_t *pool = work->pool;
    tc_work_t *next = NULL;
    pthread_mutex_lock(&pool->lock);
    /* What this worker would take next once work ended, if it is of the
     * same kind: priorities and the LOW cap decide, as in take_work(). */
    count_running(pool, work, -1);
    int p = next_queue(pool);
    if (p >= 0 && pool->queues[p].head->work_fn == work->work_fn) {
        next = take_head(pool, p);
        me->current = next;
        if (pool->space_waiters > 0) {
            pthread_cond_signal(&pool->space_cond);
        }
    } else {
        count_running(pool, work, 1);
    }
    pthread_mutex_unlock(&pool->lock);
    if (next == NULL) {
        return NULL;
    }
    uint64_t t = 0;
    if (work->submit_ns != 0) {
        t = now_ns();
        record_run(me, work->submit_ns, me->start_ns, t);
    }
    if (next->submit_ns != 0) {
        me->start_ns = t != 0 ? t : now_ns();
    }
    work->status = status;
    counter_bump(status == 0 ? &me->completed : &me->failed);
    /* Handed to its loop when the work function returns: the loop, woken
     * while the caller still holds what the next work needs (a GIL), would
     * only wait for it. */
    work->next = NULL;
    if (me->batch_tail != NULL) {
        me->batch_tail->next = work;
    } else {
        me->batch_head = work;
    }
    me->batch_tail = work;
    return next;
}

int
tc_pool_walk(tc_pool_t *pool, tc_work_fn work_fn, tc_pool_walk_cb cb,
             void *arg)
{
    if (pool == NULL || cb == NULL) {
        return -EINVAL;
    }
    int rc = 0;
    pthread_mutex_lock(&pool->lock);
    for (unsigned i = 0; i < pool->nstarted && rc == 0; i++) {
        tc_work_t *w = pool->workers[i].current;
        if (w != NULL && (work_fn == NULL || w->work_fn == work_fn)) {
            rc = cb(w, true, arg);
        }
    }
    for (unsigned p = 0; p < TC_PRIORITY_COUNT && rc == 0; p++) {
        for (tc_work_t *w = pool->queues[p].head; w != NULL && rc == 0;
             w = w->next) {
            if (work_fn == NULL || w->work_fn == work_fn) {
                rc = cb(w, false, arg);
            }
        }
    }
    pthread_mutex_unlock(&pool->lock);
    return rc;
}

/* Refuse new work, drain or cancel the queued work, wake every worker so
 * that it exits once the queue is empty.  Returns 0 or -EALREADY. */
static int
stop_pool(tc_pool_t *pool, tc_pool_shutdown_mode_t mode)
{
    tc_work_t *cancelled = NULL;
    pthread_mutex_lock(&pool->lock);
    if (pool->stopping) {
        pthread_mutex_unlock(&pool->lock);
        return -EALREADY;
    }
    pool->stopping = true;
    atomic_store_explicit(&pool->stage_ok, false, memory_order_relaxed);
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
            pool->queues[p].len = 0;
        }
    }
    wake_workers(pool);     /* the spinner stops spinning */
    pthread_cond_broadcast(&pool->work_cond);
    pthread_cond_broadcast(&pool->space_cond);
    pthread_mutex_unlock(&pool->lock);

    while (cancelled != NULL) {
        tc_work_t *next = cancelled->next;  /* pushed, it is the loop's */
        push_done(cancelled);
        cancelled = next;
    }
    return 0;
}

int
tc_pool_stop(tc_pool_t *pool, tc_pool_shutdown_mode_t mode)
{
    if (pool == NULL ||
        (mode != TC_POOL_DRAIN && mode != TC_POOL_CANCEL)) {
        return -EINVAL;
    }
    return stop_pool(pool, mode);
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
    int err = stop_pool(pool, mode);
    /* After tc_pool_stop() the first shutdown still joins. */
    pthread_mutex_lock(&pool->lock);
    unsigned n = pool->join_claimed ? 0 : pool->nstarted;
    pool->join_claimed = true;
    pthread_mutex_unlock(&pool->lock);
    for (unsigned i = 0; i < n; i++) {
        pthread_join(pool->workers[i].tid, NULL);
    }
    return err;
}

static void
unregister(tc_pool_t *pool)
{
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
}

/* tc_pool_free() on one of the pool's own workers, which cannot join
 * itself: stop (draining) without a join, and let the workers detach as
 * they leave.  Each started worker pins the pool (counts as outstanding)
 * until it is out, so the last of them, or the last done callback,
 * releases the memory.  The calling worker finishes its work first. */
static void
free_from_worker(tc_pool_t *pool)
{
    unregister(pool);
    pthread_mutex_lock(&pool->lock);
    if (!pool->stopping) {
        pool->stopping = true;
        atomic_store_explicit(&pool->stage_ok, false, memory_order_relaxed);
        wake_workers(pool);
        pthread_cond_broadcast(&pool->work_cond);
        pthread_cond_broadcast(&pool->space_cond);
    }
    pool->detached = true;
    pool->freed = true;
    pool->outstanding += pool->nstarted;
    pthread_mutex_unlock(&pool->lock);
}

void
tc_pool_free(tc_pool_t *pool)
{
    if (pool == NULL) {
        return;
    }
    if (current_pool == pool) {
        free_from_worker(pool);
        return;
    }
    tc_pool_shutdown(pool, TC_POOL_DRAIN);
    unregister(pool);

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
        out->timed += atomic_load_explicit(&wk->timed, memory_order_relaxed);
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
