/* Futures: settle once from any thread, call back on the loop.
 *
 * A settle first claims the future with one compare-and-swap on 'claimed':
 * the winner stores the outcome, the others get -EALREADY.  The outcome
 * takes effect on the loop thread (settle_on_loop): directly when the
 * settler is the loop thread, otherwise through tc_loop_call_from_thread,
 * which also publishes the outcome's fields to the loop.  Callbacks run from
 * one tc_loop_call_soon per batch (run_callbacks), never inside the call
 * that settles or adds them, in the order added.
 *
 * References: the caller's, one per queued settle or callback batch, one
 * per chained future (held by the entry that settles it), one held by pool
 * work that will settle the future.  The last reference frees the future on
 * its loop's thread.  A queued callback batch also holds a tc__loop_ref. */
#include "internal.h"

enum cb_kind {
    CB_PLAIN,           /* tc_future_then */
    CB_CHAIN_FN,        /* tc_future_then_chain: cb settles next */
    CB_CHAIN_FUTURE,    /* tc_future_chain: next mirrors the source */
};

typedef struct cb_entry {
    enum cb_kind kind;
    union {
        tc_future_cb plain;
        tc_future_chain_cb chain;
    } fn;
    void *arg;
    tc_future_t *next;  /* a reference, for the chain kinds */
} cb_entry_t;

#define INLINE_CBS 2

struct tc_future_s {
    tc_loop_t *loop;
    atomic_uint refs;
    _Atomic int state;          /* tc_future_state_t */
    atomic_bool claimed;        /* a settle won; the rest get -EALREADY */

    /* Written by the settle that won, read on the loop after hand-over. */
    int final_state;
    int err;
    void *value;
    void (*free_value)(void *value);
    tc_future_t *value_owner;   /* tc_future_chain: keeps value alive */

    /* Loop thread only. */
    bool settled;               /* settle_on_loop ran */
    bool cbs_scheduled;         /* a run_callbacks is queued */
    cb_entry_t *cbs;
    size_t ncbs, cap;
    cb_entry_t inline_cbs[INLINE_CBS];
    tc_timer_t *timer;
    tc_work_t *work;            /* pool work that settles the future */

    /* tc_pool_submit_future: written on the worker, read in its done
     * callback after the pool hands the work back. */
    tc_value_work_fn task_fn;
    void *task_arg;
    void *task_value;
};

static void future_free(tc_future_t *f);

static void
free_on_loop(void *arg)
{
    future_free(arg);
}

int
tc_future_new(tc_loop_t *loop, tc_future_t **out)
{
    if (loop == NULL || out == NULL) {
        return -EINVAL;
    }
    tc_future_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        return -ENOMEM;
    }
    f->loop = loop;
    atomic_init(&f->refs, 1);
    atomic_init(&f->state, TC_FUTURE_PENDING);
    atomic_init(&f->claimed, false);
    f->cbs = f->inline_cbs;
    f->cap = INLINE_CBS;
    *out = f;
    return 0;
}

void
tc_future_ref(tc_future_t *f)
{
    if (f != NULL) {
        atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    }
}

void
tc_future_unref(tc_future_t *f)
{
    if (f == NULL) {
        return;
    }
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) != 1) {
        return;
    }
    if (tc_loop_is_owner_thread(f->loop)) {
        future_free(f);
    } else if (tc_loop_call_from_thread(f->loop, free_on_loop, f) != 0 &&
               f->timer == NULL) {
        /* The loop is closed (so it has no timer of ours open) or out of
         * memory: freeing here is the lesser evil.  With a timer it
         * leaks. */
        future_free(f);
    }
}

/* Thread: loop. */
static void
future_free(tc_future_t *f)
{
    if (f->timer != NULL) {
        tc_close(tc_timer_handle(f->timer), NULL);
    }
    for (size_t i = 0; i < f->ncbs; i++) {
        tc_future_unref(f->cbs[i].next);
    }
    if (f->cbs != f->inline_cbs) {
        free(f->cbs);
    }
    if (f->settled && f->final_state == TC_FUTURE_DONE &&
        f->free_value != NULL) {
        f->free_value(f->value);
    }
    tc_future_unref(f->value_owner);
    free(f);
}

/* ---- callbacks ---- */

static int
entry_status(const tc_future_t *f)
{
    return f->final_state == TC_FUTURE_DONE ? 0 : f->err;
}

static void mirror_into(tc_future_t *dst, tc_future_t *src, int status,
                        void *value);

static void
run_callbacks(void *arg)
{
    tc_future_t *f = arg;
    cb_entry_t local[INLINE_CBS];
    cb_entry_t *items = f->cbs;
    size_t n = f->ncbs;
    /* Detach the batch: callbacks may add more, for a later iteration. */
    if (items == f->inline_cbs) {
        memcpy(local, items, n * sizeof(*items));
        items = local;
    } else {
        f->cbs = f->inline_cbs;
        f->cap = INLINE_CBS;
    }
    f->ncbs = 0;
    f->cbs_scheduled = false;

    int status = entry_status(f);
    void *value = status == 0 ? f->value : NULL;
    for (size_t i = 0; i < n; i++) {
        cb_entry_t *e = &items[i];
        switch (e->kind) {
        case CB_PLAIN:
            e->fn.plain(f, status, value, e->arg);
            break;
        case CB_CHAIN_FN:
            e->fn.chain(f, status, value, e->arg, e->next);
            break;
        case CB_CHAIN_FUTURE:
            mirror_into(e->next, f, status, value);
            e->next = NULL;     /* its reference went with the settle */
            break;
        }
        tc_future_unref(e->next);
    }
    if (items != local) {
        free(items);
    }
    /* The more callbacks added meanwhile got their own batch queued. */
    tc__loop_unref(f->loop);
    tc_future_unref(f);
}

/* Queue run_callbacks once for whatever callbacks wait.  Thread: loop. */
static void
schedule_callbacks(tc_future_t *f)
{
    if (!f->settled || f->cbs_scheduled || f->ncbs == 0) {
        return;
    }
    tc_future_ref(f);
    if (tc_loop_call_soon(f->loop, run_callbacks, f) != 0) {
        /* Out of memory: the next tc_future_then() tries again. */
        atomic_fetch_sub_explicit(&f->refs, 1, memory_order_relaxed);
        return;
    }
    /* Callbacks due keep tc_loop_run(TC_RUN_DEFAULT) going until they
     * ran, like the pool work that settles a future. */
    tc__loop_ref(f->loop);
    f->cbs_scheduled = true;
}

static int
add_entry(tc_future_t *f, const cb_entry_t *e)
{
    if (f->ncbs == f->cap) {
        size_t cap = f->cap * 2;
        cb_entry_t *items;
        if (f->cbs == f->inline_cbs) {
            items = malloc(cap * sizeof(*items));
            if (items != NULL) {
                memcpy(items, f->cbs, f->ncbs * sizeof(*items));
            }
        } else {
            items = realloc(f->cbs, cap * sizeof(*items));
        }
        if (items == NULL) {
            return -ENOMEM;
        }
        f->cbs = items;
        f->cap = cap;
    }
    f->cbs[f->ncbs++] = *e;
    schedule_callbacks(f);
    return 0;
}

/* ---- settling ---- */

static bool
claim(tc_future_t *f)
{
    bool expected = false;
    return atomic_compare_exchange_strong_explicit(
        &f->claimed, &expected, true, memory_order_acq_rel,
        memory_order_relaxed);
}

/* The outcome takes effect.  Thread: loop. */
static void
settle_on_loop(tc_future_t *f)
{
    TC__ASSERT_LOOP_THREAD(f->loop);
    f->settled = true;
    atomic_store_explicit(&f->state, f->final_state, memory_order_release);
    if (f->timer != NULL) {
        tc_close(tc_timer_handle(f->timer), NULL);
        f->timer = NULL;
    }
    schedule_callbacks(f);
}

static void
settle_from_thread(void *arg)
{
    tc_future_t *f = arg;
    settle_on_loop(f);
    tc_future_unref(f);
}

/* After a won claim: make the outcome take effect on the loop.  On failure
 * the claim is given back. */
static int
hand_to_loop(tc_future_t *f)
{
    if (tc_loop_is_owner_thread(f->loop)) {
        settle_on_loop(f);
        return 0;
    }
    tc_future_ref(f);
    int err = tc_loop_call_from_thread(f->loop, settle_from_thread, f);
    if (err != 0) {
        /* The caller's reference keeps f alive: this is never the last. */
        atomic_fetch_sub_explicit(&f->refs, 1, memory_order_relaxed);
        tc_future_unref(f->value_owner);
        f->value_owner = NULL;
        f->value = NULL;
        f->free_value = NULL;
        atomic_store_explicit(&f->claimed, false, memory_order_release);
    }
    return err;
}

int
tc_future_resolve(tc_future_t *f, void *value, void (*free_value)(void *))
{
    if (f == NULL) {
        return -EINVAL;
    }
    if (!claim(f)) {
        return -EALREADY;
    }
    f->final_state = TC_FUTURE_DONE;
    f->err = 0;
    f->value = value;
    f->free_value = free_value;
    return hand_to_loop(f);
}

/* Settle dst as src settled, consuming the caller's reference to dst:
 * the reference travels with the settle, so that when dst lives on
 * another loop its last reference is not dropped here, after that loop
 * may be gone.  A value is borrowed from src, which dst keeps alive.
 * Thread: src's loop. */
static void
mirror_into(tc_future_t *dst, tc_future_t *src, int status, void *value)
{
    if (!claim(dst)) {
        tc_future_unref(dst);
        return;
    }
    if (status == 0) {
        tc_future_ref(src);
        dst->final_state = TC_FUTURE_DONE;
        dst->err = 0;
        dst->value = value;
        dst->free_value = NULL;
        dst->value_owner = src;
    } else {
        dst->final_state = status == -ECANCELED ? TC_FUTURE_CANCELLED
                                                : TC_FUTURE_FAILED;
        dst->err = status;
    }
    if (tc_loop_is_owner_thread(dst->loop)) {
        settle_on_loop(dst);
        tc_future_unref(dst);
    } else if (tc_loop_call_from_thread(dst->loop, settle_from_thread,
                                        dst) != 0) {
        /* dst's loop is closing: dst stays pending. */
        tc_future_unref(dst->value_owner);
        dst->value_owner = NULL;
        dst->value = NULL;
        atomic_store_explicit(&dst->claimed, false, memory_order_release);
        tc_future_unref(dst);
    }
}

int
tc_future_reject(tc_future_t *f, int err)
{
    if (f == NULL || err >= 0) {
        return -EINVAL;
    }
    if (!claim(f)) {
        return -EALREADY;
    }
    f->final_state = err == -ECANCELED ? TC_FUTURE_CANCELLED
                                       : TC_FUTURE_FAILED;
    f->err = err;
    return hand_to_loop(f);
}

/* Settle on the loop with err and stop the work behind the future. */
static int
abandon(tc_future_t *f, int err)
{
    TC__ASSERT_LOOP_THREAD(f->loop);
    if (!claim(f)) {
        return -EALREADY;
    }
    f->final_state = err == -ECANCELED ? TC_FUTURE_CANCELLED
                                       : TC_FUTURE_FAILED;
    f->err = err;
    settle_on_loop(f);
    if (f->work != NULL) {
        tc_pool_cancel(f->work);   /* its done callback still comes */
    }
    return 0;
}

int
tc_future_cancel(tc_future_t *f)
{
    if (f == NULL) {
        return -EINVAL;
    }
    return abandon(f, -ECANCELED);
}

int
tc_future_set_running(tc_future_t *f)
{
    if (f == NULL) {
        return -EINVAL;
    }
    int expected = TC_FUTURE_PENDING;
    if (atomic_load_explicit(&f->claimed, memory_order_acquire) ||
        !atomic_compare_exchange_strong_explicit(
            &f->state, &expected, TC_FUTURE_RUNNING, memory_order_acq_rel,
            memory_order_relaxed)) {
        return -EALREADY;
    }
    return 0;
}

/* ---- callbacks and chaining ---- */

int
tc_future_then(tc_future_t *f, tc_future_cb cb, void *arg)
{
    if (f == NULL || cb == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(f->loop);
    cb_entry_t e = {.kind = CB_PLAIN, .fn.plain = cb, .arg = arg};
    return add_entry(f, &e);
}

int
tc_future_then_chain(tc_future_t *f, tc_future_chain_cb cb, void *arg,
                     tc_future_t **out)
{
    if (f == NULL || cb == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(f->loop);
    tc_future_t *next;
    int err = tc_future_new(f->loop, &next);
    if (err != 0) {
        return err;
    }
    tc_future_ref(next);    /* the entry's */
    cb_entry_t e = {.kind = CB_CHAIN_FN, .fn.chain = cb, .arg = arg,
                    .next = next};
    err = add_entry(f, &e);
    if (err != 0) {
        tc_future_unref(next);
        tc_future_unref(next);
        return err;
    }
    *out = next;
    return 0;
}

int
tc_future_chain(tc_future_t *src, tc_future_t *dst)
{
    if (src == NULL || dst == NULL || src == dst) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(src->loop);
    tc_future_ref(dst);
    cb_entry_t e = {.kind = CB_CHAIN_FUTURE, .next = dst};
    int err = add_entry(src, &e);
    if (err != 0) {
        tc_future_unref(dst);
    }
    return err;
}

/* ---- timeout ---- */

static void
on_timeout(tc_timer_t *timer)
{
    tc_future_t *f = tc_handle_data(tc_timer_handle(timer));
    abandon(f, -ETIMEDOUT);
}

int
tc_future_set_timeout(tc_future_t *f, uint64_t ms)
{
    if (f == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(f->loop);
    if (f->settled || atomic_load_explicit(&f->claimed,
                                           memory_order_acquire)) {
        return -EALREADY;
    }
    if (f->timer == NULL) {
        int err = tc_timer_new(f->loop, f, &f->timer);
        if (err != 0) {
            return err;
        }
    }
    return tc_timer_start(f->timer, on_timeout, ms, 0);
}

/* ---- queries ---- */

tc_future_state_t
tc_future_state(const tc_future_t *f)
{
    if (f == NULL) {
        return TC_FUTURE_PENDING;
    }
    return (tc_future_state_t)atomic_load_explicit(&f->state,
                                                   memory_order_acquire);
}

bool
tc_future_is_done(const tc_future_t *f)
{
    tc_future_state_t s = tc_future_state(f);
    return s == TC_FUTURE_DONE || s == TC_FUTURE_FAILED ||
           s == TC_FUTURE_CANCELLED;
}

int
tc_future_result(const tc_future_t *f, void **value)
{
    if (f == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(f->loop);
    if (!f->settled) {
        return -EAGAIN;
    }
    int status = entry_status(f);
    if (value != NULL) {
        *value = status == 0 ? f->value : NULL;
    }
    return status;
}

tc_loop_t *
tc_future_loop(const tc_future_t *f)
{
    return f != NULL ? f->loop : NULL;
}

/* ---- futures of pool work ---- */

static int
future_work(tc_work_t *w, void *arg)
{
    tc_future_t *f = arg;
    tc_future_set_running(f);
    void *value = NULL;
    int status = f->task_fn(w, f->task_arg, &value);
    f->task_value = status == 0 ? value : NULL;
    return status;
}

/* Thread: loop. */
static void
future_work_done(tc_work_t *w, int status, void *arg)
{
    (void)w;
    tc_future_t *f = arg;
    f->work = NULL;
    void *value = f->task_value;
    f->task_value = NULL;
    if (status == 0) {
        /* Cancelled or timed out meanwhile: nobody will own the value. */
        if (tc_future_resolve(f, value, f->free_value) != 0 &&
            f->free_value != NULL && value != NULL) {
            f->free_value(value);
        }
    } else {
        /* A positive return breaks fn's contract; tc_future_reject would
         * refuse it and leave the future RUNNING forever. */
        tc_future_reject(f, status < 0 ? status : -EINVAL);
    }
    tc_future_unref(f);
}

int
tc_pool_submit_future(tc_pool_t *pool, tc_loop_t *loop, tc_value_work_fn fn,
                      void *arg, void (*free_value)(void *),
                      tc_priority_t priority, tc_future_t **out)
{
    if (pool == NULL || loop == NULL || fn == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    tc_future_t *f;
    int err = tc_future_new(loop, &f);
    if (err != 0) {
        return err;
    }
    f->task_fn = fn;
    f->task_arg = arg;
    /* The settle reads free_value from the future; store it now so that a
     * value produced after a cancel is still released. */
    f->free_value = free_value;
    tc_future_ref(f);       /* the work's */
    err = tc_pool_submit(pool, loop, future_work, future_work_done, f,
                         priority, &f->work);
    if (err != 0) {
        f->free_value = NULL;
        tc_future_unref(f);
        tc_future_unref(f);
        return err;
    }
    *out = f;
    return 0;
}
