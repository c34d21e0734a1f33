/* An echo client on twincore's public C API: opens N connections to an
 * echo server, keeps one message in flight on each for a few seconds,
 * checks every echoed byte, and prints the round trips per second.
 *
 *   echo_client [PORT] [CONNECTIONS] [SECONDS] [MESSAGE_BYTES]
 *
 * Exits 0 when every byte came back as sent, 1 otherwise. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <twincore.h>

typedef struct client {
    tc_stream_t *conn;
    char *expect;       /* the message in flight */
    size_t size, got;
    uint64_t sent;      /* messages sent; seeds each message's bytes */
} client_t;

static size_t message_size = 64;
static uint64_t round_trips, mismatches, failures;
static int open_connections;
static bool stopping;

static void
fill_message(client_t *c)
{
    for (size_t i = 0; i < c->size; i++) {
        c->expect[i] = (char)('a' + (c->sent * 7 + i) % 26);
    }
}

static void
send_next(client_t *c)
{
    fill_message(c);
    c->got = 0;
    c->sent++;
    if (tc_stream_write(c->conn, c->expect, c->size) != 0) {
        failures++;
    }
}

static void
on_closed(tc_handle_t *h)
{
    client_t *c = tc_handle_data(h);
    free(c->expect);
    free(c);
    open_connections--;
}

static void
on_read(tc_stream_t *conn, const char *buf, size_t len)
{
    client_t *c = tc_handle_data(tc_stream_handle(conn));
    if (c->got + len > c->size || memcmp(c->expect + c->got, buf, len)) {
        mismatches++;
        tc_close(tc_stream_handle(conn), on_closed);
        return;
    }
    c->got += len;
    if (c->got == c->size) {
        round_trips++;
        if (stopping) {
            tc_stream_close(conn, on_closed);
        } else {
            send_next(c);
        }
    }
}

static void
on_error(tc_stream_t *conn, int status)
{
    fprintf(stderr, "echo_client: %s\n", tc_strerror(status));
    failures++;
    tc_close(tc_stream_handle(conn), on_closed);
}

static void
on_eof(tc_stream_t *conn)
{
    failures++;   /* the server must not hang up first */
    tc_close(tc_stream_handle(conn), on_closed);
}

static const tc_stream_callbacks_t client_callbacks = {
    .on_read = on_read,
    .on_eof = on_eof,
    .on_error = on_error,
};

static void
on_connect(tc_stream_t *conn, int status)
{
    client_t *c = tc_handle_data(tc_stream_handle(conn));
    if (status != 0) {
        fprintf(stderr, "echo_client: connect: %s\n", tc_strerror(status));
        failures++;
        tc_close(tc_stream_handle(conn), on_closed);
        return;
    }
    tc_stream_read_start(c->conn);
    send_next(c);
}

static void
on_deadline(tc_timer_t *timer)
{
    stopping = true;   /* each client closes after its current echo */
    tc_close(tc_timer_handle(timer), NULL);
}

int
main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7000;
    int connections = argc > 2 ? atoi(argv[2]) : 64;
    int seconds = argc > 3 ? atoi(argv[3]) : 3;
    message_size = argc > 4 ? (size_t)atol(argv[4]) : 64;
    if (connections <= 0 || seconds <= 0 || message_size == 0) {
        fprintf(stderr, "usage: echo_client [PORT] [CONNECTIONS] [SECONDS] "
                        "[MESSAGE_BYTES]\n");
        return 2;
    }
    tc_loop_t *loop;
    if (tc_loop_new(&loop) != 0) {
        return 1;
    }
    for (int i = 0; i < connections; i++) {
        client_t *c = calloc(1, sizeof(*c));
        c->size = message_size;
        c->expect = malloc(message_size);
        int err = tc_tcp_connect(loop, "127.0.0.1", port, NULL, on_connect, c,
                                 &c->conn);
        if (err != 0) {
            fprintf(stderr, "echo_client: %s\n", tc_strerror(err));
            free(c->expect);
            free(c);
            return 1;
        }
        tc_stream_set_callbacks(c->conn, &client_callbacks);
        open_connections++;
    }
    tc_timer_t *deadline;
    tc_timer_new(loop, NULL, &deadline);
    tc_timer_start(deadline, on_deadline, (uint64_t)seconds * 1000, 0);
    uint64_t start = tc_loop_now(loop);
    tc_loop_run(loop, TC_RUN_DEFAULT);
    tc_loop_update_time(loop);
    double elapsed = (double)(tc_loop_now(loop) - start) / 1000.0;
    printf("echo_client: %d connections, %zu-byte messages: %.0f round "
           "trips/s, %llu mismatched, %llu failed\n",
           connections, message_size, (double)round_trips / elapsed,
           (unsigned long long)mismatches, (unsigned long long)failures);
    int closed = tc_loop_close(loop);
    return (mismatches || failures || closed != 0 || open_connections != 0 ||
            round_trips == 0)
               ? 1
               : 0;
}
