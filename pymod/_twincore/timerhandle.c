/* TimerHandle: what call_later() returns.  While armed, the timer holds a
 * reference to its TimerHandle, listed on the reactor (reactor_hold), so a
 * timer fires even if the caller dropped it, and the GC sees the cycle
 * through the reactor; a generation number makes a fire that was queued
 * before cancel()/reset() a no-op.  Once the reactor is closed its loop
 * and every timer on it are gone: code here checks reactor->loop before
 * it touches th->timer. */
#include "dispatch.h"
#include "errors.h"
#include "module.h"
#include "reactor.h"
#include "timerhandle.h"

typedef struct {
    PyObject_HEAD
    ReactorObject *reactor;
    tc_timer_t *timer;
    PyObject *fn, *args;
    unsigned gen;
    bool armed;
    unsigned fires_queued;    /* fire events holding a borrowed pointer */
    double when;
    loopref_t held;
    PyObject *weakreflist;
} TimerHandleObject;

/* A fire (dispatch.h); obj: the TimerHandle, status: its generation. */
static const pyevent_ops_t timer_ops;   /* beside timer_dispatch() */

/* GIL: none. */
static void
timer_fired(tc_timer_t *timer)
{
    TimerHandleObject *th = tc_handle_data(tc_timer_handle(timer));
    if (th != NULL && pyevents_push(th->reactor, &timer_ops, 0, (PyObject *)th,
                                    NULL, (int)th->gen) == 0) {
        th->fires_queued++;
    }
}

/* loopref_t.detach: the reactor closes; the timer goes with it. */
static void
timer_detach(PyObject *obj)
{
    TimerHandleObject *th = (TimerHandleObject *)obj;
    th->armed = false;
    th->gen++;
    if (th->timer != NULL) {
        tc_handle_t *h = tc_timer_handle(th->timer);
        tc_handle_set_data(h, NULL);
        tc_close(h, NULL);
        th->timer = NULL;
    }
}

/* Longer delays (31 years, up to infinity) never fire in a process's
 * life, and the C timer takes at most a century: such a timer is armed
 * without starting the C timer.  It is held, active and cancellable like
 * any other, and like any other it does not keep run() running. */
#define NEVER_S 1e9

static int
arm(TimerHandleObject *th, double delay)
{
    int err = delay > NEVER_S
                  ? tc_timer_stop(th->timer)
                  : tc_timer_start_s(th->timer, timer_fired, delay, 0.0);
    if (err != 0) {
        tcpy_raise(reactor_state(th->reactor), err);
        return -1;
    }
    th->gen++;
    th->when = tc_loop_now_s(th->reactor->loop) + delay;
    if (!th->armed) {
        th->armed = true;
        if (th->held.obj == NULL) {
            reactor_hold(th->reactor, &th->held, (PyObject *)th,
                         timer_detach);
        }
    }
    return 0;
}

PyObject *
timerhandle_new(ReactorObject *r, double delay, PyObject *fn, PyObject *args)
{
    tc_state *st = reactor_state(r);
    TimerHandleObject *th = PyObject_GC_New(TimerHandleObject,
                                            st->TimerHandle_type);
    if (th == NULL) {
        return NULL;
    }
    th->reactor = (ReactorObject *)Py_NewRef(r);
    th->fn = Py_NewRef(fn);
    th->args = Py_NewRef(args);
    th->gen = 0;
    th->armed = false;
    th->fires_queued = 0;
    th->when = 0.0;
    th->weakreflist = NULL;
    th->held = (loopref_t){0};
    th->timer = NULL;
    int err = tc_timer_new(r->loop, th, &th->timer);
    PyObject_GC_Track(th);
    if (err != 0) {
        th->timer = NULL;
        Py_DECREF(th);
        return tcpy_raise(st, err);
    }
    if (arm(th, delay) < 0) {
        Py_DECREF(th);
        return NULL;
    }
    reactor_wake(r);
    return (PyObject *)th;
}

static void
timer_dispatch(ReactorObject *r, pyevent_t *ev)
{
    TimerHandleObject *th = (TimerHandleObject *)ev->obj;
    th->fires_queued--;
    if (!th->armed) {
        /* Cancelled after this fire was queued: cancel() left the last
         * fire to let go of the reference. */
        if (th->fires_queued == 0) {
            Py_XDECREF(reactor_unhold(r, &th->held));
        }
        return;
    }
    if ((unsigned)ev->status != th->gen) {
        return;   /* re-armed after this fire was queued */
    }
    th->armed = false;
    /* The armed reference, kept over the call; reset() takes a new one. */
    PyObject *self = reactor_unhold(r, &th->held);
    PyObject *res = PyObject_Call(th->fn, th->args, NULL);
    if (res == NULL) {
        reactor_report(r, "a call_later callback");
    }
    Py_XDECREF(res);
    Py_XDECREF(self);
}

static const pyevent_ops_t timer_ops = {
    .run = timer_dispatch,
    .name = "timer",
};

static PyObject *
TimerHandle_cancel(TimerHandleObject *th, PyObject *unused)
{
    (void)unused;
    if (!th->armed) {
        Py_RETURN_NONE;   /* also once the reactor is closed */
    }
    if (reactor_check_thread(th->reactor) < 0) {
        return NULL;
    }
    tc_timer_stop(th->timer);
    th->gen++;
    th->armed = false;
    /* A fire already queued in this batch points here: the reference stays
     * until it has run (timer_dispatch).  Else self stays alive: the
     * caller holds a reference. */
    if (th->fires_queued == 0) {
        Py_XDECREF(reactor_unhold(th->reactor, &th->held));
    }
    Py_RETURN_NONE;
}

static PyObject *
TimerHandle_reset(TimerHandleObject *th, PyObject *arg)
{
    double delay = PyFloat_AsDouble(arg);
    if (delay == -1.0 && PyErr_Occurred()) {
        PyErr_Format(PyExc_TypeError,
                     "reset(): 'delay' must be a number, got %.100s",
                     Py_TYPE(arg)->tp_name);
        return NULL;
    }
    if (!(delay >= 0.0)) {   /* also NaN; infinity means never */
        PyErr_Format(PyExc_ValueError,
                     "reset(): 'delay' must be >= 0, got %R", arg);
        return NULL;
    }
    if (reactor_check_thread(th->reactor) < 0) {
        return NULL;
    }
    if (th->timer == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "reset(): the timer is gone");
        return NULL;
    }
    if (arm(th, delay) < 0) {
        return NULL;
    }
    reactor_wake(th->reactor);
    Py_RETURN_NONE;
}

static PyObject *
TimerHandle_active(TimerHandleObject *th, PyObject *unused)
{
    (void)unused;
    return PyBool_FromLong(th->armed);
}

static PyObject *
TimerHandle_when(TimerHandleObject *th, PyObject *unused)
{
    (void)unused;
    return PyFloat_FromDouble(th->when);
}

static int
TimerHandle_traverse(TimerHandleObject *th, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(th));
    Py_VISIT(th->reactor);
    Py_VISIT(th->fn);
    Py_VISIT(th->args);
    return 0;
}

static int
TimerHandle_clear(TimerHandleObject *th)
{
    Py_CLEAR(th->fn);
    Py_CLEAR(th->args);
    return 0;
}

static void
TimerHandle_dealloc(TimerHandleObject *th)
{
    PyTypeObject *tp = Py_TYPE(th);
    PyObject_GC_UnTrack(th);
    if (th->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)th);
    }
    TimerHandle_clear(th);
    if (th->timer != NULL && th->reactor->loop != NULL) {
        tc_handle_t *h = tc_timer_handle(th->timer);
        if (tc_loop_is_owner_thread(th->reactor->loop)) {
            tc_close(h, NULL);
        } else {
            /* Freed by a GC on another thread: the disarmed timer stays
             * with the loop, which closes it at teardown. */
            tc_handle_set_data(h, NULL);
        }
    }
    Py_CLEAR(th->reactor);
    tp->tp_free((PyObject *)th);
    Py_DECREF(tp);
}

static PyObject *
TimerHandle_repr(TimerHandleObject *th)
{
    return PyUnicode_FromFormat("<twincore.TimerHandle %s %R>",
                                th->armed ? "active" : "inactive",
                                th->fn ? th->fn : Py_None);
}

static PyMethodDef TimerHandle_methods[] = {
    {"cancel", (PyCFunction)TimerHandle_cancel, METH_NOARGS,
     "cancel($self, /)\n--\n\nDisarm; harmless when already fired."},
    {"reset", (PyCFunction)TimerHandle_reset, METH_O,
     "reset($self, delay, /)\n--\n\nFire delay seconds from now (also after "
     "it fired or was cancelled)."},
    {"active", (PyCFunction)TimerHandle_active, METH_NOARGS,
     "active($self, /)\n--\n\nTrue until it fires or is cancelled."},
    {"when", (PyCFunction)TimerHandle_when, METH_NOARGS,
     "when($self, /)\n--\n\nThe reactor time it fires at."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef TimerHandle_members[] = {
    {"__weaklistoffset__", T_PYSSIZET,
     offsetof(TimerHandleObject, weakreflist), READONLY, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyType_Slot TimerHandle_slots[] = {
    {Py_tp_dealloc, TimerHandle_dealloc},
    {Py_tp_traverse, TimerHandle_traverse},
    {Py_tp_clear, TimerHandle_clear},
    {Py_tp_methods, TimerHandle_methods},
    {Py_tp_members, TimerHandle_members},
    {Py_tp_repr, TimerHandle_repr},
    {Py_tp_doc, "A pending call_later() call. It never fires before its "
                "delay has passed on the monotonic clock, counted from "
                "call_later() or reset(), however long the callback that "
                "set it had run."},
    {0, NULL},
};

PyType_Spec TimerHandle_spec = {
    .name = "twincore._twincore.TimerHandle",
    .basicsize = sizeof(TimerHandleObject),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC |
             Py_TPFLAGS_IMMUTABLETYPE | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = TimerHandle_slots,
};
