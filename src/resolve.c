/* Name resolution on the pool: one work item per getaddrinfo() call, whose
 * done callback reports on the loop and frees the answer.
 *
 * A request is owned by its work item from submit to done callback; the
 * internal single-address form can be forgotten (tc__resolve_cancel), after
 * which the done callback only frees it. */
#include <stdio.h>

#include "internal.h"

struct tc__resolve_req {
    char *host;
    char service[8];
    int family;
    struct addrinfo *res;       /* written on the worker */
    tc_work_t *work;
    bool forgotten;             /* tc__resolve_cancel: report nothing */
    tc_getaddrinfo_cb cb;       /* tc_getaddrinfo */
    void *data;
    tc__resolve_cb one_cb;      /* tc__resolve_one */
    void *one_arg;
};

/* getaddrinfo's EAI_* codes as twincore codes. */
static int
map_gai_error(int rc, int saved_errno)
{
    switch (rc) {
    case 0:
        return 0;
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return TC_ENONAME;
    case EAI_AGAIN:
        return TC_EAGAIN_NAME;
    case EAI_MEMORY:
        return -ENOMEM;
    case EAI_FAMILY:
        return -EAFNOSUPPORT;
    case EAI_SERVICE:
    case EAI_SOCKTYPE:
    case EAI_BADFLAGS:
        return -EINVAL;
    case EAI_SYSTEM:
        return saved_errno > 0 ? -saved_errno : TC_ENAMEFAIL;
    default:
        return TC_ENAMEFAIL;
    }
}

/* Thread: worker. */
static int
resolve_work(tc_work_t *w, void *arg)
{
    (void)w;
    struct tc__resolve_req *req = arg;
    struct addrinfo hints = {
        .ai_family = req->family,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_NUMERICSERV,
    };
    errno = 0;
    int rc = getaddrinfo(req->host, req->service, &hints, &req->res);
    if (rc != 0) {
        req->res = NULL;
        return map_gai_error(rc, errno);
    }
    return req->res != NULL ? 0 : TC_ENONAME;
}

static void
req_free(struct tc__resolve_req *req)
{
    if (req->res != NULL) {
        freeaddrinfo(req->res);
    }
    free(req->host);
    free(req);
}

static void
resolve_done(tc_work_t *w, int status, void *arg)
{
    (void)w;
    struct tc__resolve_req *req = arg;
    if (!req->forgotten) {
        if (req->cb != NULL) {
            req->cb(status, status == 0 ? req->res : NULL, req->data);
        } else if (status == 0) {
            req->one_cb(req->one_arg, 0, req->res->ai_addr,
                        req->res->ai_addrlen);
        } else {
            req->one_cb(req->one_arg, status, NULL, 0);
        }
    }
    req_free(req);
}

static int
submit_lookup(tc_loop_t *loop, tc_pool_t *pool, const char *host, int port,
              int family, struct tc__resolve_req *req)
{
    if (host == NULL || port < 0 || port > 65535 ||
        (family != AF_UNSPEC && family != AF_INET && family != AF_INET6)) {
        free(req);
        return -EINVAL;
    }
    req->host = strdup(host);
    if (req->host == NULL) {
        free(req);
        return -ENOMEM;
    }
    snprintf(req->service, sizeof(req->service), "%d", port);
    req->family = family;
    int err = tc_pool_submit(pool, loop, resolve_work, resolve_done, req,
                             TC_PRIORITY_NORMAL, &req->work);
    if (err != 0) {
        req_free(req);
    }
    return err;
}

int
tc_getaddrinfo(tc_loop_t *loop, tc_pool_t *pool, const char *host, int port,
               int family, tc_getaddrinfo_cb cb, void *data)
{
    if (loop == NULL || cb == NULL) {
        return -EINVAL;
    }
    if (pool == NULL) {
        pool = tc_loop_resolver_pool(loop);
        if (pool == NULL) {
            return -ENOTSUP;
        }
    }
    struct tc__resolve_req *req = calloc(1, sizeof(*req));
    if (req == NULL) {
        return -ENOMEM;
    }
    req->cb = cb;
    req->data = data;
    return submit_lookup(loop, pool, host, port, family, req);
}

void
tc_loop_set_resolver_pool(tc_loop_t *loop, tc_pool_t *pool)
{
    if (loop != NULL) {
        atomic_store_explicit(&loop->resolver_pool, pool,
                              memory_order_release);
    }
}

tc_pool_t *
tc_loop_resolver_pool(const tc_loop_t *loop)
{
    return loop != NULL ? atomic_load_explicit(
                              &((tc_loop_t *)loop)->resolver_pool,
                              memory_order_acquire)
                        : NULL;
}

int
tc__resolve_one(tc_loop_t *loop, const char *host, int port,
                tc__resolve_cb cb, void *arg, tc__resolve_req_t **out)
{
    if (loop == NULL || cb == NULL) {
        return -EINVAL;
    }
    tc_pool_t *pool = tc_loop_resolver_pool(loop);
    if (pool == NULL) {
        return -ENOTSUP;
    }
    struct tc__resolve_req *req = calloc(1, sizeof(*req));
    if (req == NULL) {
        return -ENOMEM;
    }
    req->one_cb = cb;
    req->one_arg = arg;
    int err = submit_lookup(loop, pool, host, port, AF_UNSPEC, req);
    if (err == 0 && out != NULL) {
        *out = req;
    }
    return err;
}

void
tc__resolve_cancel(tc__resolve_req_t *req)
{
    if (req == NULL) {
        return;
    }
    req->forgotten = true;
    tc_pool_cancel(req->work);
}
