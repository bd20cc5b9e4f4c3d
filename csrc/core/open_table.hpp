// pyfuse core: the open-addressing hash table of the emitter's and the flattener's
// inner loops (node index by object identity, the namespace's name tables).
//
// Plain C++17: no Python, no pybind11, no torch. Header-only so that every probe
// inlines into its caller: the hash is a policy type (a static function), not a
// std::function or a virtual call.
//
// ## Shape
// Linear probing over one std::vector of slots, power-of-two capacity (at least 16
// and at least twice the expected size), doubled when an insert would make it more
// than half full. Keys are never removed. One array and no allocation per entry:
// the node-based std::unordered_map/set these replace spent more time allocating and
// freeing entries than looking them up.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string_view>
#include <type_traits>
#include <vector>

namespace pyfuse::core {

/// Hash policy for object identities: addresses, or 64-bit keys that are addresses
/// (the emitter's node keys). Fibonacci hashing of the address without its low 4
/// bits (objects are 16-byte aligned); the high bits of the product are the well
/// mixed ones. Cheap enough to recompute when the table grows, so not stored.
struct AddressHash {
    static constexpr bool kStoresHash = false;

    [[nodiscard]] static std::size_t hash(std::uint64_t key) {
        const std::uint64_t h = (key >> 4U) * 0x9E3779B97F4A7C15ULL;
        return static_cast<std::size_t>(h >> 20U);
    }
    [[nodiscard]] static std::size_t hash(const void* key) {
        return hash(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(key)));
    }
};

/// Hash policy for strings: std::hash, stored in the slot, so a probe compares the
/// hashes before the characters and growing does not rehash the strings.
struct StringHash {
    static constexpr bool kStoresHash = true;

    [[nodiscard]] static std::size_t hash(std::string_view key) {
        return std::hash<std::string_view>{}(key);
    }
};

namespace detail {

/// A slot of OpenTable: the key, its value, whether it is taken, and the key's
/// hash when the policy stores it (specialisation below). An explicit flag rather
/// than a sentinel key or value: every key and value stays storable, and with an
/// 8-byte key and a 4-byte value it sits in the padding (16 bytes a slot either way).
template <class Key, class Value, bool StoresHash>
struct OpenSlot {
    Key key{};
    Value value{};
    bool used = false;
};

template <class Key, class Value>
struct OpenSlot<Key, Value, true> {
    Key key{};
    std::size_t hash = 0;
    Value value{};
    bool used = false;
};

}  // namespace detail

/// Key -> value, open addressing (see the top of this file). `Key` and `Value`
/// are small trivially copyable types, passed by value (integers, pointers,
/// string views); the table does not own what a key points to or views.
/// `Hash` is a policy like AddressHash: `static std::size_t hash(Key)` and
/// `static constexpr bool kStoresHash`.
template <class Key, class Value, class Hash>
class OpenTable {
    static_assert(std::is_trivially_copyable_v<Key> &&
                      std::is_trivially_copyable_v<Value>,
                  "OpenTable copies keys and values as plain words");

public:
    /// Room for `expected` entries without growing.
    explicit OpenTable(std::size_t expected) {
        std::size_t cap = 16;
        while(cap < 2 * expected) {
            cap *= 2;
        }
        slots_.assign(cap, Slot{});
    }

    /// The value stored for `key`, or nullptr. Valid until the next insert.
    [[nodiscard]] Value* find(Key key) {
        return const_cast<Value*>(static_cast<const OpenTable&>(*this).find(key));
    }
    [[nodiscard]] const Value* find(Key key) const {
        const std::size_t h = Hash::hash(key);
        for(std::size_t i = h & mask();; i = (i + 1) & mask()) {
            const Slot& s = slots_[i];
            if(!s.used) {
                return nullptr;
            }
            if(same(s, key, h)) {
                return &s.value;
            }
        }
    }

    /// The value stored for `key`, or `missing`.
    [[nodiscard]] Value find_or(Key key, Value missing) const {
        const Value* v = find(key);
        return v == nullptr ? missing : *v;
    }

    [[nodiscard]] bool contains(Key key) const { return find(key) != nullptr; }

    /// Adds `key` with `value`; the caller knows `key` is absent (not checked: a
    /// second insert of a key takes a second slot, and find returns either value).
    void insert(Key key, Value value) {
        reserve_one();
        place(make_slot(key, Hash::hash(key), value));
        ++size_;
    }

    /// Adds `key` with `value` unless `key` is present: then false, and the stored
    /// value is left as it is.
    bool try_insert(Key key, Value value) {
        reserve_one();
        const std::size_t h = Hash::hash(key);
        std::size_t i = h & mask();
        for(; slots_[i].used; i = (i + 1) & mask()) {
            if(same(slots_[i], key, h)) {
                return false;
            }
        }
        slots_[i] = make_slot(key, h, value);
        ++size_;
        return true;
    }

private:
    using Slot = detail::OpenSlot<Key, Value, Hash::kStoresHash>;

    [[nodiscard]] std::size_t mask() const { return slots_.size() - 1; }

    [[nodiscard]] static Slot
    make_slot(Key key, [[maybe_unused]] std::size_t h, Value value) {
        Slot s;
        s.key = key;
        if constexpr(Hash::kStoresHash) {
            s.hash = h;
        }
        s.value = value;
        s.used = true;
        return s;
    }

    [[nodiscard]] static std::size_t hash_of(const Slot& s) {
        if constexpr(Hash::kStoresHash) {
            return s.hash;
        } else {
            return Hash::hash(s.key);
        }
    }

    /// Whether taken slot `s` holds `key` (whose hash is `h`).
    [[nodiscard]] static bool
    same(const Slot& s, Key key, [[maybe_unused]] std::size_t h) {
        if constexpr(Hash::kStoresHash) {
            return s.hash == h && s.key == key;
        } else {
            return s.key == key;
        }
    }

    /// Doubles the capacity if one more entry would fill more than half of it.
    void reserve_one() {
        if(2 * (size_ + 1) > slots_.size()) {
            grow();
        }
    }

    /// Puts `slot` in the first free slot of its probe sequence.
    void place(const Slot& slot) {
        std::size_t i = hash_of(slot) & mask();
        while(slots_[i].used) {
            i = (i + 1) & mask();
        }
        slots_[i] = slot;
    }

    void grow() {
        std::vector<Slot> old(2 * slots_.size());
        old.swap(slots_);
        for(const Slot& s : old) {
            if(s.used) {
                place(s);
            }
        }
    }

    std::vector<Slot> slots_;
    std::size_t size_ = 0;
};

}  // namespace pyfuse::core
