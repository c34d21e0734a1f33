/* _TaskStep: one step of twincore's Task (twincore._Task) in C.
 *
 * A task resumes its coroutine once per awaited Future: a stream's read
 * waits once per line, so the step is a hot path.  In Python it cost three
 * frames (the step, _wait_for, the resume closure) and two new closures per
 * wait; here a _TaskStep made once per task does the step and, when the
 * coroutine awaits a twincore Future of the task's reactor (or of none),
 * the waiting: its own bound _resume/_resume_failure become the Future's
 * callbacks and queue the next step with call_soon.  Everything else (an
 * asyncio future, a Deferred, a Future of another reactor, something not
 * awaitable) goes to the task's Python _wait_for, unchanged.
 *
 * The step is the Python one it replaces, statement for statement: a done
 * task is left alone; _waiting is cleared; a pending cancel() is thrown in
 * as CancelledError; the thread-local _running.task names the task while
 * its coroutine runs (timeout() reads it) and during the settling that
 * ends it; StopIteration settles the task, CancelledError cancels it
 * (Future.cancel, with the message), KeyboardInterrupt and SystemExit fail
 * it and propagate, anything else fails it.  Once the task has ended the
 * step drops its references, so task and step are not a cycle for the GC.
 * GIL: held; the task's reactor thread (call_soon checks it). */
#include "future.h"
#include "reactor.h"
#include "taskstep.h"

/* The interned names of the hot path, in the module's "_taskstep_names"
 * tuple; each step holds the tuple. */
enum {
    N_WAITING,
    N_MUST_CANCEL,
    N_DICT,
    N_TASK,
    N_THROW,
    N_SET_RESULT,
    N_SET_EXCEPTION,
    N_HANDLED,
    N_WAIT_FOR,
    N_COUNT
};
static const char *const name_strings[N_COUNT] = {
    "_waiting", "_must_cancel", "__dict__", "task", "throw",
    "set_result", "set_exception", "_handled", "_wait_for",
};

typedef struct TaskStepObject {
    PyObject_HEAD
    PyObject *task;             /* NULL once the task has ended */
    PyObject *coro;
    PyObject *running;          /* twincore's threading.local */
    ReactorObject *reactor;
    PyObject *resume;           /* bound _resume, _resume_failure */
    PyObject *resume_failure;
    PyObject *names;            /* tuple, N_COUNT interned str */
} TaskStepObject;

static inline PyObject *
name(TaskStepObject *self, int i)
{
    return PyTuple_GET_ITEM(self->names, i);
}

/* Drop what ties the step to the task: it has ended. */
static void
release(TaskStepObject *self)
{
    Py_CLEAR(self->task);
    Py_CLEAR(self->coro);
    Py_CLEAR(self->resume);
    Py_CLEAR(self->resume_failure);
}

static PyObject *
call_method1(TaskStepObject *self, PyObject *obj, int n, PyObject *arg)
{
    PyObject *args[2] = {obj, arg};
    return PyObject_VectorcallMethod(name(self, n), args,
                                     2 | PY_VECTORCALL_ARGUMENTS_OFFSET,
                                     NULL);
}

/* 1 done, 0 not (the Future's own done(): _Task does not change it). */
static int
task_done(TaskStepObject *self, PyObject *task)
{
    (void)self;
    return !future_is_pending(task);
}

/* Settles the task after its coroutine raised (the error is set).  Returns
 * 0, or -1 with an exception set that the step must propagate. */
static int
settle_from_error(TaskStepObject *self, PyObject *task)
{
    tc_state *st = reactor_state(self->reactor);
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    PyObject *res = NULL;
    int rc = 0;
    if (PyErr_GivenExceptionMatches(type, PyExc_StopIteration)) {
        PyObject *ret = PyObject_GetAttrString(value, "value");
        if (ret != NULL) {
            res = call_method1(self, task, N_SET_RESULT, ret);
            Py_DECREF(ret);
        }
    } else if (PyErr_GivenExceptionMatches(type, st->CancelledError)) {
        /* Future.cancel(task, *err.args[:1]): the base's, not _Task's. */
        PyObject *cancel = PyObject_GetAttrString(
            (PyObject *)st->Future_type, "cancel");
        PyObject *args = PyObject_GetAttrString(value, "args");
        if (cancel != NULL && args != NULL && PyTuple_Check(args)) {
            PyObject *call[2] = {task, PyTuple_GET_SIZE(args) > 0
                                           ? PyTuple_GET_ITEM(args, 0)
                                           : NULL};
            res = PyObject_Vectorcall(cancel, call, call[1] ? 2 : 1, NULL);
        } else if (args != NULL && !PyTuple_Check(args)) {
            PyErr_SetString(PyExc_TypeError, "CancelledError.args is not "
                                             "a tuple");
        }
        Py_XDECREF(cancel);
        Py_XDECREF(args);
    } else if (PyErr_GivenExceptionMatches(type, PyExc_KeyboardInterrupt) ||
               PyErr_GivenExceptionMatches(type, PyExc_SystemExit)) {
        /* The coroutine has ended: fail the task (run() reports the
         * exception itself), then stop the reactor with it. */
        if (PyObject_SetAttr(task, name(self, N_HANDLED), Py_True) == 0) {
            res = call_method1(self, task, N_SET_EXCEPTION, value);
        }
        if (res != NULL) {
            Py_DECREF(res);
            PyErr_Restore(type, value, tb);
            return -1;
        }
    } else {
        res = call_method1(self, task, N_SET_EXCEPTION, value);
    }
    if (res == NULL) {
        rc = -1;
    }
    Py_XDECREF(res);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return rc;
}

/* Waits for what the coroutine yielded (a new reference, consumed). */
static int
wait_for(TaskStepObject *self, PyObject *task, PyObject *yielded)
{
    tc_state *st = reactor_state(self->reactor);
    int rc = -1;
    if (PyObject_TypeCheck(yielded, st->Future_type)) {
        /* Any Future (a _Task too): the chain is the base type's. */
        PyObject *owner = future_reactor(yielded);
        if (owner == NULL || owner == (PyObject *)self->reactor) {
            if (PyObject_SetAttr(task, name(self, N_WAITING), yielded) < 0 ||
                future_add_callbacks(yielded, self->resume,
                                     self->resume_failure) < 0) {
                goto done;
            }
            /* The coroutine sees the failure: it is handled there. */
            future_set_handled(yielded);
            rc = 0;
            goto done;
        }
    }
    PyObject *res = call_method1(self, task, N_WAIT_FOR, yielded);
    if (res != NULL) {
        Py_DECREF(res);
        rc = 0;
    }
done:
    Py_DECREF(yielded);
    return rc;
}

/* One step: value sent in, or exc (not None) thrown in. */
static PyObject *
step(TaskStepObject *self, PyObject *value, PyObject *exc)
{
    PyObject *task = self->task;
    if (task == NULL) {
        Py_RETURN_NONE;     /* ended */
    }
    Py_INCREF(task);
    PyObject *coro = Py_NewRef(self->coro);
    PyObject *cancelled = NULL, *dict = NULL, *outer = NULL;
    PyObject *yielded = NULL;
    PyObject *result = NULL;
    bool ended = false;

    int done = task_done(self, task);
    if (done != 0) {
        if (done > 0) {
            release(self);
            result = Py_NewRef(Py_None);
        }
        goto out;
    }
    if (PyObject_SetAttr(task, name(self, N_WAITING), Py_None) < 0) {
        goto out;
    }
    PyObject *must = PyObject_GetAttr(task, name(self, N_MUST_CANCEL));
    int must_cancel = must != NULL ? PyObject_IsTrue(must) : -1;
    Py_XDECREF(must);
    if (must_cancel < 0) {
        goto out;
    }
    if (must_cancel) {
        if (PyObject_SetAttr(task, name(self, N_MUST_CANCEL), Py_False) < 0) {
            goto out;
        }
        cancelled = PyObject_CallNoArgs(
            reactor_state(self->reactor)->CancelledError);
        if (cancelled == NULL) {
            goto out;
        }
        exc = cancelled;
    }
    /* _running.task = task for the coroutine; the outer one after. */
    dict = PyObject_GetAttr(self->running, name(self, N_DICT));
    if (dict == NULL || !PyDict_Check(dict)) {
        if (dict != NULL) {
            PyErr_SetString(PyExc_TypeError, "_TaskStep: running.__dict__ "
                                             "is not a dict");
        }
        goto out;
    }
    outer = PyDict_GetItemWithError(dict, name(self, N_TASK));
    if (outer == NULL && PyErr_Occurred()) {
        goto out;
    }
    outer = Py_NewRef(outer != NULL ? outer : Py_None);
    if (PyDict_SetItem(dict, name(self, N_TASK), task) < 0) {
        goto out;
    }

    PySendResult sent;
    if (exc != Py_None) {
        yielded = call_method1(self, coro, N_THROW, exc);
        sent = yielded != NULL ? PYGEN_NEXT : PYGEN_ERROR;
    } else {
        sent = PyIter_Send(coro, value, &yielded);
    }
    int rc = 0;
    if (sent == PYGEN_RETURN) {
        PyObject *res = call_method1(self, task, N_SET_RESULT, yielded);
        Py_CLEAR(yielded);
        rc = res != NULL ? 0 : -1;
        Py_XDECREF(res);
        ended = true;
    } else if (sent == PYGEN_ERROR) {
        rc = settle_from_error(self, task);
        ended = true;
    }
    /* finally: _running.task = outer (keeping any error in flight). */
    PyObject *type, *val, *tb;
    PyErr_Fetch(&type, &val, &tb);
    if (PyDict_SetItem(dict, name(self, N_TASK), outer) < 0) {
        Py_XDECREF(type);
        Py_XDECREF(val);
        Py_XDECREF(tb);
        Py_CLEAR(yielded);
        goto out;
    }
    PyErr_Restore(type, val, tb);
    if (rc < 0) {
        goto out;
    }
    if (yielded != NULL) {
        rc = wait_for(self, task, yielded);   /* consumes yielded */
        yielded = NULL;
        if (rc < 0) {
            goto out;
        }
    }
    result = Py_NewRef(Py_None);
out:
    if (ended) {
        release(self);
    }
    Py_XDECREF(yielded);
    Py_XDECREF(outer);
    Py_XDECREF(dict);
    Py_XDECREF(cancelled);
    Py_DECREF(coro);
    Py_DECREF(task);
    return result;
}

static PyObject *
TaskStep_call(TaskStepObject *self, PyObject *args, PyObject *kwargs)
{
    PyObject *value, *exc;
    if ((kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) ||
        !PyArg_UnpackTuple(args, "_TaskStep", 2, 2, &value, &exc)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError,
                            "_TaskStep() takes no keyword arguments");
        }
        return NULL;
    }
    return step(self, value, exc);
}

/* Queue the next step on the task's reactor (never run it in the middle
 * of the Future's callbacks). */
static int
queue_step(TaskStepObject *self, PyObject *value, PyObject *exc)
{
    if (self->reactor == NULL) {    /* cleared by the GC */
        PyErr_SetString(PyExc_RuntimeError, "_TaskStep: cleared");
        return -1;
    }
    if (reactor_check_thread(self->reactor) < 0) {
        return -1;
    }
    PyObject *args = PyTuple_Pack(2, value, exc);
    if (args == NULL) {
        return -1;
    }
    int rc = reactor_call_soon_obj(self->reactor, (PyObject *)self, args);
    Py_DECREF(args);
    if (rc == 0) {
        reactor_wake(self->reactor);
    }
    return rc;
}

static PyObject *
TaskStep_resume(TaskStepObject *self, PyObject *result)
{
    if (queue_step(self, result, Py_None) < 0) {
        return NULL;
    }
    return Py_NewRef(result);
}

static PyObject *
TaskStep_resume_failure(TaskStepObject *self, PyObject *exc)
{
    if (queue_step(self, Py_None, exc) < 0) {
        return NULL;
    }
    /* The chain stays failed (as the Python errback's `raise exc`). */
    PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    return NULL;
}

static PyMethodDef resume_def = {
    "_resume", (PyCFunction)TaskStep_resume, METH_O,
    "_resume($self, result, /)\n--\n\nThe awaited Future's callback: "
    "queue the step that sends result in."};
static PyMethodDef resume_failure_def = {
    "_resume_failure", (PyCFunction)TaskStep_resume_failure, METH_O,
    "_resume_failure($self, exc, /)\n--\n\nThe awaited Future's errback: "
    "queue the step that throws exc in."};

static PyObject *
TaskStep_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *kwlist[] = {"task", "coro", "running", NULL};
    PyObject *task, *coro, *running;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OOO:_TaskStep", kwlist,
                                     &task, &coro, &running)) {
        return NULL;
    }
    PyObject *module = PyType_GetModuleByDef(type, &tc_module);
    if (module == NULL) {
        return NULL;
    }
    tc_state *st = state_of_module(module);
    if (!PyObject_TypeCheck(task, st->Future_type)) {
        PyErr_Format(PyExc_TypeError,
                     "_TaskStep(): 'task' must be a twincore Future, got "
                     "%.100s", Py_TYPE(task)->tp_name);
        return NULL;
    }
    TaskStepObject *self = (TaskStepObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    PyObject *reactor = PyObject_GetAttrString(task, "_reactor");
    if (reactor == NULL) {
        goto fail;
    }
    if (!PyObject_TypeCheck(reactor, st->Reactor_type)) {
        PyErr_Format(PyExc_TypeError,
                     "_TaskStep(): the task's Future must belong to a "
                     "Reactor, got %.100s", Py_TYPE(reactor)->tp_name);
        Py_DECREF(reactor);
        goto fail;
    }
    self->reactor = (ReactorObject *)reactor;
    self->names = PyObject_GetAttrString(module, "_taskstep_names");
    if (self->names == NULL) {
        goto fail;
    }
    self->task = Py_NewRef(task);
    self->coro = Py_NewRef(coro);
    self->running = Py_NewRef(running);
    self->resume = PyCFunction_New(&resume_def, (PyObject *)self);
    self->resume_failure = PyCFunction_New(&resume_failure_def,
                                           (PyObject *)self);
    if (self->resume == NULL || self->resume_failure == NULL) {
        goto fail;
    }
    return (PyObject *)self;
fail:
    Py_DECREF(self);
    return NULL;
}

static int
TaskStep_traverse(TaskStepObject *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    Py_VISIT(self->task);
    Py_VISIT(self->coro);
    Py_VISIT(self->running);
    Py_VISIT(self->reactor);
    Py_VISIT(self->resume);
    Py_VISIT(self->resume_failure);
    Py_VISIT(self->names);
    return 0;
}

static int
TaskStep_clear(TaskStepObject *self)
{
    release(self);
    Py_CLEAR(self->running);
    Py_CLEAR(self->reactor);
    Py_CLEAR(self->names);
    return 0;
}

static void
TaskStep_dealloc(TaskStepObject *self)
{
    PyTypeObject *type = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    TaskStep_clear(self);
    type->tp_free(self);
    Py_DECREF(type);
}

static PyObject *
TaskStep_repr(TaskStepObject *self)
{
    if (self->task == NULL) {
        return PyUnicode_FromString("<_TaskStep ended>");
    }
    return PyUnicode_FromFormat("<_TaskStep of %R>", self->coro);
}

static PyType_Slot TaskStep_slots[] = {
    {Py_tp_doc, "_TaskStep(task, coro, running)\n--\n\n"
                "The step of a twincore task, called as step(value, exc) "
                "(exc None: send value in); internal."},
    {Py_tp_new, TaskStep_new},
    {Py_tp_call, TaskStep_call},
    {Py_tp_traverse, TaskStep_traverse},
    {Py_tp_clear, TaskStep_clear},
    {Py_tp_dealloc, TaskStep_dealloc},
    {Py_tp_repr, TaskStep_repr},
    {0, NULL},
};

static PyType_Spec TaskStep_spec = {
    .name = "twincore._twincore._TaskStep",
    .basicsize = sizeof(TaskStepObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE,
    .slots = TaskStep_slots,
};

int
taskstep_module_add(PyObject *module)
{
    PyObject *names = PyTuple_New(N_COUNT);
    if (names == NULL) {
        return -1;
    }
    for (int i = 0; i < N_COUNT; i++) {
        PyObject *s = PyUnicode_InternFromString(name_strings[i]);
        if (s == NULL) {
            Py_DECREF(names);
            return -1;
        }
        PyTuple_SET_ITEM(names, i, s);
    }
    if (PyModule_AddObject(module, "_taskstep_names", names) < 0) {
        Py_DECREF(names);
        return -1;
    }
    PyObject *type = PyType_FromModuleAndSpec(module, &TaskStep_spec, NULL);
    if (type == NULL) {
        return -1;
    }
    int rc = PyModule_AddType(module, (PyTypeObject *)type);
    Py_DECREF(type);
    return rc;
}
