"""``_core.shell``: a new instance filled from a state dict, its containers copied.

The FX pass builds its fused modules, ReLUs and conv shells with it; these tests
pin what it promises on plain objects (tests/fx/test_fusers.py compares the
modules it builds with torch's).
"""

from __future__ import annotations

import pickle
from collections import OrderedDict, defaultdict

import pytest

from pyfuse import _core

pytestmark = pytest.mark.quick  # (part of the quick suite: ./dev pyvers)


class Plain:
    pass


class Preset:
    """A class whose __new__ fills the instance's __dict__ (shell refuses it)."""

    def __new__(cls):
        obj = super().__new__(cls)
        obj.a = 0
        return obj


def _state() -> dict:
    leaf = [1]
    return {
        "flag": True,
        "d": {"a": leaf},
        "od": OrderedDict(b=leaf),
        "empty_od": OrderedDict(),
        "s": {3, 4},
        "lst": [leaf, 2],
        "name": "x",
        "dd": defaultdict(list),
    }


def test_order_types_and_fresh_containers():
    state = _state()
    made = _core.shell(Plain, state)
    assert type(made) is Plain
    got = vars(made)
    assert list(got) == list(state)
    for k, v in state.items():
        assert type(got[k]) is type(v), k
        assert got[k] == v, k
    for k in ("d", "od", "empty_od", "s", "lst"):
        assert got[k] is not state[k], f"{k} shared with the state"
    # shallow: what the containers hold is shared; other values are the state's own
    assert got["d"]["a"] is state["d"]["a"]
    assert got["lst"][0] is state["lst"][0]
    assert got["flag"] is state["flag"]
    assert got["name"] is state["name"]
    # (a dict subclass is not one of the copied types: kept as is)
    assert got["dd"] is state["dd"]


def test_copied_ordered_dicts_behave_as_ordered_dicts():
    made = _core.shell(Plain, _state())
    for od in (made.od, made.empty_od):
        od["z"] = 1
        od["y"] = 2
        od.move_to_end("z")
        assert list(od)[-2:] == ["y", "z"]
        assert pickle.loads(pickle.dumps(od)) == od
    assert _core.shell(Plain, _state()).empty_od == OrderedDict()


def test_two_instances_share_no_container():
    state = _state()
    a, b = _core.shell(Plain, state), _core.shell(Plain, state)
    a.d["new"] = 1
    a.empty_od["new"] = 1
    a.s.add(5)
    for other in (vars(b), state):
        assert "new" not in other["d"]
        assert not other["empty_od"]
        assert 5 not in other["s"]


def test_attrs_replace_in_place_and_follow():
    state = {"a": 1, "b": {}, "c": 3}
    given = {"x": 1}
    made = _core.shell(Plain, state, {"b": given, "z": 26})
    assert list(vars(made)) == ["a", "b", "c", "z"]
    assert made.b is given  # (attrs are taken as they are, not copied)
    assert made.z == 26
    assert vars(_core.shell(Plain, state, None)) == state


def test_new_of_the_class_runs():
    class Counted:
        made = 0

        def __new__(cls):
            cls.made += 1
            return super().__new__(cls)

    obj = _core.shell(Counted, {"v": 1})
    assert Counted.made == 1
    assert obj.v == 1


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        ((Plain(), {}), TypeError, r"^shell: cls must be a type$"),
        ((Plain, [("a", 1)]), TypeError, r"^shell: state and attrs must be dicts$"),
        ((Plain, {}, [("a", 1)]), TypeError, r"^shell: state and attrs must be dicts$"),
        ((Plain,), TypeError, r"^shell\(cls, state, attrs=None\)$"),
        ((int, {"a": 1}), AttributeError, r"__dict__"),
        ((Preset, {"a": 1}), TypeError, r"^shell: 'Preset' instances have no plain, "),
    ],
    ids=["cls", "state", "attrs", "arity", "no-dict", "preset-dict"],
)
def test_bad_arguments_are_named(args, error, message):
    with pytest.raises(error, match=message):
        _core.shell(*args)


_ATOMS = frozenset({int, str, type(None)})


@pytest.mark.parametrize(
    "value",
    [
        1,
        "x",
        None,
        (1, ("a", (None,))),
        [1, (2, "b")],
        {"k": (1,)},
        {3},
        OrderedDict(a=1),
    ],
    ids=repr,
)
def test_atoms_and_containers_of_atoms_copy_as_deepcopy(value):
    assert _core.copies_as_deepcopy({"v": value}, _ATOMS, "p")


@pytest.mark.parametrize(
    "value",
    [
        1.5,  # a type outside the atoms
        ([1],),  # deepcopy copies a list inside a tuple
        (1, (2, {})),
        [[1]],  # and a list inside a list (shell copies the outer one only)
        {"k": ([1],)},
        [(1, [2])],
        {frozenset()},
        defaultdict(list),  # not exactly a container shell copies
        OrderedDict(a=[1]),
    ],
    ids=repr,
)
def test_anything_deepcopy_would_copy_is_declined(value):
    assert not _core.copies_as_deepcopy({"a": 1, "v": value}, _ATOMS, "p")


def test_the_exempt_container_may_hold_anything_but_must_be_a_container():
    assert _core.copies_as_deepcopy({"p": {"w": object()}}, _ATOMS, "p")
    assert not _core.copies_as_deepcopy({"q": {"w": object()}}, _ATOMS, "p")
    assert not _core.copies_as_deepcopy({"p": object()}, _ATOMS, "p")


def test_deeply_nested_tuples_are_declined_not_recursed_without_end():
    deep = 1
    for _ in range(100_000):
        deep = (deep,)
    assert not _core.copies_as_deepcopy({"v": deep}, _ATOMS, "p")
    shallow = 1
    for _ in range(30):
        shallow = (shallow,)
    assert _core.copies_as_deepcopy({"v": shallow}, _ATOMS, "p")


class _Unhashable(type):
    def __hash__(cls):
        raise TypeError("no hash")


def test_a_type_that_cannot_be_hashed_is_not_an_atom():
    odd = _Unhashable("Odd", (), {})
    assert not _core.copies_as_deepcopy({"v": odd()}, _ATOMS, "p")


def test_copies_as_deepcopy_checks_its_arguments():
    with pytest.raises(TypeError):
        _core.copies_as_deepcopy([], _ATOMS, "p")
    with pytest.raises(TypeError):
        _core.copies_as_deepcopy({}, set(_ATOMS), "p")
