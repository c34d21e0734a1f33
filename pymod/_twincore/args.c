/* Checks of the arguments of the Reactor's methods, made once, here: the
 * Python layer passes the caller's values through unchecked (see args.h).
 * GIL: held throughout. */
#include <math.h>
#include <string.h>

#include "args.h"

int
tcpy_port_arg(PyObject *obj, const char *method, const char *name, int low,
              int *out)
{
    if (PyBool_Check(obj) || !PyLong_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be an int, got %.100s",
                     method, name, Py_TYPE(obj)->tp_name);
        return -1;
    }
    int overflow;
    long v = PyLong_AsLongAndOverflow(obj, &overflow);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (overflow != 0 || v < low || v > 65535) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must be in %d..65535, "
                     "got %R", method, name, low, obj);
        return -1;
    }
    *out = (int)v;
    return 0;
}

int
tcpy_timeout_arg(PyObject *obj, const char *method, const char *name,
                 bool none_ok, uint64_t *ms)
{
    *ms = 0;
    if (obj == Py_None && none_ok) {
        return 0;
    }
    if (PyBool_Check(obj) || !(PyLong_Check(obj) || PyFloat_Check(obj))) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a number%s, got "
                     "%.100s", method, name, none_ok ? " or None" : "",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    double v;
    if (PyLong_Check(obj)) {
        int overflow;
        long long n = PyLong_AsLongLongAndOverflow(obj, &overflow);
        if (n == -1 && PyErr_Occurred()) {
            return -1;
        }
        v = overflow > 0 ? HUGE_VAL : overflow < 0 ? -HUGE_VAL : (double)n;
    } else {
        v = PyFloat_AS_DOUBLE(obj);
    }
    if (!(v > 0.0)) {   /* NaN too */
        PyErr_Format(PyExc_ValueError, "%s(): %s must be > 0, got %R",
                     method, name, obj);
        return -1;
    }
    /* Over 31 years is no timeout at all, and would not convert to
     * milliseconds. */
    if (v > 1e9) {
        return 0;
    }
    *ms = (uint64_t)(v * 1000.0 + 0.5);
    if (*ms == 0) {
        *ms = 1;
    }
    return 0;
}

int
tcpy_str_arg(PyObject *obj, const char *method, const char *name,
             bool none_ok, const char **out)
{
    *out = NULL;
    if (obj == Py_None && none_ok) {
        return 0;
    }
    if (!PyUnicode_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s(): %s must be a str%s, got %.100s",
                     method, name, none_ok ? " or None" : "",
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
    if (s == NULL) {
        if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
            /* Lone surrogates ("\udcff"): a ValueError still. */
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "%s(): %s must be encodable as "
                         "UTF-8, got %R", method, name, obj);
        }
        return -1;
    }
    if (strlen(s) != (size_t)len) {
        PyErr_Format(PyExc_ValueError, "%s(): %s must not contain a null "
                     "character, got %R", method, name, obj);
        return -1;
    }
    *out = s;
    return 0;
}

static inline bool
is_bracket(Py_UCS4 c)
{
    return c == '[' || c == ']';
}

PyObject *
tcpy_host_arg(PyObject *obj, const char *method, const char *name,
              const char **out)
{
    const char *s;
    if (tcpy_str_arg(obj, method, name, false, &s) < 0) {
        return NULL;
    }
    Py_ssize_t start = 0;
    Py_ssize_t end = PyUnicode_GET_LENGTH(obj);
    while (start < end && is_bracket(PyUnicode_READ_CHAR(obj, start))) {
        start++;
    }
    while (end > start && is_bracket(PyUnicode_READ_CHAR(obj, end - 1))) {
        end--;
    }
    if (start == 0 && end == PyUnicode_GET_LENGTH(obj)) {
        *out = s;
        return Py_NewRef(obj);
    }
    PyObject *host = PyUnicode_Substring(obj, start, end);
    if (host == NULL) {
        return NULL;
    }
    *out = PyUnicode_AsUTF8(host);
    if (*out == NULL) {
        Py_DECREF(host);
        return NULL;
    }
    return host;
}

int
tcpy_unix_path_arg(PyObject *obj, const char *method, PyObject **out)
{
    *out = NULL;
    PyObject *path = PyOS_FSPath(obj);   /* str or bytes */
    if (path == NULL) {
        if (PyErr_ExceptionMatches(PyExc_TypeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "%s(): 'path' must be str, bytes "
                         "or os.PathLike, got %.100s", method,
                         Py_TYPE(obj)->tp_name);
        }
        return -1;
    }
    PyObject *b = PyUnicode_Check(path) ? PyUnicode_EncodeFSDefault(path)
                                        : Py_NewRef(path);
    Py_DECREF(path);
    if (b == NULL) {
        return -1;
    }
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (n > 0 && PyBytes_AS_STRING(b)[0] == '\0') {
        /* A new object (never a cached one-byte bytes) to write '@' in. */
        PyObject *copy = PyBytes_FromStringAndSize(NULL, n);
        if (copy == NULL) {
            Py_DECREF(b);
            return -1;
        }
        memcpy(PyBytes_AS_STRING(copy), PyBytes_AS_STRING(b), (size_t)n);
        PyBytes_AS_STRING(copy)[0] = '@';
        Py_SETREF(b, copy);
    }
    if (strlen(PyBytes_AS_STRING(b)) != (size_t)n) {
        PyErr_Format(PyExc_ValueError, "%s(): 'path' may hold a null byte "
                     "only first (an abstract name), got %R", method, obj);
        Py_DECREF(b);
        return -1;
    }
    *out = b;
    return 0;
}
