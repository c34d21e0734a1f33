/* A hashing service: network IO on the loop, SHA-256 on the CPU pool.
 *
 *   hash_server [PORT [THREADS]]   (default 7001 and one worker per CPU;
 *                                   listens on 127.0.0.1)
 *
 * Each request is one line; the reply is the SHA-256 of the line's bytes
 * (without "\n" or "\r\n") as 64 lowercase hex digits and "\n".  Replies
 * come in request order although the lines are hashed in parallel.  A line
 * longer than 1 MiB gets "ERR line too long\n" and the connection closes.
 *
 *   $ printf 'abc\n' | nc -q1 127.0.0.1 7001
 *   ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
 *
 * Memory stays bounded: a connection stops reading while 64 of its lines
 * are being hashed, or while the peer does not read its replies.  SIGINT or
 * SIGTERM closes everything, lets the work in progress finish, and exits 0.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <twincore.h>

#define MAX_LINE (1024u * 1024u)
#define MAX_IN_FLIGHT 64u

static EVP_MD *sha256;    /* fetched once; EVP_Digest is thread-safe */
static tc_pool_t *pool;

typedef struct conn conn_t;

/* One line, from read to reply.  A connection keeps them in a FIFO and
 * writes each reply once every earlier one is written. */
typedef struct request {
    struct request *next;
    conn_t *conn;
    char *data;
    size_t len;
    tc_work_t *work;
    bool done;               /* reply ready (or work cancelled) */
    size_t reply_len;
    char reply[72];
} request_t;

struct conn {
    tc_stream_t *stream;     /* NULL once closed */
    char *line;              /* the partial line read so far */
    size_t len, cap;
    request_t *head, *tail;
    unsigned hashing;        /* requests whose work has not come back */
    bool finish;             /* close after the last reply (EOF, error) */
    bool flow_paused;        /* the peer is not reading its replies */
    bool reading;
};

/* ---- on a worker ---- */

static int
hash_work(tc_work_t *w, void *arg)
{
    (void)w;
    request_t *req = arg;
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    if (!EVP_Digest(req->data, req->len, md, &md_len, sha256, NULL)) {
        return -EIO;
    }
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < md_len; i++) {
        req->reply[2 * i] = hex[md[i] >> 4];
        req->reply[2 * i + 1] = hex[md[i] & 15];
    }
    req->reply[2 * md_len] = '\n';
    req->reply_len = 2 * md_len + 1;
    return 0;
}

/* ---- on the loop ---- */

static void on_conn_closed(tc_handle_t *h);

static void
request_free(request_t *req)
{
    free(req->data);
    free(req);
}

static void
conn_free(conn_t *c)
{
    request_t *req = c->head;
    while (req != NULL) {
        request_t *next = req->next;
        request_free(req);
        req = next;
    }
    free(c->line);
    free(c);
}

static bool
conn_is_open(const conn_t *c)
{
    return c->stream != NULL &&
           !tc_handle_is_closing(tc_stream_handle(c->stream));
}

/* Read while the pool and the peer keep up. */
static void
update_reading(conn_t *c)
{
    bool want = !c->finish && !c->flow_paused &&
                c->hashing < MAX_IN_FLIGHT;
    if (want != c->reading) {
        c->reading = want;
        if (want) {
            tc_stream_read_start(c->stream);
        } else {
            tc_stream_read_stop(c->stream);
        }
    }
}

/* Write the replies that are next in order; close when finished. */
static void
flush_replies(conn_t *c)
{
    if (!conn_is_open(c)) {
        return;
    }
    while (c->head != NULL && c->head->done) {
        request_t *req = c->head;
        c->head = req->next;
        if (c->head == NULL) {
            c->tail = NULL;
        }
        int err = tc_stream_write(c->stream, req->reply, req->reply_len);
        request_free(req);
        if (err != 0) {
            tc_close(tc_stream_handle(c->stream), on_conn_closed);
            return;
        }
    }
    if (c->finish && c->head == NULL) {
        tc_stream_close(c->stream, on_conn_closed);   /* flush, then close */
        return;
    }
    update_reading(c);
}

static void
hash_done(tc_work_t *w, int status, void *arg)
{
    (void)w;
    request_t *req = arg;
    conn_t *c = req->conn;
    req->done = true;
    req->work = NULL;
    free(req->data);
    req->data = NULL;
    if (status != 0) {
        /* -ECANCELED: the connection went away; else OpenSSL failed. */
        req->reply_len = (size_t)snprintf(req->reply, sizeof(req->reply),
                                          "ERR %s\n", tc_strerror(status));
    }
    c->hashing--;
    if (c->stream == NULL) {
        if (c->hashing == 0) {
            conn_free(c);      /* closed earlier; this was the last work */
        }
        return;
    }
    flush_replies(c);
}

static void
queue_request(conn_t *c, request_t *req)
{
    req->conn = c;
    if (c->tail != NULL) {
        c->tail->next = req;
    } else {
        c->head = req;
    }
    c->tail = req;
}

/* Hand a complete line (owned by the request from now on) to the pool. */
static void
submit_line(conn_t *c, char *data, size_t len)
{
    if (len > 0 && data[len - 1] == '\r') {
        len--;
    }
    request_t *req = calloc(1, sizeof(*req));
    if (req == NULL) {
        free(data);
        c->finish = true;
        return;
    }
    req->data = data;
    req->len = len;
    queue_request(c, req);
    int err = tc_pool_submit(pool, tc_handle_loop(tc_stream_handle(c->stream)),
                             hash_work, hash_done, req, TC_PRIORITY_NORMAL,
                             &req->work);
    if (err != 0) {
        req->done = true;
        req->reply_len = (size_t)snprintf(req->reply, sizeof(req->reply),
                                          "ERR %s\n", tc_strerror(err));
        return;
    }
    c->hashing++;
}

/* Append to the partial line; false when it would grow past MAX_LINE. */
static bool
append_line(conn_t *c, const char *buf, size_t len)
{
    if (len == 0) {
        return true;
    }
    if (c->len + len > MAX_LINE + 1) {    /* + 1: a trailing '\r' */
        return false;
    }
    if (c->len + len > c->cap) {
        size_t cap = c->cap ? c->cap : 256;
        while (cap < c->len + len) {
            cap *= 2;
        }
        char *line = realloc(c->line, cap);
        if (line == NULL) {
            return false;
        }
        c->line = line;
        c->cap = cap;
    }
    memcpy(c->line + c->len, buf, len);
    c->len += len;
    return true;
}

static void
refuse_line(conn_t *c)
{
    request_t *req = calloc(1, sizeof(*req));
    if (req != NULL) {
        req->done = true;
        req->reply_len = (size_t)snprintf(req->reply, sizeof(req->reply),
                                          "ERR line too long\n");
        queue_request(c, req);
    }
    c->finish = true;
}

static void
on_read(tc_stream_t *s, const char *buf, size_t len)
{
    conn_t *c = tc_handle_data(tc_stream_handle(s));
    while (len > 0 && !c->finish) {
        const char *nl = memchr(buf, '\n', len);
        size_t part = nl != NULL ? (size_t)(nl - buf) : len;
        if (!append_line(c, buf, part)) {
            refuse_line(c);
            break;
        }
        if (nl == NULL) {
            break;
        }
        char *data = c->line;      /* the request takes the buffer */
        size_t n = c->len;
        c->line = NULL;
        c->len = c->cap = 0;
        if (data == NULL) {
            data = malloc(1);      /* an empty line hashes too */
            if (data == NULL) {
                c->finish = true;
                break;
            }
        }
        submit_line(c, data, n);
        buf += part + 1;
        len -= part + 1;
    }
    flush_replies(c);
}

static void
on_eof(tc_stream_t *s)
{
    conn_t *c = tc_handle_data(tc_stream_handle(s));
    if (c->len > 0 && !c->finish) {
        char *data = c->line;      /* a last line without its "\n" */
        size_t n = c->len;
        c->line = NULL;
        c->len = c->cap = 0;
        submit_line(c, data, n);
    }
    c->finish = true;
    c->reading = false;            /* reading stopped at EOF */
    flush_replies(c);
}

static void
on_error(tc_stream_t *s, int status)
{
    (void)status;
    tc_close(tc_stream_handle(s), on_conn_closed);
}

static void
on_flow(tc_stream_t *s, bool paused)
{
    conn_t *c = tc_handle_data(tc_stream_handle(s));
    c->flow_paused = paused;
    update_reading(c);
}

static const tc_stream_callbacks_t hash_callbacks = {
    .on_read = on_read,
    .on_eof = on_eof,
    .on_error = on_error,
    .on_flow = on_flow,
};

/* The stream is gone: queued hashes are cancelled, running ones finish,
 * and the last of them frees the connection. */
static void
on_conn_closed(tc_handle_t *h)
{
    conn_t *c = tc_handle_data(h);
    c->stream = NULL;
    for (request_t *req = c->head; req != NULL; req = req->next) {
        if (req->work != NULL) {
            tc_pool_cancel(req->work);
        }
    }
    if (c->hashing == 0) {
        conn_free(c);
    }
}

static void
on_connection(tc_server_t *server, tc_stream_t *s, int status)
{
    (void)server;
    if (status != 0) {
        fprintf(stderr, "hash_server: accept: %s\n", tc_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        tc_close(tc_stream_handle(s), NULL);
        return;
    }
    c->stream = s;
    tc_handle_set_data(tc_stream_handle(s), c);
    tc_stream_set_callbacks(s, &hash_callbacks);
    update_reading(c);
}

static void
close_handle(tc_handle_t *h, void *arg)
{
    (void)arg;
    if (tc_handle_is_closing(h)) {
        return;
    }
    tc_close(h, tc_handle_type(h) == TC_HANDLE_STREAM ? on_conn_closed
                                                      : NULL);
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
    int port = argc > 1 ? atoi(argv[1]) : 7001;
    tc_pool_opts_t opts = {.threads = argc > 2 ? (unsigned)atoi(argv[2])
                                               : 0};
    tc_loop_t *loop;
    tc_server_t *server;
    tc_signal_t *sigint, *sigterm;

    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (sha256 == NULL) {
        fprintf(stderr, "hash_server: OpenSSL has no SHA256\n");
        return 1;
    }
    int err = tc_loop_new(&loop);
    if (err == 0) {
        err = tc_pool_new(&opts, &pool);
    }
    if (err != 0) {
        fprintf(stderr, "hash_server: %s\n", tc_strerror(err));
        return 1;
    }
    err = tc_tcp_listen(loop, "127.0.0.1", port, NULL, on_connection, NULL,
                        &server);
    if (err != 0) {
        fprintf(stderr, "hash_server: listen on port %d: %s\n", port,
                tc_strerror(err));
        return 1;
    }
    if (tc_signal_new(loop, NULL, &sigint) != 0 ||
        tc_signal_start(sigint, on_signal, SIGINT) != 0 ||
        tc_signal_new(loop, NULL, &sigterm) != 0 ||
        tc_signal_start(sigterm, on_signal, SIGTERM) != 0) {
        fprintf(stderr, "hash_server: cannot watch signals\n");
        return 1;
    }
    printf("hash_server: listening on 127.0.0.1:%d, %u workers\n",
           tc_server_port(server), tc_pool_threads(pool));
    fflush(stdout);

    /* Returns once everything is closed and the last hash came back. */
    tc_loop_run(loop, TC_RUN_DEFAULT);

    tc_pool_stats_t st;
    tc_pool_stats(pool, &st);
    fprintf(stderr, "hash_server: %llu lines hashed, %llu cancelled\n",
            (unsigned long long)st.completed,
            (unsigned long long)st.cancelled);
    tc_pool_free(pool);
    EVP_MD_free(sha256);
    err = tc_loop_close(loop);
    if (err != 0) {
        fprintf(stderr, "hash_server: %s\n", tc_strerror(err));
        return 1;
    }
    return 0;
}
