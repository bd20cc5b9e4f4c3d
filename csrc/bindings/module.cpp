// pyfuse._core: wires the binding areas together; no logic lives here.
#include "pybind11.hpp"

#ifndef PYFUSE_VERSION
#error "PYFUSE_VERSION must be defined (CMakeLists.txt: from pyfuse/_version.py)"
#endif
#ifndef PYFUSE_BUILD_INFO
#define PYFUSE_BUILD_INFO "unknown build"
#endif

PYBIND11_MODULE(_core, m, py::mod_gil_not_used()) {
    m.doc() = "pyfuse native core: pattern automaton, FX graph flattener, code emitter "
              "and object shells (private).";
    m.attr("__version__") = PYFUSE_VERSION;
    m.attr("build_info") = PYFUSE_BUILD_INFO;
    pyfuse::bindings::register_automaton(m);
    pyfuse::bindings::register_flatten(m);
    pyfuse::bindings::register_emit(m);
    pyfuse::bindings::register_shell(m);
}
