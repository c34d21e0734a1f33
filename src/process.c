/* Child processes: posix_spawn(3) plus a pidfd watched by the loop.
 *
 * Why posix_spawn: glibc runs the child with clone(CLONE_VM | CLONE_VFORK)
 * and only async-signal-safe steps before execve, so spawning from a
 * process with threads is safe and does not copy the parent's page tables;
 * and it returns the exec's errno (-ENOENT for a missing program) from the
 * call itself.  The pidfd is opened right after: the child cannot have been
 * reaped meanwhile unless someone else waits for any child (waitpid(-1)),
 * which we report as asyncio does (exit status 255).
 *
 * Invariants: every descriptor the child must get is first duplicated to a
 * close-on-exec number >= 3, so the dup2() actions onto 0..2 never clobber
 * one another; nothing the parent opened for the child stays open in the
 * parent once the spawn call returns; a process handle is reaped exactly
 * once, by the watcher or, for a child still running at tc_close(), after
 * a SIGKILL by the close itself. */
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/pidfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h"

extern char **environ;

struct tc_process_s {
    tc_handle_t h;
    pid_t pid;
    int pidfd;                  /* -1 once reaped */
    ev_io pio;
    tc_process_exit_cb on_exit;
    bool exited;
    int exit_status, term_signal;
};

tc_handle_t *
tc_process_handle(tc_process_t *p)
{
    return p != NULL ? &p->h : NULL;
}

/* Reap with waitid(P_PIDFD): 1 reaped, 0 still running, or a code. */
static int
reap(tc_process_t *p, bool block)
{
    siginfo_t si;
    memset(&si, 0, sizeof(si));
    int rc;
    do {
        rc = waitid((idtype_t)P_PIDFD, (id_t)p->pidfd, &si,
                    WEXITED | (block ? 0 : WNOHANG));
    } while (rc != 0 && errno == EINTR);
    if (rc != 0) {
        if (errno == ECHILD) {
            /* Reaped by someone else (waitpid(-1), SIGCHLD ignored). */
            p->exit_status = 255;
            p->term_signal = 0;
            return 1;
        }
        return tc__neg_errno();
    }
    if (si.si_pid == 0) {
        return 0;
    }
    if (si.si_code == CLD_EXITED) {
        p->exit_status = si.si_status;
        p->term_signal = 0;
    } else {
        p->exit_status = 0;
        p->term_signal = si.si_status;
    }
    return 1;
}

static void
forget_pidfd(tc_process_t *p)
{
    if (p->pidfd >= 0) {
        close(p->pidfd);
        p->pidfd = -1;
        tc__loop_fd_released(p->h.loop);
    }
}

static void
pidfd_ready(struct ev_loop *ev, ev_io *w, int revents)
{
    (void)revents;
    tc_process_t *p = TC__CONTAINER_OF(w, tc_process_t, pio);
    int rc = reap(p, false);
    if (rc == 0) {
        return;   /* not yet (a pidfd is readable only at exit) */
    }
    if (rc < 0) {
        p->exit_status = 255;   /* cannot happen for our own child */
        p->term_signal = 0;
    }
    tc__io_stop(ev, &p->pio);
    forget_pidfd(p);
    p->exited = true;
    if (p->on_exit != NULL) {
        p->on_exit(p, p->exit_status, p->term_signal);
    }
}

static void
process_close(tc_handle_t *h)
{
    tc_process_t *p = TC__CONTAINER_OF(h, tc_process_t, h);
    tc__io_stop(h->loop->ev, &p->pio);
    if (!p->exited && p->pidfd >= 0) {
        /* Reaped in process_finish, an iteration later: the child has
         * had that long to die. */
        (void)pidfd_send_signal(p->pidfd, SIGKILL, NULL, 0);
    }
}

static void
process_finish(tc_handle_t *h)
{
    tc_process_t *p = TC__CONTAINER_OF(h, tc_process_t, h);
    if (!p->exited && p->pidfd >= 0) {
        (void)reap(p, true);   /* SIGKILLed: a short wait */
    }
    forget_pidfd(p);
}

static bool
process_is_active(const tc_handle_t *h)
{
    const tc_process_t *p = TC__CONTAINER_OF(h, tc_process_t, h);
    return ev_is_active(&p->pio);
}

static const tc__handle_vtable_t process_vt = {
    .close_impl = process_close,
    .finish_impl = process_finish,
    .is_active = process_is_active,
    .next_timeout = NULL,
};

/* Move fd to a close-on-exec number >= 3 (closing the old one). */
static int
above_stdio(int fd)
{
    if (fd >= 3) {
        return fd;
    }
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    int err = moved < 0 ? tc__neg_errno() : 0;
    close(fd);
    return moved < 0 ? err : moved;
}

static int
check_options(const tc_process_options_t *o, tc_stream_t **pipes)
{
    if (o->argv == NULL || o->argv[0] == NULL) {
        return -EINVAL;
    }
    const char *file = o->file != NULL ? o->file : o->argv[0];
    if (file[0] == '\0') {
        return -ENOENT;
    }
    for (int i = 0; i < 3; i++) {
        switch (o->stdio[i].mode) {
        case TC_STDIO_INHERIT:
        case TC_STDIO_DEVNULL:
            break;
        case TC_STDIO_PIPE:
            if (pipes == NULL) {
                return -EINVAL;
            }
            break;
        case TC_STDIO_FD:
            if (o->stdio[i].fd < 0) {
                return -EINVAL;
            }
            break;
        case TC_STDIO_STDOUT:
            if (i != 2) {
                return -EINVAL;
            }
            break;
        default:
            return -EINVAL;
        }
    }
    if ((o->flags & ~(unsigned)(TC_PROCESS_SETPGID | TC_PROCESS_SETSID |
                                TC_PROCESS_KEEP_FDS)) != 0 ||
        ((o->flags & TC_PROCESS_SETPGID) && o->pgid < 0)) {
        return -EINVAL;
    }
    return 0;
}

/* Open what the child's descriptor i needs: child[i] (its end, >= 3, or
 * -1 to leave it alone) and parent[i] (our end of a pipe, or -1). */
static int
open_stdio(const tc_process_stdio_t *io, int *child, int *parent)
{
    *child = -1;
    *parent = -1;
    switch (io->mode) {
    case TC_STDIO_PIPE: {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
            return tc__neg_errno();
        }
        int err = tc__set_nonblock_cloexec(sv[0]);
        int c = err == 0 ? above_stdio(sv[1]) : (close(sv[1]), -EBADF);
        if (err != 0 || c < 0) {
            close(sv[0]);
            return err != 0 ? err : c;
        }
        *parent = sv[0];
        *child = c;
        return 0;
    }
    case TC_STDIO_DEVNULL: {
        int fd = open("/dev/null", O_RDWR | O_CLOEXEC);
        if (fd < 0) {
            return tc__neg_errno();
        }
        fd = above_stdio(fd);
        if (fd < 0) {
            return fd;
        }
        *child = fd;
        return 0;
    }
    case TC_STDIO_FD: {
        int fd = fcntl(io->fd, F_DUPFD_CLOEXEC, 3);
        if (fd < 0) {
            return tc__neg_errno();
        }
        *child = fd;
        return 0;
    }
    default:
        return 0;
    }
}

static int
setup_spawn(const tc_process_options_t *o, const int child[3],
            posix_spawn_file_actions_t *fa, posix_spawnattr_t *attr)
{
    int rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++) {
        if (child[i] >= 0) {
            rc = posix_spawn_file_actions_adddup2(fa, child[i], i);
        }
    }
    if (rc == 0 && o->stdio[2].mode == TC_STDIO_STDOUT) {
        rc = posix_spawn_file_actions_adddup2(fa, 1, 2);
    }
    if (rc == 0 && o->cwd != NULL) {
        rc = posix_spawn_file_actions_addchdir_np(fa, o->cwd);
    }
    if (rc == 0 && !(o->flags & TC_PROCESS_KEEP_FDS)) {
        rc = posix_spawn_file_actions_addclosefrom_np(fa, 3);
    }
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (o->flags & TC_PROCESS_SETPGID) {
        flags |= POSIX_SPAWN_SETPGROUP;
        if (rc == 0) {
            rc = posix_spawnattr_setpgroup(attr, o->pgid);
        }
    }
    if (o->flags & TC_PROCESS_SETSID) {
        flags |= POSIX_SPAWN_SETSID;
    }
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGXFSZ);
    if (rc == 0) {
        rc = posix_spawnattr_setsigmask(attr, &none);
    }
    if (rc == 0) {
        rc = posix_spawnattr_setsigdefault(attr, &dfl);
    }
    if (rc == 0) {
        rc = posix_spawnattr_setflags(attr, flags);
    }
    return -rc;
}

int
tc_process_spawn(tc_loop_t *loop, const tc_process_options_t *opts,
                 void *data, tc_process_t **out, tc_stream_t *pipes[3])
{
    if (loop == NULL || opts == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    int err = check_options(opts, pipes);
    if (err != 0) {
        return err;
    }
    int child[3] = {-1, -1, -1}, parent[3] = {-1, -1, -1};
    tc_stream_t *streams[3] = {NULL, NULL, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    bool fa_ready = false, attr_ready = false;
    int pidfd = -1;
    pid_t pid = -1;

    tc_process_t *p = calloc(1, sizeof(*p));
    if (p == NULL) {
        return -ENOMEM;
    }
    for (int i = 0; i < 3; i++) {
        err = open_stdio(&opts->stdio[i], &child[i], &parent[i]);
        if (err != 0) {
            goto fail;
        }
    }
    /* Stream objects before the child exists: afterwards nothing fails. */
    for (int i = 0; i < 3; i++) {
        if (parent[i] >= 0) {
            err = tc__stream_new(loop, parent[i], true, false, NULL,
                                 &streams[i]);
            if (err != 0) {
                goto fail;
            }
            parent[i] = -1;   /* the stream owns it */
        }
    }
    err = -posix_spawn_file_actions_init(&fa);
    if (err != 0) {
        goto fail;
    }
    fa_ready = true;
    err = -posix_spawnattr_init(&attr);
    if (err != 0) {
        goto fail;
    }
    attr_ready = true;
    err = setup_spawn(opts, child, &fa, &attr);
    if (err != 0) {
        goto fail;
    }
    const char *file = opts->file != NULL ? opts->file : opts->argv[0];
    char *const *env = opts->env != NULL ? opts->env : environ;
    err = strchr(file, '/') != NULL
              ? -posix_spawn(&pid, file, &fa, &attr, opts->argv, env)
              : -posix_spawnp(&pid, file, &fa, &attr, opts->argv, env);
    if (err != 0) {
        goto fail;
    }
    pidfd = pidfd_open(pid, 0);
    if (pidfd < 0) {
        err = tc__neg_errno();
        /* Without a pidfd we cannot watch it: undo the spawn. */
        kill(pid, SIGKILL);
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
        }
        goto fail;
    }
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    for (int i = 0; i < 3; i++) {
        if (child[i] >= 0) {
            close(child[i]);
        }
    }
    tc__handle_init(loop, &p->h, TC_HANDLE_PROCESS, &process_vt, data);
    p->pid = pid;
    p->pidfd = pidfd;
    p->on_exit = opts->on_exit;
    ev_io_init(&p->pio, pidfd_ready, pidfd, EV_READ);
    tc__io_start(loop->ev, &p->pio);
    if (pipes != NULL) {
        for (int i = 0; i < 3; i++) {
            pipes[i] = streams[i];
        }
    }
    *out = p;
    return 0;

fail:
    if (attr_ready) {
        posix_spawnattr_destroy(&attr);
    }
    if (fa_ready) {
        posix_spawn_file_actions_destroy(&fa);
    }
    for (int i = 0; i < 3; i++) {
        if (child[i] >= 0) {
            close(child[i]);
        }
        if (parent[i] >= 0) {
            close(parent[i]);
        }
        if (streams[i] != NULL) {
            tc_close(tc_stream_handle(streams[i]), NULL);
        }
    }
    free(p);
    return err;
}

pid_t
tc_process_pid(const tc_process_t *p)
{
    return p != NULL ? p->pid : -1;
}

int
tc_process_kill(tc_process_t *p, int signum)
{
    if (p == NULL || signum < 0 || signum >= NSIG) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(p->h.loop);
    if (p->exited || p->pidfd < 0) {
        return -ESRCH;
    }
    if (pidfd_send_signal(p->pidfd, signum, NULL, 0) != 0) {
        return tc__neg_errno();
    }
    return 0;
}

bool
tc_process_has_exited(const tc_process_t *p, int *exit_status,
                      int *term_signal)
{
    if (p == NULL || !p->exited) {
        return false;
    }
    if (exit_status != NULL) {
        *exit_status = p->exit_status;
    }
    if (term_signal != NULL) {
        *term_signal = p->term_signal;
    }
    return true;
}
