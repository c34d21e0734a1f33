/* TLS as a stream codec (internal.h; driven by tls_stream.c), OpenSSL 3.
 *
 * OpenSSL never touches the socket.  Each connection's SSL reads and writes
 * through one memory BIO of our own: reading takes the bytes the stream
 * lent from the loop's read buffer (and a stash of those left unread while
 * reading was paused), writing appends records straight to the stream's
 * write queue (tc__stream_emit), so no second buffer sits in between.  All
 * of it runs on the loop thread; a context (SSL_CTX) is shared and
 * reference-counted, so it may be freed while connections still use it.
 *
 * OpenSSL's error queue is per thread: every call into an SSL starts from a
 * clear queue and the failure it leaves is mapped to a TC_ETLS_* code and a
 * sentence (tc_tls_error_detail) before anything else runs. */
#include <arpa/inet.h>
#include <stdio.h>

#include "internal.h"
#include "twincore/tls.h"

#ifdef TC_HAVE_TLS

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

struct tc_tls_ctx_s {
    SSL_CTX *ssl_ctx;
    atomic_uint refs;
    bool server;
    bool check_host;            /* clients: SSL_set1_host */
    unsigned char *alpn;        /* wire format: length-prefixed names */
    unsigned alpn_len;
};

typedef struct tls_conn {
    tc_stream_t *s;
    tc_tls_ctx_t *ctx;          /* a reference */
    SSL *ssl;
    const char *in;             /* lent by the stream until input_end */
    size_t in_len;
    char *stash;                /* input kept while reading is paused */
    size_t stash_off, stash_len, stash_cap;
    int bio_error;              /* -ENOMEM from an emit */
    bool established;
    char detail[256];
} tls_conn_t;

/* ---- the BIO between an SSL and its stream ------------------------------ */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int
bio_read(BIO *b, char *buf, size_t len, size_t *done)
{
    tls_conn_t *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    size_t n = 0;
    if (c->stash_len > 0) {
        n = c->stash_len < len ? c->stash_len : len;
        memcpy(buf, c->stash + c->stash_off, n);
        c->stash_off += n;
        c->stash_len -= n;
    }
    if (n < len && c->in_len > 0) {
        size_t take = c->in_len < len - n ? c->in_len : len - n;
        memcpy(buf + n, c->in, take);
        c->in += take;
        c->in_len -= take;
        n += take;
    }
    *done = n;
    if (n == 0) {
        BIO_set_retry_read(b);   /* more comes from the socket later */
        return 0;
    }
    return 1;
}

static int
bio_write(BIO *b, const char *buf, size_t len, size_t *done)
{
    tls_conn_t *c = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    int err = tc__stream_emit(c->s, buf, len);
    if (err != 0) {
        c->bio_error = err;
        *done = 0;
        return 0;
    }
    *done = len;
    return 1;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void
make_bio_method(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                                 "twincore stream");
    if (m == NULL || !BIO_meth_set_read_ex(m, bio_read) ||
        !BIO_meth_set_write_ex(m, bio_write) ||
        !BIO_meth_set_ctrl(m, bio_ctrl) ||
        !BIO_meth_set_create(m, bio_create)) {
        BIO_meth_free(m);
        return;
    }
    bio_method = m;
}

/* ---- errors -------------------------------------------------------------- */

static int
map_verify_result(long vr)
{
    switch (vr) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return TC_ETLS_EXPIRED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return TC_ETLS_HOSTNAME;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_CERT_UNTRUSTED:
        return TC_ETLS_UNKNOWN_CA;
    default:
        return TC_ETLS_CERT;
    }
}

/* An SSL library reason, ours or the alert the peer sent for it. */
static int
map_reason(int reason, long verify_result)
{
    switch (reason) {
    case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return map_verify_result(verify_result);
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA:
        return TC_ETLS_UNKNOWN_CA;
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED:
        return TC_ETLS_EXPIRED;
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED:
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_TLSV1_ALERT_ACCESS_DENIED:
        return TC_ETLS_CERT;
    case SSL_R_UNSUPPORTED_PROTOCOL:
    case SSL_R_NO_PROTOCOLS_AVAILABLE:
    case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
    case SSL_R_VERSION_TOO_LOW:
    case SSL_R_VERSION_TOO_HIGH:
    case SSL_R_UNSUPPORTED_SSL_VERSION:
        return TC_ETLS_VERSION;
    default:
        return 0;
    }
}

/* Empty the thread's error queue into a code and c->detail. */
static int
take_error(tls_conn_t *c)
{
    long vr = SSL_get_verify_result(c->ssl);
    int code = 0;
    unsigned long first = 0;
    unsigned long e;
    while ((e = ERR_get_error()) != 0) {
        if (first == 0) {
            first = e;
        }
        if (code == 0 && ERR_GET_LIB(e) == ERR_LIB_SSL) {
            code = map_reason(ERR_GET_REASON(e), vr);
        }
    }
    const char *reason = first != 0 ? ERR_reason_error_string(first) : NULL;
    if (reason == NULL) {
        reason = "TLS protocol error";
    }
    if (first != 0 && ERR_GET_LIB(first) == ERR_LIB_SSL &&
        ERR_GET_REASON(first) == SSL_R_CERTIFICATE_VERIFY_FAILED &&
        vr != X509_V_OK) {
        snprintf(c->detail, sizeof(c->detail), "%s: %s", reason,
                 X509_verify_cert_error_string(vr));
    } else {
        snprintf(c->detail, sizeof(c->detail), "%s", reason);
    }
    return code != 0 ? code : TC_ETLS;
}

/* What a failed SSL call means: 0 to wait for input, TC_EOF for the
 * peer's close_notify, or a code. */
static int
ssl_failure(tls_conn_t *c, int rc)
{
    switch (SSL_get_error(c->ssl, rc)) {
    case SSL_ERROR_WANT_READ:
    case SSL_ERROR_WANT_WRITE:
        ERR_clear_error();
        return 0;
    case SSL_ERROR_ZERO_RETURN:
        ERR_clear_error();
        return TC_EOF;
    case SSL_ERROR_SSL:
        return take_error(c);
    default:
        if (c->bio_error != 0) {
            ERR_clear_error();
            snprintf(c->detail, sizeof(c->detail), "out of memory");
            return c->bio_error;
        }
        return take_error(c);
    }
}

/* ---- the codec ----------------------------------------------------------- */

static int
tls_handshake(void *st)
{
    tls_conn_t *c = st;
    ERR_clear_error();
    int rc = SSL_do_handshake(c->ssl);
    if (rc == 1) {
        c->established = true;
        return 1;
    }
    int err = ssl_failure(c, rc);
    return err == TC_EOF ? TC_ETLS : err;
}

static ssize_t
tls_read(void *st, char *buf, size_t cap)
{
    tls_conn_t *c = st;
    size_t n = 0;
    if (c->in_len == 0 && c->stash_len == 0 && !SSL_has_pending(c->ssl) &&
        !(SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN)) {
        return 0;   /* certain to want input: spare the call */
    }
    ERR_clear_error();
    if (SSL_read_ex(c->ssl, buf, cap, &n) == 1) {
        return (ssize_t)n;
    }
    return ssl_failure(c, 0);
}

static void
tls_input(void *st, const char *buf, size_t len)
{
    tls_conn_t *c = st;
    c->in = buf;
    c->in_len = len;
}

static int
tls_input_end(void *st, bool keep)
{
    tls_conn_t *c = st;
    const char *in = c->in;
    size_t len = c->in_len;
    c->in = NULL;
    c->in_len = 0;
    if (!keep || len == 0) {
        return 0;
    }
    if (c->stash_off > 0) {
        memmove(c->stash, c->stash + c->stash_off, c->stash_len);
        c->stash_off = 0;
    }
    if (c->stash_cap - c->stash_len < len) {
        size_t cap = c->stash_len + len;
        char *p = realloc(c->stash, cap);
        if (p == NULL) {
            return -ENOMEM;
        }
        c->stash = p;
        c->stash_cap = cap;
    }
    memcpy(c->stash + c->stash_len, in, len);
    c->stash_len += len;
    return 0;
}

static bool
tls_has_pending(void *st)
{
    tls_conn_t *c = st;
    return c->stash_len > 0 || SSL_has_pending(c->ssl) ||
           (SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN);
}

static int
write_all(tls_conn_t *c, const void *buf, size_t len)
{
    size_t done = 0;
    ERR_clear_error();
    if (SSL_write_ex(c->ssl, buf, len, &done) == 1) {
        return 0;
    }
    int err = ssl_failure(c, 0);
    return err == 0 || err == TC_EOF ? TC_ETLS : err;
}

/* Small buffers of one writev share records; big ones go as they are. */
static int
tls_encode(void *st, const struct iovec *iov, int iovcnt)
{
    tls_conn_t *c = st;
    if (iovcnt == 1) {
        return write_all(c, iov[0].iov_base, iov[0].iov_len);
    }
    char buf[16384];
    size_t used = 0;
    for (int i = 0; i < iovcnt; i++) {
        const char *p = iov[i].iov_base;
        size_t len = iov[i].iov_len;
        if (used > 0 && (used + len > sizeof(buf) || len >= sizeof(buf))) {
            int err = write_all(c, buf, used);
            if (err != 0) {
                return err;
            }
            used = 0;
        }
        if (len >= sizeof(buf)) {
            int err = write_all(c, p, len);
            if (err != 0) {
                return err;
            }
        } else if (len > 0) {
            memcpy(buf + used, p, len);
            used += len;
        }
    }
    return used > 0 ? write_all(c, buf, used) : 0;
}

static int
tls_close_notify(void *st)
{
    tls_conn_t *c = st;
    ERR_clear_error();
    int rc = SSL_shutdown(c->ssl);
    if (rc >= 0) {
        return 0;
    }
    int err = ssl_failure(c, rc);
    return err == TC_EOF ? 0 : err;
}

static int
tls_eof_status(void *st)
{
    tls_conn_t *c = st;
    if (SSL_get_shutdown(c->ssl) & SSL_RECEIVED_SHUTDOWN) {
        return 0;
    }
    snprintf(c->detail, sizeof(c->detail),
             "the peer closed the connection without close_notify%s",
             c->established ? "" : " during the handshake");
    return TC_ETLS_NO_CLOSE_NOTIFY;
}

static void
tls_free(void *st)
{
    tls_conn_t *c = st;
    SSL_free(c->ssl);   /* and its BIO */
    tc_tls_ctx_free(c->ctx);
    free(c->stash);
    free(c);
}

static const tc__stream_codec_t tls_codec = {
    .handshake = tls_handshake,
    .read = tls_read,
    .input = tls_input,
    .input_end = tls_input_end,
    .has_pending = tls_has_pending,
    .encode = tls_encode,
    .close_notify = tls_close_notify,
    .eof_status = tls_eof_status,
    .free = tls_free,
};

static tls_conn_t *
conn_of(const tc_stream_t *s)
{
    return tc__stream_codec_state(s, &tls_codec);
}

/* ---- contexts ------------------------------------------------------------ */

/* A failed context step: a code from the error queue and why. */
static int
ctx_failure(const char *what, char *why, size_t why_size)
{
    unsigned long e = ERR_peek_last_error();
    int err = -EINVAL;
    if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SYS && ERR_GET_REASON(e) > 0) {
        err = -ERR_GET_REASON(e);
    } else if (e != 0 && ERR_GET_LIB(e) == ERR_LIB_SSL &&
               ERR_GET_REASON(e) == ERR_R_MALLOC_FAILURE) {
        err = -ENOMEM;
    }
    /* A missing file is reported first, under the system library. */
    unsigned long first = ERR_peek_error();
    if (first != 0 && ERR_GET_LIB(first) == ERR_LIB_SYS &&
        ERR_GET_REASON(first) > 0) {
        err = -ERR_GET_REASON(first);
        e = first;
    }
    if (why != NULL && why_size > 0) {
        const char *reason = e != 0 ? ERR_reason_error_string(e) : NULL;
        if (err < 0 && err > -4096 && e != 0 && ERR_GET_LIB(e) == ERR_LIB_SYS) {
            reason = strerrordesc_np(-err);
        }
        snprintf(why, why_size, "%s: %s", what,
                 reason != NULL ? reason : "rejected by OpenSSL");
    }
    ERR_clear_error();
    return err;
}

static void
say(char *why, size_t why_size, const char *msg)
{
    if (why != NULL && why_size > 0) {
        snprintf(why, why_size, "%s", msg);
    }
}

static int
alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen,
            const unsigned char *in, unsigned int inlen, void *arg)
{
    (void)ssl;
    tc_tls_ctx_t *ctx = arg;
    unsigned char *sel = NULL;
    if (SSL_select_next_proto(&sel, outlen, ctx->alpn, ctx->alpn_len, in,
                              inlen) == OPENSSL_NPN_NEGOTIATED) {
        *out = sel;
        return SSL_TLSEXT_ERR_OK;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static int
build_alpn(tc_tls_ctx_t *ctx, const char *const *alpn, char *why,
           size_t why_size)
{
    size_t total = 0;
    for (size_t i = 0; alpn[i] != NULL; i++) {
        size_t len = strlen(alpn[i]);
        if (len == 0 || len > 255) {
            say(why, why_size, "alpn: each protocol must be 1 to 255 bytes");
            return -EINVAL;
        }
        total += 1 + len;
    }
    if (total == 0 || total > 65535) {
        say(why, why_size, "alpn: the list is empty or too long");
        return -EINVAL;
    }
    ctx->alpn = malloc(total);
    if (ctx->alpn == NULL) {
        return -ENOMEM;
    }
    unsigned char *p = ctx->alpn;
    for (size_t i = 0; alpn[i] != NULL; i++) {
        size_t len = strlen(alpn[i]);
        *p++ = (unsigned char)len;
        memcpy(p, alpn[i], len);
        p += len;
    }
    ctx->alpn_len = (unsigned)total;
    return 0;
}

static bool
version_ok(int v)
{
    return v == 0 || (v >= TLS1_VERSION && v <= TLS1_3_VERSION);
}

static int
load_ca_pem(SSL_CTX *sc, const char *pem, char *why, size_t why_size)
{
    BIO *b = BIO_new_mem_buf(pem, -1);
    if (b == NULL) {
        return -ENOMEM;
    }
    STACK_OF(X509_INFO) *infos = PEM_X509_INFO_read_bio(b, NULL, NULL, NULL);
    BIO_free(b);
    if (infos == NULL) {
        return ctx_failure("ca_pem", why, why_size);
    }
    X509_STORE *store = SSL_CTX_get_cert_store(sc);
    int added = 0;
    int err = 0;
    for (int i = 0; i < sk_X509_INFO_num(infos); i++) {
        X509_INFO *info = sk_X509_INFO_value(infos, i);
        if (info->x509 != NULL) {
            if (!X509_STORE_add_cert(store, info->x509)) {
                err = ctx_failure("ca_pem", why, why_size);
                break;
            }
            added++;
        }
    }
    sk_X509_INFO_pop_free(infos, X509_INFO_free);
    if (err == 0 && added == 0) {
        say(why, why_size, "ca_pem: no certificate in it");
        err = -EINVAL;
    }
    return err;
}

static int
setup_trust(tc_tls_ctx_t *ctx, const tc_tls_ctx_opts_t *o, char *why,
            size_t why_size)
{
    SSL_CTX *sc = ctx->ssl_ctx;
    bool verifies = o->server ? o->client_cert != TC_TLS_CLIENT_CERT_NONE
                              : !o->insecure_no_verify;
    if (o->ca_file != NULL || o->ca_path != NULL) {
        if (!SSL_CTX_load_verify_locations(sc, o->ca_file, o->ca_path)) {
            return ctx_failure(o->ca_file != NULL ? "ca_file" : "ca_path",
                               why, why_size);
        }
    }
    if (o->ca_pem != NULL) {
        int err = load_ca_pem(sc, o->ca_pem, why, why_size);
        if (err != 0) {
            return err;
        }
    }
    if (verifies && o->ca_file == NULL && o->ca_path == NULL &&
        o->ca_pem == NULL && !SSL_CTX_set_default_verify_paths(sc)) {
        return ctx_failure("the system trust store", why, why_size);
    }
    if (!o->server) {
        SSL_CTX_set_verify(sc, verifies ? SSL_VERIFY_PEER : SSL_VERIFY_NONE,
                           NULL);
        return 0;
    }
    int mode = SSL_VERIFY_NONE;
    if (o->client_cert == TC_TLS_CLIENT_CERT_OPTIONAL) {
        mode = SSL_VERIFY_PEER;
    } else if (o->client_cert == TC_TLS_CLIENT_CERT_REQUIRE) {
        mode = SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    }
    SSL_CTX_set_verify(sc, mode, NULL);
    if (mode != SSL_VERIFY_NONE && o->ca_file != NULL) {
        /* Tell clients which authorities we accept. */
        STACK_OF(X509_NAME) *names = SSL_load_client_CA_file(o->ca_file);
        if (names != NULL) {
            SSL_CTX_set_client_CA_list(sc, names);
        }
        ERR_clear_error();
    }
    return 0;
}

int
tc_tls_ctx_new(const tc_tls_ctx_opts_t *o, tc_tls_ctx_t **out, char *why,
               size_t why_size)
{
    if (why != NULL && why_size > 0) {
        why[0] = '\0';
    }
    if (o == NULL || out == NULL) {
        say(why, why_size, "opts and out are required");
        return -EINVAL;
    }
    if (!version_ok(o->min_version) || !version_ok(o->max_version) ||
        (o->max_version != 0 && o->min_version > o->max_version) ||
        (o->max_version != 0 && o->min_version == 0 &&
         o->max_version < TLS1_2_VERSION)) {
        say(why, why_size, "min_version/max_version: not a TLS version "
                           "range");
        return -EINVAL;
    }
    if (o->client_cert > TC_TLS_CLIENT_CERT_REQUIRE ||
        (!o->server && o->client_cert != TC_TLS_CLIENT_CERT_NONE)) {
        say(why, why_size, "client_cert: only servers ask for one");
        return -EINVAL;
    }
    if (o->server && o->cert_file == NULL) {
        say(why, why_size, "cert_file: a server needs a certificate");
        return -EINVAL;
    }
    if (o->cert_file == NULL && o->key_file != NULL) {
        say(why, why_size, "key_file: given without cert_file");
        return -EINVAL;
    }
    tc_tls_ctx_t *ctx = calloc(1, sizeof(*ctx));
    if (ctx == NULL) {
        return -ENOMEM;
    }
    atomic_init(&ctx->refs, 1);
    ctx->server = o->server;
    ctx->check_host = !o->server && !o->insecure_no_verify &&
                      !o->no_check_hostname;
    int err = 0;
    ERR_clear_error();
    SSL_CTX *sc = SSL_CTX_new(o->server ? TLS_server_method()
                                        : TLS_client_method());
    if (sc == NULL) {
        err = ctx_failure("SSL_CTX_new", why, why_size);
        goto fail;
    }
    ctx->ssl_ctx = sc;
    SSL_CTX_set_options(sc, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                                (o->server ? SSL_OP_CIPHER_SERVER_PREFERENCE
                                           : 0));
    SSL_CTX_set_read_ahead(sc, 1);
    if (!SSL_CTX_set_min_proto_version(sc, o->min_version != 0
                                               ? o->min_version
                                               : TLS1_2_VERSION) ||
        !SSL_CTX_set_max_proto_version(sc, o->max_version)) {
        err = ctx_failure("min_version/max_version", why, why_size);
        goto fail;
    }
    if (o->ciphers != NULL && !SSL_CTX_set_cipher_list(sc, o->ciphers)) {
        err = ctx_failure("ciphers", why, why_size);
        goto fail;
    }
    if (o->ciphersuites != NULL &&
        !SSL_CTX_set_ciphersuites(sc, o->ciphersuites)) {
        err = ctx_failure("ciphersuites", why, why_size);
        goto fail;
    }
    if (o->groups != NULL && !SSL_CTX_set1_groups_list(sc, o->groups)) {
        err = ctx_failure("groups", why, why_size);
        goto fail;
    }
    if (o->cert_file != NULL) {
        const char *key = o->key_file != NULL ? o->key_file : o->cert_file;
        if (!SSL_CTX_use_certificate_chain_file(sc, o->cert_file)) {
            err = ctx_failure("cert_file", why, why_size);
            goto fail;
        }
        if (!SSL_CTX_use_PrivateKey_file(sc, key, SSL_FILETYPE_PEM)) {
            err = ctx_failure("key_file", why, why_size);
            goto fail;
        }
        if (!SSL_CTX_check_private_key(sc)) {
            err = ctx_failure("key_file", why, why_size);
            goto fail;
        }
    }
    err = setup_trust(ctx, o, why, why_size);
    if (err != 0) {
        goto fail;
    }
    /* Resumption with client certificates needs a session id context. */
    static const unsigned char sid_ctx[] = "twincore";
    SSL_CTX_set_session_id_context(sc, sid_ctx, sizeof(sid_ctx) - 1);
    if (o->alpn != NULL) {
        err = build_alpn(ctx, o->alpn, why, why_size);
        if (err != 0) {
            goto fail;
        }
        if (o->server) {
            SSL_CTX_set_alpn_select_cb(sc, alpn_select, ctx);
        } else if (SSL_CTX_set_alpn_protos(sc, ctx->alpn,
                                           ctx->alpn_len) != 0) {
            err = ctx_failure("alpn", why, why_size);
            goto fail;
        }
    }
    *out = ctx;
    return 0;

fail:
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx->alpn);
    free(ctx);
    return err;
}

void
tc_tls_ctx_free(tc_tls_ctx_t *ctx)
{
    if (ctx == NULL || atomic_fetch_sub(&ctx->refs, 1) != 1) {
        return;
    }
    SSL_CTX_free(ctx->ssl_ctx);
    free(ctx->alpn);
    free(ctx);
}

bool
tc_tls_ctx_is_server(const tc_tls_ctx_t *ctx)
{
    return ctx != NULL && ctx->server;
}

/* ---- connections ------------------------------------------------------- */

static bool
is_ip_literal(const char *name)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 ||
           inet_pton(AF_INET6, name, buf) == 1;
}

static int
conn_new(tc_stream_t *s, tc_tls_ctx_t *ctx, const char *server_name,
         tls_conn_t **out)
{
    if (ctx == NULL) {
        return -EINVAL;
    }
    bool named = server_name != NULL && server_name[0] != '\0';
    if (!ctx->server && ctx->check_host && !named) {
        return -EINVAL;   /* nothing to check the certificate against */
    }
    pthread_once(&bio_once, make_bio_method);
    if (bio_method == NULL) {
        return -ENOMEM;
    }
    tls_conn_t *c = calloc(1, sizeof(*c));
    if (c == NULL) {
        return -ENOMEM;
    }
    int err = -ENOMEM;
    ERR_clear_error();
    c->s = s;
    c->ssl = SSL_new(ctx->ssl_ctx);
    if (c->ssl == NULL) {
        goto fail;
    }
    BIO *b = BIO_new(bio_method);
    if (b == NULL) {
        goto fail;
    }
    BIO_set_data(b, c);
    SSL_set_bio(c->ssl, b, b);   /* one reference for both directions */
    if (ctx->server) {
        SSL_set_accept_state(c->ssl);
    } else {
        SSL_set_connect_state(c->ssl);
        if (named && is_ip_literal(server_name)) {
            /* RFC 6066: no IP addresses in SNI; check the IP SAN. */
            if (ctx->check_host &&
                !X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(c->ssl),
                                               server_name)) {
                err = -EINVAL;
                goto fail;
            }
        } else if (named) {
            if (!SSL_set_tlsext_host_name(c->ssl, server_name)) {
                err = -EINVAL;
                goto fail;
            }
            if (ctx->check_host) {
                SSL_set_hostflags(c->ssl,
                                  X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
                if (!SSL_set1_host(c->ssl, server_name)) {
                    err = -EINVAL;
                    goto fail;
                }
            }
        }
    }
    atomic_fetch_add(&ctx->refs, 1);
    c->ctx = ctx;
    *out = c;
    return 0;

fail:
    ERR_clear_error();
    SSL_free(c->ssl);
    free(c);
    return err;
}

int
tc_tls_wrap(tc_stream_t *s, tc_tls_ctx_t *ctx, const char *server_name,
            tc_connect_cb on_handshake, uint64_t timeout_ms)
{
    if (s == NULL || ctx == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(tc_handle_loop(tc_stream_handle(s)));
    if (conn_of(s) != NULL) {
        return -EALREADY;
    }
    tls_conn_t *c;
    int err = conn_new(s, ctx, server_name, &c);
    if (err != 0) {
        return err;
    }
    return tc__stream_set_codec(s, &tls_codec, c, on_handshake, timeout_ms);
}

int
tc_tls_connect(tc_loop_t *loop, const char *host, int port,
               tc_tls_ctx_t *ctx, const char *server_name,
               const tc_tcp_connect_opts_t *opts, tc_connect_cb cb,
               void *data, tc_stream_t **out)
{
    if (loop == NULL || host == NULL || ctx == NULL || ctx->server ||
        cb == NULL || out == NULL) {
        return -EINVAL;
    }
    TC__ASSERT_LOOP_THREAD(loop);
    tls_conn_t *c;
    int err = conn_new(NULL, ctx, server_name != NULL ? server_name : host,
                       &c);
    if (err != 0) {
        return err;
    }
    tc_stream_t *s;
    err = tc_tcp_connect(loop, host, port, opts, cb, data, &s);
    if (err != 0) {
        tls_free(c);
        return err;
    }
    c->s = s;
    *out = s;
    /* A fresh stream whose connect is pending always takes a codec; were
     * it refused, the connection must not go on in plaintext: cb then
     * reports -ECANCELED. */
    err = tc__stream_set_codec(s, &tls_codec, c, NULL,
                               opts != NULL ? opts->timeout_ms : 0);
    if (err != 0) {
        tc_stream_abort(s, NULL);
    }
    return 0;
}

bool
tc_stream_is_tls(const tc_stream_t *s)
{
    return conn_of(s) != NULL;
}

bool
tc_tls_is_established(const tc_stream_t *s)
{
    tls_conn_t *c = conn_of(s);
    return c != NULL && c->established;
}

const char *
tc_tls_version(const tc_stream_t *s)
{
    tls_conn_t *c = conn_of(s);
    return c != NULL && c->established ? SSL_get_version(c->ssl) : NULL;
}

const char *
tc_tls_cipher(const tc_stream_t *s)
{
    tls_conn_t *c = conn_of(s);
    return c != NULL && c->established ? SSL_get_cipher_name(c->ssl) : NULL;
}

size_t
tc_tls_alpn_selected(const tc_stream_t *s, const char **proto)
{
    tls_conn_t *c = conn_of(s);
    const unsigned char *p = NULL;
    unsigned len = 0;
    if (c != NULL && c->established) {
        SSL_get0_alpn_selected(c->ssl, &p, &len);
    }
    if (proto != NULL) {
        *proto = len > 0 ? (const char *)p : NULL;
    }
    return len;
}

int
tc_tls_peer_subject(const tc_stream_t *s, char *buf, size_t size)
{
    tls_conn_t *c = conn_of(s);
    if (c == NULL || (buf == NULL && size > 0)) {
        return -EINVAL;
    }
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    if (x == NULL) {
        return -ENOENT;
    }
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL) {
        return -ENOMEM;
    }
    int err = 0;
    if (X509_NAME_print_ex(b, X509_get_subject_name(x), 0,
                           XN_FLAG_RFC2253) < 0) {
        err = -ENOMEM;
    } else {
        char *text;
        long len = BIO_get_mem_data(b, &text);
        if (len < 0 || (size_t)len >= size) {
            err = -ENOSPC;
        } else {
            memcpy(buf, text, (size_t)len);
            buf[len] = '\0';
            err = (int)len;
        }
    }
    BIO_free(b);
    ERR_clear_error();
    return err;
}

int
tc_tls_peer_certificate_der(const tc_stream_t *s, unsigned char *buf,
                            size_t *len)
{
    tls_conn_t *c = conn_of(s);
    if (c == NULL || len == NULL) {
        return -EINVAL;
    }
    X509 *x = SSL_get0_peer_certificate(c->ssl);
    if (x == NULL) {
        return -ENOENT;
    }
    int need = i2d_X509(x, NULL);
    if (need <= 0) {
        ERR_clear_error();
        return -ENOMEM;
    }
    size_t have = *len;
    *len = (size_t)need;
    if (buf == NULL || have < (size_t)need) {
        return -ENOSPC;
    }
    unsigned char *p = buf;
    return i2d_X509(x, &p) == need ? 0 : -ENOMEM;
}

const char *
tc_tls_error_detail(const tc_stream_t *s)
{
    tls_conn_t *c = conn_of(s);
    return c != NULL && c->detail[0] != '\0' ? c->detail : NULL;
}

#else /* !TC_HAVE_TLS: the API exists and says so. */

int
tc_tls_ctx_new(const tc_tls_ctx_opts_t *opts, tc_tls_ctx_t **out, char *why,
               size_t why_size)
{
    (void)opts;
    (void)out;
    if (why != NULL && why_size > 0) {
        snprintf(why, why_size, "twincore was built without TLS");
    }
    return -ENOTSUP;
}

void
tc_tls_ctx_free(tc_tls_ctx_t *ctx)
{
    (void)ctx;
}

bool
tc_tls_ctx_is_server(const tc_tls_ctx_t *ctx)
{
    (void)ctx;
    return false;
}

int
tc_tls_wrap(tc_stream_t *s, tc_tls_ctx_t *ctx, const char *server_name,
            tc_connect_cb on_handshake, uint64_t timeout_ms)
{
    (void)s;
    (void)ctx;
    (void)server_name;
    (void)on_handshake;
    (void)timeout_ms;
    return -ENOTSUP;
}

int
tc_tls_connect(tc_loop_t *loop, const char *host, int port,
               tc_tls_ctx_t *ctx, const char *server_name,
               const tc_tcp_connect_opts_t *opts, tc_connect_cb cb,
               void *data, tc_stream_t **out)
{
    (void)loop;
    (void)host;
    (void)port;
    (void)ctx;
    (void)server_name;
    (void)opts;
    (void)cb;
    (void)data;
    (void)out;
    return -ENOTSUP;
}

bool
tc_stream_is_tls(const tc_stream_t *s)
{
    (void)s;
    return false;
}

bool
tc_tls_is_established(const tc_stream_t *s)
{
    (void)s;
    return false;
}

const char *
tc_tls_version(const tc_stream_t *s)
{
    (void)s;
    return NULL;
}

const char *
tc_tls_cipher(const tc_stream_t *s)
{
    (void)s;
    return NULL;
}

size_t
tc_tls_alpn_selected(const tc_stream_t *s, const char **proto)
{
    (void)s;
    if (proto != NULL) {
        *proto = NULL;
    }
    return 0;
}

int
tc_tls_peer_subject(const tc_stream_t *s, char *buf, size_t size)
{
    (void)s;
    (void)buf;
    (void)size;
    return -ENOTSUP;
}

int
tc_tls_peer_certificate_der(const tc_stream_t *s, unsigned char *buf,
                            size_t *len)
{
    (void)s;
    (void)buf;
    (void)len;
    return -ENOTSUP;
}

const char *
tc_tls_error_detail(const tc_stream_t *s)
{
    (void)s;
    return NULL;
}

#endif

bool
tc_tls_available(void)
{
#ifdef TC_HAVE_TLS
    return true;
#else
    return false;
#endif
}
