/* An echo server over TLS on twincore's public C API.
 *
 *   tls_echo_server PORT CERT KEY   (listens on 127.0.0.1; port 0: any)
 *
 * A TCP listener whose connections are wrapped with tc_tls_wrap(): the
 * handshake and the record encryption run inside the stream, so the echo
 * itself is the plain one of echo_server.c, backpressure included (stop
 * reading while the write queue is above its high watermark).  A client
 * that fails its handshake (a plaintext client, an unknown certificate) is
 * closed; the server goes on.  SIGINT or SIGTERM closes everything and
 * exits 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

#include <twincore.h>

static tc_tls_ctx_t *tls;

static void
on_read(tc_stream_t *conn, const char *buf, size_t len)
{
    if (tc_stream_write(conn, buf, len) != 0) {
        tc_close(tc_stream_handle(conn), NULL);
    }
}

static void
on_eof(tc_stream_t *conn)
{
    tc_stream_close(conn, NULL);   /* flush, close_notify, then close */
}

static void
on_error(tc_stream_t *conn, int status)
{
    (void)status;   /* a reset, or a peer gone without close_notify */
    tc_close(tc_stream_handle(conn), NULL);
}

static void
on_flow(tc_stream_t *conn, bool paused)
{
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
on_handshake(tc_stream_t *conn, int status)
{
    if (status != 0) {
        tc_close(tc_stream_handle(conn), NULL);   /* TC_ETLS_*: next! */
    }
}

static void
on_connection(tc_server_t *server, tc_stream_t *conn, int status)
{
    (void)server;
    if (status != 0) {
        fprintf(stderr, "tls_echo_server: accept: %s\n", tc_strerror(status));
        return;
    }
    tc_stream_set_callbacks(conn, &echo_callbacks);
    /* Reading may start at once: plaintext flows after the handshake. */
    if (tc_tls_wrap(conn, tls, NULL, on_handshake, 10000) != 0 ||
        tc_stream_read_start(conn) != 0) {
        tc_close(tc_stream_handle(conn), NULL);
    }
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
    if (argc != 4) {
        fprintf(stderr, "usage: tls_echo_server PORT CERT KEY\n");
        return 2;
    }
    char why[256];
    tc_tls_ctx_opts_t opts = {.server = true,
                              .cert_file = argv[2],
                              .key_file = argv[3]};
    int err = tc_tls_ctx_new(&opts, &tls, why, sizeof(why));
    if (err != 0) {
        fprintf(stderr, "tls_echo_server: %s\n", why);
        return 1;
    }
    tc_loop_t *loop;
    tc_server_t *server;
    tc_signal_t *sigint, *sigterm;
    tc_tcp_listen_opts_t lopts = {.backlog = 1024};
    if ((err = tc_loop_new(&loop)) != 0 ||
        (err = tc_tcp_listen(loop, "127.0.0.1", atoi(argv[1]), &lopts,
                             on_connection, NULL, &server)) != 0) {
        fprintf(stderr, "tls_echo_server: %s\n", tc_strerror(err));
        return 1;
    }
    if (tc_signal_new(loop, NULL, &sigint) != 0 ||
        tc_signal_start(sigint, on_signal, SIGINT) != 0 ||
        tc_signal_new(loop, NULL, &sigterm) != 0 ||
        tc_signal_start(sigterm, on_signal, SIGTERM) != 0) {
        fprintf(stderr, "tls_echo_server: cannot watch signals\n");
        return 1;
    }
    printf("tls_echo_server: listening on 127.0.0.1:%d\n",
           tc_server_port(server));
    fflush(stdout);
    tc_loop_run(loop, TC_RUN_DEFAULT);   /* returns once all is closed */
    tc_tls_ctx_free(tls);
    err = tc_loop_close(loop);
    if (err != 0) {
        fprintf(stderr, "tls_echo_server: %s\n", tc_strerror(err));
        return 1;
    }
    return 0;
}
