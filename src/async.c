/* Wakeup handles: sends from any thread coalesce into one callback on the
 * loop thread.  Built on the loop's cross-thread queue (one eventfd for the
 * whole loop) rather than ev_async, whose descriptor libev writes only
 * while blocked inside ev_run(): an embedding host would never wake. */
#include "internal.h"

struct tc_async_s {
    tc_handle_t h;
    tc_async_cb cb;
    atomic_bool pending;     /* a fire is queued and has not run yet */
    atomic_uint queued;      /* fires queued, so close can wait for them */
};

static void
async_fire(void *arg)
{
    tc_async_t *a = arg;
    atomic_store(&a->pending, false);
    if (!tc__handle_closing(&a->h)) {
        a->cb(a);
    }
    atomic_fetch_sub(&a->queued, 1);
}

static void
async_close(tc_handle_t *h)
{
    tc__loop_unref(h->loop);
}

/* The handle must outlive fires already queued: they run first, since the
 * loop takes the whole queue before its after-phase frees anything. */
static void
async_finish(tc_handle_t *h)
{
    tc_async_t *a = TC__CONTAINER_OF(h, tc_async_t, h);
    while (atomic_load(&a->queued) > 0) {
        tc__loop_run_thread_calls(h->loop);
    }
}

static bool
async_is_active(const tc_handle_t *h)
{
    (void)h;
    return true;   /* until closed */
}

static const tc__handle_vtable_t async_vt = {
    .close_impl = async_close,
    .finish_impl = async_finish,
    .is_active = async_is_active,
};

tc_handle_t *
tc_async_handle(tc_async_t *async)
{
    return async != NULL ? &async->h : NULL;
}

int
tc_async_new(tc_loop_t *loop, tc_async_cb cb, void *data, tc_async_t **out)
{
    if (loop == NULL || cb == NULL || out == NULL) {
        return -EINVAL;
    }
    tc_async_t *a = calloc(1, sizeof(*a));
    if (a == NULL) {
        return -ENOMEM;
    }
    tc__handle_init(loop, &a->h, TC_HANDLE_ASYNC, &async_vt, data);
    a->cb = cb;
    atomic_init(&a->pending, false);
    atomic_init(&a->queued, 0);
    tc__loop_ref(loop);   /* an open async keeps the loop running */
    *out = a;
    return 0;
}

/* Thread: any. */
int
tc_async_send(tc_async_t *a)
{
    if (a == NULL) {
        return -EINVAL;
    }
    if (atomic_exchange(&a->pending, true)) {
        return 0;   /* a fire is already on its way */
    }
    atomic_fetch_add(&a->queued, 1);
    int err = tc_loop_call_from_thread(a->h.loop, async_fire, a);
    if (err != 0) {
        atomic_fetch_sub(&a->queued, 1);
        atomic_store(&a->pending, false);
    }
    return err;
}
