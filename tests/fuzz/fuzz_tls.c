/* libFuzzer target: the TLS layer (src/tls.c) fed records from a hostile
 * peer.
 *
 * One AF_UNIX socketpair per input; twincore's end runs TLS (tc_tls_wrap)
 * as the server (self-signed certificate made at start-up) or as a client
 * (no verification); the other end is a raw socket that writes what the
 * input says, in the chunks it says: garbage, truncated or oversized
 * records, or a real ClientHello from the seed corpus followed by garbage.
 * Meanwhile the input may run the loop, have the peer read what twincore
 * sent, write plaintext on twincore's side (queued until the handshake),
 * shut down either side, pause and resume reading.  At the end the peer
 * closes (FIN or RST).
 *
 * Checked on every input: the handshake callback at most once (with
 * -ECANCELED once the stream is closed), and an on_read only after it
 * succeeded; on_error at most once and never after a
 * failed handshake; every code a known negative one (tc_err_name knows
 * it); the close callback once; tc_loop_close() == 0; no overflow, UB or
 * leak (OpenSSL's allocations included). */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "fuzz.h"
#include "twincore.h"
#include "twincore/tls.h"

static tc_tls_ctx_t *server_ctx, *client_ctx;

typedef struct fz_tls {
    tc_loop_t *loop;
    tc_stream_t *s;
    int peer;
    int handshakes, handshake_status;
    int errors, error_status;
    int eofs, closes;
    size_t plaintext_in;
    bool reading, close_started;
    uint8_t buf[1 << 16];
} fz_tls_t;

static void
check_code(int status)
{
    CHECK(status < 0);
    CHECK(strcmp(tc_err_name(status), "UNKNOWN") != 0);
    CHECK(tc_strerror(status) != NULL);
}

static void
on_handshake(tc_stream_t *s, int status)
{
    fz_tls_t *f = tc_handle_data(tc_stream_handle(s));
    CHECK(f->handshakes == 0 && f->errors == 0);
    /* Closed before it finished: cancelled, as any pending request. */
    CHECK(!f->close_started || status == -ECANCELED);
    f->handshakes++;
    f->handshake_status = status;
    if (status != 0) {
        check_code(status);
    }
}

static void
on_read(tc_stream_t *s, const char *buf, size_t len)
{
    fz_tls_t *f = tc_handle_data(tc_stream_handle(s));
    (void)buf;
    CHECK(len > 0 && f->reading);
    CHECK(f->handshakes == 1 && f->handshake_status == 0);
    CHECK(f->errors == 0 && f->eofs == 0 && !f->close_started);
    f->plaintext_in += len;
}

static void
on_eof(tc_stream_t *s)
{
    fz_tls_t *f = tc_handle_data(tc_stream_handle(s));
    CHECK(f->eofs == 0 && f->errors == 0 && !f->close_started);
    f->eofs++;
    f->reading = false;
}

static void
on_error(tc_stream_t *s, int status)
{
    fz_tls_t *f = tc_handle_data(tc_stream_handle(s));
    CHECK(f->errors == 0 && !f->close_started);
    /* A failed handshake is reported once, through on_handshake. */
    CHECK(f->handshakes == 0 || f->handshake_status == 0);
    check_code(status);
    f->errors++;
    f->error_status = status;
}

static void
on_close(tc_handle_t *h)
{
    fz_tls_t *f = tc_handle_data(h);
    f->closes++;
}

static void
run_nowait(fz_tls_t *f, int n)
{
    for (int i = 0; i < n; i++) {
        CHECK(tc_loop_run(f->loop, TC_RUN_NOWAIT) >= 0);
    }
}

static void
peer_drain(fz_tls_t *f)
{
    while (f->peer >= 0 && recv(f->peer, f->buf, sizeof(f->buf),
                                MSG_DONTWAIT) > 0) {
    }
}

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int LLVMFuzzerInitialize(int *argc, char ***argv);

int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    char dir[] = "/tmp/tcfuzz-tls-XXXXXX";
    CHECK(mkdtemp(dir) != NULL);
    char cmd[512], cert[128], key[128];
    snprintf(cert, sizeof(cert), "%s/cert.pem", dir);
    snprintf(key, sizeof(key), "%s/key.pem", dir);
    snprintf(cmd, sizeof(cmd),
             "openssl req -x509 -newkey ec -pkeyopt "
             "ec_paramgen_curve:P-256 -nodes -keyout %s -out %s -days 30 "
             "-subj /CN=localhost >/dev/null 2>&1",
             key, cert);
    CHECK(system(cmd) == 0);
    char why[256] = "";
    tc_tls_ctx_opts_t so = {.server = true, .cert_file = cert,
                            .key_file = key};
    if (tc_tls_ctx_new(&so, &server_ctx, why, sizeof(why)) != 0) {
        fprintf(stderr, "server context: %s\n", why);
        abort();
    }
    tc_tls_ctx_opts_t co = {.insecure_no_verify = true};
    if (tc_tls_ctx_new(&co, &client_ctx, why, sizeof(why)) != 0) {
        fprintf(stderr, "client context: %s\n", why);
        abort();
    }
    unlink(cert);
    unlink(key);
    rmdir(dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static fz_tls_t state;
    fz_tls_t *f = &state;
    fz_in_t in = {data, size};
    int fds[2];
    int rc;

    memset(f, 0, sizeof(*f));
    uint8_t cfg = fz_u8(&in);
    bool client = cfg & 1;
    CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0);
    f->peer = fds[1];
    CHECK(fcntl(f->peer, F_SETFL, O_NONBLOCK) == 0);
    CHECK(tc_loop_new(&f->loop) == 0);
    CHECK(tc_stream_open(f->loop, fds[0], f, &f->s) == 0);
    tc_stream_callbacks_t cbs = {.on_read = on_read, .on_eof = on_eof,
                                 .on_error = on_error};
    CHECK(tc_stream_set_callbacks(f->s, &cbs) == 0);
    CHECK(tc_stream_read_start(f->s) == 0);
    f->reading = true;
    CHECK(tc_tls_wrap(f->s, client ? client_ctx : server_ctx,
                      client ? "localhost" : NULL, on_handshake, 0) == 0);
    if (cfg & 2) {
        /* Plaintext written before the handshake: kept until it is done
         * (never, here), then discarded at close. */
        CHECK(tc_stream_write(f->s, "early", 5) == 0);
    }

    while (in.n > 0 && !f->close_started) {
        uint8_t op = fz_u8(&in);
        switch (op % 12) {
        case 0:
        case 1:
        case 2:
        case 3: {
            /* The peer writes the next n input bytes as they are. */
            size_t n = (size_t)fz_u8(&in) + 1;
            if (op & 0x80) {
                n = (n << 4) + fz_u8(&in);
            }
            if (n > in.n) {
                n = in.n;
            }
            if (f->peer >= 0 && n > 0) {
                ssize_t w = send(f->peer, in.p, n,
                                 MSG_NOSIGNAL | MSG_DONTWAIT);
                (void)w;
            }
            in.p += n;
            in.n -= n;
            break;
        }
        case 4:
        case 5:
            run_nowait(f, fz_u8(&in) % 8 + 1);
            break;
        case 6:
            peer_drain(f);
            break;
        case 7:
            rc = tc_stream_write(f->s, "plaintext", 9);
            CHECK(rc == 0 || rc == -EPIPE);
            break;
        case 8:
            if (f->peer >= 0) {
                shutdown(f->peer, SHUT_WR);
            }
            break;
        case 9:
            rc = tc_stream_shutdown(f->s);
            CHECK(rc <= 0);
            break;
        case 10:
            if (f->reading) {
                CHECK(tc_stream_read_stop(f->s) == 0);
                f->reading = false;
            } else if (tc_stream_read_start(f->s) == 0) {
                f->reading = true;
            }
            break;
        case 11:
            if (fz_u8(&in) % 8 == 0) {
                rc = tc_stream_close(f->s, on_close);
                CHECK(rc == 0);
                f->close_started = true;
                f->reading = false;
            }
            break;
        }
    }

    /* The peer goes away; twincore must come to an end by itself: a failed
     * handshake, an error, or EOF. */
    if (!f->reading && !f->close_started && f->eofs == 0 &&
        tc_stream_read_start(f->s) == 0) {
        f->reading = true;
    }
    if (cfg & 4) {
        struct linger lg = {.l_onoff = 1, .l_linger = 0};
        setsockopt(f->peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    peer_drain(f);
    close(f->peer);
    f->peer = -1;
    uint64_t deadline = now_ms() + 5000;
    while (!f->close_started && f->errors == 0 && f->eofs == 0 &&
           !(f->handshakes == 1 && f->handshake_status != 0) && f->reading) {
        CHECK(now_ms() < deadline);
        run_nowait(f, 1);
        struct pollfd p = {.fd = tc_loop_backend_fd(f->loop),
                           .events = POLLIN};
        poll(&p, 1, 5);
    }
    if (!f->close_started) {
        CHECK(tc_close(tc_stream_handle(f->s), on_close) == 0);
    }
    for (int i = 0; i < 1000 && f->closes == 0; i++) {
        run_nowait(f, 1);
    }
    CHECK(f->closes == 1);
    CHECK(f->handshakes <= 1 && f->errors <= 1);
    CHECK(tc_loop_close(f->loop) == 0);
    return 0;
}
