// Native FX flattener: reads torch.fx Nodes through the Python C API and emits
// the integer arrays the core matches over. Python-aware by design, so it lives
// in the binding layer, never in csrc/core. It imports nothing from torch: the
// Node type and the interning tables are handed in by pyfuse._patterns.
#include <string>
#include <unordered_map>

#include "flat_graph.hpp"
#include "pybind11.hpp"

namespace pyfuse::bindings {

namespace {

/// Interning tables of one compiled pattern set.
class Interner {
public:
    Interner(py::dict func_labels,
             py::dict method_labels,
             py::dict module_type_labels,
             py::dict literal_ids,
             py::function resolve_type,
             py::object node_type)
        : method_labels_(std::move(method_labels)),
          literal_ids_(std::move(literal_ids)),
          resolve_type_(std::move(resolve_type)),
          node_type_(std::move(node_type)),
          keep_(py::list()) {
        // Functions match by identity, as the reference's `is` test does.
        for(auto item : func_labels) {
            keep_.append(item.first);
            funcs_.emplace(item.first.ptr(), item.second.cast<std::int32_t>());
        }
        for(auto item : module_type_labels) {
            keep_.append(item.first);
            types_.emplace(item.first.ptr(), item.second.cast<std::int32_t>());
        }
        if(!PyType_Check(node_type_.ptr())) {
            throw py::type_error("node_type must be a type");
        }
    }

    /// Returns (FlatGraph, nodes, modules, get_attr_indices). `modules[i]` is the
    /// module a call_module node calls (None elsewhere or when missing).
    py::tuple flatten(const py::iterable& node_iter, const py::object& root) {
        auto* node_type = reinterpret_cast<PyTypeObject*>(node_type_.ptr());
        FlatGraph g;
        py::list nodes;
        py::list modules;
        py::list get_attrs;
        std::unordered_map<PyObject*, std::int32_t> index;
        std::unordered_map<std::string, PyObject*> path_cache;  // borrowed, root keeps alive
        // (`_args` is the slot behind the `args` property of torch.fx.Node)
        const py::str s_op("op"), s_target("target"), s_args("args"), s_args_slot("_args"),
            s_users("users"), s_modules("_modules");
        py::dict module_by_target;  // target str -> module or None
        const py::str call_module("call_module"), call_function("call_function"),
            call_method("call_method"), get_attr("get_attr");

        // Resolves a dotted module path through `_modules`, as named_modules() sees it.
        auto resolve = [&](const std::string& path, auto& self) -> PyObject* {
            auto hit = path_cache.find(path);
            if(hit != path_cache.end()) {
                return hit->second;
            }
            const auto dot = path.rfind('.');
            PyObject* parent = dot == std::string::npos
                                   ? root.ptr()
                                   : self(path.substr(0, dot), self);
            PyObject* found = nullptr;
            if(parent != nullptr) {
                py::object mods = py::reinterpret_steal<py::object>(
                    PyObject_GetAttr(parent, s_modules.ptr()));
                if(!mods) {
                    PyErr_Clear();
                } else if(PyDict_Check(mods.ptr())) {
                    const std::string atom =
                        dot == std::string::npos ? path : path.substr(dot + 1);
                    found = PyDict_GetItemString(mods.ptr(), atom.c_str());
                    if(found == Py_None) {
                        found = nullptr;
                    }
                }
            }
            path_cache.emplace(path, found);
            return found;
        };

        auto same = [](PyObject* a, PyObject* b) {
            return a == b || PyUnicode_Compare(a, b) == 0;
        };

        py::object it = py::reinterpret_steal<py::object>(PyObject_GetIter(node_iter.ptr()));
        if(!it) {
            throw py::error_already_set();
        }
        while(true) {
            py::object node = py::reinterpret_steal<py::object>(PyIter_Next(it.ptr()));
            if(!node) {
                if(PyErr_Occurred() != nullptr) {
                    throw py::error_already_set();
                }
                break;
            }
            if(!PyObject_TypeCheck(node.ptr(), node_type)) {
                throw py::type_error("graph.nodes yielded a non-Node object");
            }
            const auto i = static_cast<std::int32_t>(g.label.size());
            index.emplace(node.ptr(), i);
            nodes.append(node);

            py::object op = node.attr(s_op);
            py::object target = node.attr(s_target);
            std::int32_t label = 0;
            py::object module = py::none();
            if(same(op.ptr(), call_module.ptr())) {
                if(!PyUnicode_Check(target.ptr())) {
                    throw py::type_error("call_module node target must be a str");
                }
                PyObject* mod = PyDict_GetItemWithError(module_by_target.ptr(), target.ptr());
                if(mod == nullptr) {
                    if(PyErr_Occurred() != nullptr) {
                        throw py::error_already_set();
                    }
                    mod = resolve(target.cast<std::string>(), resolve);
                    module_by_target[target] = mod == nullptr ? py::none()
                                                             : py::reinterpret_borrow<py::object>(mod);
                } else if(mod == Py_None) {
                    mod = nullptr;
                }
                if(mod == nullptr) {
                    label = core::kMissingModule;
                } else {
                    module = py::reinterpret_borrow<py::object>(mod);
                    label = type_label(mod);
                }
            } else if(same(op.ptr(), call_function.ptr())) {
                auto f = funcs_.find(target.ptr());
                label = f == funcs_.end() ? 0 : f->second;
            } else if(same(op.ptr(), call_method.ptr())) {
                PyObject* l = PyDict_GetItemWithError(method_labels_.ptr(), target.ptr());
                if(l == nullptr) {
                    if(PyErr_Occurred() != nullptr) {
                        PyErr_Clear();  // unhashable target: names no pattern
                    }
                } else {
                    label = static_cast<std::int32_t>(PyLong_AsLong(l));
                }
            } else if(same(op.ptr(), get_attr.ptr())) {
                get_attrs.append(i);
            }
            modules.append(module);
            g.label.push_back(label);

            py::object users = node.attr(s_users);
            const Py_ssize_t n_users = PyObject_Length(users.ptr());
            if(n_users < 0) {
                throw py::error_already_set();
            }
            g.users.push_back(static_cast<std::int32_t>(n_users));

            py::object args = py::reinterpret_steal<py::object>(
                PyObject_GetAttr(node.ptr(), s_args_slot.ptr()));
            if(!args) {
                PyErr_Clear();
                args = node.attr(s_args);
            }
            if(!PyTuple_Check(args.ptr())) {
                throw py::type_error("node.args must be a tuple");
            }
            const Py_ssize_t n_args = PyTuple_GET_SIZE(args.ptr());
            for(Py_ssize_t k = 0; k < n_args; ++k) {
                PyObject* a = PyTuple_GET_ITEM(args.ptr(), k);
                if(PyObject_TypeCheck(a, node_type)) {
                    auto found = index.find(a);
                    if(found == index.end()) {
                        throw py::value_error("node " + py::str(node).cast<std::string>() +
                                              " has an argument that is not an earlier "
                                              "node of this graph: " +
                                              py::str(a).cast<std::string>());
                    }
                    g.arg.push_back(found->second);
                } else {
                    g.arg.push_back(-literal_id(a) - 2);
                }
            }
            g.arg_off.push_back(static_cast<std::int32_t>(g.arg.size()));
        }
        return py::make_tuple(std::move(g), nodes, modules, get_attrs);
    }

private:
    std::int32_t type_label(PyObject* module) {
        auto* type = reinterpret_cast<PyObject*>(Py_TYPE(module));
        auto hit = types_.find(type);
        if(hit != types_.end()) {
            return hit->second;
        }
        // Unknown class (a subclass, a parametrized class, ...): Python decides
        // once per class, following type_before_parametrizations.
        const auto label = resolve_type_(py::handle(module)).cast<std::int32_t>();
        keep_.append(py::handle(type));
        types_.emplace(type, label);
        return label;
    }

    /// Id of the sub-pattern a literal argument equals, or -1.
    std::int32_t literal_id(PyObject* value) {
        PyObject* id = PyDict_GetItemWithError(literal_ids_.ptr(), value);
        if(id == nullptr) {
            if(PyErr_Occurred() != nullptr) {
                PyErr_Clear();  // unhashable: equals no pattern
            }
            return -1;
        }
        return static_cast<std::int32_t>(PyLong_AsLong(id));
    }

    std::unordered_map<PyObject*, std::int32_t> funcs_;
    std::unordered_map<PyObject*, std::int32_t> types_;
    py::dict method_labels_;
    py::dict literal_ids_;
    py::function resolve_type_;
    py::object node_type_;
    py::list keep_;  // owns the keys of funcs_ and types_
};

}  // namespace

void register_flatten(py::module_& m) {
    py::class_<Interner>(m, "Interner", "Interning tables of a compiled pattern set.")
        .def(py::init<py::dict, py::dict, py::dict, py::dict, py::function, py::object>(),
             "func_labels"_a,
             "method_labels"_a,
             "module_type_labels"_a,
             "literal_ids"_a,
             "resolve_type"_a,
             "node_type"_a)
        .def("flatten",
             &Interner::flatten,
             "nodes"_a,
             "root"_a,
             "Flatten FX nodes (in graph order) to (FlatGraph, nodes, modules, get_attrs).");
}

}  // namespace pyfuse::bindings
