/* Test helpers: see helpers.h.  Raw sockets here are plain POSIX so the
 * tests can play a peer that twincore does not control. */
#include "helpers.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- codes ------------------------------------------------------------ */

void
assert_rc_impl(int actual, int expected, const char *what, const char *file,
               int line)
{
    if (actual != expected) {
        fail_msg("%s:%d: %s returned %s (%d), expected %s (%d)", file, line,
                 what, tc_err_name(actual), actual, tc_err_name(expected),
                 expected);
    }
}

void
assert_err_impl(int actual, const char *what, const char *file, int line)
{
    if (actual >= 0) {
        fail_msg("%s:%d: %s returned %d, expected a negative code", file,
                 line, what, actual);
    }
}

/* ---- time and loops --------------------------------------------------- */

uint64_t
mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void
watchdog_fired(tc_timer_t *timer)
{
    watchdog_t *wd = tc_handle_data(tc_timer_handle(timer));

    wd->expired = true;
}

void
watchdog_start(tc_loop_t *loop, watchdog_t *wd, uint64_t deadline_ms)
{
    wd->expired = false;
    wd->timer = NULL;
    wd->wall_deadline = mono_ms() + deadline_ms + 1000;
    ASSERT_RC(tc_timer_new(loop, wd, &wd->timer), 0);
    ASSERT_RC(tc_timer_start(wd->timer, watchdog_fired, deadline_ms, 0), 0);
}

bool
watchdog_expired(const watchdog_t *wd)
{
    /* The wall clock is the backstop should the timer itself misbehave. */
    return wd->expired || mono_ms() > wd->wall_deadline;
}

void
watchdog_stop(watchdog_t *wd)
{
    if (wd->timer != NULL) {
        tc_handle_set_data(tc_timer_handle(wd->timer), NULL);
        tc_timer_stop(wd->timer);
        tc_close(tc_timer_handle(wd->timer), NULL);
        wd->timer = NULL;
    }
}

bool
run_until_fn(tc_loop_t *loop, bool (*pred)(void *arg), void *arg,
             uint64_t deadline_ms)
{
    watchdog_t wd;
    int rc = 0;

    watchdog_start(loop, &wd, deadline_ms);
    while (!pred(arg) && !watchdog_expired(&wd)) {
        rc = tc_loop_run(loop, TC_RUN_ONCE);
        if (rc < 0) {
            break;
        }
    }
    watchdog_stop(&wd);
    if (rc < 0) {
        fail_msg("tc_loop_run returned %s (%d)", tc_err_name(rc), rc);
    }
    return pred(arg);
}

static bool
flag_is_set(void *arg)
{
    return *(const bool *)arg;
}

bool
run_until(tc_loop_t *loop, const bool *done, uint64_t deadline_ms)
{
    return run_until_fn(loop, flag_is_set, (void *)done, deadline_ms);
}

void
run_for(tc_loop_t *loop, uint64_t ms)
{
    bool never = false;

    (void)run_until(loop, &never, ms);
}

void
run_nowait(tc_loop_t *loop, int n)
{
    for (int i = 0; i < n; i++) {
        int rc = tc_loop_run(loop, TC_RUN_NOWAIT);

        if (rc < 0) {
            fail_msg("tc_loop_run(NOWAIT) returned %s", tc_err_name(rc));
        }
    }
}

int
host_iteration(tc_loop_t *loop, int cap_ms)
{
    struct pollfd pfd = {.fd = tc_loop_backend_fd(loop), .events = POLLIN};
    int timeout = tc_loop_backend_timeout(loop);
    int n;

    assert_true(pfd.fd >= 0);
    if (timeout < 0 || timeout > cap_ms) {
        timeout = cap_ms;
    }
    n = poll(&pfd, 1, timeout);
    if (n < 0) {
        assert_int_equal(errno, EINTR);
        n = 1; /* a signal woke it: that counts as woken */
    }
    int rc = tc_loop_run(loop, TC_RUN_NOWAIT);
    if (rc < 0) {
        fail_msg("tc_loop_run(NOWAIT) returned %s", tc_err_name(rc));
    }
    return n;
}

typedef struct handle_list {
    tc_handle_t **items;
    size_t len, cap;
} handle_list_t;

static void
collect_handle(tc_handle_t *h, void *arg)
{
    handle_list_t *list = arg;

    if (list->len == list->cap) {
        list->cap = list->cap ? list->cap * 2 : 16;
        list->items = realloc(list->items, list->cap * sizeof(*list->items));
        assert_non_null(list->items);
    }
    list->items[list->len++] = h;
}

size_t
walk_count(tc_loop_t *loop)
{
    handle_list_t list = {0};

    tc_loop_walk(loop, collect_handle, &list);
    free(list.items);
    return list.len;
}

void
close_loop(tc_loop_t *loop)
{
    handle_list_t list = {0};

    /* Collect first: closing while walking would assume the walk is safe
     * against list changes, which is not what this helper tests. */
    tc_loop_walk(loop, collect_handle, &list);
    for (size_t i = 0; i < list.len; i++) {
        if (!tc_handle_is_closing(list.items[i])) {
            ASSERT_RC(tc_close(list.items[i], NULL), 0);
        }
    }
    free(list.items);
    run_nowait(loop, 2);
    ASSERT_RC(tc_loop_close(loop), 0);
}

void
close_loop_clean(tc_loop_t *loop)
{
    size_t open = tc_loop_open_handles(loop);

    if (open != 0) {
        fail_msg("%zu handles left open at the end of the test", open);
    }
    close_loop(loop);
}

/* ---- sockets ---------------------------------------------------------- */

static socklen_t
fill_addr(const char *host, int port, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(host, ':') != NULL) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;

        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        assert_int_equal(inet_pton(AF_INET6, host, &sin6->sin6_addr), 1);
        return sizeof(*sin6);
    }
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;

    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)port);
    assert_int_equal(inet_pton(AF_INET, host, &sin->sin_addr), 1);
    return sizeof(*sin);
}

int
sock_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);

    assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
    if (ss.ss_family == AF_INET6) {
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    }
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

int
tcp_listener(const char *host, int backlog, int *port)
{
    struct sockaddr_storage ss;
    socklen_t len = fill_addr(host, 0, &ss);
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
    assert_int_equal(listen(fd, backlog), 0);
    if (port != NULL) {
        *port = sock_port(fd);
    }
    return fd;
}

int
tcp_connect_raw(const char *host, int port, bool nonblock)
{
    struct sockaddr_storage ss;
    socklen_t len = fill_addr(host, port, &ss);
    int type = SOCK_STREAM | SOCK_CLOEXEC | (nonblock ? SOCK_NONBLOCK : 0);
    int fd = socket(ss.ss_family, type, 0);

    assert_true(fd >= 0);
    if (connect(fd, (struct sockaddr *)&ss, len) != 0) {
        if (!(nonblock && errno == EINPROGRESS)) {
            int err = errno;

            close(fd);
            fail_msg("connect to %s:%d: %s", host, port, strerror(err));
        }
    }
    return fd;
}

void
tcp_pair(int fds[2])
{
    int port;
    int lfd = tcp_listener("127.0.0.1", 1, &port);

    fds[0] = tcp_connect_raw("127.0.0.1", port, false);
    fds[1] = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(fds[1] >= 0);
    close(lfd);
}

void
unix_pair(int fds[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds),
                     0);
}

void
set_nonblock(int fd, bool on)
{
    int flags = fcntl(fd, F_GETFL);

    assert_true(flags >= 0);
    flags = on ? (flags | O_NONBLOCK) : (flags & ~O_NONBLOCK);
    assert_int_equal(fcntl(fd, F_SETFL, flags), 0);
}

void
set_bufsizes(int fd, int snd, int rcv)
{
    if (snd > 0) {
        assert_int_equal(
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &snd, sizeof(snd)), 0);
    }
    if (rcv > 0) {
        assert_int_equal(
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof(rcv)), 0);
    }
}

void
close_reset(int fd)
{
    struct linger lg = {.l_onoff = 1, .l_linger = 0};

    assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)),
                     0);
    assert_int_equal(close(fd), 0);
}

size_t
drain_fd(int fd, payload_check_t *chk, bool *eof)
{
    char buf[65536];
    size_t total = 0;

    for (int i = 0; i < 100000; i++) {
        ssize_t n = read(fd, buf, sizeof(buf));

        if (n > 0) {
            if (chk != NULL) {
                payload_check_feed(chk, buf, (size_t)n);
            }
            total += (size_t)n;
            continue;
        }
        if (n == 0 && eof != NULL) {
            *eof = true;
        }
        break;
    }
    return total;
}

bool
have_ipv6(void)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6,
                                .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    bool ok;

    if (fd < 0) {
        return false;
    }
    ok = bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) == 0;
    close(fd);
    return ok;
}

bool
fd_is_open(int fd)
{
    return fcntl(fd, F_GETFD) != -1 || errno != EBADF;
}

int
count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

/* ---- payloads --------------------------------------------------------- */

static inline uint64_t
splitmix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t
payload_word(uint64_t seed, uint64_t index)
{
    return splitmix64(seed * 0x100000001b3ull + index);
}

void
payload_fill(void *buf, size_t len, uint64_t seed, uint64_t offset)
{
    unsigned char *p = buf;
    size_t i = 0;

    while (i < len) {
        uint64_t pos = offset + i;
        uint64_t w = payload_word(seed, pos / 8);
        unsigned shift = (unsigned)(pos % 8);

        for (; shift < 8 && i < len; shift++, i++) {
            p[i] = (unsigned char)(w >> (8 * shift));
        }
    }
}

uint64_t
fnv1a64(uint64_t h, const void *buf, size_t len)
{
    const unsigned char *p = buf;

    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

void
payload_check_init(payload_check_t *chk, uint64_t seed)
{
    memset(chk, 0, sizeof(*chk));
    chk->seed = seed;
    chk->hash = FNV1A64_INIT;
}

bool
payload_check_feed(payload_check_t *chk, const void *buf, size_t len)
{
    const unsigned char *p = buf;
    size_t i = 0;

    chk->hash = fnv1a64(chk->hash, buf, len);
    while (i < len) {
        uint64_t pos = chk->offset + i;
        uint64_t w = payload_word(chk->seed, pos / 8);
        unsigned shift = (unsigned)(pos % 8);

        for (; shift < 8 && i < len; shift++, i++) {
            if (!chk->bad && p[i] != (unsigned char)(w >> (8 * shift))) {
                chk->bad = true;
                chk->first_bad = chk->offset + i;
            }
        }
    }
    chk->offset += len;
    return !chk->bad;
}

uint64_t
payload_hash(uint64_t seed, size_t len)
{
    char buf[65536];
    uint64_t h = FNV1A64_INIT;

    for (size_t off = 0; off < len; off += sizeof(buf)) {
        size_t n = len - off < sizeof(buf) ? len - off : sizeof(buf);

        payload_fill(buf, n, seed, off);
        h = fnv1a64(h, buf, n);
    }
    return h;
}
