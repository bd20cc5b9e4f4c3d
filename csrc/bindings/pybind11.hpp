// Common header of the binding layer: the only place that names pybind11.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace py = pybind11;
using namespace pybind11::literals;

namespace pyfuse::bindings {

void register_automaton(py::module_& m);
void register_flatten(py::module_& m);
void register_emit(py::module_& m);
void register_shell(py::module_& m);

}  // namespace pyfuse::bindings
