// Native FX flattener: reads torch.fx Nodes through the Python C API and emits
// the integer arrays the core matches over. Python-aware by design, so it lives
// in the binding layer, never in csrc/core. It imports nothing from torch: the
// Node type and the interning tables are handed in by pyfuse.engine.patterns.
#include <algorithm>
#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "../core/open_table.hpp"
#include "flat_graph.hpp"
#include "members.hpp"
#include "pybind11.hpp"

namespace pyfuse::bindings {

namespace {

/// `value`, an entry of an interning table (`table`), as an int32 code; a
/// ValueError naming `node` if it is not one.
std::int32_t table_code(PyObject* value, const py::handle& node, const char* table) {
    int overflow = 0;
    const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
    const bool failed = v == -1 && PyErr_Occurred() != nullptr;
    if(failed || overflow != 0 || v < INT32_MIN || v > INT32_MAX) {
        if(failed) {
            PyErr_Clear();
        }
        throw py::value_error("node " + py::str(node).cast<std::string>() + ": the " +
                              table + " for it is " +
                              py::repr(py::handle(value)).cast<std::string>() +
                              ", not an int32 code");
    }
    return static_cast<std::int32_t>(v);
}

/// Node object -> index, by address (one allocation: a node-based
/// std::unordered_map spent most of the flattening time in malloc).
using NodeIndex = core::OpenTable<const PyObject*, std::int32_t, core::AddressHash>;

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
          literal_ids_(std::move(literal_ids)), resolve_type_(std::move(resolve_type)),
          node_type_(require_type(std::move(node_type), "node_type")),
          members_(node_type_.ptr(), kNodeAttrs), keep_(py::list()) {
        // Functions match by identity, as the reference's `is` test does.
        for(auto item : func_labels) {
            keep_.append(item.first);
            funcs_.emplace(item.first.ptr(), item.second.cast<std::int32_t>());
        }
        for(auto item : module_type_labels) {
            keep_.append(item.first);
            types_.emplace(item.first.ptr(), item.second.cast<std::int32_t>());
        }
    }

    /// Returns (FlatGraph, nodes, modules, get_attr_indices, repeated, nested).
    /// `modules[i]` is the module a call_module node calls (None elsewhere or
    /// when missing); `repeated`: some module is called by two nodes; `nested`:
    /// some called module holds submodules (a true `_modules`, or one that
    /// cannot be read).
    py::tuple flatten(const py::iterable& node_iter, const py::object& root) {
        auto* node_type = reinterpret_cast<PyTypeObject*>(node_type_.ptr());
        FlatGraph g;
        py::list nodes;
        py::list modules;
        py::list get_attrs;
        // (graph.nodes has a length: reserve for it; any iterable works)
        Py_ssize_t expected = PyObject_Length(node_iter.ptr());
        if(expected < 0) {
            PyErr_Clear();
            expected = 0;
        }
        const auto n_expected = static_cast<std::size_t>(expected);
        NodeIndex index(n_expected);
        std::unordered_map<PyObject*, std::int32_t> other_types;
        std::vector<PyObject*> called;  // (borrowed: `modules` holds them)
        bool nested = false;
        g.label.reserve(n_expected);
        g.users.reserve(n_expected);
        g.arg_off.reserve(n_expected + 1);
        g.arg.reserve(2 * n_expected);
        members_.revalidate();
        const py::str s_args("args"), s_modules("_modules");
        const py::str call_module("call_module"), call_function("call_function"),
            call_method("call_method"), get_attr("get_attr");

        // Module lookup by dotted path through `_modules`, as named_modules() sees
        // it. Only the `_modules` dicts of parent paths are cached, keyed by views
        // into the target strings (alive as long as the nodes): no allocation per node.
        // path -> its `_modules`
        std::unordered_map<std::string_view, PyObject*> dicts;
        py::list keep;  // owns the cached dicts
        auto child = [](PyObject* modules_dict, std::string_view name) -> PyObject* {
            if(modules_dict == nullptr) {
                return nullptr;
            }
            py::str key(name.data(), name.size());
            PyObject* found = PyDict_GetItemWithError(modules_dict, key.ptr());
            if(found == nullptr && PyErr_Occurred() != nullptr) {
                throw py::error_already_set();
            }
            return found == Py_None ? nullptr : found;
        };
        auto modules_of = [&](std::string_view path, auto& self) -> PyObject* {
            auto hit = dicts.find(path);
            if(hit != dicts.end()) {
                return hit->second;
            }
            PyObject* owner = root.ptr();
            if(!path.empty()) {
                const auto dot = path.rfind('.');
                owner =
                    dot == std::string_view::npos
                        ? child(self(std::string_view(), self), path)
                        : child(self(path.substr(0, dot), self), path.substr(dot + 1));
            }
            PyObject* dict = nullptr;
            if(owner != nullptr) {
                py::object mods = py::reinterpret_steal<py::object>(
                    PyObject_GetAttr(owner, s_modules.ptr()));
                if(!mods) {
                    PyErr_Clear();
                } else if(PyDict_Check(mods.ptr())) {
                    dict = mods.ptr();
                    keep.append(mods);
                }
            }
            dicts.emplace(path, dict);
            return dict;
        };
        auto resolve = [&](PyObject* target) -> PyObject* {
            Py_ssize_t size = 0;
            const char* data = PyUnicode_AsUTF8AndSize(target, &size);
            if(data == nullptr) {
                throw py::error_already_set();
            }
            const std::string_view path(data, static_cast<std::size_t>(size));
            const auto dot = path.rfind('.');
            if(dot == std::string_view::npos) {
                return child(modules_of(std::string_view(), modules_of), path);
            }
            return child(modules_of(path.substr(0, dot), modules_of),
                         path.substr(dot + 1));
        };

        auto same = [](PyObject* a, PyObject* b) {
            return a == b || PyUnicode_Compare(a, b) == 0;
        };

        py::object it =
            py::reinterpret_steal<py::object>(PyObject_GetIter(node_iter.ptr()));
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
            index.insert(node.ptr(), i);
            nodes.append(node);

            const py::object op = members_.get(node.ptr(), kOp);
            const py::object target = members_.get(node.ptr(), kTarget);
            std::int32_t label = 0;
            py::object module = py::none();
            if(same(op.ptr(), call_module.ptr())) {
                if(!PyUnicode_Check(target.ptr())) {
                    throw py::type_error("call_module node target must be a str");
                }
                PyObject* mod = resolve(target.ptr());
                if(mod == nullptr) {
                    label = core::kMissingModule;
                } else {
                    module = py::reinterpret_borrow<py::object>(mod);
                    label = type_label(mod, other_types);
                    called.push_back(mod);
                    nested = nested || holds_modules(mod, s_modules.ptr());
                }
            } else if(same(op.ptr(), call_function.ptr())) {
                auto f = funcs_.find(target.ptr());
                label = f == funcs_.end() ? 0 : f->second;
            } else if(same(op.ptr(), call_method.ptr())) {
                PyObject* l =
                    PyDict_GetItemWithError(method_labels_.ptr(), target.ptr());
                if(l == nullptr) {
                    if(PyErr_Occurred() != nullptr) {
                        PyErr_Clear();  // unhashable target: names no pattern
                    }
                } else {
                    label = table_code(l, node, "method label");
                }
            } else if(same(op.ptr(), get_attr.ptr())) {
                get_attrs.append(i);
            }
            modules.append(module);
            g.label.push_back(label);

            const py::object users = members_.get(node.ptr(), kUsers);
            const Py_ssize_t n_users = PyObject_Length(users.ptr());
            if(n_users < 0) {
                throw py::error_already_set();
            }
            g.users.push_back(static_cast<std::int32_t>(n_users));

            py::object args;
            try {
                args = members_.get(node.ptr(), kArgs);
            } catch(const py::error_already_set&) {
                args = node.attr(s_args);
            }
            if(!PyTuple_Check(args.ptr())) {
                throw py::type_error("node.args must be a tuple");
            }
            const Py_ssize_t n_args = PyTuple_GET_SIZE(args.ptr());
            for(Py_ssize_t k = 0; k < n_args; ++k) {
                PyObject* a = PyTuple_GET_ITEM(args.ptr(), k);
                if(PyObject_TypeCheck(a, node_type)) {
                    const std::int32_t found = index.find_or(a, -1);
                    if(found < 0) {
                        throw py::value_error("node " +
                                              py::str(node).cast<std::string>() +
                                              " has an argument that is not an earlier "
                                              "node of this graph: " +
                                              py::str(a).cast<std::string>());
                    }
                    g.arg.push_back(found);
                } else {
                    g.arg.push_back(core::literal_arg(literal_id(a, node)));
                }
            }
            g.arg_off.push_back(static_cast<std::int32_t>(g.arg.size()));
        }
        std::sort(called.begin(), called.end());
        const bool repeated =
            std::adjacent_find(called.begin(), called.end()) != called.end();
        return py::make_tuple(
            std::move(g), nodes, modules, get_attrs, repeated, nested);
    }

private:
    /// Whether `module._modules` is true (or cannot be read or tested).
    static bool holds_modules(PyObject* module, PyObject* name) {
        PyObject* mods = PyObject_GetAttr(module, name);
        const int truth = mods == nullptr ? -1 : PyObject_IsTrue(mods);
        Py_XDECREF(mods);
        if(truth < 0) {
            PyErr_Clear();
            return true;
        }
        return truth != 0;
    }

    /// `seen` caches the other classes for one flatten call only: the graph's
    /// modules keep them alive meanwhile, and a class made per module instance
    /// (parametrization does that) must not outlive the model.
    std::int32_t type_label(PyObject* module,
                            std::unordered_map<PyObject*, std::int32_t>& seen) {
        auto* type = reinterpret_cast<PyObject*>(Py_TYPE(module));
        auto hit = types_.find(type);
        if(hit != types_.end()) {
            return hit->second;
        }
        hit = seen.find(type);
        if(hit != seen.end()) {
            return hit->second;
        }
        // Another class (a subclass, a parametrized class, ...): Python decides,
        // following type_before_parametrizations.
        const auto label = resolve_type_(py::handle(module)).cast<std::int32_t>();
        seen.emplace(type, label);
        return label;
    }

    /// Id of the sub-pattern a literal argument (of `node`) equals, or -1.
    std::int32_t literal_id(PyObject* value, const py::handle& node) {
        PyObject* id = PyDict_GetItemWithError(literal_ids_.ptr(), value);
        if(id == nullptr) {
            if(PyErr_Occurred() != nullptr) {
                PyErr_Clear();  // unhashable: equals no pattern
            }
            return -1;
        }
        return table_code(id, node, "literal id");
    }

    /// The Node attributes read (slots of torch.fx.Node), by index; `_args` is
    /// the slot behind the `args` property.
    enum NodeAttr : std::size_t { kOp, kTarget, kUsers, kArgs };
    static constexpr std::array<const char*, 4> kNodeAttrs{
        "op", "target", "users", "_args"};

    std::unordered_map<PyObject*, std::int32_t> funcs_;
    std::unordered_map<PyObject*, std::int32_t> types_;
    py::dict method_labels_;
    py::dict literal_ids_;
    py::function resolve_type_;
    py::object node_type_;
    MemberReader<kNodeAttrs.size()> members_;
    py::list keep_;  // owns the keys of funcs_ and types_ (the patterns' own)
};

}  // namespace

void register_flatten(py::module_& m) {
    py::class_<Interner>(m, "Interner", "Interning tables of a compiled pattern set.")
        .def(py::init<py::dict,
                      py::dict,
                      py::dict,
                      py::dict,
                      py::function,
                      py::object>(),
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
             "Flatten FX nodes (in graph order) to (FlatGraph, nodes, modules, "
             "get_attrs, repeated, nested).");
}

}  // namespace pyfuse::bindings
