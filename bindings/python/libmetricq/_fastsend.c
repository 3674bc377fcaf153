/* libmetricq._fastsend: mq_source_send and mq_metric_send for the
   per-point send without the cost of a ctypes call (its argument
   conversion objects and libffi).

   Optional: without it the binding calls them through ctypes. It does not
   link against libmetricq.so: init() gets their addresses from the library
   ctypes loaded (whichever copy that is) and the ctypes functions
   themselves. send() and metric_send() convert only the argument types the
   binding passes on its fast path and hand any other call to the ctypes
   function, so that conversions and errors (ctypes.ArgumentError) stay
   exactly those of ctypes; but a time outside int64, which ctypes would
   wrap silently, is an OverflowError from metric_send(). */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#include <stddef.h>

#if PY_VERSION_HEX < 0x03090000
#define PyObject_Vectorcall _PyObject_Vectorcall
#define Py_TPFLAGS_HAVE_VECTORCALL _Py_TPFLAGS_HAVE_VECTORCALL
#endif

typedef int (*send_fn)(void *src, const char *metric, int64_t time_ns, double value,
                       double timeout);
typedef int (*metric_send_fn)(void *metric, int64_t time_ns, double value, double timeout);

static send_fn c_send;
static PyObject *ctypes_send;
static metric_send_fn c_metric_send;
static PyObject *ctypes_metric_send;

/* As ctypes converts to c_double: a float, also of a subclass, by its value;
   an int (not a subclass: its __float__ may differ) as int.__float__ does.
   0: leave it to ctypes (other types, an int too large for a double). */
static int to_double(PyObject *o, double *out) {
    if (PyFloat_Check(o)) {
        *out = PyFloat_AS_DOUBLE(o);
        return 1;
    }
    if (PyLong_CheckExact(o)) {
        *out = PyLong_AsDouble(o);
        if (*out == -1.0 && PyErr_Occurred()) {
            PyErr_Clear();
            return 0;
        }
        return 1;
    }
    return 0;
}

static PyObject *fast_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    void *src;
    long long time_ns;
    int overflow, status;
    double value, timeout;
    (void)module;
    if (c_send == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libmetricq._fastsend.init() was not called");
        return NULL;
    }
    if (nargs != 5 || !PyLong_CheckExact(args[0]) || !PyBytes_CheckExact(args[1]) ||
        !PyLong_CheckExact(args[2])) {
        return PyObject_Vectorcall(ctypes_send, args, (size_t)nargs, NULL);
    }
    src = PyLong_AsVoidPtr(args[0]);
    if (src == NULL && PyErr_Occurred()) {
        PyErr_Clear(); /* out of range: ctypes truncates it */
        return PyObject_Vectorcall(ctypes_send, args, (size_t)nargs, NULL);
    }
    time_ns = PyLong_AsLongLongAndOverflow(args[2], &overflow);
    if (overflow || !to_double(args[3], &value) || !to_double(args[4], &timeout)) {
        return PyObject_Vectorcall(ctypes_send, args, (size_t)nargs, NULL);
    }
    /* A send waits up to its timeout when the buffer is full, and library
       threads (config and log handlers) need the GIL meanwhile. */
    Py_BEGIN_ALLOW_THREADS
    status = c_send(src, PyBytes_AS_STRING(args[1]), (int64_t)time_ns, value, timeout);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(status);
}

/* mq_metric_send(handle, time_ns, value, timeout): no name to convert,
   and the time's range checked here rather than in Python. */
static PyObject *fast_metric_send(PyObject *module, PyObject *const *args, Py_ssize_t nargs) {
    void *metric;
    long long time_ns;
    int overflow, status;
    double value, timeout;
    (void)module;
    if (c_metric_send == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libmetricq._fastsend.init() was not called");
        return NULL;
    }
    if (nargs != 4 || !PyLong_CheckExact(args[0]) || !PyLong_CheckExact(args[1])) {
        return PyObject_Vectorcall(ctypes_metric_send, args, (size_t)nargs, NULL);
    }
    metric = PyLong_AsVoidPtr(args[0]);
    if (metric == NULL && PyErr_Occurred()) {
        PyErr_Clear();
        return PyObject_Vectorcall(ctypes_metric_send, args, (size_t)nargs, NULL);
    }
    time_ns = PyLong_AsLongLongAndOverflow(args[1], &overflow);
    if (overflow) {
        PyErr_SetString(PyExc_OverflowError, "time is out of the int64 nanosecond range");
        return NULL;
    }
    if (!to_double(args[2], &value) || !to_double(args[3], &timeout)) {
        return PyObject_Vectorcall(ctypes_metric_send, args, (size_t)nargs, NULL);
    }
    Py_BEGIN_ALLOW_THREADS
    status = c_metric_send(metric, (int64_t)time_ns, value, timeout);
    Py_END_ALLOW_THREADS
    return PyLong_FromLong(status);
}

/* Sender: a metric's send(time, value) as one C callable, so that an
   accepted point costs no Python frame at all. It sends itself only a
   point of an exact int time (int64) and a float or int value with the
   default block and timeout; every other call goes to convert (the
   binding's full send, with the same arguments), and a refused point's
   status to report (which raises or logs it, as the binding does). */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    void *metric;
    double timeout;
    PyObject *convert;
    PyObject *report;
} Sender;

static PyObject *sender_call(PyObject *self_, PyObject *const *args, size_t nargsf, PyObject *kwnames) {
    Sender *self = (Sender *)self_;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    long long time_ns;
    int overflow = 0, status;
    double value;
    if (nargs == 2 && kwnames == NULL && PyLong_CheckExact(args[0]) && to_double(args[1], &value)) {
        time_ns = PyLong_AsLongLongAndOverflow(args[0], &overflow);
        if (!overflow) {
            Py_BEGIN_ALLOW_THREADS
            status = c_metric_send(self->metric, (int64_t)time_ns, value, self->timeout);
            Py_END_ALLOW_THREADS
            if (status == 0) {
                Py_RETURN_NONE;
            }
            return PyObject_CallFunction(self->report, "i", status);
        }
    }
    return PyObject_Vectorcall(self->convert, args, nargsf, kwnames);
}

static PyObject *sender_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *metric, *convert, *report;
    double timeout;
    Sender *self;
    if (c_metric_send == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "libmetricq._fastsend.init() was not called");
        return NULL;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "OdOO:Sender", (char *[]){"metric", "timeout", "convert", "report", NULL},
                                     &metric, &timeout, &convert, &report)) {
        return NULL;
    }
    if (!PyCallable_Check(convert) || !PyCallable_Check(report)) {
        PyErr_SetString(PyExc_TypeError, "Sender: convert and report must be callable");
        return NULL;
    }
    self = (Sender *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->metric = PyLong_AsVoidPtr(metric);
    if (self->metric == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "Sender: the metric handle is NULL");
        }
        Py_DECREF(self);
        return NULL;
    }
    self->vectorcall = sender_call;
    self->timeout = timeout;
    Py_INCREF(convert);
    self->convert = convert;
    Py_INCREF(report);
    self->report = report;
    return (PyObject *)self;
}

/* The callables are bound methods of the metric that holds the Sender: a
   cycle, which the garbage collector must see. */
static int sender_traverse(Sender *self, visitproc visit, void *arg) {
    Py_VISIT(self->convert);
    Py_VISIT(self->report);
    return 0;
}

static int sender_clear(Sender *self) {
    Py_CLEAR(self->convert);
    Py_CLEAR(self->report);
    return 0;
}

static void sender_dealloc(Sender *self) {
    PyObject_GC_UnTrack(self);
    sender_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject SenderType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "libmetricq._fastsend.Sender",
    .tp_basicsize = sizeof(Sender),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_doc = "Sender(metric, timeout, convert, report): a metric's send(time, value).",
    .tp_new = sender_new,
    .tp_traverse = (traverseproc)sender_traverse,
    .tp_clear = (inquiry)sender_clear,
    .tp_dealloc = (destructor)sender_dealloc,
    .tp_vectorcall_offset = offsetof(Sender, vectorcall),
    .tp_call = PyVectorcall_Call,
};

/* Takes the C function at address (checked) and its ctypes function. */
static int take(PyObject *address, PyObject *fallback, const char *name, void **fn, PyObject **ctypes_fn) {
    PyObject *old;
    void *p = PyLong_AsVoidPtr(address);
    if (p == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_Format(PyExc_ValueError, "init: the address of %s is NULL", name);
        }
        return 0;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_Format(PyExc_TypeError, "init: the ctypes %s must be callable", name);
        return 0;
    }
    old = *ctypes_fn;
    Py_INCREF(fallback);
    *ctypes_fn = fallback;
    Py_XDECREF(old);
    *fn = p;
    return 1;
}

static PyObject *fast_init(PyObject *module, PyObject *args) {
    PyObject *send_address, *send_fallback, *metric_address, *metric_fallback;
    void *send, *metric_send;
    (void)module;
    if (!PyArg_ParseTuple(args, "OOOO:init", &send_address, &send_fallback, &metric_address, &metric_fallback)) {
        return NULL;
    }
    if (!take(send_address, send_fallback, "mq_source_send", &send, &ctypes_send) ||
        !take(metric_address, metric_fallback, "mq_metric_send", &metric_send, &ctypes_metric_send)) {
        return NULL;
    }
    /* POSIX: data and function pointers convert. */
    c_send = (send_fn)(uintptr_t)send;
    c_metric_send = (metric_send_fn)(uintptr_t)metric_send;
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"send", (PyCFunction)(void (*)(void))fast_send, METH_FASTCALL,
     "send(handle, name, time_ns, value, timeout) -> status of mq_source_send."},
    {"metric_send", (PyCFunction)(void (*)(void))fast_metric_send, METH_FASTCALL,
     "metric_send(metric_handle, time_ns, value, timeout) -> status of mq_metric_send."},
    {"init", fast_init, METH_VARARGS,
     "init(send_address, send_ctypes, metric_send_address, metric_send_ctypes):\n"
     "mq_source_send and mq_metric_send to call, and their ctypes functions for\n"
     "the arguments send() and metric_send() do not convert themselves."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "libmetricq._fastsend",
    "mq_source_send and mq_metric_send without the ctypes call overhead (see _lib.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastsend(void) {
    PyObject *m;
    if (PyType_Ready(&SenderType) < 0) {
        return NULL;
    }
    m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    Py_INCREF(&SenderType);
    if (PyModule_AddObject(m, "Sender", (PyObject *)&SenderType) < 0) {
        Py_DECREF(&SenderType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
