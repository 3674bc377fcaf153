/* libmetricq._fastsend: mq_source_send for the per-point send without the
   cost of a ctypes call (its argument conversion objects and libffi).

   Optional: without it the binding calls mq_source_send through ctypes.
   It does not link against libmetricq.so: init() gets the address of
   mq_source_send from the library ctypes loaded (whichever copy that is)
   and the ctypes function itself. send() converts only the argument types
   the binding passes on its fast path and hands any other call to the
   ctypes function, so that conversions and errors (ctypes.ArgumentError)
   stay exactly those of ctypes. */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

#if PY_VERSION_HEX < 0x03090000
#define PyObject_Vectorcall _PyObject_Vectorcall
#endif

typedef int (*send_fn)(void *src, const char *metric, int64_t time_ns, double value,
                       double timeout);

static send_fn c_send;
static PyObject *ctypes_send;

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

static PyObject *fast_init(PyObject *module, PyObject *args) {
    PyObject *address, *fallback, *old;
    void *p;
    (void)module;
    if (!PyArg_ParseTuple(args, "OO:init", &address, &fallback)) {
        return NULL;
    }
    p = PyLong_AsVoidPtr(address);
    if (p == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "init: the address of mq_source_send is NULL");
        }
        return NULL;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "init: the ctypes mq_source_send must be callable");
        return NULL;
    }
    old = ctypes_send;
    Py_INCREF(fallback);
    ctypes_send = fallback;
    Py_XDECREF(old);
    c_send = (send_fn)(uintptr_t)p; /* POSIX: data and function pointers convert */
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"send", (PyCFunction)(void (*)(void))fast_send, METH_FASTCALL,
     "send(handle, name, time_ns, value, timeout) -> status of mq_source_send."},
    {"init", fast_init, METH_VARARGS,
     "init(address, ctypes_function): the mq_source_send to call, and the\n"
     "ctypes function for the arguments send() does not convert itself."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "libmetricq._fastsend",
    "mq_source_send without the ctypes call overhead (see _lib.py).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__fastsend(void) { return PyModule_Create(&module); }
