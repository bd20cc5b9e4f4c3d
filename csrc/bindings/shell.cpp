// shell(cls, state, attrs=None): a new instance of `cls` holding `state`, with
// fresh copies of its containers. The FX pass builds tens of thousands of modules
// this way (fused modules, ReLUs, copies of conv shells); in Python each costs a
// dict copy, a loop over the containers and an update, more than the objects.
#include <Python.h>

#include "pybind11.hpp"

namespace pyfuse::bindings {

namespace {

/// A shallow copy of `v` if it is exactly a dict, OrderedDict, set or list,
/// else `v` itself (new references).
PyObject* fresh_copy(PyObject* v) {
    PyTypeObject* tp = Py_TYPE(v);
    if(tp == &PyDict_Type) {
        return PyDict_Copy(v);
    }
    if(tp == &PyODict_Type) {
        return PyDict_GET_SIZE(v) == 0 ? PyODict_New()
                                       : PyObject_CallMethod(v, "copy", nullptr);
    }
    if(tp == &PySet_Type) {
        return PySet_New(v);
    }
    if(tp == &PyList_Type) {
        return PyList_GetSlice(v, 0, PyList_GET_SIZE(v));
    }
    Py_INCREF(v);
    return v;
}

/// Fills the empty `dict` from `state` (in its order, fresh copies of its
/// containers), then from `attrs` (as ``dict.update`` does). The state is merged
/// whole first (an empty dict clones the state's key table) and its containers
/// replaced after: values of keys already there change in place.
bool fill(PyObject* dict, PyObject* state, PyObject* attrs) {
    if(PyDict_Update(dict, state) != 0) {
        return false;
    }
    Py_ssize_t pos = 0;
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    while(PyDict_Next(dict, &pos, &key, &value) != 0) {
        PyObject* v = fresh_copy(value);
        if(v == nullptr) {
            return false;
        }
        // (no key is added or removed: iterating on stays valid)
        const int rc = v == value ? 0 : PyDict_SetItem(dict, key, v);
        Py_DECREF(v);
        if(rc != 0) {
            return false;
        }
    }
    return attrs == nullptr || PyDict_Update(dict, attrs) == 0;
}

PyObject* shell(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if(nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "shell(cls, state, attrs=None)");
        return nullptr;
    }
    PyObject* cls = args[0];
    PyObject* state = args[1];
    PyObject* attrs = nargs == 3 && args[2] != Py_None ? args[2] : nullptr;
    if(!PyType_Check(cls)) {
        PyErr_SetString(PyExc_TypeError, "shell: cls must be a type");
        return nullptr;
    }
    if(!PyDict_CheckExact(state) || (attrs != nullptr && !PyDict_CheckExact(attrs))) {
        PyErr_SetString(PyExc_TypeError, "shell: state and attrs must be dicts");
        return nullptr;
    }
    // cls.__new__(cls): the type's tp_new slot is its __new__
    auto* tp = reinterpret_cast<PyTypeObject*>(cls);
    if(tp->tp_new == nullptr) {
        PyErr_Format(
            PyExc_TypeError, "shell: cannot create '%s' instances", tp->tp_name);
        return nullptr;
    }
    py::tuple no_args;
    py::object obj =
        py::reinterpret_steal<py::object>(tp->tp_new(tp, no_args.ptr(), nullptr));
    if(!obj) {
        return nullptr;
    }
    static PyObject* const dict_name = PyUnicode_InternFromString("__dict__");
    py::object dict =
        py::reinterpret_steal<py::object>(PyObject_GetAttr(obj.ptr(), dict_name));
    if(!dict) {
        return nullptr;
    }
    if(!PyDict_CheckExact(dict.ptr()) || PyDict_GET_SIZE(dict.ptr()) != 0) {
        PyErr_Format(PyExc_TypeError,
                     "shell: '%s' instances have no plain, empty __dict__",
                     tp->tp_name);
        return nullptr;
    }
    if(!fill(dict.ptr(), state, attrs)) {
        return nullptr;
    }
    return obj.release().ptr();
}

PyMethodDef shell_def[] = {
    {"shell",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(shell)),
     METH_FASTCALL,
     "shell(cls, state, attrs=None)\n--\n\n"
     "``cls.__new__(cls)`` whose ``__dict__`` is filled from `state`, in its order: "
     "each dict, OrderedDict, set or list (exact types) as a shallow copy, anything "
     "else as is, and `attrs`' values in place of (or after) the state's."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

void register_shell(py::module_& m) {
    if(PyModule_AddFunctions(m.ptr(), shell_def) != 0) {
        throw py::error_already_set();
    }
}

}  // namespace pyfuse::bindings
