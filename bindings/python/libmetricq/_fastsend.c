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

#if PY_VERSION_HEX < 0x03090000
#define PyObject_Vectorcall _PyObject_Vectorcall
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

PyMODINIT_FUNC PyInit__fastsend(void) { return PyModule_Create(&module); }
