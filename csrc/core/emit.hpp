// pyfuse core: a Python source emitter for flattened FX graphs.
//
// Plain C++17: no Python, no pybind11, no torch. The binding layer
// (csrc/bindings/register_emit.cpp) reads the FX nodes and hands this library
// integers, object identities (opaque 64-bit keys) and strings; this library
// writes the text torch.fx's `CodeGen._gen_python_code` writes for the same
// graph (the default and the pytree code generators, non-verbose), byte for byte.
//
// ## What is simulated
// - FX's `_Namespace` (`create_name`): one namespace for node names and globals,
//   names created lazily in the order FX creates them (a node on its first
//   `repr`, a global on its first `add_global`), the illegal names (keywords,
//   builtins, FX's custom builtins) with the object each is allowed for.
// - `_get_repr` and `repr` of the argument values the binding encodes (tokens
//   below), `_format_target`, the operator templates, the `getattr` shortcut.
// - Dead-value freeing (`a = b = None` after a node's last use) from each
//   node's input-node list, exactly as FX registers last uses.
// - The body's `# COUNTER: i` marker lines, their removal and the line -> node
//   map, the final layout (`wrap(...)` statements, prologue, indentation).
//
// Anything the simulation does not cover ends the emission with a reason
// (`EmitResult::ok == false`); the caller then uses FX itself for that graph.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace pyfuse::core {

/// Node kinds (FX's `node.op`).
enum class NodeOp : std::uint8_t {
    placeholder = 0,
    get_attr = 1,
    call_module = 2,
    call_function = 3,
    call_method = 4,
    output = 5,
};

/// Argument tokens: a prefix code, then its payload words.
namespace tok {
constexpr std::int64_t node =
    0;  ///< + node key: a node of the graph (its namespace name)
constexpr std::int64_t none = 1;    ///< None
constexpr std::int64_t true_ = 2;   ///< True
constexpr std::int64_t false_ = 3;  ///< False
constexpr std::int64_t int_ = 4;    ///< + value: an int that fits in 64 bits
constexpr std::int64_t float_ = 5;  ///< + IEEE bits: a float (Python's repr)
constexpr std::int64_t str = 6;     ///< + string id: an ASCII str (Python's repr)
constexpr std::int64_t text = 7;    ///< + string id: text written as is
constexpr std::int64_t tuple = 8;   ///< + n, then n values: `(a, b)`, `(a,)`
constexpr std::int64_t list = 9;    ///< + n, then n values: `[a, b]`
constexpr std::int64_t dict = 10;   ///< + n, then n key/value pairs: `{k: v}`
constexpr std::int64_t slice = 11;  ///< then 3 values: `slice(a, b, c)`
constexpr std::int64_t ustr =
    12;  ///< + string id: a non-ASCII str, its repr written as is
constexpr std::int64_t uident =
    13;  ///< + repr id + str id: a non-ASCII str that is an identifier
}  // namespace tok

/// An object the code names through the global namespace (a function, a type).
struct GlobalRef {
    std::int32_t hint = -1;  ///< string id: the name hint (or the literal text)
    std::uint64_t key = 0;   ///< object identity
    bool literal =
        false;  ///< written as `hint` without a namespace entry (torch objects)
};

/// How a call_function node's target is written.
enum class CalleeKind : std::uint8_t {
    magic = 0,  ///< operator template (`{} + {}`), `text` = template string id
    inplace =
        1,  ///< in-place operator template (`{} += {}`), `text` = template string id
    global = 2,  ///< a global: `text` = GlobalRef index
};

struct Callee {
    CalleeKind kind = CalleeKind::global;
    std::int32_t text = -1;
};

/// Keywords, builtins and FX's custom builtins: name -> key of the object the
/// name is reserved for (a global with that identity may take the name). The
/// caller owns the strings the keys view (built once, reused for every graph).
using IllegalNames = std::unordered_map<std::string_view, std::uint64_t>;

/// One graph, flattened by the binding. Node references are object keys.
struct EmitGraph {
    std::vector<std::string_view>
        strings;                     ///< string table (views owned by the caller)
    std::vector<GlobalRef> globals;  ///< global objects referenced
    std::int32_t num_prefill = 0;    ///< globals [0, n) are registered first, in order
    std::vector<Callee> callees;     ///< call_function targets

    // Per node.
    std::vector<std::uint64_t> key;  ///< node identity
    std::vector<NodeOp> op;
    std::vector<std::int32_t> name;  ///< string id of node.name
    std::vector<std::int32_t>
        target;  ///< string id (str targets) or callee index (call_function)
    std::vector<std::int32_t> type;      ///< GlobalRef index of node.type, or -1 (None)
    std::vector<std::uint8_t> no_users;  ///< node.users is empty
    std::vector<std::uint8_t> wrapped;   ///< node.meta["is_wrapped"] is true
    /// Node i's arguments: tok[tok_off[i]:tok_off[i+1]] = nargs, nargs values,
    /// nkwargs, nkwargs (key string id, value) pairs.
    std::vector<std::int32_t> tok_off{0};
    std::vector<std::int64_t> tok;
    /// Node i's input nodes in FX's order (`node._input_nodes`):
    /// in[in_off[i]:in_off[i+1]].
    std::vector<std::int32_t> in_off{0};
    std::vector<std::uint64_t> in;

    std::string_view root_module = "self";
    std::string_view return_prefix =
        "return ";  ///< the output statement: prefix + repr + suffix
    std::string_view return_suffix;
    std::int32_t wrap_global = -1;  ///< GlobalRef index of torch.fx.wrap
};

/// Emitted code: what FX's `PythonCode` holds.
struct EmitResult {
    bool ok = false;
    std::string reason;  ///< why not ok (the caller falls back to FX)
    std::string src;
    /// lineno_map: line (0-based, counted from the prologue) -> node index or -1
    /// (None).
    std::vector<std::int32_t> line_node;
    std::int32_t first_line = 0;  ///< key of line_node[0] in FX's lineno_map
    std::int32_t prologue_start = 0;
    /// globals in FX's insertion order: (name, GlobalRef index).
    std::vector<std::pair<std::string, std::int32_t>> globals;
};

/// Writes the function definition line(s) from the free variables (placeholder
/// declarations) and the return annotation, as the code generator's gen_fn_def.
using PrologueFn = std::function<std::string(const std::vector<std::string>& free_vars,
                                             const std::string& ret)>;

/// Emits the Python source of `g` as FX would. Never throws for unsupported
/// input: returns ok == false with the reason.
EmitResult emit_python(const EmitGraph& g,
                       const IllegalNames& illegal,
                       const PrologueFn& prologue);

/// Python's repr of a float (shortest round-trip digits, Python's layout).
std::string float_repr(double x);

/// Python's repr of an ASCII str.
void str_repr(std::string& out, std::string_view s);

}  // namespace pyfuse::core
