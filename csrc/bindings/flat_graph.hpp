// A flattened graph owned by Python: the arrays the core matches over.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/automaton.hpp"

namespace pyfuse::bindings {

struct FlatGraph {
    std::vector<std::int32_t> label;
    std::vector<std::int32_t> users;
    std::vector<std::int32_t> arg_off{0};
    std::vector<std::int32_t> arg;

    [[nodiscard]] core::GraphArrays
    view(const std::vector<std::int32_t>& exclude) const {
        auto span = [](const std::vector<std::int32_t>& v) {
            return core::Span{v.data(), v.size()};
        };
        return core::GraphArrays{
            span(label), span(users), span(arg_off), span(arg), span(exclude)};
    }
};

}  // namespace pyfuse::bindings
