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

/// Tuples nested deeper than this are declined (deepcopy then decides).
constexpr int max_depth = 32;

/// Whether `v` is one of the `atoms` types exactly, or a tuple (exactly) of such,
/// nested up to `max_depth`: what ``copy.deepcopy`` returns as is.
bool is_atomic(PyObject* v, PyObject* atoms, int depth = 0) {
    if(PyTuple_CheckExact(v)) {
        if(depth == max_depth) {
            return false;
        }
        const Py_ssize_t n = PyTuple_GET_SIZE(v);
        for(Py_ssize_t i = 0; i < n; ++i) {
            if(!is_atomic(PyTuple_GET_ITEM(v, i), atoms, depth + 1)) {
                return false;
            }
        }
        return true;
    }
    // (a metaclass's __hash__ could fail: then not atomic, and no error left set)
    const int found = PySet_Contains(atoms, reinterpret_cast<PyObject*>(Py_TYPE(v)));
    if(found < 0) {
        PyErr_Clear();
    }
    return found == 1;
}

/// Whether every item of the container `v` is atomic (a dict's values).
bool holds_atoms(PyObject* v, PyObject* atoms) {
    PyTypeObject* tp = Py_TYPE(v);
    if(tp == &PyDict_Type || tp == &PyODict_Type) {
        Py_ssize_t pos = 0;
        PyObject* key = nullptr;
        PyObject* value = nullptr;
        while(PyDict_Next(v, &pos, &key, &value) != 0) {
            if(!is_atomic(value, atoms)) {
                return false;
            }
        }
        return true;
    }
    if(tp == &PyList_Type) {
        const Py_ssize_t n = PyList_GET_SIZE(v);
        for(Py_ssize_t i = 0; i < n; ++i) {
            if(!is_atomic(PyList_GET_ITEM(v, i), atoms)) {
                return false;
            }
        }
        return true;
    }
    // a set (rare here): through the iterator protocol
    py::object it = py::reinterpret_steal<py::object>(PyObject_GetIter(v));
    if(!it) {
        PyErr_Clear();
        return false;
    }
    while(PyObject* item = PyIter_Next(it.ptr())) {
        const bool ok = is_atomic(item, atoms);
        Py_DECREF(item);
        if(!ok) {
            return false;
        }
    }
    if(PyErr_Occurred() != nullptr) {
        PyErr_Clear();
        return false;
    }
    return true;
}

bool is_container(PyTypeObject* tp) {
    return tp == &PyDict_Type || tp == &PyODict_Type || tp == &PySet_Type ||
           tp == &PyList_Type;
}

PyObject*
copies_as_deepcopy(PyObject* /*self*/, PyObject* const* args, Py_ssize_t nargs) {
    if(nargs != 3 || !PyDict_CheckExact(args[0]) || !PyFrozenSet_CheckExact(args[1]) ||
       !PyUnicode_CheckExact(args[2])) {
        PyErr_SetString(
            PyExc_TypeError,
            "copies_as_deepcopy(state: dict, atoms: frozenset, exempt: str)");
        return nullptr;
    }
    PyObject* state = args[0];
    PyObject* atoms = args[1];
    PyObject* exempt = args[2];
    Py_ssize_t pos = 0;
    PyObject* key = nullptr;
    PyObject* value = nullptr;
    while(PyDict_Next(state, &pos, &key, &value) != 0) {
        if(is_container(Py_TYPE(value))) {
            // (the exempt key's container is copied, its items are not checked)
            const bool exempted =
                PyUnicode_CheckExact(key) && PyUnicode_Compare(key, exempt) == 0;
            if(!exempted && !holds_atoms(value, atoms)) {
                Py_RETURN_FALSE;
            }
        } else if(!is_atomic(value, atoms)) {
            Py_RETURN_FALSE;
        }
    }
    Py_RETURN_TRUE;
}

PyMethodDef shell_def[] = {
    {"shell",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(shell)),
     METH_FASTCALL,
     "shell(cls, state, attrs=None)\n--\n\n"
     "``cls.__new__(cls)`` whose ``__dict__`` is filled from `state`, in its order: "
     "each dict, OrderedDict, set or list (exact types) as a shallow copy, anything "
     "else as is, and `attrs`' values in place of (or after) the state's."},
    {"copies_as_deepcopy",
     reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(copies_as_deepcopy)),
     METH_FASTCALL,
     "copies_as_deepcopy(state, atoms, exempt)\n--\n\n"
     "Whether ``shell(cls, state)`` holds what ``copy.deepcopy`` would: every value "
     "of `state` is atomic (its type exactly one of `atoms`, or a tuple of atomic "
     "values) or a dict, OrderedDict, set or list (exact types, which shell copies) "
     "of atomic values; the container at key `exempt` may hold anything."},
    {nullptr, nullptr, 0, nullptr}};

}  // namespace

void register_shell(py::module_& m) {
    if(PyModule_AddFunctions(m.ptr(), shell_def) != 0) {
        throw py::error_already_set();
    }
}

}  // namespace pyfuse::bindings
