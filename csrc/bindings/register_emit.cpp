// Binding of the code emitter: reads torch.fx Nodes through the Python C API
// into the core's EmitGraph and turns the result into the parts of FX's
// PythonCode. Python-aware by design (it walks argument values), so it lives
// here, never in csrc/core. It imports nothing from torch: the Node type, the
// immutable containers, the namespace tables and the classifiers for the few
// objects that need Python (call targets, type annotations, unusual argument
// types) are handed in by pyfuse.codegen.
#include <array>
#include <cstring>
#include <deque>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <unordered_set>

#include "../core/emit.hpp"
#include "members.hpp"
#include "pybind11.hpp"

namespace pyfuse::bindings {

namespace {

/// A graph the emitter does not cover: the reason goes back to Python, which
/// then uses FX for this graph.
struct NotCovered {
    std::string reason;
};

std::uint64_t key_of(const PyObject* o) {
    return static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(o));
}

/// Value kinds pyfuse.codegen's `classify_value(type)` returns.
enum ValueKind : int {
    kFallback = 0,
    kRepr = 1,
    kTupleLike = 2,
    kSize = 3,
    kListLike = 4
};

class PyEmitter {
public:
    PyEmitter(const py::dict& illegal,
              const py::list& prefill,
              const py::tuple& wrap,
              py::object node_type,
              py::object immutable_list,
              py::object immutable_dict,
              py::function classify_value,
              py::function classify_callee,
              py::function classify_type)
        : node_type_(require_type(std::move(node_type), "node_type")),
          members_(node_type_.ptr(), kNodeAttrs),
          immutable_list_(require_type(std::move(immutable_list), "immutable_list")),
          immutable_dict_(require_type(std::move(immutable_dict), "immutable_dict")),
          classify_value_(std::move(classify_value)),
          classify_callee_(std::move(classify_callee)),
          classify_type_(std::move(classify_type)), keep_(py::list()) {
        for(auto item : illegal) {
            keep_.append(item.second);
            illegal_names_.push_back(item.first.cast<std::string>());
            illegal_.emplace(illegal_names_.back(), key_of(item.second.ptr()));
        }
        for(auto item : prefill) {
            prefill_.push_back(global_spec(item.cast<py::tuple>()));
        }
        wrap_ = global_spec(wrap);
        immutable_list_iter_is_lists_ =
            PyType_IsSubtype(reinterpret_cast<PyTypeObject*>(immutable_list_.ptr()),
                             &PyList_Type) != 0 &&
            reinterpret_cast<PyTypeObject*>(immutable_list_.ptr())->tp_iter ==
                PyList_Type.tp_iter;
    }

    PyEmitter(const PyEmitter&) = delete;  // illegal_ views illegal_names_
    PyEmitter& operator=(const PyEmitter&) = delete;
    PyEmitter(PyEmitter&&) = delete;
    PyEmitter& operator=(PyEmitter&&) = delete;
    ~PyEmitter() = default;

    /// Returns (src, globals, lineno_map, prologue_start), or a str: why the
    /// graph is not covered. `redirect` (node -> node) rewrites references to
    /// nodes in arguments, as ``replace_all_uses_with`` would; with
    /// `users_from_nodes`, a node's users are the given nodes that read it (not
    /// ``node.users``): together they emit a planned edit of the graph (the
    /// nodes it keeps, in their new order) before it is made.
    py::object emit(const py::iterable& nodes,
                    const std::string& root_module,
                    const std::string& return_prefix,
                    const std::string& return_suffix,
                    const py::function& gen_fn_def,
                    const py::dict& redirect,
                    bool users_from_nodes) {
        Call c(*this);
        c.redirect = redirect.ptr();
        c.users_from_nodes = users_from_nodes;
        try {
            c.read(nodes);
        } catch(const NotCovered& e) {
            return py::str(e.reason);
        }
        c.g.root_module = root_module;
        c.g.return_prefix = return_prefix;
        c.g.return_suffix = return_suffix;
        core::PrologueFn prologue = [&](const std::vector<std::string>& free_vars,
                                        const std::string& ret) {
            py::list fv;
            for(const std::string& v : free_vars) {
                fv.append(py::str(v));
            }
            return gen_fn_def(fv, ret).cast<std::string>();
        };
        core::EmitResult r = core::emit_python(c.g, illegal_, prologue);
        if(!r.ok) {
            return py::str(r.reason);
        }
        py::dict globals;
        for(const auto& [name, gid] : r.globals) {
            globals[py::str(name)] = py::reinterpret_borrow<py::object>(
                c.objs[static_cast<std::size_t>(gid)]);
        }
        py::dict lineno_map;
        for(std::size_t k = 0; k < r.line_node.size(); ++k) {
            const std::int32_t v = r.line_node[k];
            lineno_map[py::int_(static_cast<std::size_t>(r.first_line) + k)] =
                v < 0 ? py::object(py::none()) : py::object(py::int_(v));
        }
        return py::make_tuple(py::str(r.src), globals, lineno_map, r.prologue_start);
    }

private:
    /// The Node attributes read (slots of torch.fx.Node), by index.
    enum NodeAttr : std::size_t {
        kOp,
        kName,
        kTarget,
        kArgs,
        kKwargs,
        kType,
        kUsers,
        kInputs,
        kMeta
    };
    static constexpr std::array<const char*, 9> kNodeAttrs{"op",
                                                           "name",
                                                           "target",
                                                           "_args",
                                                           "_kwargs",
                                                           "type",
                                                           "users",
                                                           "_input_nodes",
                                                           "meta"};

    /// Interned names (made once).
    struct Names {
        static py::str interned(const char* s) {
            return py::reinterpret_steal<py::str>(PyUnicode_InternFromString(s));
        }
        py::str wrapped = interned("is_wrapped");
        std::vector<py::str> ops{interned("placeholder"),
                                 interned("get_attr"),
                                 interned("call_module"),
                                 interned("call_function"),
                                 interned("call_method"),
                                 interned("output")};
    };

    struct Spec {
        py::str hint;
        py::object obj;
        bool literal = false;
    };

    Spec global_spec(const py::tuple& t) {
        if(t.size() != 3 || !PyUnicode_CheckExact(t[0].ptr())) {
            throw py::value_error("a global spec is (name: str, object, literal)");
        }
        return Spec{py::reinterpret_borrow<py::str>(t[0]),
                    py::reinterpret_borrow<py::object>(t[1]),
                    t[2].cast<bool>()};
    }

    /// The state of one emit() call: the flattened graph and what keeps its
    /// strings alive.
    struct Call {
        explicit Call(PyEmitter& e) : em(e), keep(py::list()), canon(py::dict()) {}

        PyEmitter& em;
        core::EmitGraph g;
        std::vector<PyObject*> objs;  // per GlobalRef: the object
        py::list keep;                // owns computed strings and objects
        py::dict canon;               // global object -> the first equal one
        std::unordered_map<PyObject*, std::int32_t> callee_of;
        std::unordered_map<PyObject*, std::int32_t> type_of;
        std::unordered_map<PyTypeObject*, int> kind_of;
        PyObject* redirect = nullptr;   // dict: node -> the node its uses go to
        bool users_from_nodes = false;  // else node.users

        /// `node`, or what `table` maps it to.
        static PyObject* mapped(PyObject* table, PyObject* node) {
            if(PyDict_GET_SIZE(table) == 0) {
                return node;
            }
            PyObject* to = PyDict_GetItemWithError(table, node);
            if(to == nullptr && PyErr_Occurred() != nullptr) {
                throw py::error_already_set();
            }
            return to != nullptr ? to : node;
        }

        std::int32_t add_string(std::string_view s) {
            g.strings.push_back(s);
            return static_cast<std::int32_t>(g.strings.size() - 1);
        }

        /// A str object alive for the call: its UTF-8 bytes, no copy.
        std::int32_t add_pystr(PyObject* s) {
            Py_ssize_t size = 0;
            const char* data = PyUnicode_AsUTF8AndSize(s, &size);
            if(data == nullptr) {
                throw py::error_already_set();
            }
            return add_string(std::string_view(data, static_cast<std::size_t>(size)));
        }

        std::int32_t add_owned(py::object s) {
            const std::int32_t id = add_pystr(s.ptr());
            keep.append(std::move(s));
            return id;
        }

        /// FX names globals through a dict: equal objects (two equal str
        /// annotations) share a name. The first one seen stands for them all.
        PyObject* canonical(PyObject* obj) {
            PyObject* first = PyDict_SetDefault(canon.ptr(), obj, obj);
            if(first == nullptr) {
                PyErr_Clear();
                throw NotCovered{"an unhashable global object"};
            }
            return first;
        }

        /// `hint`: a str alive for the call.
        std::int32_t add_global(PyObject* hint, PyObject* obj_in, bool literal) {
            PyObject* obj = canonical(obj_in);
            const std::int32_t hid = add_pystr(hint);
            g.globals.push_back(core::GlobalRef{hid, key_of(obj), literal});
            objs.push_back(obj);
            return static_cast<std::int32_t>(g.globals.size() - 1);
        }

        void read(const py::iterable& nodes) {
            for(const Spec& s : em.prefill_) {
                add_global(s.hint.ptr(), s.obj.ptr(), s.literal);
            }
            g.num_prefill = static_cast<std::int32_t>(g.globals.size());
            g.wrap_global =
                add_global(em.wrap_.hint.ptr(), em.wrap_.obj.ptr(), em.wrap_.literal);

            const Names& nm = em.names_;
            const py::str& s_wrapped = nm.wrapped;
            const std::vector<py::str>& ops = nm.ops;
            Py_ssize_t expected = PyObject_Length(nodes.ptr());
            if(expected < 0) {
                PyErr_Clear();
                expected = 0;
            }
            const auto n = static_cast<std::size_t>(expected);
            g.key.reserve(n);
            g.op.reserve(n);
            g.name.reserve(n);
            g.target.reserve(n);
            g.type.reserve(n);
            g.no_users.reserve(n);
            g.wrapped.reserve(n);
            g.tok_off.reserve(n + 1);
            g.tok.reserve(8 * n);
            g.in_off.reserve(n + 1);
            g.in.reserve(2 * n);
            g.strings.reserve(3 * n + 32);

            MemberReader<kNodeAttrs.size()>& members = em.members_;
            members.revalidate();
            auto attr = [&members](PyObject* o, NodeAttr a) {
                return members.get(o, a);
            };

            py::object it =
                py::reinterpret_steal<py::object>(PyObject_GetIter(nodes.ptr()));
            if(!it) {
                throw py::error_already_set();
            }
            while(PyObject* raw = PyIter_Next(it.ptr())) {
                const py::object node = py::reinterpret_steal<py::object>(raw);
                PyObject* nd = node.ptr();
                // The graph owns its nodes for the duration of the call; the
                // key is the node's address.
                g.key.push_back(key_of(nd));

                const py::object op = attr(nd, kOp);
                int op_index = -1;
                for(int k = 0; k < 6 && op_index < 0; ++k) {
                    if(op.ptr() == ops[static_cast<std::size_t>(k)].ptr() ||
                       (PyUnicode_Check(op.ptr()) &&
                        PyUnicode_Compare(
                            op.ptr(), ops[static_cast<std::size_t>(k)].ptr()) == 0)) {
                        op_index = k;
                    }
                }
                if(PyErr_Occurred() != nullptr) {
                    throw py::error_already_set();
                }
                if(op_index < 0) {
                    throw NotCovered{"a node with an unknown op"};
                }
                const auto nop = static_cast<core::NodeOp>(op_index);
                g.op.push_back(nop);

                const py::object name = attr(nd, kName);
                if(!PyUnicode_CheckExact(name.ptr())) {
                    throw NotCovered{"a node name that is not a str"};
                }
                g.name.push_back(add_pystr(name.ptr()));

                const py::object target = attr(nd, kTarget);
                if(nop == core::NodeOp::call_function) {
                    g.target.push_back(callee(target.ptr()));
                } else if(nop == core::NodeOp::output) {
                    g.target.push_back(-1);
                } else {
                    if(!PyUnicode_CheckExact(target.ptr())) {
                        throw NotCovered{"a node target that is not a str"};
                    }
                    g.target.push_back(add_pystr(target.ptr()));
                }

                const py::object type = attr(nd, kType);
                g.type.push_back(type.is_none() ? -1 : annotation(type.ptr()));

                if(users_from_nodes) {
                    g.no_users.push_back(1);  // (until a reader is found, below)
                } else {
                    const py::object users = attr(nd, kUsers);
                    const Py_ssize_t n_users = PyObject_Length(users.ptr());
                    if(n_users < 0) {
                        throw py::error_already_set();
                    }
                    g.no_users.push_back(n_users == 0 ? 1 : 0);
                }

                std::uint8_t wrapped = 0;
                if(nop == core::NodeOp::call_function) {
                    const py::object meta = attr(nd, kMeta);
                    if(!PyDict_CheckExact(meta.ptr())) {
                        throw NotCovered{"node.meta that is not a dict"};
                    }
                    PyObject* w = PyDict_GetItemWithError(meta.ptr(), s_wrapped.ptr());
                    if(w == nullptr && PyErr_Occurred() != nullptr) {
                        throw py::error_already_set();
                    }
                    if(w != nullptr) {
                        const int truth = PyObject_IsTrue(w);
                        if(truth < 0) {
                            throw py::error_already_set();
                        }
                        wrapped = truth != 0 ? 1 : 0;
                    }
                }
                g.wrapped.push_back(wrapped);

                const py::object args = attr(nd, kArgs);
                const py::object kwargs = attr(nd, kKwargs);
                if(!PyTuple_Check(args.ptr()) || !PyDict_Check(kwargs.ptr())) {
                    throw NotCovered{"node arguments that are not a tuple and a dict"};
                }
                const Py_ssize_t nargs = PyTuple_GET_SIZE(args.ptr());
                g.tok.push_back(nargs);
                for(Py_ssize_t k = 0; k < nargs; ++k) {
                    encode(PyTuple_GET_ITEM(args.ptr(), k), false);
                }
                const Py_ssize_t nkw = PyDict_GET_SIZE(kwargs.ptr());
                g.tok.push_back(nkw);
                Py_ssize_t pos = 0;
                PyObject* k = nullptr;
                PyObject* v = nullptr;
                // (most nodes have none: do not touch the entries table then)
                while(nkw > 0 && PyDict_Next(kwargs.ptr(), &pos, &k, &v)) {
                    if(!PyUnicode_CheckExact(k)) {
                        throw NotCovered{"a keyword argument name that is not a str"};
                    }
                    g.tok.push_back(add_pystr(k));
                    encode(v, false);
                }
                g.tok_off.push_back(static_cast<std::int32_t>(g.tok.size()));

                const py::object inputs = attr(nd, kInputs);
                if(!PyDict_Check(inputs.ptr())) {
                    throw NotCovered{"node._input_nodes that is not a dict"};
                }
                pos = 0;
                while(PyDict_Next(inputs.ptr(), &pos, &k, &v)) {
                    g.in.push_back(key_of(mapped(redirect, k)));
                }
                g.in_off.push_back(static_cast<std::int32_t>(g.in.size()));
            }
            if(PyErr_Occurred() != nullptr) {
                throw py::error_already_set();
            }
            if(users_from_nodes) {
                const std::unordered_set<std::uint64_t> read(g.in.begin(), g.in.end());
                for(std::size_t i = 0; i < g.key.size(); ++i) {
                    g.no_users[i] = read.count(g.key[i]) == 0 ? 1 : 0;
                }
            }
        }

        static PyObject* str_item(const py::tuple& t, std::size_t i) {
            PyObject* item = t[i].ptr();
            if(!PyUnicode_CheckExact(item)) {
                throw py::type_error("a classifier returned a name that is not a str");
            }
            return item;
        }

        std::int32_t callee(PyObject* target) {
            const auto hit = callee_of.find(target);
            if(hit != callee_of.end()) {
                return hit->second;
            }
            const py::object spec = em.classify_callee_(py::handle(target));
            if(spec.is_none()) {
                throw NotCovered{"a call_function target it does not know how to name"};
            }
            const auto t = spec.cast<py::tuple>();  // (kind, text, literal)
            const int kind = t[0].cast<int>();
            core::Callee c;
            c.kind = static_cast<core::CalleeKind>(kind);
            if(kind == static_cast<int>(core::CalleeKind::global)) {
                keep.append(t);  // owns the hint
                c.text = add_global(str_item(t, 1), target, t[2].cast<bool>());
            } else {
                c.text = add_owned(py::str(t[1]));
            }
            g.callees.push_back(c);
            const auto id = static_cast<std::int32_t>(g.callees.size() - 1);
            callee_of.emplace(target, id);
            return id;
        }

        std::int32_t annotation(PyObject* type) {
            const auto hit = type_of.find(type);
            if(hit != type_of.end()) {
                return hit->second;
            }
            const py::object spec = em.classify_type_(py::handle(type));
            if(spec.is_none()) {
                throw NotCovered{"a type annotation it does not cover"};
            }
            const auto t = spec.cast<py::tuple>();  // (text, literal)
            keep.append(t);                         // owns the hint
            const std::int32_t id = add_global(str_item(t, 0), type, t[1].cast<bool>());
            type_of.emplace(type, id);
            return id;
        }

        int value_kind(PyTypeObject* tp) {
            const auto hit = kind_of.find(tp);
            if(hit != kind_of.end()) {
                return hit->second;
            }
            const int kind =
                em.classify_value_(py::handle(reinterpret_cast<PyObject*>(tp)))
                    .cast<int>();
            kind_of.emplace(tp, kind);
            return kind;
        }

        void text(PyObject* o, std::int64_t token) {
            PyObject* r = PyObject_Repr(o);
            if(r == nullptr) {
                throw py::error_already_set();
            }
            g.tok.push_back(token);
            g.tok.push_back(add_owned(py::reinterpret_steal<py::object>(r)));
        }

        bool list_iterates_in_place(PyObject* seq) const {
            return Py_TYPE(seq) == &PyList_Type ||
                   (Py_TYPE(seq) ==
                        reinterpret_cast<PyTypeObject*>(em.immutable_list_.ptr()) &&
                    em.immutable_list_iter_is_lists_);
        }

        void sequence(PyObject* seq, std::int64_t token, bool in_dict) {
            g.tok.push_back(token);
            if(PyTuple_Check(seq)) {
                const Py_ssize_t m = PyTuple_GET_SIZE(seq);
                g.tok.push_back(m);
                for(Py_ssize_t j = 0; j < m; ++j) {
                    encode(PyTuple_GET_ITEM(seq, j), in_dict);
                }
                return;
            }
            if(!list_iterates_in_place(seq)) {
                // a list subclass: FX iterates it, so does list()
                const py::list items =
                    py::reinterpret_steal<py::list>(PySequence_List(seq));
                if(!items) {
                    throw py::error_already_set();
                }
                const Py_ssize_t m = PyList_GET_SIZE(items.ptr());
                g.tok.push_back(m);
                for(Py_ssize_t j = 0; j < m; ++j) {
                    encode(PyList_GET_ITEM(items.ptr(), j), in_dict);
                }
                return;
            }
            // a list or FX's immutable_list (no __iter__ of its own): read in
            // place, not copied (a new list per argument is garbage the cyclic
            // collector then walks). Encoding runs no Python for the items a
            // graph's lists hold; should a repr() change the list anyway, the
            // size is rechecked and the graph goes to FX.
            const Py_ssize_t m = PyList_GET_SIZE(seq);
            g.tok.push_back(m);
            for(Py_ssize_t j = 0; j < m; ++j) {
                if(j >= PyList_GET_SIZE(seq)) {
                    throw NotCovered{"a list argument changed while it was read"};
                }
                const py::object item =
                    py::reinterpret_borrow<py::object>(PyList_GET_ITEM(seq, j));
                encode(item.ptr(), in_dict);
            }
            if(PyList_GET_SIZE(seq) != m) {
                throw NotCovered{"a list argument changed while it was read"};
            }
        }

        /// One argument value. `in_dict`: inside a dict, where FX writes repr()
        /// of the values, not _get_repr(): the same text for the values encoded
        /// natively, a difference for some others (those fall back).
        void encode(PyObject* o, bool in_dict) {
            PyTypeObject* tp = Py_TYPE(o);
            if(PyObject_TypeCheck(
                   o, reinterpret_cast<PyTypeObject*>(em.node_type_.ptr()))) {
                g.tok.push_back(core::tok::node);
                g.tok.push_back(static_cast<std::int64_t>(key_of(mapped(redirect, o))));
                return;
            }
            if(o == Py_None) {
                g.tok.push_back(core::tok::none);
                return;
            }
            if(tp == &PyBool_Type) {
                g.tok.push_back(o == Py_True ? core::tok::true_ : core::tok::false_);
                return;
            }
            if(tp == &PyLong_Type) {
                int overflow = 0;
                const long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
                if(v == -1 && PyErr_Occurred() != nullptr) {
                    throw py::error_already_set();
                }
                if(overflow != 0) {
                    text(o, core::tok::text);
                    return;
                }
                g.tok.push_back(core::tok::int_);
                g.tok.push_back(static_cast<std::int64_t>(v));
                return;
            }
            if(tp == &PyFloat_Type) {
                const double d = PyFloat_AS_DOUBLE(o);
                std::int64_t bits = 0;
                std::memcpy(&bits, &d, sizeof bits);
                g.tok.push_back(core::tok::float_);
                g.tok.push_back(bits);
                return;
            }
            if(tp == &PyUnicode_Type) {
                if(PyUnicode_IS_ASCII(o)) {
                    g.tok.push_back(core::tok::str);
                    g.tok.push_back(add_pystr(o));
                } else if(PyUnicode_IsIdentifier(o) == 1) {
                    // (Unicode identifier rules: Python decides, for FX's getattr
                    // shortcut)
                    text(o, core::tok::uident);
                    g.tok.push_back(add_pystr(o));
                } else {
                    text(o, core::tok::ustr);
                }
                return;
            }
            if(tp == &PyTuple_Type) {
                sequence(o, core::tok::tuple, in_dict);
                return;
            }
            if(tp == &PyList_Type ||
               tp == reinterpret_cast<PyTypeObject*>(em.immutable_list_.ptr())) {
                sequence(o, core::tok::list, in_dict);
                return;
            }
            if(tp == &PyDict_Type ||
               tp == reinterpret_cast<PyTypeObject*>(em.immutable_dict_.ptr())) {
                g.tok.push_back(core::tok::dict);
                g.tok.push_back(PyDict_Size(o));
                Py_ssize_t pos = 0;
                PyObject* k = nullptr;
                PyObject* v = nullptr;
                while(PyDict_Next(o, &pos, &k, &v)) {
                    encode(k, true);
                    encode(v, true);
                }
                return;
            }
            if(tp == &PySlice_Type) {
                auto* s = reinterpret_cast<PySliceObject*>(o);
                g.tok.push_back(core::tok::slice);
                encode(s->start, in_dict);
                encode(s->stop, in_dict);
                encode(s->step, in_dict);
                return;
            }
            switch(value_kind(tp)) {
            case kRepr:
                text(o, core::tok::text);
                return;
            case kTupleLike:
                if(!in_dict) {
                    sequence(o, core::tok::tuple, in_dict);
                    return;
                }
                break;
            case kSize:
                if(in_dict) {
                    text(o, core::tok::text);
                } else {
                    sequence(o, core::tok::tuple, in_dict);
                }
                return;
            case kListLike:
                if(!in_dict) {
                    sequence(o, core::tok::list, in_dict);
                    return;
                }
                break;
            default:
                break;
            }
            throw NotCovered{std::string("an argument of type ") + tp->tp_name};
        }
    };

    py::object node_type_;
    MemberReader<kNodeAttrs.size()> members_;
    py::object immutable_list_;
    py::object immutable_dict_;
    bool immutable_list_iter_is_lists_ = false;  // iterating it = reading its items
    py::function classify_value_;
    py::function classify_callee_;
    py::function classify_type_;
    py::list keep_;
    Names names_;
    std::deque<std::string> illegal_names_;  // the strings illegal_ views (stable)
    core::IllegalNames illegal_;
    std::vector<Spec> prefill_;
    Spec wrap_;
};

}  // namespace

void register_emit(py::module_& m) {
    py::class_<PyEmitter>(
        m,
        "Emitter",
        "Native Python source emitter for FX graphs (see pyfuse.codegen).")
        .def(py::init<const py::dict&,
                      const py::list&,
                      const py::tuple&,
                      py::object,
                      py::object,
                      py::object,
                      py::function,
                      py::function,
                      py::function>(),
             "illegal"_a,
             "prefill"_a,
             "wrap"_a,
             "node_type"_a,
             "immutable_list"_a,
             "immutable_dict"_a,
             "classify_value"_a,
             "classify_callee"_a,
             "classify_type"_a)
        .def("emit",
             &PyEmitter::emit,
             "nodes"_a,
             "root_module"_a,
             "return_prefix"_a,
             "return_suffix"_a,
             "gen_fn_def"_a,
             "redirect"_a = py::dict(),
             "users_from_nodes"_a = false,
             "(src, globals, lineno_map, prologue_start), or the reason (str) the "
             "graph is not covered.");
    m.def(
        "float_repr",
        [](double x) { return core::float_repr(x); },
        "x"_a,
        "Python's repr of a float, as the emitter writes it (for tests).");
}

}  // namespace pyfuse::bindings
