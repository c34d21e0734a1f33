/* TLSContext, the Reactor's TLS entry points (listen_tls, _connect_tls) and
 * the TLS names of Transport.get_extra_info.
 *
 * A TLS connection is an ordinary Transport over a C stream that carries
 * TLS (src/tls.c): handshakes and record encryption run in C on the loop
 * thread without the GIL, and Python only ever sees plaintext.  A server
 * Transport calls build_protocol() and connection_made() after its
 * handshake, as asyncio does, so ALPN and the peer certificate are known
 * there.  GIL: held in everything here. */
#include "args.h"
#include "errors.h"
#include "module.h"
#include "reactor.h"
#include "tls.h"
#include "transport.h"

#ifdef TCPY_HAVE_OPENSSL
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#endif

typedef struct {
    PyObject_HEAD
    tc_tls_ctx_t *ctx;
    PyObject *alpn;             /* tuple of str */
    int min_version, max_version;
    bool server_side;
    bool verify;
    bool check_hostname;
    int client_cert;
} TLSContextObject;

static const struct {
    const char *name;
    int value;
} versions[] = {
    {"TLSv1", 0x0301},
    {"TLSv1.1", 0x0302},
    {"TLSv1.2", TC_TLS_V1_2},
    {"TLSv1.3", TC_TLS_V1_3},
};

/* None (0), "TLSv1.2"-style names or their numbers (ssl.TLSVersion). */
static int
parse_version(PyObject *obj, const char *what, int *out)
{
    *out = 0;
    if (obj == NULL || obj == Py_None) {
        return 0;
    }
    if (PyUnicode_Check(obj)) {
        const char *s = PyUnicode_AsUTF8(obj);
        if (s == NULL) {
            return -1;
        }
        for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
            if (strcmp(s, versions[i].name) == 0) {
                *out = versions[i].value;
                return 0;
            }
        }
    } else if (PyLong_Check(obj)) {
        long v = PyLong_AsLong(obj);
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
            if (v == versions[i].value) {
                *out = (int)v;
                return 0;
            }
        }
    }
    PyErr_Format(PyExc_ValueError,
                 "TLSContext(): '%s' must be None or one of 'TLSv1.2', "
                 "'TLSv1.3' (or an ssl.TLSVersion), got %R",
                 what, obj);
    return -1;
}

static const char *
version_name(int v)
{
    for (size_t i = 0; i < sizeof(versions) / sizeof(versions[0]); i++) {
        if (versions[i].value == v) {
            return versions[i].name;
        }
    }
    return NULL;
}

/* A path argument (str, bytes, os.PathLike) or None; *bytes_out is a new
 * reference to keep while the char * is used. */
static int
path_arg(PyObject *obj, const char *what, PyObject **bytes_out,
         const char **out)
{
    *bytes_out = NULL;
    *out = NULL;
    if (obj == Py_None) {
        return 0;
    }
    if (!PyUnicode_FSConverter(obj, bytes_out)) {
        PyErr_Format(PyExc_TypeError,
                     "TLSContext(): '%s' must be a path or None, got %.100s",
                     what, Py_TYPE(obj)->tp_name);
        return -1;
    }
    *out = PyBytes_AS_STRING(*bytes_out);
    return 0;
}

/* alpn: an iterable of non-empty str; a tuple of them and a NULL-terminated
 * array of their UTF-8 (borrowed from the tuple). */
static int
alpn_arg(PyObject *obj, PyObject **tuple_out, const char ***names_out)
{
    *tuple_out = NULL;
    *names_out = NULL;
    if (obj == Py_None) {
        *tuple_out = PyTuple_New(0);
        return *tuple_out != NULL ? 0 : -1;
    }
    if (PyUnicode_Check(obj) || PyBytes_Check(obj)) {
        PyErr_SetString(PyExc_TypeError,
                        "TLSContext(): 'alpn' must be a list of str, like "
                        "['h2', 'http/1.1']");
        return -1;
    }
    PyObject *tuple = PySequence_Tuple(obj);
    if (tuple == NULL) {
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    const char **names = PyMem_Calloc((size_t)n + 1, sizeof(*names));
    if (names == NULL) {
        Py_DECREF(tuple);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        Py_ssize_t len = 0;
        const char *s = PyUnicode_Check(item)
                            ? PyUnicode_AsUTF8AndSize(item, &len)
                            : NULL;
        if (s == NULL || len == 0 || len > 255) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError,
                         "TLSContext(): each 'alpn' protocol must be a str "
                         "of 1 to 255 bytes, got %R",
                         item);
            PyMem_Free(names);
            Py_DECREF(tuple);
            return -1;
        }
        names[i] = s;
    }
    *tuple_out = tuple;
    *names_out = names;
    return 0;
}

/* A context failure: ValueError for bad arguments, OSError for files. */
static void
raise_ctx_error(tc_state *st, int err, const char *why)
{
    if (err == -EINVAL) {
        PyErr_Format(PyExc_ValueError, "TLSContext(): %s", why);
    } else if (err == -ENOTSUP) {
        PyErr_SetString(PyExc_NotImplementedError,
                        "TLSContext(): twincore was built without TLS");
    } else if (err < 0 && err > -3000) {
        PyObject *exc = PyObject_CallFunction(
            PyExc_OSError, "is", -err,
            why[0] != '\0' ? why : tc_strerror(err));
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
    } else {
        tcpy_raise(st, err);
    }
}

static PyObject *
TLSContext_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {
        "server_side", "certfile", "keyfile", "cafile", "capath", "cadata",
        "verify", "check_hostname", "alpn", "ciphers", "ciphersuites",
        "groups", "require_client_cert", "request_client_cert",
        "minimum_version", "maximum_version", NULL};
    int server_side = 0, verify = 1, check_hostname = 1;
    int require_cc = 0, request_cc = 0;
    PyObject *certfile = Py_None, *keyfile = Py_None, *cafile = Py_None;
    PyObject *capath = Py_None, *alpn = Py_None;
    const char *cadata = NULL, *ciphers = NULL, *suites = NULL;
    const char *groups = NULL;
    PyObject *minv = NULL, *maxv = Py_None;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "|$pOOOOzppOzzzppOO:TLSContext", kwlist,
            &server_side, &certfile, &keyfile, &cafile, &capath, &cadata,
            &verify, &check_hostname, &alpn, &ciphers, &suites, &groups,
            &require_cc, &request_cc, &minv, &maxv)) {
        return NULL;
    }
    tc_state *st = state_of_type(type);
    if (st == NULL) {
        return NULL;
    }
    if (!server_side && (require_cc || request_cc)) {
        PyErr_SetString(PyExc_ValueError,
                        "TLSContext(): 'require_client_cert' and "
                        "'request_client_cert' are for server_side=True");
        return NULL;
    }
    if (server_side && certfile == Py_None) {
        PyErr_SetString(PyExc_ValueError,
                        "TLSContext(): a server needs 'certfile'");
        return NULL;
    }
    TLSContextObject *self = NULL;
    PyObject *cert_b = NULL, *key_b = NULL, *cafile_b = NULL, *capath_b = NULL;
    PyObject *alpn_tuple = NULL;
    const char **alpn_names = NULL;
    tc_tls_ctx_opts_t o = {
        .server = server_side != 0,
        .ca_pem = cadata,
        .insecure_no_verify = !server_side && !verify,
        .no_check_hostname = !check_hostname,
        .client_cert = require_cc   ? TC_TLS_CLIENT_CERT_REQUIRE
                       : request_cc ? TC_TLS_CLIENT_CERT_OPTIONAL
                                    : TC_TLS_CLIENT_CERT_NONE,
        .ciphers = ciphers,
        .ciphersuites = suites,
        .groups = groups,
    };
    if (path_arg(certfile, "certfile", &cert_b, &o.cert_file) < 0 ||
        path_arg(keyfile, "keyfile", &key_b, &o.key_file) < 0 ||
        path_arg(cafile, "cafile", &cafile_b, &o.ca_file) < 0 ||
        path_arg(capath, "capath", &capath_b, &o.ca_path) < 0 ||
        alpn_arg(alpn, &alpn_tuple, &alpn_names) < 0 ||
        parse_version(minv, "minimum_version", &o.min_version) < 0 ||
        parse_version(maxv, "maximum_version", &o.max_version) < 0) {
        goto error;
    }
    if (minv == NULL) {
        o.min_version = TC_TLS_V1_2;
    }
    o.alpn = PyTuple_GET_SIZE(alpn_tuple) > 0 ? alpn_names : NULL;
    self = (TLSContextObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        goto error;
    }
    char why[256] = "";
    int err;
    /* Reading and parsing the files needs no Python objects. */
    Py_BEGIN_ALLOW_THREADS
    err = tc_tls_ctx_new(&o, &self->ctx, why, sizeof(why));
    Py_END_ALLOW_THREADS
    if (err != 0) {
        self->ctx = NULL;
        raise_ctx_error(st, err, why);
        goto error;
    }
    self->alpn = alpn_tuple;
    alpn_tuple = NULL;
    self->min_version = o.min_version;
    self->max_version = o.max_version;
    self->server_side = server_side != 0;
    self->verify = server_side ? o.client_cert != TC_TLS_CLIENT_CERT_NONE
                               : verify != 0;
    self->check_hostname = !server_side && verify && check_hostname;
    self->client_cert = (int)o.client_cert;
    PyMem_Free(alpn_names);
    Py_XDECREF(cert_b);
    Py_XDECREF(key_b);
    Py_XDECREF(cafile_b);
    Py_XDECREF(capath_b);
    return (PyObject *)self;

error:
    Py_XDECREF(self);
    PyMem_Free(alpn_names);
    Py_XDECREF(alpn_tuple);
    Py_XDECREF(cert_b);
    Py_XDECREF(key_b);
    Py_XDECREF(cafile_b);
    Py_XDECREF(capath_b);
    return NULL;
}

static int
TLSContext_traverse(TLSContextObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->alpn);
    return 0;
}

static int
TLSContext_clear(TLSContextObject *self)
{
    Py_CLEAR(self->alpn);
    return 0;
}

static void
TLSContext_dealloc(TLSContextObject *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    TLSContext_clear(self);
    tc_tls_ctx_free(self->ctx);   /* connections keep their own reference */
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *
TLSContext_get_server_side(TLSContextObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->server_side);
}

static PyObject *
TLSContext_get_verify(TLSContextObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->verify);
}

static PyObject *
TLSContext_get_check_hostname(TLSContextObject *self, void *closure)
{
    (void)closure;
    return PyBool_FromLong(self->check_hostname);
}

static PyObject *
TLSContext_get_alpn(TLSContextObject *self, void *closure)
{
    (void)closure;
    return Py_NewRef(self->alpn != NULL ? self->alpn : Py_None);
}

static PyObject *
TLSContext_get_minimum_version(TLSContextObject *self, void *closure)
{
    (void)closure;
    return PyUnicode_FromString(version_name(self->min_version));
}

static PyObject *
TLSContext_get_maximum_version(TLSContextObject *self, void *closure)
{
    (void)closure;
    const char *name = version_name(self->max_version);
    if (name == NULL) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(name);
}

static PyObject *
TLSContext_get_client_cert(TLSContextObject *self, void *closure)
{
    (void)closure;
    static const char *names[] = {"none", "optional", "required"};
    return PyUnicode_FromString(names[self->client_cert]);
}

static PyObject *
TLSContext_repr(TLSContextObject *self)
{
    return PyUnicode_FromFormat("<twincore.TLSContext %s%s>",
                                self->server_side ? "server" : "client",
                                !self->server_side && !self->verify
                                    ? " insecure_no_verify"
                                    : "");
}

static PyGetSetDef TLSContext_getset[] = {
    {"server_side", (getter)TLSContext_get_server_side, NULL,
     "True for a server context.", NULL},
    {"verify", (getter)TLSContext_get_verify, NULL,
     "Clients: the server's certificate is verified. Servers: client "
     "certificates are asked for and verified.", NULL},
    {"check_hostname", (getter)TLSContext_get_check_hostname, NULL,
     "Clients: the certificate must match server_hostname.", NULL},
    {"alpn", (getter)TLSContext_get_alpn, NULL,
     "The ALPN protocols, in preference order.", NULL},
    {"minimum_version", (getter)TLSContext_get_minimum_version, NULL,
     "The lowest protocol version accepted ('TLSv1.2').", NULL},
    {"maximum_version", (getter)TLSContext_get_maximum_version, NULL,
     "The highest protocol version, or None for the newest.", NULL},
    {"client_cert", (getter)TLSContext_get_client_cert, NULL,
     "Servers: 'none', 'optional' or 'required'.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyType_Slot TLSContext_slots[] = {
    {Py_tp_new, TLSContext_new},
    {Py_tp_dealloc, TLSContext_dealloc},
    {Py_tp_traverse, TLSContext_traverse},
    {Py_tp_clear, TLSContext_clear},
    {Py_tp_getset, TLSContext_getset},
    {Py_tp_repr, TLSContext_repr},
    {Py_tp_doc,
     "TLSContext(*, server_side=False, certfile=None, keyfile=None, "
     "cafile=None, capath=None, cadata=None, verify=True, "
     "check_hostname=True, alpn=None, ciphers=None, ciphersuites=None, "
     "groups=None, require_client_cert=False, request_client_cert=False, "
     "minimum_version='TLSv1.2', maximum_version=None)\n--\n\n"
     "TLS settings for listen_tls() and connect_tls(), immutable and "
     "shareable between reactors and threads.\n\n"
     "Servers need certfile (PEM chain, leaf first) and keyfile (None: in "
     "certfile). Clients verify the server against cafile/capath/cadata or, "
     "when none is given, the system store, and check its name. verify=False "
     "turns off both checks (tests only); check_hostname=False keeps the "
     "chain check. require_client_cert / request_client_cert make a server "
     "ask for a client certificate verified against the CAs given. alpn is "
     "a list of protocol names in preference order. No compression, no "
     "renegotiation; TLS 1.2 at least unless minimum_version says "
     "otherwise."},
    {0, NULL},
};

PyType_Spec TLSContext_spec = {
    .name = "twincore._twincore.TLSContext",
    .basicsize = sizeof(TLSContextObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_BASETYPE,
    .slots = TLSContext_slots,
};

tc_tls_ctx_t *
tlscontext_native(tc_state *st, PyObject *obj, const char *method,
                  bool server_side)
{
    if (!PyObject_TypeCheck(obj, st->TLSContext_type)) {
        PyErr_Format(PyExc_TypeError,
                     "%s(): 'context' must be a twincore.TLSContext, got "
                     "%.100s",
                     method, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    TLSContextObject *c = (TLSContextObject *)obj;
    if (c->server_side != server_side) {
        PyErr_Format(PyExc_ValueError,
                     "%s(): 'context' must be a %s context "
                     "(TLSContext(server_side=%s))",
                     method, server_side ? "server" : "client",
                     server_side ? "True" : "False");
        return NULL;
    }
    return c->ctx;
}

/* ---- Reactor methods ----------------------------------------------------- */

PyObject *
reactor_listen_tls(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"port", "factory", "context", "host",
                             "backlog", "reuse_port", "handshake_timeout",
                             NULL};
    PyObject *port_obj;
    int port;
    PyObject *factory, *context;
    const char *host = "127.0.0.1";
    int backlog = 0;
    int reuse_port = 0;
    PyObject *timeout_obj = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO|zipO:listen_tls",
                                     kwlist, &port_obj, &factory, &context,
                                     &host, &backlog, &reuse_port,
                                     &timeout_obj) ||
        tcpy_port_arg(port_obj, "listen_tls", "'port'", 0, &port) < 0) {
        return NULL;
    }
    tc_state *st = reactor_state(r);
    tc_tls_ctx_t *ctx = tlscontext_native(st, context, "listen_tls", true);
    if (ctx == NULL) {
        return NULL;
    }
    uint64_t timeout_ms = 60000;
    if (timeout_obj != NULL &&
        tcpy_timeout_arg(timeout_obj, "listen_tls", "'handshake_timeout'",
                         false, &timeout_ms) < 0) {
        return NULL;
    }
    tc_server_t *server;
    if (reactor_listen_server(r, "listen_tls", host, port, backlog,
                              reuse_port, &server) < 0) {
        return NULL;
    }
    PyObject *l = listener_new(r, server, factory, false);
    if (l != NULL) {
        listener_set_tls(l, context, timeout_ms);
    }
    return l;
}

static PyObject *connect_tls(ReactorObject *r, const char *host,
                             PyObject *port_obj, PyObject *factory,
                             PyObject *on_connect, PyObject *context,
                             PyObject *server_hostname_obj,
                             PyObject *timeout_obj);

PyObject *
reactor_connect_tls(ReactorObject *r, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"host", "port", "factory", "on_connect",
                             "context", "server_hostname", "timeout", NULL};
    PyObject *host_obj, *port_obj;
    PyObject *factory, *on_connect, *context;
    PyObject *server_hostname_obj = Py_None;
    PyObject *timeout_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOOOO|OO:connect_tls",
                                     kwlist, &host_obj, &port_obj, &factory,
                                     &on_connect, &context,
                                     &server_hostname_obj, &timeout_obj)) {
        return NULL;
    }
    const char *host;
    PyObject *host_str = tcpy_host_arg(host_obj, "connect_tls", "'host'",
                                       &host);
    if (host_str == NULL) {
        return NULL;
    }
    PyObject *t = connect_tls(r, host, port_obj, factory, on_connect,
                              context, server_hostname_obj, timeout_obj);
    Py_DECREF(host_str);   /* host: copied by tc_tls_connect() */
    return t;
}

static PyObject *
connect_tls(ReactorObject *r, const char *host, PyObject *port_obj,
            PyObject *factory, PyObject *on_connect, PyObject *context,
            PyObject *server_hostname_obj, PyObject *timeout_obj)
{
    int port;
    const char *server_hostname;
    uint64_t timeout_ms;
    if (tcpy_port_arg(port_obj, "connect_tls", "'port'", 1, &port) < 0 ||
        tcpy_timeout_arg(timeout_obj, "connect_tls", "'timeout'", true,
                         &timeout_ms) < 0 ||
        tcpy_str_arg(server_hostname_obj, "connect_tls",
                     "'server_hostname'", true, &server_hostname) < 0) {
        return NULL;
    }
    tc_state *st = reactor_state(r);
    tc_tls_ctx_t *ctx = tlscontext_native(st, context, "connect_tls", false);
    if (ctx == NULL) {
        return NULL;
    }
    if (reactor_check_thread(r) < 0) {
        return NULL;
    }
    tc_tcp_connect_opts_t opts = {.timeout_ms = timeout_ms};
    tc_stream_t *s;
    reactor_sync_resolver(r);
    int err = tc_tls_connect(r->loop, host, port, ctx, server_hostname,
                             &opts, transport_on_connect, NULL, &s);
    if (err == -EINVAL && ((TLSContextObject *)context)->check_hostname &&
        (server_hostname == NULL || server_hostname[0] == '\0')) {
        PyErr_SetString(PyExc_ValueError,
                        "connect_tls(): the context checks host names: pass "
                        "server_hostname");
        return NULL;
    }
    PyObject *addr = Py_BuildValue("(si)", host, port);
    if (addr == NULL) {
        if (err == 0) {
            tc_close(tc_stream_handle(s), NULL);
        }
        return NULL;
    }
    if (err != 0) {
        tcpy_raise_at(st, err, "connect to", addr);
        Py_DECREF(addr);
        return NULL;
    }
    PyObject *t = transport_new(r, s, false);
    if (t == NULL) {
        tc_close(tc_stream_handle(s), NULL);
        Py_DECREF(addr);
        return NULL;
    }
    TransportObject *tr = (TransportObject *)t;
    tr->factory = Py_NewRef(factory);
    tr->on_connect = Py_NewRef(on_connect);
    tr->connect_to = addr;   /* named by a failed connect's error */
    return t;
}

/* ---- errors and extra info ----------------------------------------------- */

PyObject *
tls_error_object(tc_state *st, int err, tc_stream_t *s)
{
    const char *detail = s != NULL ? tc_tls_error_detail(s) : NULL;
    if (detail == NULL || err > -3000) {
        return tcpy_error_object(st, err);
    }
    PyObject *msg = PyUnicode_FromFormat("%s (%s)", tc_strerror(err), detail);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(st->Error, "iO", err, msg);
    Py_DECREF(msg);
    return exc;
}

#ifdef TCPY_HAVE_OPENSSL
/* An X509_NAME as ssl.getpeercert() shows it: ((('commonName', 'x'),),). */
static PyObject *
name_to_py(const X509_NAME *name)
{
    int n = X509_NAME_entry_count(name);
    PyObject *rdns = PyList_New(0);
    PyObject *rdn = NULL;
    int last_set = -1;
    if (rdns == NULL) {
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const X509_NAME_ENTRY *e = X509_NAME_get_entry(name, i);
        int set = X509_NAME_ENTRY_set(e);
        if (rdn != NULL && set != last_set) {
            PyObject *t = PyList_AsTuple(rdn);
            Py_CLEAR(rdn);
            if (t == NULL || PyList_Append(rdns, t) < 0) {
                Py_XDECREF(t);
                goto error;
            }
            Py_DECREF(t);
        }
        last_set = set;
        if (rdn == NULL && (rdn = PyList_New(0)) == NULL) {
            goto error;
        }
        char key[128];
        OBJ_obj2txt(key, sizeof(key), X509_NAME_ENTRY_get_object(e), 0);
        unsigned char *utf8 = NULL;
        int len = ASN1_STRING_to_UTF8(&utf8, X509_NAME_ENTRY_get_data(e));
        if (len < 0) {
            ERR_clear_error();
            PyErr_SetString(PyExc_ValueError, "undecodable name entry");
            goto error;
        }
        PyObject *pair = Py_BuildValue("(ss#)", key, utf8, (Py_ssize_t)len);
        OPENSSL_free(utf8);
        if (pair == NULL || PyList_Append(rdn, pair) < 0) {
            Py_XDECREF(pair);
            goto error;
        }
        Py_DECREF(pair);
    }
    if (rdn != NULL) {
        PyObject *t = PyList_AsTuple(rdn);
        Py_CLEAR(rdn);
        if (t == NULL || PyList_Append(rdns, t) < 0) {
            Py_XDECREF(t);
            goto error;
        }
        Py_DECREF(t);
    }
    PyObject *out = PyList_AsTuple(rdns);
    Py_DECREF(rdns);
    return out;

error:
    Py_XDECREF(rdn);
    Py_DECREF(rdns);
    return NULL;
}

static PyObject *
time_to_py(const ASN1_TIME *t)
{
    BIO *b = BIO_new(BIO_s_mem());
    if (b == NULL) {
        return PyErr_NoMemory();
    }
    PyObject *out = NULL;
    if (ASN1_TIME_print(b, t)) {
        char *text;
        long len = BIO_get_mem_data(b, &text);
        out = PyUnicode_FromStringAndSize(text, len);
    } else {
        ERR_clear_error();
        out = Py_NewRef(Py_None);
    }
    BIO_free(b);
    return out;
}

static PyObject *
san_to_py(X509 *x)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(x, NID_subject_alt_name, NULL,
                                            NULL);
    ERR_clear_error();
    if (names == NULL) {
        return NULL;   /* none: no key in the dict */
    }
    PyObject *list = PyList_New(0);
    for (int i = 0; list != NULL && i < sk_GENERAL_NAME_num(names); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        PyObject *item = NULL;
        if (g->type == GEN_DNS || g->type == GEN_EMAIL ||
            g->type == GEN_URI) {
            const char *kind = g->type == GEN_DNS     ? "DNS"
                               : g->type == GEN_EMAIL ? "email"
                                                      : "URI";
            const ASN1_IA5STRING *s = g->d.ia5;
            item = Py_BuildValue("(ss#)", kind, ASN1_STRING_get0_data(s),
                                 (Py_ssize_t)ASN1_STRING_length(s));
        } else if (g->type == GEN_IPADD) {
            const unsigned char *p = ASN1_STRING_get0_data(g->d.ip);
            int len = ASN1_STRING_length(g->d.ip);
            char text[64] = "<invalid>";
            if (len == 4) {
                snprintf(text, sizeof(text), "%d.%d.%d.%d", p[0], p[1], p[2],
                         p[3]);
            } else if (len == 16) {
                int off = 0;
                for (int k = 0; k < 16; k += 2) {
                    off += snprintf(text + off, sizeof(text) - (size_t)off,
                                    k ? ":%X" : "%X", (p[k] << 8) | p[k + 1]);
                }
            }
            item = Py_BuildValue("(ss)", "IP Address", text);
        } else {
            continue;
        }
        if (item == NULL || PyList_Append(list, item) < 0) {
            Py_XDECREF(item);
            Py_CLEAR(list);
        }
        Py_XDECREF(item);
    }
    GENERAL_NAMES_free(names);
    if (list == NULL) {
        return NULL;
    }
    PyObject *out = PyList_AsTuple(list);
    Py_DECREF(list);
    return out;
}

/* The peer certificate as ssl.SSLSocket.getpeercert() makes it. */
static PyObject *
peercert_dict(const unsigned char *der, size_t len)
{
    const unsigned char *p = der;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x == NULL) {
        ERR_clear_error();
        PyErr_SetString(PyExc_ValueError, "undecodable peer certificate");
        return NULL;
    }
    PyObject *d = PyDict_New();
    PyObject *v = NULL;
    if (d == NULL) {
        goto error;
    }
    if ((v = name_to_py(X509_get_subject_name(x))) == NULL ||
        PyDict_SetItemString(d, "subject", v) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    if ((v = name_to_py(X509_get_issuer_name(x))) == NULL ||
        PyDict_SetItemString(d, "issuer", v) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    if ((v = PyLong_FromLong(X509_get_version(x) + 1)) == NULL ||
        PyDict_SetItemString(d, "version", v) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    BN_free(bn);
    if (hex != NULL) {
        v = PyUnicode_FromString(hex);
        OPENSSL_free(hex);
        if (v == NULL || PyDict_SetItemString(d, "serialNumber", v) < 0) {
            goto error;
        }
        Py_CLEAR(v);
    }
    if ((v = time_to_py(X509_get0_notBefore(x))) == NULL ||
        PyDict_SetItemString(d, "notBefore", v) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    if ((v = time_to_py(X509_get0_notAfter(x))) == NULL ||
        PyDict_SetItemString(d, "notAfter", v) < 0) {
        goto error;
    }
    Py_CLEAR(v);
    v = san_to_py(x);
    if (v == NULL && PyErr_Occurred()) {
        goto error;
    }
    if (v != NULL && PyDict_SetItemString(d, "subjectAltName", v) < 0) {
        goto error;
    }
    Py_XDECREF(v);
    X509_free(x);
    return d;

error:
    Py_XDECREF(v);
    Py_XDECREF(d);
    X509_free(x);
    return NULL;
}
#endif

static PyObject *
peer_der(tc_stream_t *s)
{
    size_t len = 0;
    int err = tc_tls_peer_certificate_der(s, NULL, &len);
    if (err != -ENOSPC) {
        Py_RETURN_NONE;   /* no certificate */
    }
    PyObject *der = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
    if (der == NULL) {
        return NULL;
    }
    err = tc_tls_peer_certificate_der(s, (unsigned char *)PyBytes_AS_STRING(
                                             der),
                                      &len);
    if (err != 0) {
        Py_DECREF(der);
        Py_RETURN_NONE;
    }
    return der;
}

int
tls_extra_info(TransportObject *t, const char *name, PyObject **out)
{
    static const char *const names[] = {"alpn_protocol", "tls_version",
                                        "cipher", "peercert", "peercert_der",
                                        "peercert_subject", NULL};
    int which = -1;
    for (int i = 0; names[i] != NULL; i++) {
        if (strcmp(name, names[i]) == 0) {
            which = i;
            break;
        }
    }
    *out = NULL;
    if (which < 0) {
        return 0;
    }
    tc_stream_t *s = t->stream;
    if (s == NULL || !tc_tls_is_established(s)) {
        return 0;   /* the default */
    }
    const char *text;
    switch (which) {
    case 0: {
        size_t len = tc_tls_alpn_selected(s, &text);
        *out = len > 0 ? PyUnicode_FromStringAndSize(text, (Py_ssize_t)len)
                       : Py_NewRef(Py_None);
        break;
    }
    case 1:
        *out = PyUnicode_FromString(tc_tls_version(s));
        break;
    case 2:
        *out = PyUnicode_FromString(tc_tls_cipher(s));
        break;
    case 3: {
        PyObject *der = peer_der(s);
        if (der == NULL || der == Py_None) {
            *out = der;
            break;
        }
#ifdef TCPY_HAVE_OPENSSL
        *out = peercert_dict((const unsigned char *)PyBytes_AS_STRING(der),
                             (size_t)PyBytes_GET_SIZE(der));
#else
        *out = Py_NewRef(Py_None);
#endif
        Py_DECREF(der);
        break;
    }
    case 4:
        *out = peer_der(s);
        break;
    case 5: {
        char buf[1024];
        int n = tc_tls_peer_subject(s, buf, sizeof(buf));
        *out = n >= 0 ? PyUnicode_FromStringAndSize(buf, n)
                      : Py_NewRef(Py_None);
        break;
    }
    }
    return *out != NULL ? 1 : -1;
}

int
tls_module_add(PyObject *module)
{
    static const struct {
        const char *name;
        int code;
    } codes[] = {
        {"ETLS", TC_ETLS},
        {"ETLS_CERT", TC_ETLS_CERT},
        {"ETLS_HOSTNAME", TC_ETLS_HOSTNAME},
        {"ETLS_EXPIRED", TC_ETLS_EXPIRED},
        {"ETLS_UNKNOWN_CA", TC_ETLS_UNKNOWN_CA},
        {"ETLS_VERSION", TC_ETLS_VERSION},
        {"ETLS_NO_CLOSE_NOTIFY", TC_ETLS_NO_CLOSE_NOTIFY},
    };
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        if (PyModule_AddIntConstant(module, codes[i].name, codes[i].code) <
            0) {
            return -1;
        }
    }
    return PyModule_AddIntConstant(module, "HAVE_TLS", tc_tls_available());
}
