/* Test helpers shared by the cmocka suites: raw loopback sockets (a TCP
 * listener on port 0, connected pairs, socketpairs), checksummed payloads
 * whose every byte depends on its offset, and loop drivers that fail a
 * test instead of hanging it.  Every wait is bounded by a tc_timer
 * watchdog and by the wall clock, so a broken timer cannot hang a run.
 *
 * Helpers may use cmocka assertions: they run on the test's thread only. */
#ifndef TC_TEST_HELPERS_H
#define TC_TEST_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>
#include <sys/socket.h>

#include "twincore.h"

struct payload_check;

/* ---- codes ------------------------------------------------------------ */

/* Assert that an int expression equals an expected code, printing both
 * codes by name ("ECONNRESET (-104)") when it does not. */
#define ASSERT_RC(expr, expected)                                           \
    assert_rc_impl((int)(expr), (int)(expected), #expr, __FILE__, __LINE__)
void assert_rc_impl(int actual, int expected, const char *what,
                    const char *file, int line);
/* Assert that a code is negative (any error). */
#define ASSERT_ERR(expr)                                                    \
    assert_err_impl((int)(expr), #expr, __FILE__, __LINE__)
void assert_err_impl(int actual, const char *what, const char *file,
                     int line);

/* ---- time and loops --------------------------------------------------- */

uint64_t mono_ms(void);

/* Run TC_RUN_ONCE iterations until *done is true or deadline_ms passed;
 * returns *done.  A tc_timer watchdog keeps an iteration from blocking past
 * the deadline.  Must not be called from inside a callback. */
bool run_until(tc_loop_t *loop, const bool *done, uint64_t deadline_ms);
/* The same with a predicate. */
bool run_until_fn(tc_loop_t *loop, bool (*pred)(void *arg), void *arg,
                  uint64_t deadline_ms);
/* Run iterations for about ms milliseconds, whatever happens (lets a test
 * observe that something does NOT happen).  Never a pass/fail timing. */
void run_for(tc_loop_t *loop, uint64_t ms);
/* Run n TC_RUN_NOWAIT iterations. */
void run_nowait(tc_loop_t *loop, int n);

/* One iteration the way a host event loop embedding twincore drives it:
 * poll tc_loop_backend_fd() for reading with tc_loop_backend_timeout()
 * (capped at cap_ms), then tc_loop_run(TC_RUN_NOWAIT).  Returns what poll
 * returned: 0 means the poll slept its whole timeout. */
int host_iteration(tc_loop_t *loop, int cap_ms);

/* A watchdog for tests that drive the loop themselves. */
typedef struct watchdog {
    tc_timer_t *timer;
    bool expired;
    uint64_t wall_deadline;
} watchdog_t;
void watchdog_start(tc_loop_t *loop, watchdog_t *wd, uint64_t deadline_ms);
bool watchdog_expired(const watchdog_t *wd);
void watchdog_stop(watchdog_t *wd);

/* RUN_UNTIL(loop, cond, ms): iterate until cond holds; fail the test
 * naming cond when the deadline passes first.  The watchdog is an open
 * timer handle while it waits: cond must not count open handles. */
#define RUN_UNTIL(loop, cond, ms)                                           \
    do {                                                                    \
        watchdog_t wd__;                                                    \
        watchdog_start((loop), &wd__, (ms));                                \
        while (!(cond) && !watchdog_expired(&wd__)) {                       \
            int rc__ = tc_loop_run((loop), TC_RUN_ONCE);                    \
            if (rc__ < 0) {                                                 \
                watchdog_stop(&wd__);                                       \
                fail_msg("%s:%d: tc_loop_run returned %d", __FILE__,        \
                         __LINE__, rc__);                                   \
            }                                                               \
        }                                                                   \
        watchdog_stop(&wd__);                                               \
        if (!(cond)) {                                                      \
            fail_msg("%s:%d: timed out after %d ms waiting for: %s",        \
                     __FILE__, __LINE__, (int)(ms), #cond);                 \
        }                                                                   \
    } while (0)

/* Close every handle still open (tc_loop_walk), run what is due and assert
 * tc_loop_close(loop) == 0. */
void close_loop(tc_loop_t *loop);
/* Assert that no handle is left open, then close_loop(). */
void close_loop_clean(tc_loop_t *loop);
/* Number of handles tc_loop_walk lists (closing ones included). */
size_t walk_count(tc_loop_t *loop);

/* ---- sockets ---------------------------------------------------------- */

/* A raw blocking TCP listener on host ("127.0.0.1", "::1") port 0; *port
 * receives the port.  backlog as for listen(2). */
int tcp_listener(const char *host, int backlog, int *port);
/* A raw TCP connect, blocking or not (then EINPROGRESS is fine). */
int tcp_connect_raw(const char *host, int port, bool nonblock);
/* A connected loopback TCP pair (raw, blocking). */
void tcp_pair(int fds[2]);
/* An AF_UNIX stream socketpair (raw, blocking, close-on-exec). */
void unix_pair(int fds[2]);
void set_nonblock(int fd, bool on);
/* Set SO_SNDBUF and SO_RCVBUF (0 leaves one unchanged). */
void set_bufsizes(int fd, int snd, int rcv);
/* Close with SO_LINGER {1, 0}: a TCP reset. */
void close_reset(int fd);
/* Read everything available on a non-blocking fd into the checker (may
 * be NULL); returns bytes read, sets *eof when read returned 0. */
size_t drain_fd(int fd, struct payload_check *chk, bool *eof);
/* Whether ::1 is usable. */
bool have_ipv6(void);
/* Whether fd is an open descriptor. */
bool fd_is_open(int fd);
/* Port of a bound socket. */
int sock_port(int fd);
/* Count open descriptors of this process. */
int count_open_fds(void);

/* ---- payloads --------------------------------------------------------- */

/* Byte i of stream seed is a function of (seed, i) only, so any chunk can
 * be produced or verified at any offset. */
void payload_fill(void *buf, size_t len, uint64_t seed, uint64_t offset);
uint64_t fnv1a64(uint64_t h, const void *buf, size_t len);
#define FNV1A64_INIT 0xcbf29ce484222325ull

typedef struct payload_check {
    uint64_t seed;
    uint64_t offset;      /* bytes verified so far */
    uint64_t hash;        /* fnv1a64 of them */
    bool bad;
    uint64_t first_bad;   /* offset of the first wrong byte */
} payload_check_t;

void payload_check_init(payload_check_t *chk, uint64_t seed);
/* Verify the next len bytes; returns false once any byte was wrong. */
bool payload_check_feed(payload_check_t *chk, const void *buf, size_t len);
/* fnv1a64 of the first len bytes of stream seed. */
uint64_t payload_hash(uint64_t seed, size_t len);

#endif
