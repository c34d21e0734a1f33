/* The base of every handle: registration on its loop, the single close path
 * and the accessors.  A handle's memory is freed only by the loop, after its
 * close callback has returned. */
#include "internal.h"

void
tc__handle_init(tc_loop_t *loop, tc_handle_t *h, tc_handle_type_t type,
                const tc__handle_vtable_t *vt, void *data)
{
    TC__ASSERT_LOOP_THREAD(loop);
    h->loop = loop;
    h->vt = vt;
    h->type = type;
    h->data = data;
    h->prev = NULL;
    h->next = loop->handles;
    if (loop->handles != NULL) {
        loop->handles->prev = h;
    }
    loop->handles = h;
    loop->open_handles++;
}

int
tc_close(tc_handle_t *h, tc_close_cb cb)
{
    if (h == NULL) {
        return -EINVAL;
    }
    tc_loop_t *loop = h->loop;
    TC__ASSERT_LOOP_THREAD(loop);
    if (h->flags & TC__H_CLOSING) {
        return -EALREADY;
    }
    h->flags |= TC__H_CLOSING;
    h->close_cb = cb;
    if (h->close_hook != NULL) {
        void (*hook)(void *) = h->close_hook;
        h->close_hook = NULL;
        hook(h->close_hook_arg);
    }
    loop->open_handles--;
    h->vt->close_impl(h);

    /* The close callback runs on a later iteration: the check phase skips
     * handles stamped with the current one. */
    h->closed_at_iteration = loop->stats.iterations;
    h->next_closing = NULL;
    if (loop->closing_tail != NULL) {
        loop->closing_tail->next_closing = h;
    } else {
        loop->closing_head = h;
    }
    loop->closing_tail = h;
    return 0;
}

void
tc__handle_finish_close(tc_handle_t *h)
{
    tc_loop_t *loop = h->loop;
    if (h->prev != NULL) {
        h->prev->next = h->next;
    } else {
        loop->handles = h->next;
    }
    if (h->next != NULL) {
        h->next->prev = h->prev;
    }
    if (h->vt->finish_impl != NULL) {
        h->vt->finish_impl(h);
    }
    if (h->close_cb != NULL) {
        h->close_cb(h);
    }
    free(h);
}

void *
tc_handle_data(const tc_handle_t *h)
{
    return h != NULL ? h->data : NULL;
}

void
tc_handle_set_data(tc_handle_t *h, void *data)
{
    if (h != NULL) {
        h->data = data;
    }
}

tc_loop_t *
tc_handle_loop(const tc_handle_t *h)
{
    return h != NULL ? h->loop : NULL;
}

tc_handle_type_t
tc_handle_type(const tc_handle_t *h)
{
    return h != NULL ? h->type : (tc_handle_type_t)0;
}

bool
tc_handle_is_active(const tc_handle_t *h)
{
    if (h == NULL || (h->flags & TC__H_CLOSING)) {
        return false;
    }
    return h->vt->is_active(h);
}

bool
tc_handle_is_closing(const tc_handle_t *h)
{
    return h != NULL && (h->flags & TC__H_CLOSING) != 0;
}

const char *
tc_handle_type_name(tc_handle_type_t type)
{
    switch (type) {
    case TC_HANDLE_TIMER:
        return "timer";
    case TC_HANDLE_SIGNAL:
        return "signal";
    case TC_HANDLE_ASYNC:
        return "async";
    case TC_HANDLE_STREAM:
        return "stream";
    case TC_HANDLE_SERVER:
        return "server";
    case TC_HANDLE_UDP:
        return "udp";
    case TC_HANDLE_POLL:
        return "poll";
    case TC_HANDLE_PROCESS:
        return "process";
    }
    return "unknown";
}
