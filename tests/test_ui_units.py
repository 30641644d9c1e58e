"""Pure helpers of the web UI: the volume tree, sizes, sharing headers, API fault messages."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from control.ui.app import human_size
from control.ui.backend import _message, path_of
from control.ui.pages_files import _parse_sharing
from control.ui.pages_volumes import tree

names = st.text(alphabet="abcdef", min_size=1, max_size=4)


@st.composite
def forests(draw: st.DrawFn) -> list[dict]:
    """Volumes whose parents are earlier volumes, missing names or nothing (no cycles)."""
    vols: list[dict] = []
    for name in draw(st.lists(names, unique=True, max_size=12)):
        parent = draw(st.one_of(st.none(), st.just("gone"),
                                st.sampled_from([v["name"] for v in vols]) if vols else st.none()))
        vols.append({"name": name, "parent": parent})
    return vols


@given(forests())
def test_tree_lists_every_volume_once_parents_first(vols: list[dict]) -> None:
    out = tree(vols)
    assert sorted(v["name"] for _, v in out) == sorted(v["name"] for v in vols)
    seen: dict[str, int] = {}
    for depth, v in out:
        p = v["parent"]
        if p in {x["name"] for x in vols}:
            assert p in seen and depth == seen[p] + 1      # under its parent, one deeper
        else:
            assert depth == 0                              # a root (or its parent is gone)
        seen[v["name"]] = depth


def test_sizes_and_paths() -> None:
    assert [human_size(n) for n in (0, 1023, 1536, 20 << 20, 3 << 30, 5 << 40, "x")] == [
        "0 B", "1023 B", "1.5 KiB", "20.0 MiB", "3.0 GiB", "5.0 TiB", "-"]
    assert path_of("a/b", "c d", "<x>?") == "a%2Fb/c%20d/%3Cx%3E%3F"


@given(st.lists(st.text(alphabet="0123456789abcdef-", min_size=1, max_size=8), max_size=4),
       st.lists(st.text(alphabet="0123456789abcdef-", min_size=1, max_size=8), max_size=4))
def test_sharing_header_round_trip(read: list[str], write: list[str]) -> None:
    value = ";".join(p for p in (f"read={','.join(read)}" if read else "",
                                 f"write={','.join(write)}" if write else "") if p)
    assert _parse_sharing(value) == (read, write)


def test_fault_messages() -> None:
    assert _message('{"itemNotFound": {"code": 404, "message": "server x not found"}}') == \
        "server x not found"
    assert _message("Not Found\n") == "Not Found"
    assert _message('{"a": 1, "b": 2}') == '{"a": 1, "b": 2}'


def test_every_quota_resource_has_a_label() -> None:
    from control.compute.quota import RESOURCES as COMPUTE
    from control.ui.pages_home import LABELS

    assert {r[0] for r in COMPUTE} | {"pithos.diskspace"} <= set(LABELS)
