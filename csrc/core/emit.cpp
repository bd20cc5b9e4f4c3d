// Python source emitter: see emit.hpp for what it simulates and why.
#include "emit.hpp"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <utility>

#include "open_table.hpp"

namespace pyfuse::core {

namespace {

/// Raised inside the emitter for input it does not cover; caught at the top.
class Unsupported : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// Object key -> node index (the emitter sizes it for all its nodes: it never grows).
using KeyIndex = OpenTable<std::uint64_t, std::int32_t, AddressHash>;

/// String view -> int64: the namespace holds two entries a node; node-based maps
/// spent more time allocating and freeing them than looking them up. The caller
/// owns the viewed strings.
using StrTable = OpenTable<std::string_view, std::int64_t, StringHash>;

bool is_ident_start(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_ident_char(char c) {
    return is_ident_start(c) || (c >= '0' && c <= '9');
}
bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

bool has_non_ascii(std::string_view s) {
    for(const char c : s) {
        if(static_cast<unsigned char>(c) >= 0x80U) {
            return true;
        }
    }
    return false;
}

/// str.isidentifier() for ASCII text (the caller rejects non-ASCII).
bool is_identifier(std::string_view s) {
    if(s.empty() || !is_ident_start(s[0])) {
        return false;
    }
    for(const char c : s.substr(1)) {
        if(!is_ident_char(c)) {
            return false;
        }
    }
    return true;
}

void append_int(std::string& out, std::int64_t v) {
    char buf[24];
    const auto res = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, res.ptr);
}

/// FX's `_Namespace`: unique names for nodes and globals (`create_name`).
/// Names live in an arena (stable addresses); the sets and maps key on views.
class Namespace {
public:
    Namespace(const IllegalNames& illegal, std::size_t expected)
        : illegal_(illegal), used_(expected + 16), base_count_(64) {}

    /// `remember`: look the object up first and record its name (globals; a
    /// node is named once, its emitter caches the name).
    std::string_view
    create_name(std::string_view candidate_in, std::uint64_t obj, bool remember) {
        if(remember) {
            const auto hit = obj_to_name_.find(obj);
            if(hit != obj_to_name_.end()) {
                return hit->second;
            }
        }
        if(has_non_ascii(candidate_in)) {
            throw Unsupported("a non-ASCII name");
        }
        if(candidate_in.find('\n') != std::string_view::npos) {
            // (FX's name pattern ends in `$`, which also matches before a final
            // newline)
            throw Unsupported("a name with a newline");
        }
        std::string_view candidate = candidate_in;
        std::string cleaned;
        std::string_view base;
        std::string_view num;
        if(!split_name(candidate, base, num)) {
            // _illegal_char_regex.sub("_", candidate): runs of other characters -> "_"
            bool in_run = false;
            for(const char c : candidate) {
                if(is_ident_char(c)) {
                    cleaned += c;
                    in_run = false;
                } else if(!in_run) {
                    cleaned += '_';
                    in_run = true;
                }
            }
            if(cleaned.empty()) {
                cleaned = "_unnamed";
            }
            if(is_digit(cleaned[0])) {
                cleaned.insert(0, 1, '_');
            }
            candidate = cleaned;
            if(!split_name(candidate, base, num)) {
                throw Unsupported("a name FX cannot normalise");
            }
        }
        std::string numbered;
        auto renumber = [&](std::int64_t n) {
            numbered.assign(base.data(), base.size());
            numbered += '_';
            append_int(numbered, n);
            candidate = numbered;
        };
        std::int64_t n = 0;
        std::int64_t* const bc = base_count_.find(base);
        if(num.empty() || used_.contains(candidate)) {
            n = bc == nullptr ? 0 : *bc;
            const auto il = illegal_.find(candidate);
            if(il != illegal_.end() && il->second != obj) {
                renumber(++n);
            }
        } else {
            if(num.size() > 18) {
                throw Unsupported("a name with a very long number suffix");
            }
            for(const char c : num) {
                n = n * 10 + (c - '0');
            }
        }
        while(used_.contains(candidate)) {
            renumber(++n);
        }
        const std::string_view stored = store(candidate);
        used_.insert(stored, 0);
        if(bc != nullptr) {
            *bc = n;
        } else {
            base_count_.insert(stored.substr(0, base.size()), n);
        }
        if(remember) {
            obj_to_name_.emplace(obj, stored);
        }
        return stored;
    }

private:
    /// `_name_regex` = ^([a-zA-Z_][0-9a-zA-Z_]*?)(?:_(\d+))?$ on ASCII text:
    /// base = the shortest prefix whose rest is empty or `_digits`.
    static bool
    split_name(std::string_view s, std::string_view& base, std::string_view& num) {
        if(!is_identifier(s)) {
            return false;
        }
        std::size_t d = s.size();
        while(d > 0 && is_digit(s[d - 1])) {
            --d;
        }
        // the suffix `_(\d+)` needs a non-empty digit run right after an '_'
        // that is not the first character
        if(d < s.size() && d >= 2 && s[d - 1] == '_') {
            base = s.substr(0, d - 1);
            num = s.substr(d);
        } else {
            base = s;
            num = std::string_view();
        }
        return true;
    }

    /// A copy of `s` in the arena: names are copied into large blocks, not
    /// allocated one string each (one malloc per name on a 10k-node graph).
    std::string_view store(std::string_view s) {
        if(s.size() > block_left_) {
            const std::size_t size = std::max<std::size_t>(kBlock, s.size());
            blocks_.push_back(std::make_unique<char[]>(size));
            block_next_ = blocks_.back().get();
            block_left_ = size;
        }
        if(!s.empty()) {
            std::memcpy(block_next_, s.data(), s.size());
        }
        const std::string_view stored(block_next_, s.size());
        block_next_ += s.size();
        block_left_ -= s.size();
        return stored;
    }

    static constexpr std::size_t kBlock = 1U << 16U;
    const IllegalNames& illegal_;
    std::vector<std::unique_ptr<char[]>> blocks_;  // the arena (stable addresses)
    char* block_next_ = nullptr;
    std::size_t block_left_ = 0;
    std::unordered_map<std::uint64_t, std::string_view> obj_to_name_;
    StrTable used_;        // names given (values unused)
    StrTable base_count_;  // FX's _base_count: a base name's last number (few bases)
};

/// `_format_target(base, target)`: each non-identifier element wraps what is
/// left of it in `getattr(..., "e")`, so the text is `getattr(` once per such
/// element, the base, then the elements in order.
void format_target(std::string& out, std::string_view base, std::string_view target) {
    if(has_non_ascii(target)) {
        throw Unsupported("a non-ASCII attribute path");
    }
    auto for_each = [&](auto&& f) {
        std::size_t start = 0;
        while(true) {
            const std::size_t dot = target.find('.', start);
            f(target.substr(start,
                            dot == std::string_view::npos ? std::string_view::npos
                                                          : dot - start));
            if(dot == std::string_view::npos) {
                return;
            }
            start = dot + 1;
        }
    };
    for_each([&](std::string_view e) {
        if(!is_identifier(e)) {
            out += "getattr(";
        }
    });
    out += base;
    for_each([&](std::string_view e) {
        if(is_identifier(e)) {
            out += '.';
            out += e;
        } else {
            out += ", \"";
            out += e;
            out += "\")";
        }
    });
}

class Emitter {
public:
    Emitter(const EmitGraph& g, const IllegalNames& illegal)
        : g_(g), ns_(illegal, g.key.size()), index_(g.key.size()),
          names_(g.key.size()) {}

    EmitResult run(const PrologueFn& prologue) {
        const std::size_t n = g_.key.size();
        check_shapes();
        for(std::size_t i = 0; i < n; ++i) {
            if(!index_.try_insert(g_.key[i], static_cast<std::int32_t>(i))) {
                throw Unsupported("a node listed twice");
            }
        }
        for(std::int32_t i = 0; i < g_.num_prefill; ++i) {
            add_global(i);
        }
        compute_last_uses();

        std::string body;
        body.reserve(n * 64);
        for(std::size_t i = 0; i < n; ++i) {
            body += "# COUNTER: ";
            append_int(body, static_cast<std::int64_t>(i));
            body += '\n';
            emit_node(body, static_cast<std::int32_t>(i));
            delete_unused_values(body, static_cast<std::int32_t>(i));
        }
        if(n == 0) {
            body = "pass\n";
        }
        std::string wrap_stmts;
        if(!wrapped_.empty()) {
            const std::string wrap_name = add_global(g_.wrap_global);
            bool first = true;
            for(const std::string& w : wrapped_) {
                if(!first) {
                    wrap_stmts += '\n';
                }
                first = false;
                wrap_stmts += wrap_name;
                wrap_stmts += "(\"";
                wrap_stmts += w;
                wrap_stmts += "\")";
            }
        }
        const std::string pro = prologue(free_vars_, return_annotation_);
        return assemble(body, wrap_stmts, pro);
    }

private:
    void check_shapes() const {
        const std::size_t n = g_.key.size();
        if(g_.op.size() != n || g_.name.size() != n || g_.target.size() != n ||
           g_.type.size() != n || g_.no_users.size() != n || g_.wrapped.size() != n ||
           g_.tok_off.size() != n + 1 || g_.in_off.size() != n + 1) {
            throw std::invalid_argument(
                "emit_python: per-node arrays of different lengths");
        }
        if(g_.num_prefill < 0 ||
           static_cast<std::size_t>(g_.num_prefill) > g_.globals.size()) {
            throw std::invalid_argument("emit_python: num_prefill out of range");
        }
    }

    [[nodiscard]] std::string_view str(std::int64_t id) const {
        if(id < 0 || static_cast<std::size_t>(id) >= g_.strings.size()) {
            throw std::invalid_argument("emit_python: string id out of range");
        }
        return g_.strings[static_cast<std::size_t>(id)];
    }

    [[nodiscard]] std::int64_t word(std::size_t p) const {
        if(p >= g_.tok.size()) {
            throw std::invalid_argument("emit_python: token stream ends early");
        }
        return g_.tok[p];
    }

    /// FX's `add_global`: the same object always gets the name it got first.
    const std::string& add_global(std::int32_t gid) {
        if(gid < 0 || static_cast<std::size_t>(gid) >= g_.globals.size()) {
            throw std::invalid_argument("emit_python: global index out of range");
        }
        const auto u = static_cast<std::size_t>(gid);
        if(global_text_.size() != g_.globals.size()) {
            global_text_.assign(g_.globals.size(), std::string());
            global_done_.assign(g_.globals.size(), false);
        }
        if(global_done_[u]) {
            return global_text_[u];
        }
        const GlobalRef& ref = g_.globals[u];
        if(ref.literal) {
            global_text_[u] = std::string(str(ref.hint));
        } else {
            std::string name(ns_.create_name(str(ref.hint), ref.key, true));
            const auto hit = global_keys_.find(name);
            if(hit != global_keys_.end()) {
                if(hit->second != ref.key) {
                    throw Unsupported("two globals under one name");
                }
            } else {
                global_keys_.emplace(name, ref.key);
                globals_.emplace_back(name, gid);
            }
            global_text_[u] = std::move(name);
        }
        global_done_[u] = true;
        return global_text_[u];
    }

    /// repr(node): its name in the code's namespace, created on first use.
    std::string_view node_name(std::int32_t i) {
        const auto u = static_cast<std::size_t>(i);
        if(!named_[u]) {
            names_[u] = ns_.create_name(str(g_.name[u]), g_.key[u], false);
            named_[u] = true;
        }
        return names_[u];
    }

    std::int32_t node_of_key(std::uint64_t key) const {
        const std::int32_t i = index_.find_or(key, -1);
        if(i < 0) {
            throw Unsupported("an argument refers to a node outside the graph");
        }
        return i;
    }

    void compute_last_uses() {
        const std::size_t n = g_.key.size();
        std::vector<std::uint8_t> seen(n, 0);
        // Reverse walk, as FX does: the first user met is the last use. A user's
        // entries are contiguous; they are stored in reverse user order.
        std::vector<std::int32_t> start(n, 0);
        std::vector<std::int32_t> count(n, 0);
        for(std::size_t u = n; u-- > 0;) {
            start[u] = static_cast<std::int32_t>(lu_.size());
            for(std::int32_t k = g_.in_off[u]; k < g_.in_off[u + 1]; ++k) {
                const std::int32_t j = node_of_key(g_.in[static_cast<std::size_t>(k)]);
                if(seen[static_cast<std::size_t>(j)] == 0) {
                    seen[static_cast<std::size_t>(j)] = 1;
                    lu_.push_back(j);
                }
            }
            count[u] = static_cast<std::int32_t>(lu_.size()) - start[u];
        }
        lu_start_ = std::move(start);
        lu_count_ = std::move(count);
    }

    // ---- values -------------------------------------------------------------

    /// Skips one value at p.
    void skip(std::size_t& p) const {
        const std::int64_t k = word(p++);
        switch(k) {
        case tok::node:
        case tok::int_:
        case tok::float_:
        case tok::str:
        case tok::text:
        case tok::ustr:
            ++p;
            return;
        case tok::uident:
            p += 2;
            return;
        case tok::none:
        case tok::true_:
        case tok::false_:
            return;
        case tok::tuple:
        case tok::list: {
            const std::int64_t m = word(p++);
            for(std::int64_t j = 0; j < m; ++j) {
                skip(p);
            }
            return;
        }
        case tok::dict: {
            const std::int64_t m = word(p++);
            for(std::int64_t j = 0; j < 2 * m; ++j) {
                skip(p);
            }
            return;
        }
        case tok::slice:
            skip(p);
            skip(p);
            skip(p);
            return;
        default:
            throw std::invalid_argument("emit_python: unknown token");
        }
    }

    /// Writes one value at p (FX's `_get_repr`, or `repr` inside dicts: the
    /// binding encodes both the same way for the values it covers).
    void value(std::string& out, std::size_t& p) {
        const std::int64_t k = word(p++);
        switch(k) {
        case tok::node:
            out += node_name(node_of_key(static_cast<std::uint64_t>(word(p++))));
            return;
        case tok::none:
            out += "None";
            return;
        case tok::true_:
            out += "True";
            return;
        case tok::false_:
            out += "False";
            return;
        case tok::int_:
            append_int(out, word(p++));
            return;
        case tok::float_: {
            const auto bits = static_cast<std::uint64_t>(word(p++));
            double d = 0;
            std::memcpy(&d, &bits, sizeof d);
            out += float_repr(d);
            return;
        }
        case tok::str:
            str_repr(out, str(word(p++)));
            return;
        case tok::text:
        case tok::ustr:
            out += str(word(p++));
            return;
        case tok::uident:
            out += str(word(p));
            p += 2;
            return;
        case tok::tuple:
        case tok::list: {
            const std::int64_t m = word(p++);
            out += k == tok::tuple ? '(' : '[';
            for(std::int64_t j = 0; j < m; ++j) {
                if(j > 0) {
                    out += ", ";
                }
                value(out, p);
            }
            if(k == tok::tuple && m == 1) {
                out += ',';
            }
            out += k == tok::tuple ? ')' : ']';
            return;
        }
        case tok::dict: {
            const std::int64_t m = word(p++);
            out += '{';
            for(std::int64_t j = 0; j < m; ++j) {
                if(j > 0) {
                    out += ", ";
                }
                value(out, p);
                out += ": ";
                value(out, p);
            }
            out += '}';
            return;
        }
        case tok::slice:
            out += "slice(";
            value(out, p);
            out += ", ";
            value(out, p);
            out += ", ";
            value(out, p);
            out += ')';
            return;
        default:
            throw std::invalid_argument("emit_python: unknown token");
        }
    }

    /// A node's arguments: positions of each positional value and kwarg pair.
    struct Args {
        std::vector<std::size_t> pos;     ///< start of each positional value
        std::vector<std::size_t> kw_pos;  ///< start of each kwarg (its key word)
    };

    const Args& read_args(std::int32_t i) {
        Args& a = args_;
        a.pos.clear();
        a.kw_pos.clear();
        std::size_t p =
            static_cast<std::size_t>(g_.tok_off[static_cast<std::size_t>(i)]);
        const std::int64_t nargs = word(p++);
        for(std::int64_t j = 0; j < nargs; ++j) {
            a.pos.push_back(p);
            skip(p);
        }
        const std::int64_t nkw = word(p++);
        for(std::int64_t j = 0; j < nkw; ++j) {
            a.kw_pos.push_back(p);
            ++p;
            skip(p);
        }
        if(p != static_cast<std::size_t>(g_.tok_off[static_cast<std::size_t>(i) + 1])) {
            throw std::invalid_argument(
                "emit_python: argument tokens of a node do not add up");
        }
        return a;
    }

    void one(std::string& out, std::size_t p) { value(out, p); }

    /// `_format_args(args[first:], kwargs)`.
    void format_args(std::string& out, const Args& a, std::size_t first) {
        bool sep = false;
        for(std::size_t j = first; j < a.pos.size(); ++j) {
            if(sep) {
                out += ", ";
            }
            sep = true;
            one(out, a.pos[j]);
        }
        for(const std::size_t kp : a.kw_pos) {
            if(sep) {
                out += ", ";
            }
            sep = true;
            out += str(word(kp));
            out += " = ";
            one(out, kp + 1);
        }
    }

    /// `template.format(*(reprs of args))`.
    void format_template(std::string& out, std::string_view tmpl, const Args& a) {
        std::vector<std::string>& reprs = reprs_;
        if(reprs.size() < a.pos.size()) {
            reprs.resize(a.pos.size());
        }
        for(std::size_t j = 0; j < a.pos.size(); ++j) {
            reprs[j].clear();
            one(reprs[j], a.pos[j]);
        }
        std::size_t next = 0;
        for(std::size_t c = 0; c < tmpl.size(); ++c) {
            if(tmpl[c] == '{' && c + 1 < tmpl.size() && tmpl[c + 1] == '}') {
                if(next >= a.pos.size()) {
                    throw Unsupported("an operator node with too few arguments");
                }
                out += reprs[next++];
                ++c;
            } else if(tmpl[c] == '{' || tmpl[c] == '}') {
                throw Unsupported("an operator template with other fields");
            } else {
                out += tmpl[c];
            }
        }
    }

    std::string type_annotation(std::int32_t i) {
        const std::int32_t t = g_.type[static_cast<std::size_t>(i)];
        if(t < 0) {
            return std::string();
        }
        return add_global(t);
    }

    // ---- nodes --------------------------------------------------------------

    void emit_node(std::string& body, std::int32_t i) {
        const auto u = static_cast<std::size_t>(i);
        std::string ann;
        const std::string type_text = type_annotation(i);
        if(g_.type[u] >= 0) {
            ann = " : " + type_text;
        }
        const Args& a = read_args(i);
        switch(g_.op[u]) {
        case NodeOp::placeholder: {
            const std::string_view target = str(g_.target[u]);
            std::string fv(target);
            fv += ann;
            if(!a.pos.empty()) {
                fv += " = ";
                one(fv, a.pos[0]);
            }
            free_vars_.push_back(std::move(fv));
            std::string raw;
            for(const char c : target) {
                if(c != '*') {
                    raw += c;
                }
            }
            const std::string_view name = node_name(i);
            if(raw != name) {
                body += name;
                body += " = ";
                body += raw;
                body += '\n';
            }
            return;
        }
        case NodeOp::call_method: {
            body += node_name(i);
            body += ann;
            body += " = ";
            if(a.pos.empty()) {
                throw Unsupported("a call_method node without arguments");
            }
            std::string self_repr;
            one(self_repr, a.pos[0]);
            format_target(body, self_repr, str(g_.target[u]));
            body += '(';
            format_args(body, a, 1);
            body += ')';
            return;
        }
        case NodeOp::call_function:
            emit_call_function(body, i, ann, a);
            return;
        case NodeOp::call_module:
            body += node_name(i);
            body += ann;
            body += " = ";
            format_target(body, g_.root_module, str(g_.target[u]));
            body += '(';
            format_args(body, a, 0);
            body += ')';
            return;
        case NodeOp::get_attr:
            body += node_name(i);
            body += ann;
            body += " = ";
            format_target(body, g_.root_module, str(g_.target[u]));
            return;
        case NodeOp::output:
            if(g_.type[u] >= 0) {
                return_annotation_ = " -> " + type_text;
            }
            if(a.pos.empty()) {
                throw Unsupported("an output node without arguments");
            }
            body += g_.return_prefix;
            one(body, a.pos[0]);
            body += g_.return_suffix;
            return;
        }
        throw std::invalid_argument("emit_python: unknown node op");
    }

    void emit_call_function(std::string& body,
                            std::int32_t i,
                            const std::string& ann,
                            const Args& a) {
        const auto t = g_.target[static_cast<std::size_t>(i)];
        if(t < 0 || static_cast<std::size_t>(t) >= g_.callees.size()) {
            throw std::invalid_argument("emit_python: callee index out of range");
        }
        const Callee& c = g_.callees[static_cast<std::size_t>(t)];
        if(c.kind == CalleeKind::magic) {
            body += node_name(i);
            body += ann;
            body += " = ";
            format_template(body, str(c.text), a);
            return;
        }
        if(c.kind == CalleeKind::inplace) {
            format_template(body, str(c.text), a);
            body += ";  ";
            body += node_name(i);
            body += ann;
            body += " = ";
            one(body, a.pos[0]);
            return;
        }
        const std::string& global_name = add_global(c.text);
        if(global_name == "getattr") {
            if(a.pos.size() < 2) {
                throw Unsupported("a getattr call with fewer than two arguments");
            }
            const std::int64_t k = word(a.pos[1]);
            if(k == tok::uident && a.pos.size() == 2) {
                // an identifier (no dots): `_format_target` appends `.attr`
                body += node_name(i);
                body += ann;
                body += " = ";
                one(body, a.pos[0]);
                body += '.';
                body += str(word(a.pos[1] + 2));
                return;
            }
            if(k == tok::str && a.pos.size() == 2) {
                const std::string_view attr = str(word(a.pos[1] + 1));
                if(is_identifier(attr)) {
                    body += node_name(i);
                    body += ann;
                    body += " = ";
                    std::string obj;
                    one(obj, a.pos[0]);
                    format_target(body, obj, attr);
                    return;
                }
            }
        }
        body += node_name(i);
        body += ann;
        body += " = ";
        body += global_name;
        body += '(';
        format_args(body, a, 0);
        body += ')';
        if(g_.wrapped[static_cast<std::size_t>(i)] != 0) {
            bool seen = false;
            for(const std::string& w : wrapped_) {
                seen = seen || w == global_name;
            }
            if(!seen) {
                wrapped_.push_back(global_name);
            }
        }
    }

    void delete_unused_values(std::string& body, std::int32_t i) {
        const auto u = static_cast<std::size_t>(i);
        const NodeOp op = g_.op[u];
        if(op == NodeOp::placeholder) {
            return;
        }
        if(op == NodeOp::output) {
            body += '\n';
            return;
        }
        const auto start = static_cast<std::size_t>(lu_start_[u]);
        const auto count = static_cast<std::size_t>(lu_count_[u]);
        const bool self = g_.no_users[u] != 0;
        if(count == 0 && !self) {
            body += '\n';
            return;
        }
        body += ";  ";
        for(std::size_t k = 0; k < count; ++k) {
            body += node_name(lu_[start + k]);
            body += " = ";
        }
        if(self) {
            body += node_name(i);
            body += " = ";
        }
        body += "None\n";
    }

    // ---- layout -------------------------------------------------------------

    /// The value of a `# COUNTER: <digits>` marker in `line`, or -1.
    static std::int64_t counter_in(std::string_view line) {
        static constexpr std::string_view marker = "# COUNTER: ";
        std::size_t from = 0;
        while(true) {
            const std::size_t at = line.find(marker, from);
            if(at == std::string_view::npos) {
                return -1;
            }
            std::size_t d = at + marker.size();
            if(d < line.size() && static_cast<unsigned char>(line[d]) >= 0x80U) {
                throw Unsupported("a counter marker followed by non-ASCII text");
            }
            std::int64_t v = 0;
            std::size_t digits = 0;
            while(d < line.size() && is_digit(line[d])) {
                if(++digits > 9) {
                    throw Unsupported("a counter marker with a huge number");
                }
                v = v * 10 + (line[d] - '0');
                ++d;
            }
            if(digits > 0) {
                return v;
            }
            from = at + 1;
        }
    }

    EmitResult assemble(const std::string& body,
                        const std::string& wrap_stmts,
                        const std::string& pro) {
        EmitResult r;
        std::string code;
        code.reserve(body.size());
        std::int64_t cur = -1;
        bool first = true;
        std::size_t start = 0;
        while(true) {
            const std::size_t nl = body.find('\n', start);
            const std::string_view line(body.data() + start,
                                        (nl == std::string::npos ? body.size() : nl) -
                                            start);
            const std::int64_t c = counter_in(line);
            if(c >= 0) {
                cur = c;
            } else {
                r.line_node.push_back(static_cast<std::int32_t>(cur));
                if(!first) {
                    code += '\n';
                }
                first = false;
                code += line;
            }
            if(nl == std::string::npos) {
                break;
            }
            start = nl + 1;
        }
        std::size_t lead = 0;
        while(lead < code.size() && code[lead] == '\n') {
            ++lead;
        }
        std::int32_t pro_lines = 1;
        for(const char c : pro) {
            pro_lines += c == '\n' ? 1 : 0;
        }
        std::int32_t wrap_lines = 0;
        for(const char c : wrap_stmts) {
            wrap_lines += c == '\n' ? 1 : 0;
        }
        std::string& src = r.src;
        src.reserve(code.size() + code.size() / 8 + pro.size() + wrap_stmts.size() +
                    16);
        src += '\n';
        src += wrap_stmts;
        src += "\n\n";
        src += pro;
        src += "\n    ";
        // each line indented: copied a line at a time, not a char at a time
        for(std::size_t k = lead; k < code.size();) {
            const std::size_t nl = code.find('\n', k);
            if(nl == std::string::npos) {
                src.append(code, k, std::string::npos);
                break;
            }
            src.append(code, k, nl + 1 - k);
            src += "    ";
            k = nl + 1;
        }
        r.first_line = pro_lines;
        r.prologue_start = wrap_lines + 4;
        r.globals = std::move(globals_);
        r.ok = true;
        return r;
    }

    const EmitGraph& g_;
    Namespace ns_;
    KeyIndex index_;
    Args args_;  // the current node's (reused: no allocation per node)
    std::vector<std::string> reprs_;
    std::vector<std::string_view> names_;
    std::vector<bool> named_ = std::vector<bool>(g_.key.size(), false);
    std::unordered_map<std::string, std::uint64_t> global_keys_;
    std::vector<std::string> global_text_;
    std::vector<bool> global_done_;
    std::vector<std::pair<std::string, std::int32_t>> globals_;
    std::vector<std::string> free_vars_;
    std::string return_annotation_;
    std::vector<std::string> wrapped_;
    std::vector<std::int32_t> lu_;
    std::vector<std::int32_t> lu_start_;
    std::vector<std::int32_t> lu_count_;
};

}  // namespace

std::string float_repr(double x) {
    if(std::isnan(x)) {
        return "nan";
    }
    if(std::isinf(x)) {
        return x < 0 ? "-inf" : "inf";
    }
    char buf[64];
    const auto res =
        std::to_chars(buf, buf + sizeof buf, x, std::chars_format::scientific);
    const std::string_view s(buf, static_cast<std::size_t>(res.ptr - buf));
    // s = [-]d[.ddd]e(+|-)xx
    std::size_t p = 0;
    std::string out;
    if(s[p] == '-') {
        out += '-';
        ++p;
    }
    std::string digits;
    const std::size_t e = s.find('e');
    for(std::size_t k = p; k < e; ++k) {
        if(s[k] != '.') {
            digits += s[k];
        }
    }
    int exp10 = 0;
    std::from_chars(
        s.data() + e + (s[e + 1] == '+' ? 2 : 1), s.data() + s.size(), exp10);
    const int ndigits = static_cast<int>(digits.size());
    int decpt = exp10 + 1;
    // Python's repr: exponent form if decpt <= -4 or decpt > 16
    if(decpt <= -4 || decpt > 16) {
        out += digits[0];
        if(ndigits > 1) {
            out += '.';
            out.append(digits, 1, std::string::npos);
        }
        out += 'e';
        const int ex = decpt - 1;
        out += ex < 0 ? '-' : '+';
        const int a = ex < 0 ? -ex : ex;
        if(a < 10) {
            out += '0';
        }
        out += std::to_string(a);
        return out;
    }
    if(decpt <= 0) {
        out += "0.";
        out.append(static_cast<std::size_t>(-decpt), '0');
        out += digits;
    } else if(decpt >= ndigits) {
        out += digits;
        out.append(static_cast<std::size_t>(decpt - ndigits), '0');
        out += ".0";
    } else {
        out.append(digits, 0, static_cast<std::size_t>(decpt));
        out += '.';
        out.append(digits, static_cast<std::size_t>(decpt), std::string::npos);
    }
    return out;
}

void str_repr(std::string& out, std::string_view s) {
    const bool has_single = s.find('\'') != std::string_view::npos;
    const bool has_double = s.find('"') != std::string_view::npos;
    const char quote = has_single && !has_double ? '"' : '\'';
    static constexpr char hex[] = "0123456789abcdef";
    out += quote;
    for(const char ch : s) {
        const auto c = static_cast<unsigned char>(ch);
        if(ch == quote || ch == '\\') {
            out += '\\';
            out += ch;
        } else if(ch == '\t') {
            out += "\\t";
        } else if(ch == '\n') {
            out += "\\n";
        } else if(ch == '\r') {
            out += "\\r";
        } else if(c < 0x20U || c == 0x7fU) {
            out += "\\x";
            out += hex[c >> 4U];
            out += hex[c & 0xfU];
        } else {
            out += ch;
        }
    }
    out += quote;
}

EmitResult emit_python(const EmitGraph& g,
                       const IllegalNames& illegal,
                       const PrologueFn& prologue) {
    try {
        Emitter e(g, illegal);
        return e.run(prologue);
    } catch(const Unsupported& u) {
        EmitResult r;
        r.ok = false;
        r.reason = u.what();
        return r;
    }
}

}  // namespace pyfuse::core
