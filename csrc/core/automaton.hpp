// pyfuse core: a pattern automaton over flattened graphs.
//
// Plain C++17 over integer arrays: no Python, no pybind11, no torch. The binding
// layer (csrc/bindings) interns FX nodes and fusion patterns into the integer
// codes described here; this library only matches.
//
// ## Model
// A *graph* is N nodes in topological order. Node i has a label (an interned
// (op, target) code; 0 = no pattern entry can name it, kMissingModule = a
// call_module whose module does not exist), a user count, and an argument list.
// Each argument is either a node index (>= 0, < i) or a literal, encoded as
// -(code + 2) where code is the id of the sub-pattern the literal equals (-1:
// equals none): literal_arg() below.
//
// A *pattern set* is a hash-consed DAG of sub-patterns. Sub-pattern p has a
// head (match-all, a label, or never-matches-a-node), optional children (the
// argument sub-patterns, matched against the node's positional arguments) and
// flags. The top-level patterns are given in priority order.
//
// ## Algorithm (the automaton)
// 1. Compile (once per pattern set): a decision table from label to the
//    sub-patterns whose head accepts that label, and from label to the
//    top-level patterns that can start there, in priority order. O(P + K + L).
// 2. Scan bottom-up, graph order: for node i, M[i] = the set of sub-patterns
//    node i matches (as a bitset), computed only for the sub-patterns the
//    decision table lists for label(i). A child position accepts argument a
//    iff the child is match-all, or a is a literal equal to it, or a is a node
//    with at most one user and the child is in M[a]. O(N * C * A) where C is
//    the number of candidates per label and A the arity: each node is visited
//    once, and no pattern is re-tried over a subtree.
// 3. Select top-down, reverse graph order: the first top-level pattern in the
//    node's candidate list that is in M[i] wins, unless the node is already
//    claimed or the (node, pattern) pair is excluded. The winner claims the
//    nodes it covers in the reference's walk order (first claim wins; match-all
//    positions and literals claim nothing). O(N + sum of pattern sizes).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace pyfuse::core {

/// Head kinds of a sub-pattern (the bindings export them as _core.HEAD_*).
enum class Head : std::int32_t {
    match_all = 0,  ///< MatchAllNode: accepts any argument, claims nothing.
    label = 1,      ///< accepts nodes whose label equals `label`.
    never = 2,      ///< accepts no node (a literal entry); literals may still equal it.
    /// `(getattr, name)`: label must match and args[1] must equal child 0.
    getattr_ = 3,
};

/// A literal argument is stored as a negative number: -(code + 2), where code is the
/// id of the sub-pattern the literal equals, or -1 (equals none: stored as -1).
/// The bindings export both directions as _core.literal_arg / _core.literal_code.
[[nodiscard]] constexpr std::int32_t literal_arg(std::int32_t code) {
    return -code - 2;
}
[[nodiscard]] constexpr std::int32_t literal_code(std::int32_t arg) {
    return -arg - 2;
}

/// A read-only view of a contiguous int32 array.
struct Span {
    const std::int32_t* data = nullptr;
    std::size_t size = 0;
    std::int32_t operator[](std::size_t i) const { return data[i]; }
};

/// Pattern set, as arrays (see the module comment).
struct PatternArrays {
    Span head;        ///< Head per sub-pattern.
    Span label;       ///< label per sub-pattern (for Head::label / getattr_).
    Span check_args;  ///< 1 if the node's arity and arguments must match children.
    /// size P + 1: children of p are child[child_off[p]:child_off[p+1]].
    Span child_off;
    Span child;  ///< sub-pattern ids.
    Span top;    ///< top-level patterns (sub-pattern ids) in priority order.
    /// size num_labels: 1 where testing the label looks a module up.
    Span label_is_module;
    std::int32_t num_labels = 0;  ///< labels are in [0, num_labels).
};

/// Graph, as arrays (see the module comment).
struct GraphArrays {
    Span label;    ///< size N.
    Span users;    ///< size N.
    Span arg_off;  ///< size N + 1.
    Span arg;      ///< node index (>= 0) or encoded literal (< 0).
    Span exclude;  ///< flattened (node, top-pattern index) pairs that must not match.
};

/// Label of a call_module node whose module does not exist.
inline constexpr std::int32_t kMissingModule = -1;

/// Result of a scan. On error, `error` is non-empty and `error_node` names the
/// node (or -1); nothing else is meaningful. A module pattern entry tested
/// against a kMissingModule node is an error too (the reference raises KeyError
/// at that point), but only where the reference would test it: evaluation is
/// tri-state (match, no match, raises) and follows the reference's order.
struct MatchResult {
    std::vector<std::int32_t> owner;          ///< per node: match id or -1.
    std::vector<std::int32_t> match_root;     ///< per match: the node it started at.
    std::vector<std::int32_t> match_pattern;  ///< per match: index into `top`.
    /// claimed nodes, grouped by match, walk order.
    std::vector<std::int32_t> claimed;
    std::vector<std::int32_t> claimed_off{0};  ///< per match + 1: slices of `claimed`.
    std::string error;
    std::int32_t error_node = -1;
    bool missing_module = false;  ///< the error is a module lookup of a missing target.
};

/// A compiled pattern set. Immutable once built, so one instance may be used by
/// several threads at once.
class Automaton {
public:
    /// Validates and compiles. Throws std::invalid_argument on malformed input.
    explicit Automaton(const PatternArrays& p);

    /// Matches a graph. Never throws for bad graph input: reports it in the result.
    [[nodiscard]] MatchResult match(const GraphArrays& g) const;

    [[nodiscard]] std::size_t num_subpatterns() const { return subs_.size(); }
    [[nodiscard]] std::size_t num_patterns() const { return top_.size(); }
    [[nodiscard]] std::int32_t num_labels() const { return num_labels_; }

private:
    struct Sub {
        Head head;
        std::int32_t label;
        bool check_args;
        std::int32_t child_begin;
        std::int32_t child_end;
    };

    enum class Tri : std::uint8_t { no, yes, raises };
    struct Bits;
    /// The steps of match().
    [[nodiscard]] bool
    validate(const GraphArrays& g,
             MatchResult& r,
             bool& any_missing,
             std::vector<std::pair<std::int32_t, std::int32_t>>& excluded) const;
    [[nodiscard]] Bits scan(const GraphArrays& g, bool any_missing) const;
    [[nodiscard]] bool
    select(const GraphArrays& g,
           const Bits& bits,
           const std::vector<std::pair<std::int32_t, std::int32_t>>& excluded,
           MatchResult& r) const;
    [[nodiscard]] std::int32_t trace_missing(std::int32_t node,
                                             std::int32_t sub,
                                             const GraphArrays& g,
                                             const Bits& bits) const;
    [[nodiscard]] Tri accepts_arg(std::int32_t child,
                                  std::int32_t arg,
                                  const GraphArrays& g,
                                  const Bits& bits) const;
    [[nodiscard]] Tri test(std::int32_t sub,
                           std::int32_t node,
                           const GraphArrays& g,
                           const Bits& bits) const;
    void claim(std::int32_t sub,
               std::int32_t arg,
               std::int32_t match_id,
               const GraphArrays& g,
               std::vector<std::int32_t>& owner,
               std::vector<std::int32_t>& claimed) const;

    std::vector<Sub> subs_;
    std::vector<std::int32_t> children_;
    std::vector<std::int32_t> top_;
    std::int32_t num_labels_ = 0;
    std::size_t words_ = 0;  ///< 64-bit words per node bitset.
    /// Tables are indexed by label + 1, so slot 0 is kMissingModule.
    /// label -> sub-patterns whose head accepts it (CSR).
    std::vector<std::int32_t> cand_off_;
    std::vector<std::int32_t> cand_;
    /// label -> top-level pattern indices (priority order) that may start there.
    std::vector<std::int32_t> root_off_;
    std::vector<std::int32_t> root_;
    std::vector<bool> label_is_module_;
};

}  // namespace pyfuse::core
