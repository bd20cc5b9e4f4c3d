// Attribute reads of a type's slots straight from the object's memory.
#pragma once

#include <array>
#include <cstddef>
#include <string>

#include "pybind11.hpp"

// (PyMemberDef and its T_OBJECT types; this header needs Python.h first)
#include <structmember.h>

namespace pyfuse::bindings {

/// `o` itself if it is a type, else a TypeError naming the argument `what`.
inline py::object require_type(py::object o, const char* what) {
    if(!PyType_Check(o.ptr())) {
        throw py::type_error(std::string(what) + " must be a type");
    }
    return o;
}

/// Reads `N` attributes that a type keeps in slots (member descriptors, like
/// torch.fx.Node's, defined by its C base class), as ``PyObject_GetAttr``
/// returns them, without the generic lookup: a graph walk reads several of them
/// a node, and the lookup (type cache, descriptor checks, call) costs more than
/// the load. Objects of any other type, a slot that is empty, or a type whose
/// attribute is no longer that descriptor go through ``PyObject_GetAttr``.
template <std::size_t N>
class MemberReader {
public:
    MemberReader(PyObject* type, const std::array<const char*, N>& names)
        : type_(py::reinterpret_borrow<py::object>(type)) {
        if(!PyType_Check(type)) {
            throw py::type_error("MemberReader needs a type");
        }
        for(std::size_t i = 0; i < N; ++i) {
            names_[i] =
                py::reinterpret_steal<py::str>(PyUnicode_InternFromString(names[i]));
            PyObject* d = _PyType_Lookup(tp(), names_[i].ptr());  // borrowed
            if(d == nullptr || Py_TYPE(d) != &PyMemberDescr_Type ||
               PyType_IsSubtype(tp(), PyDescr_TYPE(d)) == 0) {
                continue;
            }
            const PyMemberDef* m = reinterpret_cast<PyMemberDescrObject*>(d)->d_member;
            if(m->type == T_OBJECT || m->type == T_OBJECT_EX) {
                descr_[i] = py::reinterpret_borrow<py::object>(d);
                offset_[i] = m->offset;
                none_if_empty_[i] = m->type == T_OBJECT;
            }
        }
    }

    /// Rechecks that the type's attribute lookup is the generic one and each
    /// attribute still its slot's descriptor (both can be replaced at run time);
    /// call once before a walk.
    void revalidate() {
        const bool generic = tp()->tp_getattro == PyObject_GenericGetAttr;
        for(std::size_t i = 0; i < N; ++i) {
            direct_[i] = generic && descr_[i] &&
                         _PyType_Lookup(tp(), names_[i].ptr()) == descr_[i].ptr();
        }
    }

    /// ``getattr(o, names[i])`` (a new reference; raises as getattr does).
    py::object get(PyObject* o, std::size_t i) const {
        if(Py_TYPE(o) == tp() && direct_[i]) {
            PyObject* v =
                *reinterpret_cast<PyObject**>(reinterpret_cast<char*>(o) + offset_[i]);
            if(v != nullptr) {
                return py::reinterpret_borrow<py::object>(v);
            }
            if(none_if_empty_[i]) {
                return py::none();
            }
        }
        PyObject* v = PyObject_GetAttr(o, names_[i].ptr());
        if(v == nullptr) {
            throw py::error_already_set();
        }
        return py::reinterpret_steal<py::object>(v);
    }

private:
    [[nodiscard]] PyTypeObject* tp() const {
        return reinterpret_cast<PyTypeObject*>(type_.ptr());
    }

    py::object type_;
    std::array<py::str, N> names_;
    std::array<py::object, N>
        descr_;  // holds the descriptor: its address stays its own
    std::array<Py_ssize_t, N> offset_{};
    std::array<bool, N> none_if_empty_{};
    std::array<bool, N> direct_{};
};

}  // namespace pyfuse::bindings
