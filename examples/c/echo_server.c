/* A complete echo server on twincore's public C API.
 *
 *   echo_server [PORT]      (default 7000; listens on 127.0.0.1)
 *
 * Every byte a client sends comes back.  When a client writes faster than
 * it reads, the write queue passes its high watermark and the server stops
 * reading from that client until the queue drains: memory stays bounded.
 * SIGINT or SIGTERM closes everything and exits 0. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <twincore.h>

static void
on_read(tc_stream_t *conn, const char *buf, size_t len)
{
    int err = tc_stream_write(conn, buf, len);
    if (err != 0) {
        tc_close(tc_stream_handle(conn), NULL);
    }
}

static void
on_eof(tc_stream_t *conn)
{
    tc_stream_close(conn, NULL);   /* flush what is queued, then close */
}

static void
on_error(tc_stream_t *conn, int status)
{
    (void)status;
    tc_close(tc_stream_handle(conn), NULL);
}

static void
on_flow(tc_stream_t *conn, bool paused)
{
    /* Backpressure: stop reading while the peer is not reading. */
    if (paused) {
        tc_stream_read_stop(conn);
    } else {
        tc_stream_read_start(conn);
    }
}

static const tc_stream_callbacks_t echo_callbacks = {
    .on_read = on_read,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_flow = on_flow,
};

static void
on_connection(tc_server_t *server, tc_stream_t *conn, int status)
{
    (void)server;
    if (status != 0) {
        fprintf(stderr, "echo_server: accept: %s\n", tc_strerror(status));
        return;
    }
    tc_stream_set_callbacks(conn, &echo_callbacks);
    tc_stream_read_start(conn);
}

static void
close_handle(tc_handle_t *h, void *arg)
{
    (void)arg;
    if (!tc_handle_is_closing(h)) {
        tc_close(h, NULL);
    }
}

static void
on_signal(tc_signal_t *sig, int signum)
{
    (void)signum;
    tc_loop_walk(tc_handle_loop(tc_signal_handle(sig)), close_handle, NULL);
}

int
main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7000;
    tc_loop_t *loop;
    tc_server_t *server;
    tc_signal_t *sigint, *sigterm;

    int err = tc_loop_new(&loop);
    if (err != 0) {
        fprintf(stderr, "echo_server: %s\n", tc_strerror(err));
        return 1;
    }
    err = tc_tcp_listen(loop, "127.0.0.1", port, NULL, on_connection, NULL,
                        &server);
    if (err != 0) {
        fprintf(stderr, "echo_server: listen on port %d: %s\n", port,
                tc_strerror(err));
        return 1;
    }
    if (tc_signal_new(loop, NULL, &sigint) != 0 ||
        tc_signal_start(sigint, on_signal, SIGINT) != 0 ||
        tc_signal_new(loop, NULL, &sigterm) != 0 ||
        tc_signal_start(sigterm, on_signal, SIGTERM) != 0) {
        fprintf(stderr, "echo_server: cannot watch signals\n");
        return 1;
    }
    printf("echo_server: listening on 127.0.0.1:%d\n", tc_server_port(server));
    fflush(stdout);

    tc_loop_run(loop, TC_RUN_DEFAULT);   /* returns once all is closed */
    err = tc_loop_close(loop);
    if (err != 0) {
        fprintf(stderr, "echo_server: %s\n", tc_strerror(err));
        return 1;
    }
    return 0;
}
