/* Child processes: exit codes and signals, kill, bad programs reported by
 * the spawn call, 64 MiB through cat with backpressure, a child that
 * closes stdout early, stdio redirections, env and cwd, descriptors closed
 * in the child, and 200 short children leaving no zombie and no
 * descriptor behind. */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024u * 1024u)

typedef struct child {
    tc_process_t *p;
    tc_stream_t *pipes[3];
    int exits;
    int status, sig;
    char out[4096];
    size_t out_len;
    uint64_t received;
    payload_check_t chk;
    bool check;
    int eofs;
    int errors;
    int last_error;
    bool paused;
    int closed;
} child_t;

static void
c_exit(tc_process_t *p, int status, int sig)
{
    child_t *c = tc_handle_data(tc_process_handle(p));
    c->exits++;
    c->status = status;
    c->sig = sig;
}

static void
c_read(tc_stream_t *s, const char *buf, size_t len)
{
    child_t *c = tc_handle_data(tc_stream_handle(s));
    if (c->check) {
        payload_check_feed(&c->chk, buf, len);
    } else if (c->out_len + len <= sizeof(c->out) - 1) {
        memcpy(c->out + c->out_len, buf, len);
        c->out_len += len;
        c->out[c->out_len] = '\0';
    }
    c->received += len;
}

static void
c_eof(tc_stream_t *s)
{
    child_t *c = tc_handle_data(tc_stream_handle(s));
    c->eofs++;
}

static void
c_error(tc_stream_t *s, int status)
{
    child_t *c = tc_handle_data(tc_stream_handle(s));
    c->errors++;
    c->last_error = status;
}

static void
c_flow(tc_stream_t *s, bool paused)
{
    child_t *c = tc_handle_data(tc_stream_handle(s));
    c->paused = paused;
}

static void
c_closed(tc_handle_t *h)
{
    child_t *c = tc_handle_data(h);
    c->closed++;
}

static const tc_stream_callbacks_t child_cbs = {
    .on_read = c_read,
    .on_eof = c_eof,
    .on_error = c_error,
    .on_flow = c_flow,
};

/* Spawn argv with the given stdio modes; pipes get child_cbs, and the
 * output pipes read. */
static int
spawn(tc_loop_t *loop, child_t *c, char *const argv[], tc_stdio_mode_t in,
      tc_stdio_mode_t out, tc_stdio_mode_t err)
{
    tc_process_options_t o = {
        .argv = argv,
        .stdio = {{in, -1}, {out, -1}, {err, -1}},
        .on_exit = c_exit,
    };
    int rc = tc_process_spawn(loop, &o, c, &c->p, c->pipes);
    if (rc != 0) {
        return rc;
    }
    for (int i = 0; i < 3; i++) {
        if (c->pipes[i] != NULL) {
            tc_handle_set_data(tc_stream_handle(c->pipes[i]), c);
            ASSERT_RC(tc_stream_set_callbacks(c->pipes[i], &child_cbs), 0);
            if (i > 0) {
                ASSERT_RC(tc_stream_read_start(c->pipes[i]), 0);
            }
        }
    }
    return 0;
}

static void
close_child(child_t *c)
{
    for (int i = 0; i < 3; i++) {
        if (c->pipes[i] != NULL &&
            !tc_handle_is_closing(tc_stream_handle(c->pipes[i]))) {
            ASSERT_RC(tc_close(tc_stream_handle(c->pipes[i]), c_closed), 0);
        }
    }
    ASSERT_RC(tc_close(tc_process_handle(c->p), c_closed), 0);
}

/* No child of this process is left, reaped or not. */
static void
assert_no_children(void)
{
    siginfo_t si;
    errno = 0;
    int rc = waitid(P_ALL, 0, &si, WEXITED | WNOHANG | WNOWAIT);
    assert_int_equal(rc, -1);
    assert_int_equal(errno, ECHILD);
}

static void
test_bad_args(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    int fds = count_open_fds();
    tc_process_t *p = NULL;
    tc_stream_t *pipes[3];
    char *argv[] = {"true", NULL};
    char *none[] = {NULL};
    tc_process_options_t o = {.argv = argv};

    ASSERT_RC(tc_process_spawn(NULL, &o, NULL, &p, pipes), -EINVAL);
    ASSERT_RC(tc_process_spawn(loop, NULL, NULL, &p, pipes), -EINVAL);
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, NULL, pipes), -EINVAL);
    o.argv = none;
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, &p, pipes), -EINVAL);
    o.argv = argv;
    o.stdio[0].mode = TC_STDIO_PIPE;
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, &p, NULL), -EINVAL);
    o.stdio[0].mode = TC_STDIO_STDOUT;   /* stderr only */
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, &p, pipes), -EINVAL);
    o.stdio[0].mode = TC_STDIO_FD;
    o.stdio[0].fd = -1;
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, &p, pipes), -EINVAL);
    o.stdio[0].mode = (tc_stdio_mode_t)99;
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, &p, pipes), -EINVAL);
    o.stdio[0].mode = TC_STDIO_INHERIT;
    o.flags = 1u << 20;
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, &p, pipes), -EINVAL);
    o.flags = 0;
    assert_null(p);
    assert_int_equal(walk_count(loop), 0);
    assert_int_equal(count_open_fds(), fds);
    close_loop_clean(loop);
}

/* A program that does not exist is reported by the spawn call, with
 * nothing left open: by path, through PATH, and a bad cwd. */
static void
test_missing_program(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    int fds = count_open_fds();
    child_t c = {0};
    char *by_path[] = {"/nonexistent/twincore-no-such-program", NULL};
    char *by_name[] = {"twincore-no-such-program", NULL};
    char *sh[] = {"/bin/sh", "-c", "exit 0", NULL};

    ASSERT_RC(spawn(loop, &c, by_path, TC_STDIO_PIPE, TC_STDIO_PIPE,
                    TC_STDIO_PIPE), -ENOENT);
    ASSERT_RC(spawn(loop, &c, by_name, TC_STDIO_PIPE, TC_STDIO_PIPE,
                    TC_STDIO_DEVNULL), -ENOENT);
    tc_process_options_t o = {.argv = sh, .cwd = "/nonexistent/dir"};
    ASSERT_RC(tc_process_spawn(loop, &o, NULL, &c.p, c.pipes), -ENOENT);
    char *notexec[] = {"/etc/passwd", NULL};
    ASSERT_RC(spawn(loop, &c, notexec, TC_STDIO_INHERIT, TC_STDIO_DEVNULL,
                    TC_STDIO_DEVNULL), -EACCES);
    run_nowait(loop, 2);   /* close callbacks of the unused streams */
    assert_int_equal(walk_count(loop), 0);
    assert_int_equal(count_open_fds(), fds);
    assert_no_children();
    close_loop_clean(loop);
}

static void
run_to_exit(tc_loop_t *loop, child_t *c, char *const argv[])
{
    ASSERT_RC(spawn(loop, c, argv, TC_STDIO_DEVNULL, TC_STDIO_PIPE,
                    TC_STDIO_INHERIT), 0);
    assert_true(tc_process_pid(c->p) > 0);
    RUN_UNTIL(loop, c->exits == 1 && c->eofs == 1, 10000);
}

static void
test_exit_codes_and_signals(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    child_t a = {0}, b = {0}, d = {0};
    char *exit3[] = {"sh", "-c", "echo hi; exit 3", NULL};
    char *term[] = {"sh", "-c", "kill -TERM $$", NULL};
    char *ok[] = {"true", NULL};

    run_to_exit(loop, &a, exit3);
    assert_int_equal(a.status, 3);
    assert_int_equal(a.sig, 0);
    assert_string_equal(a.out, "hi\n");
    int st = -1, sig = -1;
    assert_true(tc_process_has_exited(a.p, &st, &sig));
    assert_int_equal(st, 3);
    assert_int_equal(sig, 0);

    run_to_exit(loop, &b, term);
    assert_int_equal(b.status, 0);
    assert_int_equal(b.sig, SIGTERM);

    run_to_exit(loop, &d, ok);
    assert_int_equal(d.status, 0);
    assert_int_equal(d.sig, 0);
    run_for(loop, 20);
    assert_int_equal(a.exits + b.exits + d.exits, 3);   /* once each */
    close_child(&a);
    close_child(&b);
    close_child(&d);
    RUN_UNTIL(loop, a.closed == 2 && b.closed == 2 && d.closed == 2, 5000);
    assert_no_children();
    close_loop_clean(loop);
}

static void
test_kill(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    child_t c = {0};
    char *argv[] = {"sleep", "30", NULL};
    ASSERT_RC(spawn(loop, &c, argv, TC_STDIO_DEVNULL, TC_STDIO_DEVNULL,
                    TC_STDIO_DEVNULL), 0);
    assert_false(tc_process_has_exited(c.p, NULL, NULL));
    assert_true(tc_handle_is_active(tc_process_handle(c.p)));
    ASSERT_RC(tc_process_kill(c.p, 0), 0);        /* alive */
    ASSERT_RC(tc_process_kill(c.p, -1), -EINVAL);
    ASSERT_RC(tc_process_kill(c.p, 100000), -EINVAL);
    ASSERT_RC(tc_process_kill(c.p, SIGKILL), 0);
    RUN_UNTIL(loop, c.exits == 1, 10000);
    assert_int_equal(c.sig, SIGKILL);
    assert_false(tc_handle_is_active(tc_process_handle(c.p)));
    ASSERT_RC(tc_process_kill(c.p, SIGTERM), -ESRCH);
    assert_string_equal(tc_handle_type_name(
                            tc_handle_type(tc_process_handle(c.p))),
                        "process");
    close_child(&c);
    RUN_UNTIL(loop, c.closed == 1, 5000);
    close_loop_clean(loop);
}

/* Closing a process that still runs kills and reaps it. */
static void
test_close_running_child(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    int fds = count_open_fds();
    child_t c = {0};
    char *argv[] = {"sleep", "30", NULL};
    ASSERT_RC(spawn(loop, &c, argv, TC_STDIO_PIPE, TC_STDIO_PIPE,
                    TC_STDIO_PIPE), 0);
    pid_t pid = tc_process_pid(c.p);
    close_child(&c);
    RUN_UNTIL(loop, c.closed == 4, 5000);
    assert_int_equal(c.exits, 0);
    assert_int_equal(kill(pid, 0), -1);   /* gone, and reaped */
    assert_int_equal(errno, ESRCH);
    assert_no_children();
    assert_int_equal(count_open_fds(), fds);
    close_loop_clean(loop);
}

/* 64 MiB through cat: written while the stdin stream is not paused,
 * verified byte by byte on the way back. */
typedef struct feeder {
    child_t *c;
    uint64_t written, total;
    bool closed_in;
    char buf[256 * 1024];
} feeder_t;

static void
feed(feeder_t *f)
{
    tc_stream_t *in = f->c->pipes[0];
    while (!f->c->paused && f->written < f->total) {
        size_t n = sizeof(f->buf);
        if (f->total - f->written < n) {
            n = (size_t)(f->total - f->written);
        }
        payload_fill(f->buf, n, 7, f->written);
        ASSERT_RC(tc_stream_write(in, f->buf, n), 0);
        f->written += n;
    }
    if (f->written == f->total && !f->closed_in) {
        f->closed_in = true;
        ASSERT_RC(tc_stream_close(in, c_closed), 0);   /* EOF for cat */
    }
}

static void
test_cat_64mib(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    child_t c = {0};
    c.check = true;
    payload_check_init(&c.chk, 7);
    char *argv[] = {"cat", NULL};
    ASSERT_RC(spawn(loop, &c, argv, TC_STDIO_PIPE, TC_STDIO_PIPE,
                    TC_STDIO_INHERIT), 0);
    assert_null(c.pipes[2]);
    feeder_t *f = calloc(1, sizeof(*f));
    assert_non_null(f);
    f->c = &c;
    f->total = 64ull * MiB;
    int pauses = 0;
    bool was_paused = false;
    watchdog_t wd;
    watchdog_start(loop, &wd, 60000);
    while (!(c.exits == 1 && c.eofs == 1) && !watchdog_expired(&wd)) {
        feed(f);
        if (c.paused && !was_paused) {
            pauses++;
        }
        was_paused = c.paused;
        assert_true(tc_loop_run(loop, TC_RUN_ONCE) >= 0);
        /* Backpressure: what waits in the queue stays bounded. */
        if (!f->closed_in) {
            assert_true(tc_stream_write_queue_size(c.pipes[0]) <=
                        TC_STREAM_DEFAULT_HIGH_WATER + sizeof(f->buf));
        }
    }
    watchdog_stop(&wd);
    assert_int_equal(c.exits, 1);
    assert_int_equal(c.status, 0);
    assert_false(c.chk.bad);
    assert_int_equal(c.received, 64ull * MiB);
    assert_true(pauses > 0);
    assert_int_equal(c.errors, 0);
    free(f);
    RUN_UNTIL(loop, c.closed == 1, 5000);   /* stdin, closed by feed() */
    c.pipes[0] = NULL;                      /* freed with its handle */
    close_child(&c);
    RUN_UNTIL(loop, c.closed == 3, 5000);
    close_loop_clean(loop);
}

/* stdout closes long before the exit; writes to a child that is gone fail
 * through on_error (EPIPE), not with SIGPIPE. */
static void
test_child_closes_stdout_early(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    child_t c = {0};
    char *argv[] = {"sh", "-c", "echo bye; exec 1>&- 0<&-; sleep 0.3",
                    NULL};
    ASSERT_RC(spawn(loop, &c, argv, TC_STDIO_PIPE, TC_STDIO_PIPE,
                    TC_STDIO_INHERIT), 0);
    RUN_UNTIL(loop, c.eofs == 1, 10000);
    assert_int_equal(c.exits, 0);
    assert_string_equal(c.out, "bye\n");
    static char big[1024 * 1024];
    int rc = tc_stream_write(c.pipes[0], big, sizeof(big));
    assert_true(rc == 0 || rc == -EPIPE);
    RUN_UNTIL(loop, c.errors == 1, 10000);
    assert_int_equal(c.last_error, -EPIPE);
    RUN_UNTIL(loop, c.exits == 1, 10000);
    assert_int_equal(c.status, 0);
    close_child(&c);
    RUN_UNTIL(loop, c.closed == 3, 5000);
    close_loop_clean(loop);
}

static void
test_stdio_env_cwd(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    child_t c = {0};
    char *argv[] = {"sh", "-c", "echo $FOO; pwd; echo err >&2; cat",
                    NULL};
    char *env[] = {"FOO=bar baz", "PATH=/usr/bin:/bin", NULL};
    tc_process_options_t o = {
        .argv = argv,
        .env = env,
        .cwd = "/",
        .stdio = {{TC_STDIO_DEVNULL, -1}, {TC_STDIO_PIPE, -1},
                  {TC_STDIO_STDOUT, -1}},
        .on_exit = c_exit,
    };
    ASSERT_RC(tc_process_spawn(loop, &o, &c, &c.p, c.pipes), 0);
    assert_null(c.pipes[0]);
    assert_null(c.pipes[2]);
    tc_handle_set_data(tc_stream_handle(c.pipes[1]), &c);
    ASSERT_RC(tc_stream_set_callbacks(c.pipes[1], &child_cbs), 0);
    ASSERT_RC(tc_stream_read_start(c.pipes[1]), 0);
    RUN_UNTIL(loop, c.exits == 1 && c.eofs == 1, 10000);
    assert_string_equal(c.out, "bar baz\n/\nerr\n");
    close_child(&c);
    RUN_UNTIL(loop, c.closed == 2, 5000);
    close_loop_clean(loop);
}

/* A descriptor without close-on-exec is closed in the child unless
 * TC_PROCESS_KEEP_FDS; TC_STDIO_FD hands one over; SETPGID makes a
 * group. */
static void
test_fds_and_groups(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    int fd = open("/dev/null", O_RDONLY);   /* inheritable */
    assert_true(fd > 2);
    char script[128];
    snprintf(script, sizeof(script),
             "if [ -e /proc/self/fd/%d ]; then echo open; "
             "else echo closed; fi; sleep 0.2", fd);
    char *argv[] = {"sh", "-c", script, NULL};
    for (int keep = 0; keep < 2; keep++) {
        child_t c = {0};
        int sv[2];
        unix_pair(sv);
        tc_process_options_t o = {
            .argv = argv,
            .stdio = {{TC_STDIO_DEVNULL, -1}, {TC_STDIO_FD, sv[1]},
                      {TC_STDIO_INHERIT, -1}},
            .flags = (keep ? TC_PROCESS_KEEP_FDS : 0) | TC_PROCESS_SETPGID,
            .pgid = 0,
            .on_exit = c_exit,
        };
        ASSERT_RC(tc_process_spawn(loop, &o, &c, &c.p, c.pipes), 0);
        close(sv[1]);
        assert_int_equal(getpgid(tc_process_pid(c.p)), tc_process_pid(c.p));
        RUN_UNTIL(loop, c.exits == 1, 10000);
        char buf[64] = {0};
        ssize_t n = read(sv[0], buf, sizeof(buf) - 1);
        assert_true(n > 0);
        assert_string_equal(buf, keep ? "open\n" : "closed\n");
        close(sv[0]);
        ASSERT_RC(tc_close(tc_process_handle(c.p), NULL), 0);
    }
    close(fd);
    close_loop_clean(loop);
}

/* 200 short children, up to 20 at a time: each exit reported once, no
 * zombie and no descriptor left. */
static void
test_many_short_children(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    int fds = count_open_fds();
    enum { TOTAL = 200, AT_ONCE = 20 };
    child_t *kids = calloc(TOTAL, sizeof(*kids));
    assert_non_null(kids);
    char *argv[] = {"true", NULL};
    int started = 0, exited = 0;
    watchdog_t wd;
    watchdog_start(loop, &wd, 60000);
    while (exited < TOTAL && !watchdog_expired(&wd)) {
        while (started < TOTAL && started - exited < AT_ONCE) {
            child_t *c = &kids[started++];
            ASSERT_RC(spawn(loop, c, argv, TC_STDIO_DEVNULL, TC_STDIO_PIPE,
                            TC_STDIO_DEVNULL), 0);
        }
        assert_true(tc_loop_run(loop, TC_RUN_ONCE) >= 0);
        exited = 0;
        for (int i = 0; i < started; i++) {
            exited += kids[i].exits;
        }
    }
    watchdog_stop(&wd);
    assert_int_equal(exited, TOTAL);
    for (int i = 0; i < TOTAL; i++) {
        assert_int_equal(kids[i].exits, 1);
        assert_int_equal(kids[i].status, 0);
        close_child(&kids[i]);
    }
    assert_no_children();
    run_nowait(loop, 3);
    assert_int_equal(count_open_fds(), fds);
    free(kids);
    close_loop_clean(loop);
}

int
main(void)
{
    signal(SIGPIPE, SIG_IGN);   /* as Python does: the child resets it */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bad_args),
        cmocka_unit_test(test_missing_program),
        cmocka_unit_test(test_exit_codes_and_signals),
        cmocka_unit_test(test_kill),
        cmocka_unit_test(test_close_running_child),
        cmocka_unit_test(test_cat_64mib),
        cmocka_unit_test(test_child_closes_stdout_early),
        cmocka_unit_test(test_stdio_env_cwd),
        cmocka_unit_test(test_fds_and_groups),
        cmocka_unit_test(test_many_short_children),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
