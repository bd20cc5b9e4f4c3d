// Bindings of the pattern automaton: convert, release the GIL, call the core.
#include "flat_graph.hpp"
#include "pybind11.hpp"

namespace pyfuse::bindings {

namespace {

using IntVec = std::vector<std::int32_t>;

core::Span span(const IntVec& v) {
    return core::Span{v.data(), v.size()};
}

/// Keeps the arrays the automaton was compiled from (it copies what it needs,
/// but the arrays are also handy to inspect from Python).
class PyAutomaton {
public:
    PyAutomaton(const IntVec& head,
                const IntVec& label,
                const IntVec& check_args,
                const IntVec& child_off,
                const IntVec& child,
                const IntVec& top,
                const IntVec& label_is_module,
                std::int32_t num_labels)
        : automaton_(core::PatternArrays{span(head),
                                         span(label),
                                         span(check_args),
                                         span(child_off),
                                         span(child),
                                         span(top),
                                         span(label_is_module),
                                         num_labels}) {}

    [[nodiscard]] core::MatchResult match(const FlatGraph& g,
                                          const IntVec& exclude) const {
        const auto view = g.view(exclude);
        // Releasing the GIL is safe: the core reads only these C++ vectors, which
        // the caller's references keep alive, and the automaton is immutable.
        const py::gil_scoped_release nogil;
        return automaton_.match(view);
    }

    [[nodiscard]] const core::Automaton& get() const { return automaton_; }

private:
    core::Automaton automaton_;
};

}  // namespace

void register_automaton(py::module_& m) {
    py::class_<core::MatchResult>(m, "MatchResult", "Result of Automaton.match.")
        .def_readonly("owner",
                      &core::MatchResult::owner,
                      "Per node: id of the claiming match, or -1.")
        .def_readonly(
            "roots", &core::MatchResult::match_root, "Per match: node it started at.")
        .def_readonly("patterns",
                      &core::MatchResult::match_pattern,
                      "Per match: top pattern index.")
        .def_readonly("claimed",
                      &core::MatchResult::claimed,
                      "Claimed nodes, by match, walk order.")
        .def_readonly("claimed_off",
                      &core::MatchResult::claimed_off,
                      "Per match + 1: slices of claimed.")
        .def_readonly("error", &core::MatchResult::error)
        .def_readonly("error_node", &core::MatchResult::error_node)
        .def_readonly("missing_module", &core::MatchResult::missing_module);

    py::class_<FlatGraph>(m, "FlatGraph", "A graph flattened to integer arrays.")
        .def(py::init([](IntVec label, IntVec users, IntVec arg_off, IntVec arg) {
                 FlatGraph g;
                 g.label = std::move(label);
                 g.users = std::move(users);
                 g.arg_off = std::move(arg_off);
                 g.arg = std::move(arg);
                 return g;
             }),
             "label"_a,
             "users"_a,
             "arg_off"_a,
             "arg"_a)
        .def_readonly("label", &FlatGraph::label)
        .def_readonly("users", &FlatGraph::users)
        .def_readonly("arg_off", &FlatGraph::arg_off)
        .def_readonly("arg", &FlatGraph::arg)
        .def("__len__", [](const FlatGraph& g) { return g.label.size(); });

    py::class_<PyAutomaton>(m, "Automaton", "A compiled, immutable fusion pattern set.")
        .def(py::init<const IntVec&,
                      const IntVec&,
                      const IntVec&,
                      const IntVec&,
                      const IntVec&,
                      const IntVec&,
                      const IntVec&,
                      std::int32_t>(),
             "head"_a,
             "label"_a,
             "check_args"_a,
             "child_off"_a,
             "child"_a,
             "top"_a,
             "label_is_module"_a,
             "num_labels"_a)
        .def("match",
             &PyAutomaton::match,
             "graph"_a,
             "exclude"_a = IntVec{},
             "Match a flattened graph; releases the GIL.")
        .def_property_readonly(
            "num_subpatterns",
            [](const PyAutomaton& a) { return a.get().num_subpatterns(); })
        .def_property_readonly(
            "num_patterns", [](const PyAutomaton& a) { return a.get().num_patterns(); })
        .def_property_readonly(
            "num_labels", [](const PyAutomaton& a) { return a.get().num_labels(); });

    // The encoding's one definition (csrc/core/automaton.hpp), for pyfuse and tests.
    m.attr("HEAD_MATCH_ALL") = static_cast<std::int32_t>(core::Head::match_all);
    m.attr("HEAD_LABEL") = static_cast<std::int32_t>(core::Head::label);
    m.attr("HEAD_NEVER") = static_cast<std::int32_t>(core::Head::never);
    m.attr("HEAD_GETATTR") = static_cast<std::int32_t>(core::Head::getattr_);
    m.attr("MISSING_MODULE") = core::kMissingModule;
    m.def("literal_arg",
          &core::literal_arg,
          "code"_a,
          "The argument value of a literal equal to sub-pattern `code` (-1: none).");
    m.def("literal_code",
          &core::literal_code,
          "arg"_a,
          "The sub-pattern code of a literal argument value (inverse of literal_arg).");
    // (std::invalid_argument from the core reaches Python as ValueError: pybind11's
    // own translation)
}

}  // namespace pyfuse::bindings
