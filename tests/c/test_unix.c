/* Unix domain stream sockets: round trips over a path and over Linux's
 * abstract namespace ("@name"), the unlink options, and name errors. */
#include "helpers.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct peer {
    tc_stream_t *s;
    int connects;
    int connect_status;
    payload_check_t chk;
    uint64_t received;
    int eofs, errors, closed;
    bool echo;
} peer_t;

typedef struct srv {
    tc_server_t *srv;
    int conns, errors, closed;
    peer_t accepted[8];
} srv_t;

static char tmpdir[64];

static void
p_read(tc_stream_t *s, const char *buf, size_t len)
{
    peer_t *p = tc_handle_data(tc_stream_handle(s));

    p->received += len;
    payload_check_feed(&p->chk, buf, len);
    if (p->echo) {
        ASSERT_RC(tc_stream_write(s, buf, len), 0);
    }
}

static void
p_eof(tc_stream_t *s)
{
    ((peer_t *)tc_handle_data(tc_stream_handle(s)))->eofs++;
}

static void
p_error(tc_stream_t *s, int status)
{
    (void)status;
    ((peer_t *)tc_handle_data(tc_stream_handle(s)))->errors++;
}

static const tc_stream_callbacks_t peer_cbs = {
    .on_read = p_read, .on_eof = p_eof, .on_error = p_error};

static void
p_connected(tc_stream_t *s, int status)
{
    peer_t *p = tc_handle_data(tc_stream_handle(s));

    p->connects++;
    p->connect_status = status;
}

static void
on_conn(tc_server_t *server, tc_stream_t *s, int status)
{
    srv_t *sv = tc_handle_data(tc_server_handle(server));

    if (status != 0) {
        sv->errors++;
        return;
    }
    assert_true(sv->conns < 8);
    peer_t *p = &sv->accepted[sv->conns++];
    memset(p, 0, sizeof(*p));
    p->s = s;
    p->echo = true;
    tc_handle_set_data(tc_stream_handle(s), p);
    assert_true(tc_stream_is_unix(s));
    ASSERT_RC(tc_stream_set_callbacks(s, &peer_cbs), 0);
    ASSERT_RC(tc_stream_read_start(s), 0);
}

static void
srv_closed(tc_handle_t *h)
{
    ((srv_t *)tc_handle_data(h))->closed++;
}

static int
make_tmpdir(void **state)
{
    (void)state;
    strcpy(tmpdir, "/tmp/twincore-unix-XXXXXX");
    return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int
remove_tmpdir(void **state)
{
    (void)state;
    char path[128];

    snprintf(path, sizeof(path), "%s/s.sock", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/s.sock.new", tmpdir);
    unlink(path);
    snprintf(path, sizeof(path), "%s/file", tmpdir);
    unlink(path);
    rmdir(tmpdir);
    return 0;
}

static void
sock_path(char *buf, size_t size)
{
    snprintf(buf, size, "%s/s.sock", tmpdir);
}

static bool
exists(const char *path)
{
    struct stat st;

    return lstat(path, &st) == 0;
}

/* Connect to path and exchange a checksummed 2 MiB both ways. */
static void
roundtrip(tc_loop_t *loop, srv_t *sv, const char *path)
{
    const size_t n = 2u * 1024 * 1024;
    peer_t cl = {0};
    char *buf = malloc(n);

    assert_non_null(buf);
    payload_check_init(&cl.chk, 77);
    ASSERT_RC(tc_unix_connect(loop, path, p_connected, &cl, &cl.s), 0);
    ASSERT_RC(tc_stream_set_callbacks(cl.s, &peer_cbs), 0);
    assert_true(tc_stream_is_unix(cl.s));
    payload_fill(buf, n, 77, 0);
    ASSERT_RC(tc_stream_write(cl.s, buf, n), 0);
    free(buf);
    RUN_UNTIL(loop, cl.connects > 0, 5000);
    ASSERT_RC(cl.connect_status, 0);
    ASSERT_RC(tc_stream_read_start(cl.s), 0);
    RUN_UNTIL(loop, cl.received >= n || cl.errors || cl.eofs, 30000);
    assert_int_equal(cl.received, n);
    assert_false(cl.chk.bad);
    assert_int_equal(cl.connects, 1);
    int idx = sv->conns - 1;
    assert_true(idx >= 0);
    ASSERT_RC(tc_close(tc_stream_handle(cl.s), NULL), 0);
    RUN_UNTIL(loop, sv->accepted[idx].eofs > 0, 5000);
    ASSERT_RC(tc_close(tc_stream_handle(sv->accepted[idx].s), NULL), 0);
}

static void
test_roundtrip_path(void **state)
{
    tc_loop_t *loop;
    srv_t sv = {0};
    char path[128];
    struct stat st;
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);
    char name[128];

    (void)state;
    sock_path(path, sizeof(path));
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_unix_listen(loop, path, NULL, on_conn, &sv, &sv.srv), 0);
    assert_int_equal(lstat(path, &st), 0);
    assert_true(S_ISSOCK(st.st_mode));
    ASSERT_RC(tc_server_port(sv.srv), -EINVAL);
    ASSERT_RC(tc_server_sockname(sv.srv, (struct sockaddr *)&sun, &len), 0);
    assert_int_equal(sun.sun_family, AF_UNIX);
    assert_string_equal(sun.sun_path, path);
    ASSERT_RC(tc_sockaddr_format((struct sockaddr *)&sun, len, name,
                                 sizeof(name)),
              0);
    assert_string_equal(name, path);

    roundtrip(loop, &sv, path);
    roundtrip(loop, &sv, path);
    assert_int_equal(sv.conns, 2);
    assert_int_equal(tc_server_accepted(sv.srv), 2);

    ASSERT_RC(tc_close(tc_server_handle(sv.srv), srv_closed), 0);
    RUN_UNTIL(loop, sv.closed == 1, 5000);
    /* Without unlink_on_close the socket file stays. */
    assert_true(exists(path));
    assert_int_equal(unlink(path), 0);
    close_loop_clean(loop);
}

static void
test_unlink_on_close(void **state)
{
    tc_loop_t *loop;
    srv_t sv = {0};
    char path[128];
    tc_unix_listen_opts_t opts = {.unlink_on_close = true};

    (void)state;
    sock_path(path, sizeof(path));
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_unix_listen(loop, path, &opts, on_conn, &sv, &sv.srv), 0);
    assert_true(exists(path));
    roundtrip(loop, &sv, path);
    ASSERT_RC(tc_close(tc_server_handle(sv.srv), srv_closed), 0);
    RUN_UNTIL(loop, sv.closed == 1, 5000);
    assert_false(exists(path));
    close_loop_clean(loop);
}

/* A stale socket file: refused without unlink_existing, replaced with it;
 * a regular file in the way is never removed. */
static void
test_unlink_existing(void **state)
{
    tc_loop_t *loop;
    srv_t sv = {0};
    char path[128], file[128];
    tc_unix_listen_opts_t opts = {.unlink_existing = true};
    tc_server_t *out = NULL;
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

    (void)state;
    sock_path(path, sizeof(path));
    strcpy(sun.sun_path, path);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
    assert_true(exists(path));

    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_unix_listen(loop, path, NULL, on_conn, &sv, &out),
              -EADDRINUSE);
    assert_null(out);
    assert_true(exists(path));
    ASSERT_RC(tc_unix_listen(loop, path, &opts, on_conn, &sv, &sv.srv), 0);
    roundtrip(loop, &sv, path);
    ASSERT_RC(tc_close(tc_server_handle(sv.srv), NULL), 0);

    snprintf(file, sizeof(file), "%s/file", tmpdir);
    int ffd = open(file, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    assert_true(ffd >= 0);
    assert_int_equal(write(ffd, "keep", 4), 4);
    close(ffd);
    ASSERT_ERR(tc_unix_listen(loop, file, &opts, on_conn, &sv, &out));
    assert_null(out);
    struct stat st;
    assert_int_equal(stat(file, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_int_equal(st.st_size, 4);
    close_loop_clean(loop);
}

static void
test_abstract(void **state)
{
    tc_loop_t *loop;
    srv_t sv = {0}, sv2 = {0};
    char name[64];
    tc_server_t *out = NULL;
    struct sockaddr_un sun;
    socklen_t len = sizeof(sun);

    (void)state;
    snprintf(name, sizeof(name), "@twincore-test-%ld", (long)getpid());
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_unix_listen(loop, name, NULL, on_conn, &sv, &sv.srv), 0);
    ASSERT_RC(tc_server_sockname(sv.srv, (struct sockaddr *)&sun, &len), 0);
    assert_int_equal(sun.sun_path[0], '\0');
    assert_memory_equal(sun.sun_path + 1, name + 1, strlen(name) - 1);
    /* No file is made for an abstract name. */
    assert_false(exists(name));
    ASSERT_RC(tc_unix_listen(loop, name, NULL, on_conn, &sv2, &out),
              -EADDRINUSE);
    roundtrip(loop, &sv, name);
    ASSERT_RC(tc_close(tc_server_handle(sv.srv), srv_closed), 0);
    RUN_UNTIL(loop, sv.closed == 1, 5000);
    /* Closed: the name is free again. */
    ASSERT_RC(tc_unix_listen(loop, name, NULL, on_conn, &sv2, &sv2.srv), 0);
    ASSERT_RC(tc_close(tc_server_handle(sv2.srv), NULL), 0);
    close_loop_clean(loop);
}

static void
test_name_errors(void **state)
{
    tc_loop_t *loop;
    srv_t sv = {0};
    tc_server_t *out = NULL;
    tc_stream_t *s = NULL;
    peer_t p = {0};
    char name[160];

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    /* 107 bytes is the most a name may have. */
    memset(name, 'n', sizeof(name));
    name[0] = '@';
    snprintf(name + 1, 20, "tc-%ld-", (long)getpid());
    name[strlen(name)] = 'n';
    name[107] = '\0';
    ASSERT_RC(tc_unix_listen(loop, name, NULL, on_conn, &sv, &sv.srv), 0);
    ASSERT_RC(tc_close(tc_server_handle(sv.srv), NULL), 0);
    name[107] = 'n';
    name[108] = '\0';
    ASSERT_RC(tc_unix_listen(loop, name, NULL, on_conn, &sv, &out),
              -ENAMETOOLONG);
    ASSERT_RC(tc_unix_connect(loop, name, p_connected, &p, &s),
              -ENAMETOOLONG);
    name[150] = '\0';
    name[108] = 'n';
    name[0] = '/';
    ASSERT_RC(tc_unix_listen(loop, name, NULL, on_conn, &sv, &out),
              -ENAMETOOLONG);
    ASSERT_RC(tc_unix_listen(loop, "", NULL, on_conn, &sv, &out), -EINVAL);
    ASSERT_RC(tc_unix_listen(loop, NULL, NULL, on_conn, &sv, &out), -EINVAL);
    ASSERT_RC(tc_unix_listen(NULL, "/tmp/x", NULL, on_conn, &sv, &out),
              -EINVAL);
    ASSERT_RC(tc_unix_listen(loop, "/tmp/x", NULL, NULL, &sv, &out), -EINVAL);
    ASSERT_RC(tc_unix_connect(loop, "", p_connected, &p, &s), -EINVAL);
    ASSERT_RC(tc_unix_connect(loop, NULL, p_connected, &p, &s), -EINVAL);
    assert_null(out);
    assert_null(s);
    run_nowait(loop, 2);
    assert_int_equal(p.connects, 0);
    close_loop_clean(loop);
}

/* Connecting to nothing: refused, as a return code (callback never
 * called) or through the callback, exactly once. */
static void
expect_connect_error(tc_loop_t *loop, const char *path, int want)
{
    peer_t p = {0};
    int rc = tc_unix_connect(loop, path, p_connected, &p, &p.s);

    if (rc != 0) {
        ASSERT_RC(rc, want);
        run_nowait(loop, 2);
        assert_int_equal(p.connects, 0);
        return;
    }
    RUN_UNTIL(loop, p.connects > 0, 5000);
    run_nowait(loop, 2);
    assert_int_equal(p.connects, 1);
    ASSERT_RC(p.connect_status, want);
    ASSERT_RC(tc_close(tc_stream_handle(p.s), NULL), 0);
}

static void
test_connect_errors(void **state)
{
    tc_loop_t *loop;
    char path[128];
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    int fd;

    (void)state;
    ASSERT_RC(tc_loop_new(&loop), 0);
    sock_path(path, sizeof(path));
    unlink(path); /* earlier tests may leave one */
    expect_connect_error(loop, path, -ENOENT);
    /* A socket file nobody listens on. */
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    strcpy(sun.sun_path, path);
    assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
    close(fd);
    expect_connect_error(loop, path, -ECONNREFUSED);
    unlink(path);
    expect_connect_error(loop, "@twincore-nobody-listens-here", -ECONNREFUSED);
    close_loop_clean(loop);
}

/* A path a live listener uses is refused, also with unlink_existing (which
 * replaces only a stale file), and the first listener keeps working. */
static void
test_live_path_refused(void **state)
{
    tc_loop_t *loop;
    srv_t sv = {0}, sv2 = {0};
    char path[128];
    tc_unix_listen_opts_t opts = {.unlink_existing = true,
                                  .unlink_on_close = true};
    tc_server_t *out = NULL;
    struct stat before, after;

    (void)state;
    sock_path(path, sizeof(path));
    unlink(path);
    ASSERT_RC(tc_loop_new(&loop), 0);
    ASSERT_RC(tc_unix_listen(loop, path, &opts, on_conn, &sv, &sv.srv), 0);
    assert_int_equal(lstat(path, &before), 0);
    ASSERT_RC(tc_unix_listen(loop, path, &opts, on_conn, &sv2, &out),
              -EADDRINUSE);
    assert_null(out);
    ASSERT_RC(tc_unix_listen(loop, path, NULL, on_conn, &sv2, &out),
              -EADDRINUSE);
    assert_null(out);
    assert_int_equal(lstat(path, &after), 0);
    assert_true(before.st_ino == after.st_ino);
    /* The probe connected once and went away; then real clients work. */
    roundtrip(loop, &sv, path);
    ASSERT_RC(tc_close(tc_server_handle(sv.srv), srv_closed), 0);
    RUN_UNTIL(loop, sv.closed == 1, 5000);
    assert_false(exists(path));
    close_loop(loop);
}

/* A rolling restart: a new server takes the path over (atomically by
 * rename, or after the file was removed); closing the old listener must
 * not unlink the new one's socket. */
static void
test_close_keeps_a_successors_socket(void **state)
{
    tc_loop_t *loop;
    srv_t old = {0}, fresh = {0};
    char path[128], tmp[140];
    tc_unix_listen_opts_t opts = {.unlink_existing = true,
                                  .unlink_on_close = true};

    (void)state;
    sock_path(path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.new", path);
    unlink(path);
    ASSERT_RC(tc_loop_new(&loop), 0);

    /* 1. The successor binds a temporary name and renames it over. */
    ASSERT_RC(tc_unix_listen(loop, path, &opts, on_conn, &old, &old.srv), 0);
    ASSERT_RC(tc_unix_listen(loop, tmp, &opts, on_conn, &fresh, &fresh.srv),
              0);
    assert_int_equal(rename(tmp, path), 0);
    ASSERT_RC(tc_close(tc_server_handle(old.srv), srv_closed), 0);
    RUN_UNTIL(loop, old.closed == 1, 5000);
    assert_true(exists(path));
    roundtrip(loop, &fresh, path);
    /* The successor renamed its file: at close it still finds it. */
    ASSERT_RC(tc_close(tc_server_handle(fresh.srv), srv_closed), 0);
    RUN_UNTIL(loop, fresh.closed == 1, 5000);
    assert_false(exists(tmp));

    /* 2. The old file was removed by hand and a new server bound. */
    memset(&old, 0, sizeof(old));
    memset(&fresh, 0, sizeof(fresh));
    unlink(path);
    ASSERT_RC(tc_unix_listen(loop, path, &opts, on_conn, &old, &old.srv), 0);
    assert_int_equal(unlink(path), 0);
    ASSERT_RC(tc_unix_listen(loop, path, &opts, on_conn, &fresh, &fresh.srv),
              0);
    ASSERT_RC(tc_close(tc_server_handle(old.srv), srv_closed), 0);
    RUN_UNTIL(loop, old.closed == 1, 5000);
    assert_true(exists(path));
    roundtrip(loop, &fresh, path);
    ASSERT_RC(tc_close(tc_server_handle(fresh.srv), srv_closed), 0);
    RUN_UNTIL(loop, fresh.closed == 1, 5000);
    assert_false(exists(path));
    close_loop(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_path),
        cmocka_unit_test(test_unlink_on_close),
        cmocka_unit_test(test_unlink_existing),
        cmocka_unit_test(test_abstract),
        cmocka_unit_test(test_name_errors),
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_live_path_refused),
        cmocka_unit_test(test_close_keeps_a_successors_socket),
    };

    return cmocka_run_group_tests_name("unix", tests, make_tmpdir,
                                       remove_tmpdir);
}
