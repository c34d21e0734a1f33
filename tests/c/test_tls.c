/* TLS over the stream transport (tls.c and the codec hook in stream.c).
 * Certificates are made for the run with the openssl command in a temp
 * directory: a throw-away CA, a server certificate for localhost and
 * 127.0.0.1, a client certificate, an expired one, one for another host
 * name, and a server and a client certificate from an unknown CA.
 *
 * Covered: echo both ways with writes made before the handshake, ALPN,
 * versions and the peer's subject; 64 MiB checksummed under backpressure
 * with a reader that keeps pausing; each handshake failure by its code on
 * both ends; mutual TLS; plaintext, garbage and silent clients against a
 * listener that goes on serving; close_notify against a vanishing peer;
 * half-close; handshake timeouts; interop with openssl s_server and
 * s_client (spawned on loopback, bounded in time, killed by PID); plaintext
 * that came in one read with the handshake's end (from a plain-OpenSSL
 * peer on a thread), read and answered from soon calls. */
#include "helpers.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define MiB (1024u * 1024u)

static char cert_dir[256];

static const char make_certs_sh[] =
    "set -e\n"
    "cd \"$1\"\n"
    "cat > ext.cnf <<'EOF'\n"
    "[srv]\n"
    "basicConstraints = CA:FALSE\n"
    "subjectAltName = DNS:localhost,IP:127.0.0.1\n"
    "[wrong]\n"
    "basicConstraints = CA:FALSE\n"
    "subjectAltName = DNS:wrong.example\n"
    "[cli]\n"
    "basicConstraints = CA:FALSE\n"
    "EOF\n"
    "ca() { openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 "
    "-nodes -keyout \"$1.key\" -out \"$1.pem\" -days 30 -subj \"$2\"; }\n"
    "crt() { openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes "
    "-keyout \"$1.key\" -out \"$1.csr\" -subj \"$2\" && "
    "openssl x509 -req -in \"$1.csr\" -CA \"$3.pem\" -CAkey \"$3.key\" "
    "-CAcreateserial -out \"$1.pem\" -days \"$4\" -extfile ext.cnf "
    "-extensions \"$5\"; }\n"
    "ca ca '/CN=twincore test CA'\n"
    "ca rogue_ca '/CN=rogue CA'\n"
    "crt server '/O=twincore test/CN=localhost' ca 30 srv\n"
    "crt client '/CN=twincore client' ca 30 cli\n"
    "crt expired '/CN=localhost' ca -1 srv\n"
    "crt wrong '/CN=wrong.example' ca 30 wrong\n"
    "crt rogue '/CN=localhost' rogue_ca 30 srv\n"
    "crt rogue_client '/CN=rogue client' rogue_ca 30 cli\n";

/* Several results may be alive at once (one tc_tls_ctx_new call). */
static const char *
cert(const char *name)
{
    static char bufs[8][512];
    static int next;
    char *b = bufs[next++ % 8];
    snprintf(b, sizeof(bufs[0]), "%s/%s", cert_dir, name);
    return b;
}

static int
make_certs(void **state)
{
    (void)state;
    char tmpl[] = "/tmp/tc_tls_XXXXXX";
    if (mkdtemp(tmpl) == NULL) {
        return -1;
    }
    snprintf(cert_dir, sizeof(cert_dir), "%s", tmpl);
    char script[512];
    snprintf(script, sizeof(script), "%s/make.sh", cert_dir);
    FILE *f = fopen(script, "w");
    if (f == NULL) {
        return -1;
    }
    fputs(make_certs_sh, f);
    fclose(f);
    char cmd[2048];
    snprintf(cmd, sizeof(cmd), "sh %s %s >%s/make.log 2>&1", script,
             cert_dir, cert_dir);
    if (system(cmd) != 0) {
        fprintf(stderr, "# making certificates failed: see %s/make.log\n",
                cert_dir);
        return -1;
    }
    return 0;
}

static int
remove_certs(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%.400s'", cert_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* ---- contexts ----------------------------------------------------------- */

static tc_tls_ctx_t *
make_ctx(const tc_tls_ctx_opts_t *o)
{
    tc_tls_ctx_t *ctx = NULL;
    char why[256];
    int rc = tc_tls_ctx_new(o, &ctx, why, sizeof(why));
    if (rc != 0) {
        fail_msg("tc_tls_ctx_new: %s (%s)", tc_err_name(rc), why);
    }
    return ctx;
}

static tc_tls_ctx_t *
server_ctx_with(const char *name, int min_version, int max_version)
{
    char certf[512], keyf[512];
    snprintf(certf, sizeof(certf), "%s/%s.pem", cert_dir, name);
    snprintf(keyf, sizeof(keyf), "%s/%s.key", cert_dir, name);
    tc_tls_ctx_opts_t o = {.server = true,
                           .cert_file = certf,
                           .key_file = keyf,
                           .min_version = min_version,
                           .max_version = max_version};
    return make_ctx(&o);
}

static tc_tls_ctx_t *
server_ctx(void)
{
    return server_ctx_with("server", 0, 0);
}

static tc_tls_ctx_t *
client_ctx(void)
{
    tc_tls_ctx_opts_t o = {.ca_file = cert("ca.pem")};
    return make_ctx(&o);
}

/* ---- one end of a connection ------------------------------------------- */

typedef struct peer {
    tc_loop_t *loop;
    tc_stream_t *s;
    int hs_calls, hs_status;
    int errors, error;
    int eofs;
    int closed;
    int reads_after_eof;
    /* behaviour */
    bool echo;
    bool shutdown_on_eof;
    bool close_on_eof;
    bool close_on_error;
    /* what arrived */
    uint64_t received;
    bool checking;
    payload_check_t chk;
    char text[4096];
    size_t text_len;
    /* a slow reader pauses every pause_every bytes for pause_ms */
    uint64_t pause_every, next_pause;
    unsigned pause_ms;
    tc_timer_t *resume;
    int read_pauses;
    /* a writer of to_send checksummed bytes */
    uint64_t to_send, sent, seed;
    bool writer_paused;
    bool close_when_sent;
    int flow_pauses, flow_resumes;
    size_t max_queue;
} peer_t;

static void p_closed(tc_handle_t *h);
static void pump_writes(peer_t *p);

static peer_t *
peer_of(tc_stream_t *s)
{
    return tc_handle_data(tc_stream_handle(s));
}

static void
resume_reading(tc_timer_t *t)
{
    peer_t *p = tc_handle_data(tc_timer_handle(t));
    if (p->s != NULL && !tc_handle_is_closing(tc_stream_handle(p->s))) {
        ASSERT_RC(tc_stream_read_start(p->s), 0);
    }
}

static void
p_read(tc_stream_t *s, const char *buf, size_t len)
{
    peer_t *p = peer_of(s);
    assert_true(len > 0);
    if (p->eofs > 0) {
        p->reads_after_eof++;
    }
    p->received += len;
    if (p->text_len + len < sizeof(p->text)) {
        memcpy(p->text + p->text_len, buf, len);
        p->text_len += len;
        p->text[p->text_len] = '\0';
    }
    if (p->checking) {
        payload_check_feed(&p->chk, buf, len);
    }
    if (p->echo) {
        ASSERT_RC(tc_stream_write(s, buf, len), 0);
    }
    if (p->pause_every > 0 && p->received >= p->next_pause) {
        p->next_pause = p->received + p->pause_every;
        p->read_pauses++;
        ASSERT_RC(tc_stream_read_stop(s), 0);
        if (p->resume == NULL) {
            ASSERT_RC(tc_timer_new(p->loop, p, &p->resume), 0);
        }
        ASSERT_RC(tc_timer_start(p->resume, resume_reading, p->pause_ms, 0),
                  0);
    }
}

static void
p_eof(tc_stream_t *s)
{
    peer_t *p = peer_of(s);
    p->eofs++;
    if (p->shutdown_on_eof) {
        ASSERT_RC(tc_stream_shutdown(s), 0);
    }
    if (p->close_on_eof) {
        ASSERT_RC(tc_stream_close(s, p_closed), 0);
    }
}

static void
p_error(tc_stream_t *s, int status)
{
    peer_t *p = peer_of(s);
    p->errors++;
    p->error = status;
    if (p->close_on_error) {
        tc_close(tc_stream_handle(s), p_closed);
    }
}

static void
p_flow(tc_stream_t *s, bool paused)
{
    peer_t *p = peer_of(s);
    size_t q = tc_stream_write_queue_size(s);
    if (q > p->max_queue) {
        p->max_queue = q;
    }
    if (paused) {
        p->flow_pauses++;
        p->writer_paused = true;
    } else {
        p->flow_resumes++;
        p->writer_paused = false;
        pump_writes(p);
    }
}

static const tc_stream_callbacks_t peer_cbs = {
    .on_read = p_read,
    .on_eof = p_eof,
    .on_error = p_error,
    .on_flow = p_flow,
};

static void
p_handshake(tc_stream_t *s, int status)
{
    peer_t *p = peer_of(s);
    p->hs_calls++;
    p->hs_status = status;
    if (status != 0) {
        tc_close(tc_stream_handle(s), p_closed);
    }
}

static void
p_closed(tc_handle_t *h)
{
    peer_t *p = tc_handle_data(h);
    p->closed++;
    p->s = NULL;
    if (p->resume != NULL) {
        tc_close(tc_timer_handle(p->resume), NULL);
        p->resume = NULL;
    }
}

static void
pump_writes(peer_t *p)
{
    static char buf[64 * 1024];
    while (p->s != NULL && !p->writer_paused && p->sent < p->to_send) {
        size_t n = p->to_send - p->sent < sizeof(buf)
                       ? (size_t)(p->to_send - p->sent)
                       : sizeof(buf);
        payload_fill(buf, n, p->seed, p->sent);
        ASSERT_RC(tc_stream_write(p->s, buf, n), 0);
        p->sent += n;
        size_t q = tc_stream_write_queue_size(p->s);
        if (q > p->max_queue) {
            p->max_queue = q;
        }
    }
    if (p->s != NULL && p->sent == p->to_send && p->close_when_sent) {
        p->close_when_sent = false;
        ASSERT_RC(tc_stream_close(p->s, p_closed), 0);
    }
}

static void
peer_init(peer_t *p, tc_loop_t *loop)
{
    memset(p, 0, sizeof(*p));
    p->loop = loop;
    p->hs_status = 1;   /* not called yet */
    p->close_on_error = true;
}

/* ---- a TLS server: a TCP listener whose connections get wrapped -------- */

#define MAX_PEERS 16

typedef struct tls_server {
    tc_loop_t *loop;
    tc_server_t *srv;
    tc_tls_ctx_t *ctx;
    int port;
    uint64_t hs_timeout_ms;
    peer_t tmpl;            /* copied into each new peer */
    peer_t peers[MAX_PEERS];
    int npeers;
} tls_server_t;

static void
on_accept(tc_server_t *srv, tc_stream_t *conn, int status)
{
    tls_server_t *ts = tc_handle_data(tc_server_handle(srv));
    ASSERT_RC(status, 0);
    assert_true(ts->npeers < MAX_PEERS);
    peer_t *p = &ts->peers[ts->npeers++];
    *p = ts->tmpl;
    p->s = conn;
    tc_handle_set_data(tc_stream_handle(conn), p);
    ASSERT_RC(tc_stream_set_callbacks(conn, &peer_cbs), 0);
    ASSERT_RC(tc_tls_wrap(conn, ts->ctx, NULL, p_handshake, ts->hs_timeout_ms),
              0);
    assert_true(tc_stream_is_tls(conn));
    ASSERT_RC(tc_stream_read_start(conn), 0);
}

static void
server_start_on(tls_server_t *ts, tc_loop_t *loop, tc_tls_ctx_t *ctx,
                const char *host)
{
    memset(ts, 0, sizeof(*ts));
    ts->loop = loop;
    ts->ctx = ctx;
    ts->hs_timeout_ms = 5000;
    peer_init(&ts->tmpl, loop);
    ASSERT_RC(tc_tcp_listen(loop, host, 0, NULL, on_accept, ts, &ts->srv),
              0);
    ts->port = tc_server_port(ts->srv);
    assert_true(ts->port > 0);
}

static void
server_start(tls_server_t *ts, tc_loop_t *loop, tc_tls_ctx_t *ctx)
{
    server_start_on(ts, loop, ctx, "127.0.0.1");
}

static void
server_stop(tls_server_t *ts)
{
    tc_close(tc_server_handle(ts->srv), NULL);
    tc_tls_ctx_free(ts->ctx);
}

static void
client_connect(peer_t *p, int port, tc_tls_ctx_t *ctx, const char *name)
{
    ASSERT_RC(tc_tls_connect(p->loop, "127.0.0.1", port, ctx, name, NULL,
                             p_handshake, p, &p->s),
              0);
    ASSERT_RC(tc_stream_set_callbacks(p->s, &peer_cbs), 0);
    assert_true(tc_stream_is_tls(p->s));
    assert_false(tc_tls_is_established(p->s));
}

static bool
handshakes_done(tls_server_t *ts, peer_t *client, int n)
{
    if (client != NULL && client->hs_calls == 0) {
        return false;
    }
    if (ts->npeers < n) {
        return false;
    }
    for (int i = 0; i < n; i++) {
        if (ts->peers[i].hs_calls == 0) {
            return false;
        }
    }
    return true;
}

/* A loop, a TLS server on it and one client, both handshakes done; the
 * client reads from the start when client_reads. */
static tc_loop_t *
connect_one(tls_server_t *ts, peer_t *c, bool client_reads)
{
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    server_start(ts, loop, server_ctx());
    tc_tls_ctx_t *cctx = client_ctx();
    peer_init(c, loop);
    client_connect(c, ts->port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    if (client_reads) {
        ASSERT_RC(tc_stream_read_start(c->s), 0);
    }
    RUN_UNTIL(loop, handshakes_done(ts, c, 1), 5000);
    assert_int_equal(c->hs_calls, 1);
    assert_int_equal(ts->npeers, 1);
    assert_int_equal(ts->peers[0].hs_calls, 1);
    return loop;
}

/* A client completes a handshake and an echo (without verifying: the
 * server may be one with a bad certificate). */
static void
assert_still_serving(tls_server_t *ts)
{
    peer_t c;
    peer_init(&c, ts->loop);
    tc_tls_ctx_opts_t co = {.insecure_no_verify = true};
    tc_tls_ctx_t *cctx = make_ctx(&co);
    int before = ts->npeers;
    bool echo = ts->tmpl.echo;
    ts->tmpl.echo = true;
    client_connect(&c, ts->port, cctx, "localhost");
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "still here", 10), 0);
    RUN_UNTIL(ts->loop, c.received >= 10 || c.closed, 5000);
    ASSERT_RC(c.hs_status, 0);
    assert_string_equal(c.text, "still here");
    assert_int_equal(ts->peers[before].hs_status, 0);
    tc_close(tc_stream_handle(c.s), p_closed);
    RUN_UNTIL(ts->loop, c.closed == 1, 5000);
    ts->tmpl.echo = echo;
    tc_tls_ctx_free(cctx);
}

/* ---- contexts: arguments and files ------------------------------------ */

static void
test_ctx_errors(void **state)
{
    (void)state;
    tc_tls_ctx_t *ctx = NULL;
    char why[256];
    ASSERT_RC(tc_tls_ctx_new(NULL, &ctx, why, sizeof(why)), -EINVAL);
    tc_tls_ctx_opts_t o = {.server = true};
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "cert_file"));

    o.cert_file = cert("missing.pem");
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -ENOENT);
    assert_non_null(strstr(why, "cert_file"));

    /* A key that belongs to another certificate. */
    o.cert_file = cert("server.pem");
    o.key_file = cert("client.key");
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "key_file"));

    /* Not PEM at all. */
    o.key_file = cert("ext.cnf");
    ASSERT_ERR(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)));

    o.key_file = cert("server.key");
    o.ciphers = "NO-SUCH-CIPHER";
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "ciphers"));
    o.ciphers = NULL;
    o.groups = "no-such-group";
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -EINVAL);
    o.groups = NULL;
    o.min_version = 0x0200;
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -EINVAL);
    o.min_version = TC_TLS_V1_3;
    o.max_version = TC_TLS_V1_2;
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -EINVAL);
    o.min_version = o.max_version = 0;
    static const char *const empty_name[] = {"h2", "", NULL};
    o.alpn = empty_name;
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -EINVAL);
    o.alpn = NULL;
    o.client_cert = TC_TLS_CLIENT_CERT_REQUIRE;
    o.ca_file = cert("missing-ca.pem");
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)), -ENOENT);
    o.ca_file = NULL;
    o.ca_pem = "not a certificate";
    ASSERT_ERR(tc_tls_ctx_new(&o, &ctx, why, sizeof(why)));
    o.ca_pem = NULL;
    ASSERT_RC(tc_tls_ctx_new(&o, &ctx, NULL, 0), 0);   /* system store */
    assert_true(tc_tls_ctx_is_server(ctx));
    tc_tls_ctx_free(ctx);

    /* Clients: no client_cert option; a name to check is required. */
    tc_tls_ctx_opts_t co = {.client_cert = TC_TLS_CLIENT_CERT_OPTIONAL};
    ASSERT_RC(tc_tls_ctx_new(&co, &ctx, why, sizeof(why)), -EINVAL);
    co.client_cert = TC_TLS_CLIENT_CERT_NONE;
    co.key_file = cert("client.key");
    ASSERT_RC(tc_tls_ctx_new(&co, &ctx, why, sizeof(why)), -EINVAL);
    co.key_file = NULL;
    ASSERT_RC(tc_tls_ctx_new(&co, &ctx, why, sizeof(why)), 0);
    assert_false(tc_tls_ctx_is_server(ctx));

    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    int fds[2];
    tcp_pair(fds);
    tc_stream_t *s;
    ASSERT_RC(tc_stream_open(loop, fds[0], NULL, &s), 0);
    ASSERT_RC(tc_tls_wrap(s, ctx, NULL, NULL, 0), -EINVAL);
    ASSERT_RC(tc_tls_wrap(NULL, ctx, "localhost", NULL, 0), -EINVAL);
    ASSERT_RC(tc_tls_wrap(s, NULL, "localhost", NULL, 0), -EINVAL);
    assert_false(tc_stream_is_tls(s));
    assert_null(tc_tls_version(s));
    ASSERT_RC(tc_tls_peer_subject(s, why, sizeof(why)), -EINVAL);
    ASSERT_RC(tc_tls_wrap(s, ctx, "localhost", NULL, 0), 0);
    ASSERT_RC(tc_tls_wrap(s, ctx, "localhost", NULL, 0), -EALREADY);
    assert_true(tc_stream_is_tls(s));
    assert_null(tc_tls_version(s));
    tc_stream_t *c2;
    tc_tls_ctx_t *sctx = server_ctx();
    ASSERT_RC(tc_tls_connect(loop, "127.0.0.1", 9, sctx, NULL, NULL,
                             p_handshake, NULL, &c2),
              -EINVAL);
    ASSERT_RC(tc_tls_connect(loop, "no.such.host", 9, ctx, NULL, NULL,
                             p_handshake, NULL, &c2),
              -EINVAL);
    tc_tls_ctx_free(sctx);
    tc_tls_ctx_free(ctx);   /* the stream keeps its own reference */
    tc_close(tc_stream_handle(s), NULL);
    close(fds[1]);
    close_loop_clean(loop);
}

/* ---- echo, ALPN, versions, subjects, half-close ------------------------ */

static void
echo_roundtrip(int version)
{
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    static const char *const server_alpn[] = {"http/1.1", "x-twincore",
                                              NULL};
    static const char *const client_alpn[] = {"h2", "x-twincore",
                                              "http/1.1", NULL};
    tc_tls_ctx_opts_t so = {.server = true,
                            .cert_file = cert("server.pem"),
                            .key_file = cert("server.key"),
                            .alpn = server_alpn,
                            .min_version = version,
                            .max_version = version};
    tls_server_t ts;
    server_start(&ts, loop, make_ctx(&so));
    ts.tmpl.echo = true;
    ts.tmpl.shutdown_on_eof = true;

    tc_tls_ctx_opts_t co = {.ca_file = cert("ca.pem"), .alpn = client_alpn};
    tc_tls_ctx_t *cctx = make_ctx(&co);
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    /* Written before the handshake: kept, then sent in order. */
    ASSERT_RC(tc_stream_write(c.s, "h", 1), 0);
    struct iovec iov[3] = {{"el", 2}, {"", 0}, {"lo ", 3}};
    ASSERT_RC(tc_stream_writev(c.s, iov, 3), 0);
    assert_true(tc_stream_write_queue_size(c.s) >= 6);
    RUN_UNTIL(loop, c.hs_calls == 1, 5000);
    ASSERT_RC(c.hs_status, 0);
    assert_true(tc_tls_is_established(c.s));
    ASSERT_RC(tc_stream_write(c.s, "world", 5), 0);
    RUN_UNTIL(loop, c.received >= 11, 5000);
    assert_string_equal(c.text, "hello world");

    peer_t *sp = &ts.peers[0];
    ASSERT_RC(sp->hs_status, 0);
    const char *want = version == TC_TLS_V1_3 ? "TLSv1.3" : "TLSv1.2";
    assert_string_equal(tc_tls_version(c.s), want);
    assert_string_equal(tc_tls_version(sp->s), want);
    assert_non_null(tc_tls_cipher(c.s));
    /* The server's preference wins among what the client offers. */
    const char *proto;
    size_t plen = tc_tls_alpn_selected(c.s, &proto);
    assert_int_equal(plen, 8);
    assert_memory_equal(proto, "http/1.1", 8);
    plen = tc_tls_alpn_selected(sp->s, &proto);
    assert_int_equal(plen, 8);
    char subject[256];
    int n = tc_tls_peer_subject(c.s, subject, sizeof(subject));
    assert_true(n > 0);
    assert_non_null(strstr(subject, "CN=localhost"));
    assert_non_null(strstr(subject, "O=twincore test"));
    ASSERT_RC(tc_tls_peer_subject(c.s, subject, 4), -ENOSPC);
    ASSERT_RC(tc_tls_peer_subject(sp->s, subject, sizeof(subject)),
              -ENOENT);
    size_t dlen = 0;
    ASSERT_RC(tc_tls_peer_certificate_der(c.s, NULL, &dlen), -ENOSPC);
    assert_true(dlen > 100);
    unsigned char der[4096];
    dlen = sizeof(der);
    ASSERT_RC(tc_tls_peer_certificate_der(c.s, der, &dlen), 0);
    assert_int_equal(der[0], 0x30);   /* a DER SEQUENCE */
    assert_null(tc_tls_error_detail(c.s));

    /* Many one-byte writes arrive as one text. */
    for (int i = 0; i < 100; i++) {
        ASSERT_RC(tc_stream_write(c.s, "x", 1), 0);
    }
    RUN_UNTIL(loop, c.received >= 111, 5000);

    /* Half-close: the client's close_notify is the server's clean EOF;
     * the server answers and shuts down too; nobody sees an error. */
    ASSERT_RC(tc_stream_shutdown(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "late", 4), -EPIPE);
    RUN_UNTIL(loop, c.eofs == 1, 5000);
    assert_int_equal(sp->eofs, 1);
    assert_int_equal(c.errors + sp->errors, 0);
    assert_int_equal(c.received, 111);
    assert_int_equal(c.reads_after_eof + sp->reads_after_eof, 0);
    tc_close(tc_stream_handle(c.s), p_closed);
    tc_close(tc_stream_handle(sp->s), p_closed);
    RUN_UNTIL(loop, c.closed == 1 && sp->closed == 1, 5000);
    server_stop(&ts);
    close_loop_clean(loop);
}

static void
test_echo_tls13(void **state)
{
    (void)state;
    echo_roundtrip(TC_TLS_V1_3);
}

static void
test_echo_tls12(void **state)
{
    (void)state;
    echo_roundtrip(TC_TLS_V1_2);
}

/* ---- bulk transfer under backpressure ---------------------------------- */

static void
test_big_transfer_backpressure(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx());
    ts.tmpl.checking = true;
    payload_check_init(&ts.tmpl.chk, 7);
    ts.tmpl.pause_every = 1 * MiB;
    ts.tmpl.pause_ms = 2;
    ts.tmpl.close_on_eof = true;

    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    set_bufsizes(tc_stream_fd(c.s), 64 * 1024, 0);
    ASSERT_RC(tc_stream_set_watermarks(c.s, 16 * 1024, 64 * 1024), 0);
    c.to_send = 64 * MiB;
    c.seed = 7;
    c.close_when_sent = true;
    /* The first writes wait for the handshake and already push back. */
    pump_writes(&c);
    assert_true(c.writer_paused);
    assert_true(c.sent < c.to_send);
    RUN_UNTIL(loop, ts.npeers == 1 && ts.peers[0].closed == 1 &&
                        c.closed == 1,
              120000);
    peer_t *sp = &ts.peers[0];
    ASSERT_RC(c.hs_status, 0);
    if (c.errors + sp->errors != 0) {
        fail_msg("client %s, server %s after %llu bytes",
                 tc_err_name(c.error), tc_err_name(sp->error),
                 (unsigned long long)sp->received);
    }
    assert_int_equal(sp->received, 64 * MiB);
    assert_false(sp->chk.bad);
    assert_int_equal(sp->chk.hash, payload_hash(7, 64 * MiB));
    assert_int_equal(sp->eofs, 1);
    assert_true(c.flow_pauses >= 10);
    assert_int_equal(c.flow_pauses, c.flow_resumes);
    assert_true(sp->read_pauses >= 50);
    /* The queue stayed near the high watermark: one write over it, plus
     * the records' overhead. */
    assert_true(c.max_queue < 64 * 1024 + 64 * 1024 + 8192);
    server_stop(&ts);
    close_loop_clean(loop);
}

/* write_ref before the handshake lends memory until it is encrypted. */
static int ref_released, ref_status = 99;

static void
ref_release(void *ctx, const void *buf, int status)
{
    (void)ctx;
    (void)buf;
    ref_released++;
    ref_status = status;
}

static void
test_write_ref_and_server_writes_first(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx());
    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    static const char lent[] = "lent memory";
    ASSERT_RC(tc_stream_write_ref(c.s, lent, 11, ref_release, NULL), 0);
    assert_int_equal(ref_released, 0);
    RUN_UNTIL(loop, ts.npeers == 1 && ts.peers[0].received >= 11, 5000);
    assert_int_equal(ref_released, 1);
    ASSERT_RC(ref_status, 0);
    assert_string_equal(ts.peers[0].text, "lent memory");
    /* After the handshake: encrypted at once, released at once. */
    ASSERT_RC(tc_stream_write_ref(c.s, lent, 4, ref_release, NULL), 0);
    assert_int_equal(ref_released, 2);
    /* The server speaks to a client that reads only now. */
    ASSERT_RC(tc_stream_write(ts.peers[0].s, "greeting", 8), 0);
    run_for(loop, 20);
    assert_int_equal(c.received, 0);
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    RUN_UNTIL(loop, c.received >= 8, 5000);
    assert_string_equal(c.text, "greeting");
    server_stop(&ts);
    close_loop(loop);
}

/* A host name is resolved on the loop's pool, sent as SNI and checked; the
 * connect timeout runs over the lookup, the connect and the handshake. */
static void
test_connect_by_name(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_pool_t *pool;
    ASSERT_RC(tc_pool_new(NULL, &pool), 0);
    tc_loop_set_resolver_pool(loop, pool);
    tls_server_t ts;
    /* "localhost" may come back as ::1 or 127.0.0.1: listen on both. */
    server_start_on(&ts, loop, server_ctx(),
                    have_ipv6() ? "::" : "127.0.0.1");
    ts.tmpl.echo = true;
    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    peer_init(&c, loop);
    tc_tcp_connect_opts_t opts = {.timeout_ms = 10000};
    ASSERT_RC(tc_tls_connect(loop, "localhost", ts.port, cctx, NULL, &opts,
                             p_handshake, &c, &c.s),
              0);
    tc_tls_ctx_free(cctx);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &peer_cbs), 0);
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "by name", 7), 0);
    RUN_UNTIL(loop, c.received >= 7 || c.closed, 10000);
    ASSERT_RC(c.hs_status, 0);
    assert_string_equal(c.text, "by name");
    tc_close(tc_stream_handle(c.s), p_closed);
    RUN_UNTIL(loop, c.closed == 1, 5000);
    server_stop(&ts);
    close_loop(loop);
    tc_pool_free(pool);
}

/* ---- handshake failures, each by its name ------------------------------ */

typedef struct fail_case {
    const char *server_cert;
    const char *server_name;
    int client_max, server_min;
    int client_code;
    int server_code;     /* 0: any TLS failure */
} fail_case_t;

static void
run_fail_case(const fail_case_t *fc)
{
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx_with(fc->server_cert, fc->server_min,
                                            0));
    tc_tls_ctx_opts_t co = {.ca_file = cert("ca.pem"),
                            .max_version = fc->client_max};
    tc_tls_ctx_t *cctx = make_ctx(&co);
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, fc->server_name);
    ASSERT_RC(tc_stream_write(c.s, "never sent", 10), 0);
    RUN_UNTIL(loop, handshakes_done(&ts, &c, 1) && c.closed, 5000);
    peer_t *sp = &ts.peers[0];
    if (c.hs_status != fc->client_code) {
        fail_msg("client: %s (%s), wanted %s", tc_err_name(c.hs_status),
                 c.s ? tc_tls_error_detail(c.s) : "closed",
                 tc_err_name(fc->client_code));
    }
    assert_int_equal(c.errors, 0);   /* reported once, by the callback */
    if (fc->server_code != 0) {
        ASSERT_RC(sp->hs_status, fc->server_code);
    } else {
        assert_true(sp->hs_status <= TC_ETLS && sp->hs_status > -3200);
    }
    assert_int_equal(sp->received, 0);
    RUN_UNTIL(loop, sp->closed == 1, 5000);
    assert_still_serving(&ts);
    tc_tls_ctx_free(cctx);
    server_stop(&ts);
    close_loop(loop);
}

static void
test_fail_expired(void **state)
{
    (void)state;
    fail_case_t fc = {"expired", "localhost", 0, 0, TC_ETLS_EXPIRED,
                      TC_ETLS_EXPIRED};
    run_fail_case(&fc);
}

static void
test_fail_unknown_ca(void **state)
{
    (void)state;
    fail_case_t fc = {"rogue", "localhost", 0, 0, TC_ETLS_UNKNOWN_CA,
                      TC_ETLS_UNKNOWN_CA};
    run_fail_case(&fc);
}

static void
test_fail_hostname(void **state)
{
    (void)state;
    fail_case_t fc = {"wrong", "localhost", 0, 0, TC_ETLS_HOSTNAME, 0};
    run_fail_case(&fc);
    /* By IP address: the certificate has no IP entry for it. */
    fail_case_t ip = {"wrong", NULL, 0, 0, TC_ETLS_HOSTNAME, 0};
    run_fail_case(&ip);
}

static void
test_fail_version(void **state)
{
    (void)state;
    fail_case_t fc = {"server", "localhost", TC_TLS_V1_2, TC_TLS_V1_3,
                      TC_ETLS_VERSION, TC_ETLS_VERSION};
    run_fail_case(&fc);
}

/* A stream wrapped without a handshake callback reports on_error. */
static void
test_fail_without_callback_goes_to_on_error(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx_with("rogue", 0, 0));
    int fd = tcp_connect_raw("127.0.0.1", ts.port, false);
    peer_t c;
    peer_init(&c, loop);
    ASSERT_RC(tc_stream_open(loop, fd, &c, &c.s), 0);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &peer_cbs), 0);
    tc_tls_ctx_t *cctx = client_ctx();
    ASSERT_RC(tc_tls_wrap(c.s, cctx, "localhost", NULL, 0), 0);
    tc_tls_ctx_free(cctx);
    RUN_UNTIL(loop, c.errors == 1 && c.closed == 1, 5000);
    ASSERT_RC(c.error, TC_ETLS_UNKNOWN_CA);
    assert_int_equal(c.hs_calls, 0);
    server_stop(&ts);
    close_loop(loop);
}

/* ---- mutual TLS ------------------------------------------------------- */

static void
mtls_case(tc_tls_client_cert_t mode, const char *client_name, int want_srv,
          bool want_client_error)
{
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_tls_ctx_opts_t so = {.server = true,
                            .cert_file = cert("server.pem"),
                            .key_file = cert("server.key"),
                            .ca_file = cert("ca.pem"),
                            .client_cert = mode};
    tls_server_t ts;
    server_start(&ts, loop, make_ctx(&so));
    ts.tmpl.echo = true;
    char certf[512] = "", keyf[512] = "";
    if (client_name != NULL) {
        snprintf(certf, sizeof(certf), "%s/%s.pem", cert_dir, client_name);
        snprintf(keyf, sizeof(keyf), "%s/%s.key", cert_dir, client_name);
    }
    tc_tls_ctx_opts_t co = {.ca_file = cert("ca.pem"),
                            .cert_file = client_name ? certf : NULL,
                            .key_file = client_name ? keyf : NULL};
    tc_tls_ctx_t *cctx = make_ctx(&co);
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "who am i", 8), 0);
    if (!want_client_error) {
        RUN_UNTIL(loop, c.received >= 8, 5000);
        peer_t *sp = &ts.peers[0];
        ASSERT_RC(sp->hs_status, 0);
        char subject[256];
        int n = tc_tls_peer_subject(sp->s, subject, sizeof(subject));
        if (client_name != NULL) {
            assert_true(n > 0);
            assert_non_null(strstr(subject, "CN=twincore client"));
        } else {
            ASSERT_RC(n, -ENOENT);
        }
    } else {
        /* TLS 1.3: the client's handshake completes before the server
         * judges its certificate; the alert then fails the stream. */
        RUN_UNTIL(loop, c.closed == 1 && ts.npeers == 1 &&
                            ts.peers[0].closed == 1,
                  5000);
        ASSERT_RC(ts.peers[0].hs_status, want_srv);
        int got = c.hs_status != 0 ? c.hs_status : c.error;
        if (got > TC_ETLS || got <= -3200) {
            fail_msg("client saw %s", tc_err_name(got));
        }
        assert_int_equal(c.received, 0);
    }
    server_stop(&ts);
    close_loop(loop);
}

static void
test_mtls(void **state)
{
    (void)state;
    mtls_case(TC_TLS_CLIENT_CERT_REQUIRE, "client", 0, false);
    mtls_case(TC_TLS_CLIENT_CERT_OPTIONAL, NULL, 0, false);
    mtls_case(TC_TLS_CLIENT_CERT_REQUIRE, NULL, TC_ETLS_CERT, true);
    mtls_case(TC_TLS_CLIENT_CERT_REQUIRE, "rogue_client",
              TC_ETLS_UNKNOWN_CA, true);
}

static void
test_insecure_no_verify(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx_with("rogue", 0, 0));
    ts.tmpl.echo = true;
    tc_tls_ctx_opts_t co = {.insecure_no_verify = true};
    tc_tls_ctx_t *cctx = make_ctx(&co);
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, NULL);
    tc_tls_ctx_free(cctx);
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "anyone", 6), 0);
    RUN_UNTIL(loop, c.received >= 6, 5000);
    ASSERT_RC(c.hs_status, 0);
    server_stop(&ts);
    close_loop(loop);
}

/* ---- hostile and broken clients ----------------------------------------- */

static void
raw_client_case(tls_server_t *ts, const void *bytes, size_t len,
                int want)
{
    int before = ts->npeers;
    int fd = tcp_connect_raw("127.0.0.1", ts->port, false);
    if (len > 0) {
        assert_int_equal(send(fd, bytes, len, MSG_NOSIGNAL), (ssize_t)len);
    } else {
        shutdown(fd, SHUT_WR);
    }
    RUN_UNTIL(ts->loop, ts->npeers == before + 1 &&
                            ts->peers[before].closed == 1,
              5000);
    ASSERT_RC(ts->peers[before].hs_status, want);
    /* The raw client sees the connection end (after an alert, maybe). */
    set_nonblock(fd, true);
    bool eof = false;
    uint64_t deadline = mono_ms() + 5000;
    while (!eof && mono_ms() < deadline) {
        char buf[512];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            eof = true;
        } else if (n < 0) {
            run_for(ts->loop, 2);
        }
    }
    assert_true(eof);
    close(fd);
}

static void
test_plaintext_and_garbage_clients(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx());
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    raw_client_case(&ts, http, sizeof(http) - 1, TC_ETLS);
    char garbage[2048];
    payload_fill(garbage, sizeof(garbage), 99, 0);
    garbage[0] = 0x16;   /* a handshake record header, then nonsense */
    garbage[1] = 0x03;
    garbage[2] = 0x01;
    garbage[3] = 0x00;   /* a 64-byte record: judged without more input */
    garbage[4] = 0x40;
    raw_client_case(&ts, garbage, sizeof(garbage), TC_ETLS);
    /* A client that connects and leaves: no close_notify, no crash. */
    raw_client_case(&ts, NULL, 0, TC_ETLS_NO_CLOSE_NOTIFY);
    assert_still_serving(&ts);
    server_stop(&ts);
    close_loop(loop);
}

static void
test_handshake_timeouts(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    /* A server facing a client that says nothing. */
    tls_server_t ts;
    server_start(&ts, loop, server_ctx());
    ts.hs_timeout_ms = 50;
    int fd = tcp_connect_raw("127.0.0.1", ts.port, false);
    RUN_UNTIL(loop, ts.npeers == 1 && ts.peers[0].closed == 1, 5000);
    ASSERT_RC(ts.peers[0].hs_status, -ETIMEDOUT);
    close(fd);
    /* A client facing a server that accepts and says nothing. */
    int port;
    int lfd = tcp_listener("127.0.0.1", 4, &port);
    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    peer_init(&c, loop);
    tc_tcp_connect_opts_t opts = {.timeout_ms = 50};
    ASSERT_RC(tc_tls_connect(loop, "127.0.0.1", port, cctx, "localhost",
                             &opts, p_handshake, &c, &c.s),
              0);
    tc_tls_ctx_free(cctx);
    ASSERT_RC(tc_stream_set_callbacks(c.s, &peer_cbs), 0);
    RUN_UNTIL(loop, c.closed == 1, 5000);
    ASSERT_RC(c.hs_status, -ETIMEDOUT);
    close(lfd);
    server_stop(&ts);
    close_loop(loop);
}

/* ---- endings ------------------------------------------------------------ */

typedef enum ending { END_GRACEFUL, END_VANISH, END_ABORT } ending_t;

static void
ending_case(ending_t how)
{
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx());
    ts.tmpl.close_on_error = false;
    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    peer_init(&c, loop);
    c.close_on_error = false;
    client_connect(&c, ts.port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    ASSERT_RC(tc_stream_read_start(c.s), 0);
    ASSERT_RC(tc_stream_write(c.s, "bye", 3), 0);
    RUN_UNTIL(loop, ts.npeers == 1 && ts.peers[0].received == 3, 5000);
    peer_t *sp = &ts.peers[0];
    ASSERT_RC(tc_stream_write(sp->s, "last words", 10), 0);
    switch (how) {
    case END_GRACEFUL:
        /* Flushes, then close_notify, then waits for the client's end. */
        c.close_on_eof = true;
        ASSERT_RC(tc_stream_close(sp->s, p_closed), 0);
        ASSERT_RC(tc_stream_close(sp->s, p_closed), -EALREADY);
        RUN_UNTIL(loop, c.eofs == 1, 5000);
        assert_int_equal(c.errors, 0);
        assert_string_equal(c.text, "last words");
        RUN_UNTIL(loop, sp->closed == 1 && c.closed == 1, 5000);
        server_stop(&ts);
        close_loop_clean(loop);
        return;
    case END_VANISH:
        /* tc_close discards and closes without close_notify. */
        run_for(loop, 20);
        assert_string_equal(c.text, "last words");
        tc_close(tc_stream_handle(sp->s), p_closed);
        RUN_UNTIL(loop, c.errors == 1, 5000);
        ASSERT_RC(c.error, TC_ETLS_NO_CLOSE_NOTIFY);
        assert_non_null(tc_tls_error_detail(c.s));
        assert_int_equal(c.eofs, 0);
        break;
    case END_ABORT:
        ASSERT_RC(tc_stream_abort(sp->s, p_closed), 0);
        RUN_UNTIL(loop, c.errors == 1, 5000);
        ASSERT_RC(c.error, -ECONNRESET);
        break;
    }
    RUN_UNTIL(loop, sp->closed == 1, 5000);
    ASSERT_RC(tc_stream_write(c.s, "x", 1), -EPIPE);
    tc_close(tc_stream_handle(c.s), p_closed);
    RUN_UNTIL(loop, c.closed == 1, 5000);
    server_stop(&ts);
    close_loop_clean(loop);
}

static void
test_close_notify_is_clean_eof(void **state)
{
    (void)state;
    ending_case(END_GRACEFUL);
}

static void
test_vanishing_peer_is_reported(void **state)
{
    (void)state;
    ending_case(END_VANISH);
}

static void
test_abort_resets(void **state)
{
    (void)state;
    ending_case(END_ABORT);
}

/* A graceful close waits for the peer's EOF (dropping what arrives), at
 * most about two seconds when the peer never closes. */
static void
test_graceful_close_lingers_for_the_peer(void **state)
{
    (void)state;
    tls_server_t ts;
    peer_t c;
    tc_loop_t *loop = connect_one(&ts, &c, false);
    peer_t *sp = &ts.peers[0];
    /* The client closes at once; the server keeps talking, then stops
     * reading altogether (it never closes). */
    ASSERT_RC(tc_stream_close(c.s, p_closed), 0);
    ASSERT_RC(tc_stream_write(sp->s, "unheard", 7), 0);
    ASSERT_RC(tc_stream_read_stop(sp->s), 0);
    run_for(loop, 100);
    assert_int_equal(c.closed, 0);   /* lingering */
    uint64_t t0 = mono_ms();
    RUN_UNTIL(loop, c.closed == 1, 5000);
    uint64_t waited = mono_ms() - t0;
    assert_true(waited >= 1500 && waited < 4000);
    assert_int_equal(sp->errors, 0);
    server_stop(&ts);
    close_loop(loop);
}

/* A lingering close has a deadline an embedding host sees: the loop's
 * backend timeout is bounded by the linger (2 s), not -1 (sleep until IO),
 * while the peer neither reads nor closes. */
static void
test_linger_bounds_host_poll(void **state)
{
    (void)state;
    tls_server_t ts;
    peer_t c;
    tc_loop_t *loop = connect_one(&ts, &c, false);
    peer_t *sp = &ts.peers[0];
    ASSERT_RC(tc_stream_read_stop(sp->s), 0);
    ASSERT_RC(tc_stream_close(c.s, p_closed), 0);
    /* Changed watchers and queued work make it 0 for an iteration or two. */
    int timeout = 0;
    for (int i = 0; i < 50 && timeout == 0 && c.closed == 0; i++) {
        host_iteration(loop, 10);
        timeout = tc_loop_backend_timeout(loop);
    }
    assert_int_equal(c.closed, 0);   /* lingering */
    assert_true(timeout > 0 && timeout <= 2000);
    RUN_UNTIL(loop, c.closed == 1, 5000);
    assert_int_equal(sp->errors, 0);
    server_stop(&ts);
    close_loop(loop);
}

/* A close_notify that arrives while reading is paused is kept, and the EOF
 * comes once reading resumes. */
static void
test_eof_kept_while_paused(void **state)
{
    (void)state;
    tls_server_t ts;
    peer_t c;
    tc_loop_t *loop = connect_one(&ts, &c, true);
    /* Pause in the middle of what the server sends. */
    c.pause_every = 1;
    c.next_pause = 1;
    c.pause_ms = 30;
    peer_t *sp = &ts.peers[0];
    char big[200000];
    payload_fill(big, sizeof(big), 3, 0);
    c.checking = true;
    payload_check_init(&c.chk, 3);
    ASSERT_RC(tc_stream_write(sp->s, big, sizeof(big)), 0);
    ASSERT_RC(tc_stream_shutdown(sp->s), 0);
    RUN_UNTIL(loop, c.eofs == 1, 10000);
    assert_int_equal(c.received, sizeof(big));
    assert_false(c.chk.bad);
    assert_true(c.read_pauses >= 2);
    assert_int_equal(c.errors, 0);
    assert_int_equal(c.reads_after_eof, 0);
    server_stop(&ts);
    close_loop(loop);
}

/* ---- plaintext OpenSSL holds when nothing more comes from epoll ------- */

/* A TLS 1.3 client sends its Finished and its request in one flight, and
 * may end with close_notify in that flight too; a TLS 1.2 server sends its
 * Finished and may speak first right behind it.  The receiver decodes the
 * handshake's end and the plaintext behind it in one read, and no epoll
 * event follows (the peer waits for an answer).  Here the twincore end
 * works as the Python binding does, from soon calls (its dispatch runs
 * after the loop's callbacks): it starts reading from one, pauses on each
 * read and resumes from another, and answers from a third.  Each of those
 * must run without another event on the socket.  The peer is plain OpenSSL
 * on memory BIOs in a thread, so that its flight is exactly one send(). */

typedef struct late_server {
    tc_loop_t *loop;
    tc_server_t *srv;
    tc_tls_ctx_t *ctx;
    tc_stream_t *s;
    bool pause_on_read;
    int hs_status;
    char text[256];
    size_t text_len;
    int reads, eofs, errors, replies;
    bool closed;
} late_server_t;

static void
late_start_reading(void *arg)
{
    late_server_t *ls = arg;
    if (ls->s != NULL && !ls->closed) {
        ASSERT_RC(tc_stream_read_start(ls->s), 0);
    }
}

static void
late_closed(tc_handle_t *h)
{
    late_server_t *ls = tc_handle_data(h);
    ls->closed = true;
    tc_loop_stop(ls->loop);
}

static void
late_guard_fired(tc_timer_t *t)
{
    tc_loop_stop(tc_handle_loop(tc_timer_handle(t)));
}

static void
late_reply(void *arg)
{
    late_server_t *ls = arg;
    static const char answer[] = "HTTP/1.0 200 OK\r\n\r\nhello";
    ls->replies++;
    ASSERT_RC(tc_stream_write(ls->s, answer, sizeof(answer) - 1), 0);
    ASSERT_RC(tc_stream_close(ls->s, late_closed), 0);
}

static void
late_read(tc_stream_t *s, const char *buf, size_t len)
{
    late_server_t *ls = tc_handle_data(tc_stream_handle(s));
    ls->reads++;
    assert_true(ls->text_len + len < sizeof(ls->text));
    memcpy(ls->text + ls->text_len, buf, len);
    ls->text_len += len;
    ls->text[ls->text_len] = '\0';
    if (ls->pause_on_read) {
        ASSERT_RC(tc_stream_read_stop(s), 0);
        ASSERT_RC(tc_loop_call_soon(ls->loop, late_start_reading, ls), 0);
    } else if (strstr(ls->text, "\r\n\r\n") != NULL) {
        ASSERT_RC(tc_loop_call_soon(ls->loop, late_reply, ls), 0);
    }
}

static void
late_eof(tc_stream_t *s)
{
    late_server_t *ls = tc_handle_data(tc_stream_handle(s));
    ls->eofs++;
    ASSERT_RC(tc_loop_call_soon(ls->loop, late_reply, ls), 0);
}

static void
late_error(tc_stream_t *s, int status)
{
    late_server_t *ls = tc_handle_data(tc_stream_handle(s));
    (void)status;
    ls->errors++;
    tc_close(tc_stream_handle(s), late_closed);
}

static const tc_stream_callbacks_t late_cbs = {
    .on_read = late_read,
    .on_eof = late_eof,
    .on_error = late_error,
};

static void
late_handshake(tc_stream_t *s, int status)
{
    late_server_t *ls = tc_handle_data(tc_stream_handle(s));
    ls->hs_status = status;
    if (status != 0) {
        tc_close(tc_stream_handle(s), late_closed);
        return;
    }
    ASSERT_RC(tc_loop_call_soon(ls->loop, late_start_reading, ls), 0);
}

static void
late_accept(tc_server_t *srv, tc_stream_t *conn, int status)
{
    late_server_t *ls = tc_handle_data(tc_server_handle(srv));
    ASSERT_RC(status, 0);
    assert_null(ls->s);
    ls->s = conn;
    tc_handle_set_data(tc_stream_handle(conn), ls);
    ASSERT_RC(tc_stream_set_callbacks(conn, &late_cbs), 0);
    ASSERT_RC(tc_tls_wrap(conn, ls->ctx, NULL, late_handshake, 5000), 0);
}

typedef struct flight_peer {
    bool server;            /* TLS 1.2 server, else TLS 1.3 client */
    const char *request;
    bool close_notify;      /* end the flight with close_notify */
    _Atomic int fd;         /* connected, or a listener (server) */
    char answer[256];
    size_t answer_len;
    bool clean_end;         /* the server's close_notify came */
    const char *failure;
    atomic_bool done;
} flight_peer_t;

static bool
send_bio(int fd, BIO *wb)
{
    char *p;
    long n = BIO_get_mem_data(wb, &p);
    bool ok = n <= 0 || send(fd, p, (size_t)n, MSG_NOSIGNAL) == n;
    (void)BIO_reset(wb);
    return ok;
}

static void *
flight_peer_run(void *arg)
{
    flight_peer_t *fc = arg;
    SSL_CTX *sc = SSL_CTX_new(fc->server ? TLS_server_method()
                                         : TLS_client_method());
    SSL *ssl = NULL;
    char buf[16384];
    fc->failure = "setup";
    if (fc->server) {
        int lfd = fc->fd;
        fc->fd = accept(lfd, NULL, NULL);
        close(lfd);
        if (fc->fd < 0) {
            goto out;
        }
    }
    if (sc == NULL ||
        (fc->server
             ? !SSL_CTX_set_max_proto_version(sc, TLS1_2_VERSION) ||
                   !SSL_CTX_use_certificate_chain_file(sc,
                                                       cert("server.pem")) ||
                   !SSL_CTX_use_PrivateKey_file(sc, cert("server.key"),
                                                SSL_FILETYPE_PEM)
             : !SSL_CTX_set_min_proto_version(sc, TLS1_3_VERSION) ||
                   !SSL_CTX_load_verify_locations(sc, cert("ca.pem"),
                                                  NULL))) {
        goto out;
    }
    SSL_CTX_set_verify(sc, fc->server ? SSL_VERIFY_NONE : SSL_VERIFY_PEER,
                       NULL);
    ssl = SSL_new(sc);
    BIO *rb = BIO_new(BIO_s_mem());
    BIO *wb = BIO_new(BIO_s_mem());
    if (ssl == NULL || rb == NULL || wb == NULL) {
        BIO_free(rb);
        BIO_free(wb);
        goto out;
    }
    SSL_set_bio(ssl, rb, wb);
    if (fc->server) {
        SSL_set_accept_state(ssl);
    } else {
        SSL_set_connect_state(ssl);
        SSL_set_tlsext_host_name(ssl, "localhost");
    }
    /* Bounded: a stalled twincore end ends this thread after 20 s. */
    struct timeval tv = {.tv_sec = 20};
    setsockopt(fc->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    fc->failure = "handshake";
    int rc;
    while ((rc = SSL_do_handshake(ssl)) != 1) {
        if (SSL_get_error(ssl, rc) != SSL_ERROR_WANT_READ ||
            !send_bio(fc->fd, wb)) {
            goto out;
        }
        ssize_t n = recv(fc->fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            goto out;
        }
        BIO_write(rb, buf, (int)n);
    }
    /* Our Finished waits in wb: the request and maybe close_notify join
     * it, and the whole flight leaves in one send().  (A TLS 1.2 server's
     * last flight ends with its Finished too.) */
    size_t written;
    fc->failure = "request";
    if (SSL_write_ex(ssl, fc->request, strlen(fc->request), &written) != 1 ||
        (fc->close_notify && SSL_shutdown(ssl) < 0) ||
        !send_bio(fc->fd, wb)) {
        goto out;
    }
    fc->failure = "no answer";
    for (;;) {
        size_t got;
        while (SSL_read_ex(ssl, buf, sizeof(buf), &got) == 1) {
            size_t room = sizeof(fc->answer) - 1 - fc->answer_len;
            got = got < room ? got : room;
            memcpy(fc->answer + fc->answer_len, buf, got);
            fc->answer_len += got;
            fc->answer[fc->answer_len] = '\0';
        }
        if (SSL_get_error(ssl, 0) == SSL_ERROR_ZERO_RETURN) {
            fc->clean_end = true;
            fc->failure = NULL;
            break;
        }
        ssize_t n = recv(fc->fd, buf, sizeof(buf), 0);
        if (n <= 0) {
            break;
        }
        BIO_write(rb, buf, (int)n);
    }
out:
    SSL_free(ssl);
    SSL_CTX_free(sc);
    ERR_clear_error();
    if (fc->fd >= 0) {
        close(fc->fd);
    }
    atomic_store(&fc->done, true);
    return NULL;
}

static void
late_case(bool close_notify, bool twincore_client)
{
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    late_server_t ls = {.loop = loop, .hs_status = 1,
                        .pause_on_read = close_notify};
    flight_peer_t fc = {.server = twincore_client,
                        .request = "GET / HTTP/1.0\r\n\r\n",
                        .close_notify = close_notify};
    atomic_init(&fc.done, false);
    if (twincore_client) {
        int port;
        fc.fd = tcp_listener("127.0.0.1", 1, &port);
        assert_true(fc.fd >= 0);
        ls.ctx = client_ctx();
        ASSERT_RC(tc_tls_connect(loop, "127.0.0.1", port, ls.ctx,
                                 "localhost", NULL, late_handshake, &ls,
                                 &ls.s),
                  0);
        ASSERT_RC(tc_stream_set_callbacks(ls.s, &late_cbs), 0);
    } else {
        ls.ctx = server_ctx();
        ASSERT_RC(tc_tcp_listen(loop, "127.0.0.1", 0, NULL, late_accept,
                                &ls, &ls.srv),
                  0);
        fc.fd = tcp_connect_raw("127.0.0.1", tc_server_port(ls.srv), false);
        assert_true(fc.fd >= 0);
    }
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, flight_peer_run, &fc), 0);
    /* One TC_RUN_DEFAULT run, as the Python binding runs the loop (separate
     * TC_RUN_ONCE runs each begin with the pending events, which hides
     * the stall); the twincore end's close or the guard ends it. */
    tc_timer_t *guard;
    ASSERT_RC(tc_timer_new(loop, NULL, &guard), 0);
    ASSERT_RC(tc_timer_start(guard, late_guard_fired, 10000, 0), 0);
    tc_loop_run(loop, TC_RUN_DEFAULT);
    if (!ls.closed) {
        shutdown(fc.fd, SHUT_RDWR);   /* unblock the peer, then report */
    }
    pthread_join(th, NULL);
    assert_true(ls.closed);
    assert_null(fc.failure);
    ASSERT_RC(ls.hs_status, 0);
    assert_string_equal(ls.text, "GET / HTTP/1.0\r\n\r\n");
    assert_string_equal(fc.answer, "HTTP/1.0 200 OK\r\n\r\nhello");
    assert_true(fc.clean_end);
    assert_int_equal(ls.replies, 1);
    assert_int_equal(ls.errors, 0);
    assert_int_equal(ls.eofs, close_notify ? 1 : 0);
    tc_close(tc_timer_handle(guard), NULL);
    if (ls.srv != NULL) {
        tc_close(tc_server_handle(ls.srv), NULL);
    }
    tc_tls_ctx_free(ls.ctx);
    close_loop_clean(loop);
}

/* Reading starts (from a soon call) over a request that came with the
 * client's Finished; the answer goes from another soon call. */
static void
test_request_with_finished_read_late(void **state)
{
    (void)state;
    late_case(false, false);
}

/* The same flight ends with close_notify; reading pauses after the request
 * and resumes from a soon call, over the close_notify OpenSSL kept. */
static void
test_close_notify_with_finished_after_resume(void **state)
{
    (void)state;
    late_case(true, false);
}

/* A TLS 1.2 server speaks first right behind its Finished: the client
 * starts reading (from a soon call) over what its handshake's last read
 * brought. */
static void
test_greeting_with_server_finished_read_late(void **state)
{
    (void)state;
    late_case(false, true);
}

/* ---- interop with the openssl command ----------------------------------- */

static pid_t
spawn(char *const argv[], const char *in_path, const char *out_path)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int in = open(in_path != NULL ? in_path : "/dev/null", O_RDONLY);
        int out = open(out_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (in < 0 || out < 0) {
            _exit(126);
        }
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    return pid;
}

/* Wait up to ms for pid; kill it past that.  Returns its wait status. */
static int
reap(pid_t pid, tc_loop_t *loop, uint64_t ms)
{
    uint64_t deadline = mono_ms() + ms;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        if (r == pid) {
            return status;
        }
        if (mono_ms() > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &status, 0);
            return -1;
        }
        if (loop != NULL) {
            run_for(loop, 5);
        } else {
            usleep(5000);
        }
    }
}

static int
free_port(void)
{
    int port;
    int fd = tcp_listener("127.0.0.1", 1, &port);
    close(fd);
    return port;
}

static void
read_file(const char *path, char *buf, size_t size)
{
    buf[0] = '\0';
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        return;
    }
    size_t n = fread(buf, 1, size - 1, f);
    buf[n] = '\0';
    fclose(f);
}

static void
test_interop_openssl_s_server(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    bool done = false;
    pid_t pid = -1;
    char log[512];
    snprintf(log, sizeof(log), "%s/s_server.log", cert_dir);
    for (int attempt = 0; attempt < 5 && !done; attempt++) {
        char port_s[16];
        snprintf(port_s, sizeof(port_s), "%d", free_port());
        char *argv[] = {"openssl", "s_server", "-accept", port_s, "-cert",
                        (char *)cert("server.pem"), "-key",
                        (char *)cert("server.key"), "-rev", "-naccept",
                        "1", "-quiet", NULL};
        pid = spawn(argv, NULL, log);
        /* Connect until it listens (bounded). */
        uint64_t deadline = mono_ms() + 5000;
        while (mono_ms() < deadline) {
            peer_init(&c, loop);
            c.close_on_error = true;
            client_connect(&c, atoi(port_s), cctx, "localhost");
            ASSERT_RC(tc_stream_read_start(c.s), 0);
            RUN_UNTIL(loop, c.hs_calls == 1, 5000);
            if (c.hs_status == 0) {
                done = true;
                break;
            }
            RUN_UNTIL(loop, c.closed == 1, 5000);
            if (waitpid(pid, NULL, WNOHANG) == pid) {
                pid = -1;   /* it could not listen: another port */
                break;
            }
            run_for(loop, 20);
        }
        if (!done && pid > 0) {
            reap(pid, NULL, 0);
            pid = -1;
        }
    }
    assert_true(done);
    ASSERT_RC(tc_stream_write(c.s, "hello twincore\n", 15), 0);
    RUN_UNTIL(loop, strchr(c.text, '\n') != NULL, 5000);
    assert_string_equal(c.text, "erocniwt olleh\n");
    assert_string_equal(tc_tls_version(c.s), "TLSv1.3");
    ASSERT_RC(tc_stream_close(c.s, p_closed), 0);
    RUN_UNTIL(loop, c.closed == 1, 5000);
    int status = reap(pid, loop, 5000);
    assert_true(status != -1);
    tc_tls_ctx_free(cctx);
    close_loop_clean(loop);
}

static void
test_interop_openssl_s_client(void **state)
{
    (void)state;
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tc_tls_ctx_opts_t so = {.server = true,
                            .cert_file = cert("server.pem"),
                            .key_file = cert("server.key"),
                            .ca_file = cert("ca.pem"),
                            .client_cert = TC_TLS_CLIENT_CERT_REQUIRE};
    tls_server_t ts;
    server_start(&ts, loop, make_ctx(&so));
    ts.tmpl.echo = true;
    ts.tmpl.close_on_eof = true;
    char in[512], out[512];
    snprintf(in, sizeof(in), "%s/s_client.in", cert_dir);
    snprintf(out, sizeof(out), "%s/s_client.out", cert_dir);
    FILE *f = fopen(in, "w");
    assert_non_null(f);
    fputs("ping from s_client\n", f);
    fclose(f);
    char connect_to[64];
    snprintf(connect_to, sizeof(connect_to), "127.0.0.1:%d", ts.port);
    char *argv[] = {"openssl", "s_client", "-connect", connect_to,
                    "-servername", "localhost", "-verify_hostname",
                    "localhost", "-CAfile", (char *)cert("ca.pem"),
                    "-verify_return_error", "-cert",
                    (char *)cert("client.pem"), "-key",
                    (char *)cert("client.key"), "-ign_eof", NULL};
    pid_t pid = spawn(argv, in, out);
    RUN_UNTIL(loop, ts.npeers == 1 && ts.peers[0].received >= 19, 10000);
    peer_t *sp = &ts.peers[0];
    assert_string_equal(sp->text, "ping from s_client\n");
    char subject[256];
    assert_true(tc_tls_peer_subject(sp->s, subject, sizeof(subject)) > 0);
    assert_non_null(strstr(subject, "CN=twincore client"));
    /* Our close_notify ends s_client's session. */
    run_for(loop, 50);
    ASSERT_RC(tc_stream_close(sp->s, p_closed), 0);
    int status = reap(pid, loop, 10000);
    assert_true(status != -1);
    char text[16384];
    read_file(out, text, sizeof(text));
    if (strstr(text, "ping from s_client") == NULL ||
        strstr(text, "Verify return code: 0 (ok)") == NULL) {
        fail_msg("s_client output:\n%s", text);
    }
    server_stop(&ts);
    close_loop(loop);
}

/* ---- sendfile over TLS: read and encoded, in the queue's order -------- */

static int sf_calls;
static int sf_status;
static uint64_t sf_sent;

static void
sf_cb(tc_stream_t *s, void *ctx, int status, uint64_t sent)
{
    (void)s;
    (void)ctx;
    sf_calls++;
    sf_status = status;
    sf_sent = sent;
}

/* Queued before the handshake (a write, the file range, a write behind
 * it), then a graceful close: the server reads one checksummed stream and
 * a clean EOF after it. */
static void
test_sendfile_fallback(void **state)
{
    (void)state;
    const uint64_t total = 24ull * 1024 * 1024;
    char path[] = "/tmp/tc-tls-sendfile-XXXXXX";
    int file = mkstemp(path);
    assert_true(file >= 0);
    unlink(path);
    static char buf[1024 * 1024];
    for (uint64_t off = 0; off < total; off += sizeof(buf)) {
        payload_fill(buf, sizeof(buf), 61, off);
        assert_int_equal(pwrite(file, buf, sizeof(buf), (off_t)off),
                         (ssize_t)sizeof(buf));
    }
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx());
    ts.tmpl.checking = true;
    payload_check_init(&ts.tmpl.chk, 61);
    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    payload_fill(buf, 1000, 61, 0);
    ASSERT_RC(tc_stream_write(c.s, buf, 1000), 0);
    sf_calls = 0;
    ASSERT_RC(tc_stream_sendfile(c.s, file, 1000, total - 2000, sf_cb, NULL),
              0);
    payload_fill(buf, 1000, 61, total - 1000);
    ASSERT_RC(tc_stream_write(c.s, buf, 1000), 0);
    ASSERT_RC(tc_stream_close(c.s, p_closed), 0);
    assert_int_equal(sf_calls, 0);
    RUN_UNTIL(loop, ts.npeers == 1 && ts.peers[0].eofs == 1, 60000);
    peer_t *sp = &ts.peers[0];
    assert_false(sp->chk.bad);
    assert_int_equal(sp->received, total);
    assert_int_equal(sp->errors, 0);
    assert_int_equal(sf_calls, 1);
    ASSERT_RC(sf_status, 0);
    assert_int_equal(sf_sent, total - 2000);
    tc_close(tc_stream_handle(sp->s), p_closed);
    RUN_UNTIL(loop, c.closed == 1 && sp->closed == 1, 5000);
    server_stop(&ts);
    close(file);
    close_loop_clean(loop);
}

/* After the handshake, on an idle stream: when the socket takes the first
 * pieces at once, the rest still goes out (it used to stall). */
static void
test_sendfile_after_handshake(void **state)
{
    (void)state;
    const uint64_t total = 4ull * 1024 * 1024;
    char path[] = "/tmp/tc-tls-sendfile-XXXXXX";
    int file = mkstemp(path);
    assert_true(file >= 0);
    unlink(path);
    static char buf[1024 * 1024];
    for (uint64_t off = 0; off < total; off += sizeof(buf)) {
        payload_fill(buf, sizeof(buf), 62, off);
        assert_int_equal(pwrite(file, buf, sizeof(buf), (off_t)off),
                         (ssize_t)sizeof(buf));
    }
    tc_loop_t *loop;
    ASSERT_RC(tc_loop_new(&loop), 0);
    tls_server_t ts;
    server_start(&ts, loop, server_ctx());
    ts.tmpl.checking = true;
    payload_check_init(&ts.tmpl.chk, 62);
    tc_tls_ctx_t *cctx = client_ctx();
    peer_t c;
    peer_init(&c, loop);
    client_connect(&c, ts.port, cctx, "localhost");
    tc_tls_ctx_free(cctx);
    RUN_UNTIL(loop, c.hs_calls == 1, 5000);
    ASSERT_RC(c.hs_status, 0);
    sf_calls = 0;
    ASSERT_RC(tc_stream_sendfile(c.s, file, 0, 0, sf_cb, NULL), 0);
    RUN_UNTIL(loop, sf_calls == 1 && ts.npeers == 1 &&
                        ts.peers[0].received == total, 20000);
    ASSERT_RC(sf_status, 0);
    assert_int_equal(sf_sent, total);
    assert_false(ts.peers[0].chk.bad);
    tc_close(tc_stream_handle(c.s), p_closed);
    tc_close(tc_stream_handle(ts.peers[0].s), p_closed);
    RUN_UNTIL(loop, c.closed == 1 && ts.peers[0].closed == 1, 5000);
    server_stop(&ts);
    close(file);
    close_loop_clean(loop);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ctx_errors),
        cmocka_unit_test(test_echo_tls13),
        cmocka_unit_test(test_echo_tls12),
        cmocka_unit_test(test_big_transfer_backpressure),
        cmocka_unit_test(test_write_ref_and_server_writes_first),
        cmocka_unit_test(test_connect_by_name),
        cmocka_unit_test(test_fail_expired),
        cmocka_unit_test(test_fail_unknown_ca),
        cmocka_unit_test(test_fail_hostname),
        cmocka_unit_test(test_fail_version),
        cmocka_unit_test(test_fail_without_callback_goes_to_on_error),
        cmocka_unit_test(test_mtls),
        cmocka_unit_test(test_insecure_no_verify),
        cmocka_unit_test(test_plaintext_and_garbage_clients),
        cmocka_unit_test(test_handshake_timeouts),
        cmocka_unit_test(test_close_notify_is_clean_eof),
        cmocka_unit_test(test_vanishing_peer_is_reported),
        cmocka_unit_test(test_abort_resets),
        cmocka_unit_test(test_graceful_close_lingers_for_the_peer),
        cmocka_unit_test(test_linger_bounds_host_poll),
        cmocka_unit_test(test_eof_kept_while_paused),
        cmocka_unit_test(test_request_with_finished_read_late),
        cmocka_unit_test(test_close_notify_with_finished_after_resume),
        cmocka_unit_test(test_greeting_with_server_finished_read_late),
        cmocka_unit_test(test_interop_openssl_s_server),
        cmocka_unit_test(test_interop_openssl_s_client),
        cmocka_unit_test(test_sendfile_fallback),
        cmocka_unit_test(test_sendfile_after_handshake),
    };
    return cmocka_run_group_tests(tests, make_certs, remove_certs);
}
