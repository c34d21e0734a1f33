/* twincore._twincore: multi-phase init, heap types, module state.  Every
 * type is built from its spec in one exec slot; traverse, clear and free
 * name every state field in the same order. */
#include "capi.h"
#include "cpu.h"
#include "fdwatch.h"
#include "future.h"
#include "interp.h"
#include "module.h"
#include "process.h"
#include "reactor.h"
#include "streamreader.h"
#include "timerhandle.h"
#include "tls.h"
#include "transport.h"
#include "udp.h"
#include "taskstep.h"

int
bytebuf_append(bytebuf_t *b, const void *p, size_t n)
{
    if (b->cap - b->len < n) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len < n) {
            cap *= 2;
        }
        char *data = realloc(b->data, cap);
        if (data == NULL) {
            return -ENOMEM;
        }
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void
bytebuf_free(bytebuf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int
add_type(PyObject *module, PyType_Spec *spec, PyTypeObject **slot)
{
    *slot = (PyTypeObject *)PyType_FromModuleAndSpec(module, spec, NULL);
    if (*slot == NULL) {
        return -1;
    }
    return PyModule_AddType(module, *slot);
}

static PyObject *
strerror_py(PyObject *module, PyObject *arg)
{
    (void)module;
    long code = PyLong_AsLong(arg);
    if (code == -1 && PyErr_Occurred()) {
        return NULL;
    }
    if (code < INT_MIN || code > INT_MAX) {
        return PyUnicode_FromString(tc_strerror(-EINVAL - 100000));
    }
    return PyUnicode_FromString(tc_strerror((int)code));
}

static PyMethodDef module_methods[] = {
    {"strerror", strerror_py, METH_O,
     "strerror(code, /)\n--\n\nThe message for a twincore error code."},
    {NULL, NULL, 0, NULL},
};

static int
module_exec(PyObject *module)
{
    tc_state *st = state_of_module(module);
    if (add_type(module, &Reactor_spec, &st->Reactor_type) < 0 ||
        add_type(module, &Transport_spec, &st->Transport_type) < 0 ||
        add_type(module, &Listener_spec, &st->Listener_type) < 0 ||
        add_type(module, &TimerHandle_spec, &st->TimerHandle_type) < 0 ||
        add_type(module, &DatagramTransport_spec,
                 &st->DatagramTransport_type) < 0 ||
        add_type(module, &CpuPool_spec, &st->CpuPool_type) < 0 ||
        add_type(module, &CpuTask_spec, &st->CpuTask_type) < 0 ||
        add_type(module, &Future_spec, &st->Future_type) < 0 ||
        add_type(module, &FutureIter_spec, &st->FutureIter_type) < 0 ||
        add_type(module, &TLSContext_spec, &st->TLSContext_type) < 0 ||
        add_type(module, &FdWatcher_spec, &st->FdWatcher_type) < 0 ||
        add_type(module, &ProcessTransport_spec,
                 &st->ProcessTransport_type) < 0 ||
        add_type(module, &StreamReader_spec, &st->StreamReader_type) < 0 ||
        add_type(module, &ReadLine_spec, &st->ReadLine_type) < 0 ||
        tls_module_add(module) < 0 || taskstep_module_add(module) < 0 ||
        streams_module_add(module) < 0) {
        return -1;
    }
#if PY_VERSION_HEX >= 0x030C0000
    if (add_type(module, &InterpreterPool_spec,
                 &st->InterpreterPool_type) < 0) {
        return -1;
    }
#endif
    st->Error = PyErr_NewExceptionWithDoc(
        "twincore.Error",
        "A twincore failure that has no errno (TLS, name resolution).\n"
        "args are (code, message); code is a negative twincore code.",
        PyExc_OSError, NULL);
    if (st->Error == NULL || PyModule_AddObjectRef(module, "Error",
                                                   st->Error) < 0) {
        return -1;
    }
    PyObject *asyncio = PyImport_ImportModule("asyncio");
    if (asyncio == NULL) {
        return -1;
    }
    st->CancelledError = PyObject_GetAttrString(asyncio, "CancelledError");
    st->InvalidStateError = PyObject_GetAttrString(asyncio,
                                                   "InvalidStateError");
    Py_DECREF(asyncio);
    if (st->CancelledError == NULL || st->InvalidStateError == NULL ||
        PyModule_AddObjectRef(module, "CancelledError",
                              st->CancelledError) < 0 ||
        PyModule_AddObjectRef(module, "InvalidStateError",
                              st->InvalidStateError) < 0) {
        return -1;
    }
    PyObject *capsule = capi_capsule();
    if (capsule == NULL || PyModule_AddObject(module, "_C_API", capsule) < 0) {
        Py_XDECREF(capsule);
        return -1;
    }
    PyObject *logging = PyImport_ImportModule("logging");
    if (logging == NULL) {
        return -1;
    }
    st->logger = PyObject_CallMethod(logging, "getLogger", "s", "twincore");
    Py_DECREF(logging);
    if (st->logger == NULL) {
        return -1;
    }
    st->str_data_received = PyUnicode_InternFromString("data_received");
    if (st->str_data_received == NULL) {
        return -1;
    }
    st->str_eof_received = PyUnicode_InternFromString("eof_received");
    if (st->str_eof_received == NULL) {
        return -1;
    }
    st->str_connection_made = PyUnicode_InternFromString("connection_made");
    if (st->str_connection_made == NULL) {
        return -1;
    }
    st->str_connection_lost = PyUnicode_InternFromString("connection_lost");
    if (st->str_connection_lost == NULL) {
        return -1;
    }
    st->str_pause_writing = PyUnicode_InternFromString("pause_writing");
    if (st->str_pause_writing == NULL) {
        return -1;
    }
    st->str_resume_writing = PyUnicode_InternFromString("resume_writing");
    if (st->str_resume_writing == NULL) {
        return -1;
    }
    st->str_build_protocol = PyUnicode_InternFromString("build_protocol");
    if (st->str_build_protocol == NULL) {
        return -1;
    }
    st->str_datagram_received = PyUnicode_InternFromString("datagram_received");
    if (st->str_datagram_received == NULL) {
        return -1;
    }
    st->str_error_received = PyUnicode_InternFromString("error_received");
    if (st->str_error_received == NULL) {
        return -1;
    }
    if (PyModule_AddIntConstant(module, "PRIORITY_HIGH", TC_PRIORITY_HIGH) ||
        PyModule_AddIntConstant(module, "PRIORITY_NORMAL",
                                TC_PRIORITY_NORMAL) ||
        PyModule_AddIntConstant(module, "PRIORITY_LOW", TC_PRIORITY_LOW) ||
        PyModule_AddIntConstant(module, "EOF", TC_EOF)) {
        return -1;
    }
    return 0;
}

static int
module_traverse(PyObject *module, visitproc visit, void *arg)
{
    tc_state *st = state_of_module(module);
    Py_VISIT(st->Reactor_type);
    Py_VISIT(st->Transport_type);
    Py_VISIT(st->Listener_type);
    Py_VISIT(st->TimerHandle_type);
    Py_VISIT(st->DatagramTransport_type);
    Py_VISIT(st->CpuPool_type);
    Py_VISIT(st->CpuTask_type);
    Py_VISIT(st->Future_type);
    Py_VISIT(st->FutureIter_type);
    Py_VISIT(st->TLSContext_type);
    Py_VISIT(st->FdWatcher_type);
    Py_VISIT(st->ProcessTransport_type);
    Py_VISIT(st->InterpreterPool_type);
    Py_VISIT(st->StreamReader_type);
    Py_VISIT(st->ReadLine_type);
    Py_VISIT(st->CancelledError);
    Py_VISIT(st->InvalidStateError);
    Py_VISIT(st->Error);
    Py_VISIT(st->logger);
    Py_VISIT(st->str_data_received);
    Py_VISIT(st->str_eof_received);
    Py_VISIT(st->str_connection_made);
    Py_VISIT(st->str_connection_lost);
    Py_VISIT(st->str_pause_writing);
    Py_VISIT(st->str_resume_writing);
    Py_VISIT(st->str_build_protocol);
    Py_VISIT(st->str_datagram_received);
    Py_VISIT(st->str_error_received);
    return 0;
}

static int
module_clear(PyObject *module)
{
    tc_state *st = state_of_module(module);
    Py_CLEAR(st->Reactor_type);
    Py_CLEAR(st->Transport_type);
    Py_CLEAR(st->Listener_type);
    Py_CLEAR(st->TimerHandle_type);
    Py_CLEAR(st->DatagramTransport_type);
    Py_CLEAR(st->CpuPool_type);
    Py_CLEAR(st->CpuTask_type);
    Py_CLEAR(st->Future_type);
    Py_CLEAR(st->FutureIter_type);
    Py_CLEAR(st->TLSContext_type);
    Py_CLEAR(st->FdWatcher_type);
    Py_CLEAR(st->ProcessTransport_type);
    Py_CLEAR(st->InterpreterPool_type);
    Py_CLEAR(st->StreamReader_type);
    Py_CLEAR(st->ReadLine_type);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->InvalidStateError);
    Py_CLEAR(st->Error);
    Py_CLEAR(st->logger);
    Py_CLEAR(st->str_data_received);
    Py_CLEAR(st->str_eof_received);
    Py_CLEAR(st->str_connection_made);
    Py_CLEAR(st->str_connection_lost);
    Py_CLEAR(st->str_pause_writing);
    Py_CLEAR(st->str_resume_writing);
    Py_CLEAR(st->str_build_protocol);
    Py_CLEAR(st->str_datagram_received);
    Py_CLEAR(st->str_error_received);
    return 0;
}

static void
module_free(void *module)
{
    module_clear((PyObject *)module);
}

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    /* All state is per module and the C library's own is thread-safe: an
     * interpreter with its own GIL may import us. */
    {Py_mod_multiple_interpreters, Py_MOD_PER_INTERPRETER_GIL_SUPPORTED},
#endif
    {0, NULL},
};

PyModuleDef tc_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "twincore._twincore",
    .m_doc = "The C core of twincore: reactor, transports, timers, CPU pool.",
    .m_size = sizeof(tc_state),
    .m_methods = module_methods,
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__twincore(void)
{
    return PyModuleDef_Init(&tc_module);
}
