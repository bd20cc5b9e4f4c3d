#include "automaton.hpp"

#include <algorithm>
#include <stdexcept>
#include <utility>

namespace pyfuse::core {

namespace {

std::string at(const char* what, std::size_t i) {
    return std::string(what) + " at index " + std::to_string(i);
}

/// Records an error in `r`; returns false (the step failed).
bool fail(MatchResult& r, std::string msg, std::int64_t node) {
    r.error = std::move(msg);
    r.error_node = static_cast<std::int32_t>(node);
    return false;
}

}  // namespace

/// Per-node bitsets: `match` (sub-pattern accepted) and, only when the graph has
/// missing modules, `raises` (testing the sub-pattern looks a missing module up).
struct Automaton::Bits {
    std::size_t words = 0;
    std::vector<std::uint64_t> match;
    std::vector<std::uint64_t> raises;

    static bool get(const std::vector<std::uint64_t>& v,
                    std::size_t words,
                    std::int32_t node,
                    std::int32_t sub) {
        const auto s = static_cast<std::size_t>(sub);
        return (v[static_cast<std::size_t>(node) * words + s / 64] >> (s % 64)) & 1U;
    }
    static void set(std::vector<std::uint64_t>& v,
                    std::size_t words,
                    std::int32_t node,
                    std::int32_t sub) {
        const auto s = static_cast<std::size_t>(sub);
        v[static_cast<std::size_t>(node) * words + s / 64] |= std::uint64_t{1}
                                                              << (s % 64);
    }
};

Automaton::Automaton(const PatternArrays& p) : num_labels_(p.num_labels) {
    const std::size_t n_sub = p.head.size;
    if(p.num_labels < 0) {
        throw std::invalid_argument("num_labels must be >= 0");
    }
    if(p.label.size != n_sub || p.check_args.size != n_sub) {
        throw std::invalid_argument(
            "head, label and check_args must have one entry per "
            "sub-pattern");
    }
    if(p.child_off.size != n_sub + 1 || p.child_off[0] != 0 ||
       static_cast<std::size_t>(p.child_off[n_sub]) != p.child.size) {
        throw std::invalid_argument("child_off must have P + 1 entries, start at 0 and "
                                    "end at len(child)");
    }
    if(p.label_is_module.size != static_cast<std::size_t>(p.num_labels)) {
        throw std::invalid_argument("label_is_module must have num_labels entries");
    }
    if(n_sub > static_cast<std::size_t>(INT32_MAX / 2)) {
        throw std::invalid_argument("too many sub-patterns");
    }
    for(std::size_t s = 0; s < n_sub; ++s) {
        if(p.child_off[s + 1] < p.child_off[s] ||
           static_cast<std::size_t>(p.child_off[s + 1]) > p.child.size) {
            throw std::invalid_argument(at("child_off out of range", s));
        }
    }
    label_is_module_.resize(static_cast<std::size_t>(p.num_labels));
    for(std::size_t l = 0; l < label_is_module_.size(); ++l) {
        label_is_module_[l] = p.label_is_module[l] != 0;
    }
    subs_.reserve(n_sub);
    for(std::size_t s = 0; s < n_sub; ++s) {
        const std::int32_t h = p.head[s];
        if(h < 0 || h > static_cast<std::int32_t>(Head::getattr_)) {
            throw std::invalid_argument(at("unknown head kind", s));
        }
        const auto head = static_cast<Head>(h);
        const std::int32_t b = p.child_off[s];
        const std::int32_t e = p.child_off[s + 1];  // >= b: checked above
        for(std::int32_t c = b; c < e; ++c) {
            const std::int32_t child = p.child[static_cast<std::size_t>(c)];
            // Children are hash-consed sub-patterns listed before their parent.
            if(child < 0 || static_cast<std::size_t>(child) >= s) {
                throw std::invalid_argument(
                    at("child must name an earlier sub-pattern", s));
            }
        }
        if((head == Head::label || head == Head::getattr_) &&
           (p.label[s] < 0 || p.label[s] >= p.num_labels)) {
            throw std::invalid_argument(at("label out of range", s));
        }
        if(head == Head::getattr_ && e - b != 1) {
            throw std::invalid_argument(
                at("getattr pattern needs exactly one child", s));
        }
        subs_.push_back(Sub{head, p.label[s], p.check_args[s] != 0 && e > b, b, e});
    }
    children_.assign(p.child.data, p.child.data + p.child.size);
    for(std::size_t k = 0; k < p.top.size; ++k) {
        if(p.top[k] < 0 || static_cast<std::size_t>(p.top[k]) >= n_sub) {
            throw std::invalid_argument(at("top pattern out of range", k));
        }
        top_.push_back(p.top[k]);
    }
    words_ = (n_sub + 63) / 64;

    // Decision tables, indexed by label + 1 (slot 0: kMissingModule).
    const auto slots = static_cast<std::size_t>(num_labels_) + 1;
    auto slot_of_head = [&](const Sub& s, std::vector<std::size_t>& out) {
        out.clear();
        if(s.head == Head::label || s.head == Head::getattr_) {
            out.push_back(static_cast<std::size_t>(s.label) + 1);
            if(label_is_module_[static_cast<std::size_t>(s.label)]) {
                out.push_back(0);  // tested against a missing module: raises
            }
        }
    };
    std::vector<std::vector<std::int32_t>> cand(slots);
    std::vector<std::vector<std::int32_t>> root(slots);
    std::vector<std::size_t> tmp;
    for(std::size_t s = 0; s < n_sub; ++s) {
        slot_of_head(subs_[s], tmp);
        for(auto slot : tmp) {
            cand[slot].push_back(static_cast<std::int32_t>(s));
        }
    }
    for(std::size_t k = 0; k < top_.size(); ++k) {
        const Sub& s = subs_[static_cast<std::size_t>(top_[k])];
        if(s.head == Head::match_all) {
            for(auto& r : root) {
                r.push_back(static_cast<std::int32_t>(k));
            }
            continue;
        }
        slot_of_head(s, tmp);
        for(auto slot : tmp) {
            root[slot].push_back(static_cast<std::int32_t>(k));
        }
    }
    auto to_csr = [](const std::vector<std::vector<std::int32_t>>& rows,
                     std::vector<std::int32_t>& off,
                     std::vector<std::int32_t>& flat) {
        off.assign(1, 0);
        for(const auto& r : rows) {
            flat.insert(flat.end(), r.begin(), r.end());
            off.push_back(static_cast<std::int32_t>(flat.size()));
        }
    };
    to_csr(cand, cand_off_, cand_);
    to_csr(root, root_off_, root_);
}

Automaton::Tri Automaton::accepts_arg(std::int32_t child,
                                      std::int32_t arg,
                                      const GraphArrays& g,
                                      const Bits& bits) const {
    if(subs_[static_cast<std::size_t>(child)].head == Head::match_all) {
        return Tri::yes;
    }
    if(arg < 0) {  // a literal accepts the sub-pattern it equals
        return literal_code(arg) == child ? Tri::yes : Tri::no;
    }
    if(g.users[static_cast<std::size_t>(arg)] > 1) {
        return Tri::no;
    }
    if(!bits.raises.empty() && Bits::get(bits.raises, bits.words, arg, child)) {
        return Tri::raises;
    }
    return Bits::get(bits.match, bits.words, arg, child) ? Tri::yes : Tri::no;
}

Automaton::Tri Automaton::test(std::int32_t sub,
                               std::int32_t node,
                               const GraphArrays& g,
                               const Bits& bits) const {
    const Sub& s = subs_[static_cast<std::size_t>(sub)];
    const auto n = static_cast<std::size_t>(node);
    if(s.head == Head::match_all) {
        return Tri::yes;
    }
    if(g.label[n] == kMissingModule) {
        return Tri::raises;  // only module heads are candidates for this slot
    }
    const std::int32_t b = g.arg_off[n];
    const std::int32_t e = g.arg_off[n + 1];
    if(s.head == Head::getattr_) {
        if(e - b < 2) {
            return Tri::no;
        }
        const std::int32_t name = g.arg[static_cast<std::size_t>(b + 1)];
        return name < 0 && literal_code(name) ==
                               children_[static_cast<std::size_t>(s.child_begin)]
                   ? Tri::yes
                   : Tri::no;
    }
    if(!s.check_args) {
        return Tri::yes;
    }
    if(e - b != s.child_end - s.child_begin) {
        return Tri::no;
    }
    for(std::int32_t k = 0; k < e - b; ++k) {
        const Tri t =
            accepts_arg(children_[static_cast<std::size_t>(s.child_begin + k)],
                        g.arg[static_cast<std::size_t>(b + k)],
                        g,
                        bits);
        if(t != Tri::yes) {
            return t;  // the reference's all() stops at the first failure
        }
    }
    return Tri::yes;
}

void Automaton::claim(std::int32_t sub,
                      std::int32_t arg,
                      std::int32_t match_id,
                      const GraphArrays& g,
                      std::vector<std::int32_t>& owner,
                      std::vector<std::int32_t>& claimed) const {
    // The reference's walk: the head claims `arg` unless match-all or already
    // claimed; then children pair with arg's positional arguments (zip).
    const Sub& s = subs_[static_cast<std::size_t>(sub)];
    if(arg < 0) {
        return;  // literals are never claimed
    }
    const auto a = static_cast<std::size_t>(arg);
    if(s.head != Head::match_all && owner[a] < 0) {
        owner[a] = match_id;
        claimed.push_back(arg);
    }
    const std::int32_t b = g.arg_off[a];
    const std::int32_t n = std::min(g.arg_off[a + 1] - b, s.child_end - s.child_begin);
    for(std::int32_t k = 0; k < n; ++k) {
        claim(children_[static_cast<std::size_t>(s.child_begin + k)],
              g.arg[static_cast<std::size_t>(b + k)],
              match_id,
              g,
              owner,
              claimed);
    }
}

MatchResult Automaton::match(const GraphArrays& g) const {
    MatchResult r;
    bool any_missing = false;
    std::vector<std::pair<std::int32_t, std::int32_t>> excluded;
    if(validate(g, r, any_missing, excluded)) {
        const Bits bits = scan(g, any_missing);
        (void)select(g, bits, excluded, r);  // (an error is in r)
    }
    return r;
}

// 1. Validation of the graph arrays (the automaton's own arrays were checked when
// it was built): errors go to `r`, nothing throws.
bool Automaton::validate(
    const GraphArrays& g,
    MatchResult& r,
    bool& any_missing,
    std::vector<std::pair<std::int32_t, std::int32_t>>& excluded) const {
    const std::size_t n = g.label.size;
    if(n > static_cast<std::size_t>(INT32_MAX - 1)) {
        return fail(r, "graph too large", -1);
    }
    if(g.users.size != n || g.arg_off.size != n + 1) {
        return fail(r, "label and users need N entries, arg_off N + 1", -1);
    }
    if(g.arg_off[0] != 0 || static_cast<std::size_t>(g.arg_off[n]) != g.arg.size) {
        return fail(r, "arg_off must start at 0 and end at len(arg)", -1);
    }
    const auto n_sub = static_cast<std::int32_t>(subs_.size());
    for(std::size_t i = 0; i < n; ++i) {
        const auto node = static_cast<std::int64_t>(i);
        const std::int32_t l = g.label[i];
        if(l < kMissingModule || l >= num_labels_) {
            return fail(r, at("label out of range", i), node);
        }
        any_missing = any_missing || l == kMissingModule;
        if(g.users[i] < 0) {
            return fail(r, at("negative user count", i), node);
        }
        if(g.arg_off[i + 1] < g.arg_off[i] ||
           static_cast<std::size_t>(g.arg_off[i + 1]) > g.arg.size) {
            return fail(r, at("arg_off out of range", i), node);
        }
        for(std::int32_t k = g.arg_off[i]; k < g.arg_off[i + 1]; ++k) {
            const std::int32_t a = g.arg[static_cast<std::size_t>(k)];
            if(a >= static_cast<std::int32_t>(i)) {
                return fail(r, at("argument is not an earlier node", i), node);
            }
            if(a < 0 && a != -1 && literal_code(a) >= n_sub) {
                return fail(r, at("literal code out of range", i), node);
            }
        }
    }
    if(g.exclude.size % 2 != 0) {
        return fail(r, "exclude must hold (node, pattern) pairs", -1);
    }
    for(std::size_t k = 0; k + 1 < g.exclude.size; k += 2) {
        const std::int32_t node = g.exclude[k];
        const std::int32_t pat = g.exclude[k + 1];
        if(node < 0 || static_cast<std::size_t>(node) >= n || pat < 0 ||
           static_cast<std::size_t>(pat) >= top_.size()) {
            return fail(r, at("exclude pair out of range", k / 2), -1);
        }
        excluded.emplace_back(node, pat);
    }
    std::sort(excluded.begin(), excluded.end());
    return true;
}

// 2. Bottom-up scan: the sub-patterns each node matches (or raises on).
Automaton::Bits Automaton::scan(const GraphArrays& g, bool any_missing) const {
    const std::size_t n = g.label.size;
    Bits bits;
    bits.words = words_;
    bits.match.assign(n * words_, 0);
    if(any_missing) {
        bits.raises.assign(n * words_, 0);
    }
    for(std::size_t i = 0; i < n; ++i) {
        const auto slot = static_cast<std::size_t>(g.label[i] + 1);
        const auto node = static_cast<std::int32_t>(i);
        for(std::int32_t c = cand_off_[slot]; c < cand_off_[slot + 1]; ++c) {
            const std::int32_t sub = cand_[static_cast<std::size_t>(c)];
            const Tri t = test(sub, node, g, bits);
            if(t == Tri::yes) {
                Bits::set(bits.match, words_, node, sub);
            } else if(t == Tri::raises) {
                Bits::set(bits.raises, words_, node, sub);
            }
        }
    }
    return bits;
}

// 3. Top-down selection and claiming. A winning candidate that raises (looks up a
// missing module) ends the match with an error naming that module's node.
bool Automaton::select(
    const GraphArrays& g,
    const Bits& bits,
    const std::vector<std::pair<std::int32_t, std::int32_t>>& excluded,
    MatchResult& r) const {
    const std::size_t n = g.label.size;
    r.owner.assign(n, -1);
    for(std::size_t j = n; j-- > 0;) {
        if(r.owner[j] >= 0) {
            continue;
        }
        const auto node = static_cast<std::int32_t>(j);
        const auto slot = static_cast<std::size_t>(g.label[j] + 1);
        for(std::int32_t c = root_off_[slot]; c < root_off_[slot + 1]; ++c) {
            const std::int32_t k = root_[static_cast<std::size_t>(c)];
            if(!excluded.empty() && std::binary_search(excluded.begin(),
                                                       excluded.end(),
                                                       std::make_pair(node, k))) {
                continue;
            }
            const std::int32_t sub = top_[static_cast<std::size_t>(k)];
            if(subs_[static_cast<std::size_t>(sub)].head != Head::match_all) {
                if(!bits.raises.empty() && Bits::get(bits.raises, words_, node, sub)) {
                    r.missing_module = true;
                    return fail(r,
                                "module lookup of a missing call_module target",
                                trace_missing(node, sub, g, bits));
                }
                if(!Bits::get(bits.match, words_, node, sub)) {
                    continue;
                }
            }
            const auto id = static_cast<std::int32_t>(r.match_root.size());
            r.match_root.push_back(node);
            r.match_pattern.push_back(k);
            claim(sub, node, id, g, r.owner, r.claimed);
            r.claimed_off.push_back(static_cast<std::int32_t>(r.claimed.size()));
            break;
        }
    }
    return true;
}

// 4. The node whose missing module made `sub` raise at `node`: follow the raising
// children down.
std::int32_t Automaton::trace_missing(std::int32_t node,
                                      std::int32_t sub,
                                      const GraphArrays& g,
                                      const Bits& bits) const {
    while(g.label[static_cast<std::size_t>(node)] != kMissingModule) {
        const Sub& cur = subs_[static_cast<std::size_t>(sub)];
        const auto off = g.arg_off[static_cast<std::size_t>(node)];
        bool moved = false;
        for(std::int32_t pos = 0; pos < cur.child_end - cur.child_begin && !moved;
            ++pos) {
            const std::int32_t child =
                children_[static_cast<std::size_t>(cur.child_begin + pos)];
            const std::int32_t a = g.arg[static_cast<std::size_t>(off + pos)];
            if(accepts_arg(child, a, g, bits) == Tri::raises) {
                node = a;
                sub = child;
                moved = true;
            }
        }
        if(!moved) {
            break;
        }
    }
    return node;
}

}  // namespace pyfuse::core
