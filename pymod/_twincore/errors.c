/* From tc codes to Python exceptions, and logging of exceptions that user
 * callbacks raise.  A negated errno becomes OSError(errno, message), so
 * Python picks ConnectionResetError and friends; codes errno lacks become
 * twincore.Error(code, message).  GIL: held throughout. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "errors.h"
#include "module.h"

PyObject *
tcpy_error_object(tc_state *st, int err)
{
    assert(PyGILState_Check());
    PyObject *cls = (err <= -3000 || err >= 0) ? st->Error : PyExc_OSError;
    int code = (err <= -3000 || err >= 0) ? err : -err;
    return PyObject_CallFunction(cls, "is", code, tc_strerror(err));
}

PyObject *
tcpy_raise(tc_state *st, int err)
{
    PyObject *exc = tcpy_error_object(st, err);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

PyObject *
tcpy_error_at(tc_state *st, int err, const char *attempt, PyObject *addr)
{
    assert(PyGILState_Check());
    PyObject *cls = (err <= -3000 || err >= 0) ? st->Error : PyExc_OSError;
    int code = (err <= -3000 || err >= 0) ? err : -err;
    /* asyncio's wording: "... address ('127.0.0.1', 80): address already
     * in use", the reason in lower case; from 3.13 on asyncio lowers
     * str(exc), so an errno reason begins "[errno 98] " there. */
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *reason = cls == PyExc_OSError
                           ? PyUnicode_FromFormat("[Errno %d] %s", code,
                                                  tc_strerror(err))
                           : PyUnicode_FromString(tc_strerror(err));
#else
    PyObject *reason = PyUnicode_FromString(tc_strerror(err));
#endif
    PyObject *lower = reason ? PyObject_CallMethod(reason, "lower", NULL)
                             : NULL;
    Py_XDECREF(reason);
    if (lower == NULL) {
        return NULL;
    }
    PyObject *msg = PyUnicode_FromFormat("error while attempting to %s %R: "
                                         "%U", attempt, addr, lower);
    Py_DECREF(lower);
    if (msg == NULL) {
        return NULL;
    }
    PyObject *exc = PyObject_CallFunction(cls, "iO", code, msg);
    Py_DECREF(msg);
    return exc;
}

PyObject *
tcpy_raise_at(tc_state *st, int err, const char *attempt, PyObject *addr)
{
    PyObject *exc = tcpy_error_at(st, err, attempt, addr);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

/* 3.11 has no PyErr_GetRaisedException: fetch, normalise, attach tb. */
PyObject *
tcpy_fetch_exception(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

void
tcpy_restore_exception(PyObject *exc)
{
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    Py_DECREF(exc);
}

void
tcpy_log_current(tc_state *st, const char *context)
{
    assert(PyGILState_Check());
    PyObject *exc = tcpy_fetch_exception();
    if (exc == NULL) {
        return;
    }
    if (PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt) ||
        PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)) {
        tcpy_restore_exception(exc);   /* these stop the reactor */
        return;
    }
    PyObject *res = NULL;
    if (st != NULL && st->logger != NULL) {
        PyObject *kwargs = Py_BuildValue("{sO}", "exc_info", exc);
        PyObject *meth = PyObject_GetAttrString(st->logger, "error");
        PyObject *args = Py_BuildValue("(ss)", "twincore: exception in %s",
                                       context);
        if (kwargs != NULL && meth != NULL && args != NULL) {
            res = PyObject_Call(meth, args, kwargs);
        }
        Py_XDECREF(kwargs);
        Py_XDECREF(meth);
        Py_XDECREF(args);
    }
    if (res == NULL) {
        /* Logging itself failed: never lose the original error. */
        PyErr_Clear();
        tcpy_restore_exception(exc);
        PyErr_WriteUnraisable(NULL);
        return;
    }
    Py_DECREF(res);
    Py_DECREF(exc);
}

PyObject *
tcpy_sockaddr_to_py(const struct sockaddr *sa, socklen_t len)
{
    char host[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &sin->sin_addr, host, sizeof(host));
        return Py_BuildValue("(si)", host, ntohs(sin->sin_port));
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &sin6->sin6_addr, host, sizeof(host));
        return Py_BuildValue("(siII)", host, ntohs(sin6->sin6_port),
                             ntohl(sin6->sin6_flowinfo),
                             sin6->sin6_scope_id);
    }
    if (sa->sa_family == AF_UNIX) {
        char buf[sizeof(struct sockaddr_un) + 2];
        if (tc_sockaddr_format(sa, len, buf, sizeof(buf)) == 0) {
            return PyUnicode_DecodeFSDefault(buf);
        }
        return PyUnicode_FromString("");
    }
    Py_RETURN_NONE;
}

PyObject *
tcpy_raise_thrown(PyObject *args)
{
    PyObject *type, *value = NULL, *tb = NULL;
    if (!PyArg_UnpackTuple(args, "throw", 1, 3, &type, &value, &tb)) {
        return NULL;
    }
    if (PyExceptionInstance_Check(type)) {
        PyErr_SetObject((PyObject *)Py_TYPE(type), type);
    } else if (PyExceptionClass_Check(type)) {
        PyErr_SetObject(type, value);
    } else {
        PyErr_SetString(PyExc_TypeError, "throw(): exceptions must be "
                                         "classes or instances deriving "
                                         "from BaseException");
        return NULL;
    }
    if (tb != NULL && PyTraceBack_Check(tb)) {
        PyObject *t, *v, *old_tb;
        PyErr_Fetch(&t, &v, &old_tb);
        Py_XDECREF(old_tb);
        PyErr_Restore(t, v, Py_NewRef(tb));
    }
    return NULL;
}
