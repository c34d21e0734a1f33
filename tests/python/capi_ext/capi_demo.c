/* A third-party extension using twincore's capsule C API: hashes a buffer
 * (FNV-1a, 64 bits) on twincore's CPU pool without the GIL and returns a
 * twincore Future of the digest.  Built by the test suite only. */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "twincore_capi.h"

typedef struct job {
    char *data;
    size_t len;
    unsigned long long digest;
    int fail;               /* make work() return an error */
} job_t;

/* Thread: worker, GIL: none. */
static int
fnv_work(void *arg)
{
    job_t *job = arg;
    if (job->fail) {
        return -EIO;
    }
    unsigned long long h = 14695981039346656037ull;
    for (size_t i = 0; i < job->len; i++) {
        h ^= (unsigned char)job->data[i];
        h *= 1099511628211ull;
    }
    job->digest = h;
    return 0;
}

/* Reactor thread, GIL: held.  Called once; frees the job. */
static PyObject *
fnv_to_python(void *arg, int status)
{
    job_t *job = arg;
    PyObject *res = NULL;
    if (status == 0) {
        res = PyLong_FromUnsignedLongLong(job->digest);
    } else {
        errno = -status;
        PyErr_SetFromErrno(PyExc_OSError);
    }
    free(job->data);
    free(job);
    return res;
}

static PyObject *
fnv1a(PyObject *module, PyObject *args)
{
    (void)module;
    PyObject *reactor;
    Py_buffer view;
    int fail = 0;
    if (!PyArg_ParseTuple(args, "Oy*|p:fnv1a", &reactor, &view, &fail)) {
        return NULL;
    }
    const twincore_capi_t *tc = twincore_capi_import();
    if (tc == NULL) {
        PyBuffer_Release(&view);
        return NULL;
    }
    job_t *job = calloc(1, sizeof(*job));
    char *copy = malloc(view.len ? (size_t)view.len : 1);
    if (job == NULL || copy == NULL) {
        free(job);
        free(copy);
        PyBuffer_Release(&view);
        return PyErr_NoMemory();
    }
    memcpy(copy, view.buf, (size_t)view.len);
    job->data = copy;
    job->len = (size_t)view.len;
    job->fail = fail;
    PyBuffer_Release(&view);
    PyObject *fut = tc->defer_native(reactor, fnv_work, fnv_to_python, job,
                                     TWINCORE_PRIORITY_NORMAL);
    if (fut == NULL) {
        free(job->data);
        free(job);
    }
    return fut;
}

static PyObject *
loop_and_pool(PyObject *module, PyObject *reactor)
{
    (void)module;
    const twincore_capi_t *tc = twincore_capi_import();
    if (tc == NULL) {
        return NULL;
    }
    if (tc->reactor_loop(reactor) == NULL || tc->pool_of(reactor) == NULL) {
        return NULL;
    }
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"fnv1a", fnv1a, METH_VARARGS,
     "fnv1a(reactor, data, fail=False) -> Future of the FNV-1a digest"},
    {"loop_and_pool", loop_and_pool, METH_O, NULL},
    {NULL, NULL, 0, NULL},
};

static PyModuleDef_Slot slots[] = {{0, NULL}};

static PyModuleDef capi_demo_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "capi_demo",
    .m_doc = "Uses twincore's C API from another extension.",
    .m_size = 0,
    .m_methods = methods,
    .m_slots = slots,
};

PyMODINIT_FUNC
PyInit_capi_demo(void)
{
    return PyModuleDef_Init(&capi_demo_module);
}
