/* TLS over the stream transport, with OpenSSL 3.
 *
 * A TLS connection is a tc_stream_t like any other: tc_stream_write() takes
 * plaintext, on_read gets plaintext, and the watermarks, half-close, pause,
 * graceful close and abort keep their meaning.  The handshake and record
 * encryption run on the loop thread inside the stream.  What differs:
 * - tc_stream_write_queue_size() counts plaintext not yet encrypted (before
 *   the handshake completes) plus encrypted bytes not yet sent, handshake
 *   records included; the watermarks compare against that.
 * - tc_stream_shutdown() and tc_stream_close() send close_notify first.  The
 *   peer's close_notify is a normal EOF (on_eof); a peer that closes the
 *   connection without one fails the stream with TC_ETLS_NO_CLOSE_NOTIFY.
 *   tc_stream_close() then waits for the peer's EOF (2 s at most): closing
 *   while input arrives would send a reset, and the peer would lose the
 *   tail it has not read yet.
 * - A failed handshake is reported once, with the cause: TC_ETLS_EXPIRED,
 *   TC_ETLS_UNKNOWN_CA, TC_ETLS_HOSTNAME, TC_ETLS_VERSION, TC_ETLS_CERT, or
 *   TC_ETLS for other protocol errors; tc_tls_error_detail() has OpenSSL's
 *   words for it.
 *
 * Safe defaults: TLS 1.2 at least, no compression, no renegotiation;
 * clients verify the server's chain against the system store (or the CAs
 * given) and its name, and send SNI.  Verification is off only with
 * insecure_no_verify.
 *
 * Built without OpenSSL (-Dtls=disabled), every function here returns
 * -ENOTSUP (or NULL / false / 0). */
#ifndef TWINCORE_TLS_H
#define TWINCORE_TLS_H

#include "stream.h"
#include "tcp.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct tc_tls_ctx_s tc_tls_ctx_t;

#define TC_TLS_V1_2 0x0303
#define TC_TLS_V1_3 0x0304

typedef enum tc_tls_client_cert {
    TC_TLS_CLIENT_CERT_NONE = 0,    /* servers do not ask for one */
    TC_TLS_CLIENT_CERT_OPTIONAL,    /* ask; verify one if sent */
    TC_TLS_CLIENT_CERT_REQUIRE,     /* ask; fail without a valid one */
} tc_tls_client_cert_t;

typedef struct tc_tls_ctx_opts {
    bool server;                /* the server side (else a client) */
    const char *cert_file;      /* PEM chain, leaf first; servers need it */
    const char *key_file;       /* PEM private key; NULL: in cert_file */
    /* Trusted CAs: files, a directory (c_rehash layout), PEM text.  None
     * given: the system store. */
    const char *ca_file;
    const char *ca_path;
    const char *ca_pem;
    bool insecure_no_verify;    /* client: accept any certificate (and any
                                 * name): for tests only */
    bool no_check_hostname;     /* client: verify the chain but not the
                                 * name */
    tc_tls_client_cert_t client_cert;   /* server: mutual TLS */
    /* ALPN protocols in preference order, NULL-terminated; NULL: none.  A
     * server picks its first protocol the client also offers; without one
     * in common the handshake goes on without ALPN. */
    const char *const *alpn;
    const char *ciphers;        /* TLS <= 1.2 cipher list; NULL: default */
    const char *ciphersuites;   /* TLS 1.3 suites; NULL: default */
    const char *groups;         /* key exchange groups ("X25519:P-256") */
    int min_version;            /* 0: TC_TLS_V1_2 */
    int max_version;            /* 0: the highest known */
} tc_tls_ctx_opts_t;

/* Make a context from opts (copied).  On failure, why (may be NULL)
 * receives a sentence naming the cause.  Returns 0, -EINVAL (bad options,
 * a key that does not match the certificate, an unknown cipher), -ENOENT
 * or another negated errno for files, -ENOMEM, or TC_ETLS.  Thread: any. */
TC_EXTERN int tc_tls_ctx_new(const tc_tls_ctx_opts_t *opts,
                             tc_tls_ctx_t **out, char *why, size_t why_size);
/* Drop the caller's reference; streams keep their own.  Thread: any. */
TC_EXTERN void tc_tls_ctx_free(tc_tls_ctx_t *ctx);
TC_EXTERN bool tc_tls_ctx_is_server(const tc_tls_ctx_t *ctx);

/* Whether this build of twincore has TLS (OpenSSL 3); without it every
 * tc_tls_ function fails with -ENOTSUP.  Thread: any. */
TC_EXTERN bool tc_tls_available(void);

/* Run TLS on a connected stream: the role is the context's, server_name
 * (clients; may be NULL) is sent as SNI and checked against the server's
 * certificate (an IP address is checked, not sent).  The handshake starts
 * on the next iteration; on_handshake (may be NULL) runs once with 0 or the
 * failure (then close the stream), else a failure goes to on_error.
 * timeout_ms (0: none) bounds the handshake (-ETIMEDOUT).  Writes made
 * before it completes are kept and sent after.  Bytes already queued go
 * out first, unencrypted (STARTTLS).  Returns 0, -EINVAL, -EALREADY (TLS
 * already), -EPIPE (closed, failed, shut down), -ENOMEM or TC_ETLS. */
TC_EXTERN int tc_tls_wrap(tc_stream_t *s, tc_tls_ctx_t *ctx,
                          const char *server_name, tc_connect_cb on_handshake,
                          uint64_t timeout_ms);
/* tc_tcp_connect() followed by a client handshake: cb runs once, with 0
 * when both are done or the first failure (opts->timeout_ms covers both).
 * server_name NULL: host.  ctx must be a client context.  Returns as
 * tc_tcp_connect() does, or -EINVAL for a server context. */
TC_EXTERN int tc_tls_connect(tc_loop_t *loop, const char *host, int port,
                             tc_tls_ctx_t *ctx, const char *server_name,
                             const tc_tcp_connect_opts_t *opts,
                             tc_connect_cb cb, void *data,
                             tc_stream_t **out);

/* Whether s runs TLS, and whether its handshake is done. */
TC_EXTERN bool tc_stream_is_tls(const tc_stream_t *s);
TC_EXTERN bool tc_tls_is_established(const tc_stream_t *s);
/* "TLSv1.3", "TLSv1.2"; NULL before the handshake or without TLS. */
TC_EXTERN const char *tc_tls_version(const tc_stream_t *s);
/* The cipher's OpenSSL name; NULL before the handshake. */
TC_EXTERN const char *tc_tls_cipher(const tc_stream_t *s);
/* The protocol ALPN selected: its length (0: none) and *proto (borrowed
 * while the stream lives, not NUL-terminated). */
TC_EXTERN size_t tc_tls_alpn_selected(const tc_stream_t *s,
                                      const char **proto);
/* The peer certificate's subject as one RFC 2253 line ("CN=localhost,
 * O=example").  Returns its length, -ENOENT without a peer certificate,
 * -ENOSPC when size is too small, -EINVAL without TLS. */
TC_EXTERN int tc_tls_peer_subject(const tc_stream_t *s, char *buf,
                                  size_t size);
/* The peer certificate in DER.  *len is in/out: the size of buf, then the
 * certificate's size (also on -ENOSPC; buf may be NULL to ask).  Returns
 * 0, -ENOENT, -ENOSPC or -EINVAL. */
TC_EXTERN int tc_tls_peer_certificate_der(const tc_stream_t *s,
                                          unsigned char *buf, size_t *len);
/* OpenSSL's words for the failure that ended the handshake or the stream
 * ("certificate verify failed: certificate has expired"); NULL when none. */
TC_EXTERN const char *tc_tls_error_detail(const tc_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif
