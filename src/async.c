/* Wakeup handles over ev_async: sends from any thread coalesce into one
 * callback on the loop thread. */
#include "internal.h"

struct tc_async_s {
    tc_handle_t h;
    ev_async w;
    tc_async_cb cb;
};

static void
async_fire(struct ev_loop *ev, ev_async *w, int revents)
{
    (void)ev;
    (void)revents;
    tc_async_t *a = TC__CONTAINER_OF(w, tc_async_t, w);
    a->cb(a);
}

static void
async_close(tc_handle_t *h)
{
    tc_async_t *a = TC__CONTAINER_OF(h, tc_async_t, h);
    ev_async_stop(h->loop->ev, &a->w);
}

static bool
async_is_active(const tc_handle_t *h)
{
    return ev_is_active(&TC__CONTAINER_OF(h, tc_async_t, h)->w);
}

static const tc__handle_vtable_t async_vt = {
    .close_impl = async_close,
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
    ev_async_init(&a->w, async_fire);
    ev_async_start(loop->ev, &a->w);
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
    ev_async_send(a->h.loop->ev, &a->w);
    return 0;
}
