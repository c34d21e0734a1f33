/* Child processes: spawn a program with its standard streams as twincore
 * streams, and hear of its exit on the loop.
 *
 * tc_process_spawn() starts the child with posix_spawn(3) (vfork-style, so
 * it is safe in a process with threads and cheap in a big one; a program
 * that cannot be run is reported by the call itself, e.g. -ENOENT) and
 * watches a pidfd of it: no SIGCHLD handler, and only our own children are
 * ever reaped.  A standard stream set to TC_STDIO_PIPE becomes a tc_stream_t
 * the caller owns, with the usual write queue, watermarks and EOF; it is an
 * AF_UNIX socketpair, as libuv's pipes are, so the child sees a socket.
 * The child's signal mask is empty and SIGPIPE and SIGXFSZ are back at
 * their default (Python ignores SIGPIPE; `yes | head` must end). */
#ifndef TWINCORE_PROCESS_H
#define TWINCORE_PROCESS_H

#include "common.h"
#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

/* What one of the child's descriptors 0, 1, 2 becomes. */
typedef enum tc_stdio_mode {
    TC_STDIO_INHERIT = 0,   /* the parent's own descriptor */
    TC_STDIO_PIPE,          /* a new stream to the parent */
    TC_STDIO_DEVNULL,       /* /dev/null */
    TC_STDIO_FD,            /* the parent's descriptor .fd */
    TC_STDIO_STDOUT,        /* stderr only: wherever stdout goes */
} tc_stdio_mode_t;

typedef struct tc_process_stdio {
    tc_stdio_mode_t mode;
    int fd;                 /* TC_STDIO_FD only */
} tc_process_stdio_t;

/* The child exited: exit_status (0..255) when it called exit, else 0 and
 * term_signal, the signal that ended it.  Called once; close the handle
 * when done with it.  Pipes may still hold the child's last output. */
typedef void (*tc_process_exit_cb)(tc_process_t *p, int exit_status,
                                   int term_signal);

enum {
    TC_PROCESS_SETPGID = 1u << 0,   /* join process group .pgid (0: new) */
    TC_PROCESS_SETSID = 1u << 1,    /* a new session (and group) */
    TC_PROCESS_KEEP_FDS = 1u << 2,  /* keep inheritable descriptors > 2
                                     * (by default all are closed) */
};

typedef struct tc_process_options {
    /* The program; NULL: argv[0].  Without a '/', searched in the
     * parent's PATH. */
    const char *file;
    char *const *argv;            /* NULL-terminated, argv[0] set */
    char *const *env;             /* NULL-terminated; NULL: the parent's */
    const char *cwd;              /* NULL: the parent's */
    tc_process_stdio_t stdio[3];  /* zeroed: all inherited */
    unsigned flags;               /* TC_PROCESS_* */
    pid_t pgid;                   /* with TC_PROCESS_SETPGID */
    tc_process_exit_cb on_exit;   /* may be NULL */
} tc_process_options_t;

/* Start a child as opts says (opts and its strings are borrowed for the
 * call).  On success *out is the process handle and, when pipes is not
 * NULL, pipes[i] the stream of descriptor i for a TC_STDIO_PIPE slot
 * (NULL for the others): new handles the caller owns and closes
 * (tc_stream_close() on stdin sends the child EOF).  Returns 0, -EINVAL
 * (bad options; pipes NULL while a slot is TC_STDIO_PIPE), the exec's
 * failure (-ENOENT, -EACCES, -ENOEXEC...; also a bad cwd), -EMFILE or
 * -ENOMEM; on failure nothing is left open.  Thread: loop. */
TC_EXTERN int tc_process_spawn(tc_loop_t *loop,
                               const tc_process_options_t *opts,
                               void *data, tc_process_t **out,
                               tc_stream_t *pipes[3]);

/* The child's pid (it stays valid to read after the exit). */
TC_EXTERN pid_t tc_process_pid(const tc_process_t *p);
/* Send signum (through the pidfd: never another process that reused the
 * pid).  Returns 0, -EINVAL, or -ESRCH once the exit was reported.
 * Thread: loop. */
TC_EXTERN int tc_process_kill(tc_process_t *p, int signum);
/* True once on_exit ran; then *exit_status and *term_signal (may be NULL)
 * are what it received. */
TC_EXTERN bool tc_process_has_exited(const tc_process_t *p, int *exit_status,
                                     int *term_signal);

/* Closing a process whose exit was not reported yet kills it (SIGKILL)
 * and reaps it: no zombie is left behind.  The pipes are separate handles
 * and stay open.  The converter for tc_close(): */
TC_EXTERN tc_handle_t *tc_process_handle(tc_process_t *p);

#ifdef __cplusplus
}
#endif
#endif
