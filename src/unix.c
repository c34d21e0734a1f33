/* Unix domain stream sockets: path names and Linux's abstract namespace
 * ("@name").
 *
 * A socket file is removed only when nothing listens on it (a connect is
 * refused) or, at close, when it is still the very file this listener made
 * (same st_dev and st_ino): a new server that took the path over in a
 * rolling restart keeps its socket when the old one closes. */
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "internal.h"

static int
unix_addr(const char *path, struct sockaddr_un *sun, socklen_t *len)
{
    if (path == NULL || path[0] == '\0') {
        return -EINVAL;
    }
    size_t n = strlen(path);
    if (n >= sizeof(sun->sun_path)) {
        return -ENAMETOOLONG;
    }
    memset(sun, 0, sizeof(*sun));
    sun->sun_family = AF_UNIX;
    memcpy(sun->sun_path, path, n);
    if (path[0] == '@') {
        sun->sun_path[0] = '\0';
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
    } else {
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    }
    return 0;
}

/* Whether something answers on the socket at sun.  A stale socket file
 * refuses; a full backlog (EAGAIN) still means a live listener, which sees
 * this probe as a connection closed at once.  When in doubt (no descriptor
 * for the probe, no permission), the file is taken as in use. */
static bool
has_listener(const struct sockaddr_un *sun, socklen_t len)
{
    int fd = tc__socket(AF_UNIX, SOCK_STREAM);
    if (fd < 0) {
        return true;
    }
    int err = connect(fd, (const struct sockaddr *)sun, len) == 0 ? 0 : errno;
    close(fd);
    return err != ECONNREFUSED && err != ENOENT;
}

void
tc__unix_unlink_own(const char *path, dev_t dev, ino_t ino)
{
    struct stat st;
    if (lstat(path, &st) == 0 && st.st_dev == dev && st.st_ino == ino) {
        unlink(path);
    }
}

int
tc_unix_listen(tc_loop_t *loop, const char *path,
               const tc_unix_listen_opts_t *opts, tc_connection_cb on_conn,
               void *data, tc_server_t **out)
{
    if (loop == NULL || on_conn == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    tc_unix_listen_opts_t defaults = {0};
    if (opts == NULL) {
        opts = &defaults;
    }
    if (opts->backlog < 0) {
        return -EINVAL;
    }
    struct sockaddr_un sun;
    socklen_t len;
    int err = unix_addr(path, &sun, &len);
    if (err != 0) {
        return err;
    }
    bool abstract = path[0] == '@';
    struct stat st;
    if (!abstract && opts->unlink_existing && lstat(path, &st) == 0 &&
        S_ISSOCK(st.st_mode)) {
        if (has_listener(&sun, len)) {
            return -EADDRINUSE;
        }
        unlink(path);
    }
    int fd = tc__socket(AF_UNIX, SOCK_STREAM);
    if (fd < 0) {
        return fd;
    }
    if (bind(fd, (struct sockaddr *)&sun, len) != 0) {
        err = tc__neg_errno();
        close(fd);
        return err;
    }
    /* The file bind made; a failed lstat leaves nothing to match. */
    if (abstract || lstat(path, &st) != 0) {
        memset(&st, 0, sizeof(st));
    }
    if (listen(fd, opts->backlog > 0 ? opts->backlog : SOMAXCONN) != 0) {
        err = tc__neg_errno();
        goto fail;
    }
    err = tc__server_new(loop, fd, true, false, on_conn, data, out);
    if (err != 0) {
        goto fail;
    }
    if (!abstract && opts->unlink_on_close && st.st_ino != 0) {
        tc__server_set_unlink_path(*out, path, st.st_dev, st.st_ino);
    }
    return 0;

fail:
    close(fd);
    if (st.st_ino != 0) {
        tc__unix_unlink_own(path, st.st_dev, st.st_ino);
    }
    return err;
}

int
tc_unix_connect(tc_loop_t *loop, const char *path, tc_connect_cb cb,
                void *data, tc_stream_t **out)
{
    if (loop == NULL || cb == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    struct sockaddr_un sun;
    socklen_t len;
    int err = unix_addr(path, &sun, &len);
    if (err != 0) {
        return err;
    }
    int fd = tc__socket(AF_UNIX, SOCK_STREAM);
    if (fd < 0) {
        return fd;
    }
    bool connecting = false;
    if (connect(fd, (struct sockaddr *)&sun, len) != 0) {
        /* A full backlog answers EAGAIN on Unix sockets; it is an error
         * here, as in libuv, since no readiness would ever signal it. */
        if (errno != EINPROGRESS) {
            err = tc__neg_errno();
            close(fd);
            return err;
        }
        connecting = true;
    }
    tc_stream_t *s;
    err = tc__stream_new(loop, fd, true, connecting, data, &s);
    if (err != 0) {
        close(fd);
        return err;
    }
    tc__stream_connect_begin(s, cb, 0);
    *out = s;
    return 0;
}
