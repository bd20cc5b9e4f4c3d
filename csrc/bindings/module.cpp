// pyfuse._core: wires the binding areas together; no logic lives here.
#include "pybind11.hpp"

#ifndef PYFUSE_VERSION
#define PYFUSE_VERSION "dev"
#endif

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
    m.doc() = "pyfuse native core: pattern automaton and FX graph flattener (private).";
    m.attr("__version__") = PYFUSE_VERSION;
    pyfuse::bindings::register_automaton(m);
    pyfuse::bindings::register_flatten(m);
    pyfuse::bindings::register_emit(m);
}
