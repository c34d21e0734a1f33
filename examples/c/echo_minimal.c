/* The README's "C API in one screen", kept compact to fit one (the README
 * quotes it from the first include): the smallest complete echo server.
 *
 *   echo_minimal [PORT]     (default 7000; 0 picks one; prints the port)
 *
 * Each connection closes once the peer has sent EOF and the echo is out.
 * examples/c/echo_server.c adds backpressure and signal handling. */
#include <stdio.h>
#include <stdlib.h>
#include <twincore.h>

static void on_read(tc_stream_t *conn, const char *buf, size_t len) {
    tc_stream_write(conn, buf, len);    /* copies what it cannot send now */
}
static void on_eof(tc_stream_t *conn) {
    tc_stream_close(conn, NULL);        /* flush what is queued, then close */
}
static void on_error(tc_stream_t *conn, int status) {
    (void)status;                       /* reset, broken pipe... */
    tc_close(tc_stream_handle(conn), NULL);
}
static void on_conn(tc_server_t *srv, tc_stream_t *conn, int status) {
    static const tc_stream_callbacks_t cbs = {
        .on_read = on_read, .on_eof = on_eof, .on_error = on_error};
    (void)srv;
    if (status == 0) {
        tc_stream_set_callbacks(conn, &cbs);
        tc_stream_read_start(conn);
    }
}
int main(int argc, char **argv) {
    tc_loop_t *loop;
    tc_server_t *srv;
    int port = argc > 1 ? atoi(argv[1]) : 7000;
    if (tc_loop_new(&loop) != 0 ||
        tc_tcp_listen(loop, "127.0.0.1", port, NULL, on_conn, NULL, &srv)) {
        return 1;
    }
    printf("listening on 127.0.0.1:%d\n", tc_server_port(srv));
    fflush(stdout);
    return tc_loop_run(loop, TC_RUN_DEFAULT);
}
