"""Every walk over a parsed plist is bounded: shared arrays/dictionaries (binary plists) are refused,
shared scalars are fine, and what a tiny file expands to is limited."""

from __future__ import annotations

import plistlib
import time

import pytest

from mdmserver.profiles import plist as profiles_plist
from mdmserver.protocol import catalogue, inventory
from mdmserver.protocol.plist import ProtocolError, TreeError, load_plist, walk_tree
from tests.protocol.plistbomb import bomb_plist, shared_chain, write_binary_plist

FAST = 2.0


def _quickly(fn):
    started = time.perf_counter()
    try:
        return fn()
    finally:
        assert time.perf_counter() - started < FAST


def test_device_loader_refuses_shared_containers_at_once() -> None:
    with pytest.raises(ProtocolError) as caught:
        _quickly(lambda: load_plist(bomb_plist({"UDID": "u"})))
    assert caught.value.status == 400 and "shared references are not allowed" in caught.value.message


def test_a_container_shared_once_is_refused_too() -> None:
    inner = {"a": 1}
    with pytest.raises(ProtocolError, match="shared references"):
        load_plist(write_binary_plist({"x": inner, "y": inner}))


def test_shared_scalars_are_fine() -> None:
    """CoreFoundation writes each distinct string once and references it from every place."""
    text = "com.example.repeated.identifier"
    value = load_plist(write_binary_plist({"items": [{"id": text, "name": text} for _ in range(5)]}))
    assert value["items"][4]["name"] == text


def test_a_small_file_cannot_expand_past_the_size_limit() -> None:
    """One data object referenced 200 times: 1 KB of file, 200 KB of values."""
    blob = b"\x00" * 1000
    data = write_binary_plist({"Refs": [blob] * 200})
    assert len(data) < 1600
    assert load_plist(data, max_bytes=1_000_000)["Refs"][199] == blob
    with pytest.raises(ProtocolError) as caught:
        load_plist(data, max_bytes=100_000)
    assert caught.value.status == 413


def test_walk_tree_yields_each_value_once_in_document_order() -> None:
    value = {"a": [1, {"b": "c"}], "d": b"e"}
    assert list(walk_tree(value)) == [
        ((), value), (("a",), value["a"]), (("a", 0), 1), (("a", 1), value["a"][1]), (("a", 1, "b"), "c"),
        (("d",), b"e"),
    ]


def test_walk_tree_budget_and_depth() -> None:
    with pytest.raises(TreeError) as caught:
        list(walk_tree(list(range(100)), max_nodes=50))
    assert caught.value.fault == "too_many_nodes"
    deep: list = []
    for _ in range(70):
        deep = [deep]
    with pytest.raises(TreeError) as caught:
        list(walk_tree(deep))
    assert caught.value.fault == "too_deep"


@pytest.mark.parametrize("walk", [
    profiles_plist.to_json,
    profiles_plist.redact,
    lambda v: profiles_plist.strict_equal(v, v),
    lambda v: profiles_plist.first_difference(v, v),
    inventory.jsonable,
    catalogue.public_parameters,
])
def test_every_walk_over_parsed_values_refuses_a_dag(walk) -> None:
    """Downstream walks never see a DAG from the loaders; if one reached them anyway they stop at once."""
    dag = {"k": shared_chain(60)}
    with pytest.raises(TreeError, match="shared references"):
        _quickly(lambda: walk(dag))


def test_downstream_walks_still_work_on_trees() -> None:
    value = plistlib.loads(plistlib.dumps({"a": [1, {"Password": "p", "b": b"x"}]}))
    assert profiles_plist.to_json(value) == {"a": [1, {"Password": "p", "b": {"$data": "eA=="}}]}
    assert profiles_plist.strict_equal(value, value) and profiles_plist.first_difference(value, value) is None
    # a second, separate walk over the same value is not mistaken for a shared reference
    assert profiles_plist.to_json(value) == profiles_plist.to_json(value)


def test_profile_loader_refuses_shared_containers_with_a_pointer() -> None:
    with pytest.raises(profiles_plist.ProfileError) as caught:
        _quickly(lambda: profiles_plist.load_plist(bomb_plist({"PayloadType": "Configuration"})))
    error = caught.value
    assert error.status == 422 and error.code == "shared_reference" and error.pointer == "/Bomb" + "/0" * 58 + "/1"
