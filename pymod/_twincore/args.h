/* Checks of the arguments of the Reactor's methods (args.c), made once, in
 * C: each error names the method and the argument, e.g.
 * "listen_tcp(): 'port' must be an int, got str".  method: "listen_tcp";
 * name: how the message names the argument ("'port'", "the port of
 * 'bind'").  Each returns 0, or -1 with TypeError or ValueError set.
 * GIL: held. */
#ifndef TWINCORE_PYMOD_ARGS_H
#define TWINCORE_PYMOD_ARGS_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdbool.h>
#include <stdint.h>

/* A port: an int, not a bool, in low..65535. */
int tcpy_port_arg(PyObject *obj, const char *method, const char *name,
                  int low, int *out);

/* A timeout in seconds: None when none_ok (*ms = 0: none), else an int or
 * float, not a bool, > 0 (NaN is not).  Over 1e9 s (infinity too) is no
 * timeout (*ms = 0); a positive one rounds to at least 1 ms. */
int tcpy_timeout_arg(PyObject *obj, const char *method, const char *name,
                     bool none_ok, uint64_t *ms);

/* A str without NUL characters, or None when none_ok (*out = NULL).  *out
 * is its UTF-8, borrowed from obj. */
int tcpy_str_arg(PyObject *obj, const char *method, const char *name,
                 bool none_ok, const char **out);

/* A host: tcpy_str_arg() of obj without the brackets of "[::1]" (every
 * '[' and ']' at either end, as str.strip("[]")).  Returns a new ref to
 * the stripped str (its UTF-8 in *out), or NULL. */
PyObject *tcpy_host_arg(PyObject *obj, const char *method, const char *name,
                        const char **out);

/* A Unix socket path: str, bytes or os.PathLike, in the file system's
 * encoding.  A leading NUL names Linux's abstract namespace, as in the
 * socket module; it becomes the C API's '@' (which is accepted too); a NUL
 * anywhere else is a ValueError.  *out: a new ref to the bytes. */
int tcpy_unix_path_arg(PyObject *obj, const char *method, PyObject **out);

#endif
