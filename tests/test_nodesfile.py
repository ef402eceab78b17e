"""Remembered nodes: the TOML file round-trips, and broken files get a clear error."""

from __future__ import annotations

import stat
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from observer.cli import build_parser
from observer.cli_commands import gui_specs
from observer.errors import ObserverError
from observer.nodesfile import NodeSpec, dumps_nodes, forget, load_nodes, remember, save_nodes

text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)
specs = st.builds(
    NodeSpec,
    address=st.text(string.ascii_letters + string.digits + ".:[]-", min_size=1, max_size=30),
    name=text,
    token_file=text,
    fingerprint=text,
    cafile=text,
    tls=st.booleans(),
    timeout=st.floats(min_value=0.1, max_value=3600, allow_nan=False),
    role=st.sampled_from(["", "viewer", "operator"]),
    expand=st.booleans(),
    server_name=text,
)


@settings(max_examples=200, deadline=None)  # a file written and read: timing is the box's
@given(st.lists(specs, max_size=5))
def test_nodes_round_trip_through_toml(tmp_path_factory, nodes):
    path = tmp_path_factory.mktemp("cfg") / "nodes.toml"
    save_nodes(path, nodes)
    assert load_nodes(path) == nodes


def test_remember_replaces_by_address_and_forget_removes(tmp_path):
    path = tmp_path / "sub" / "nodes.toml"
    assert load_nodes(path) == []
    remember(path, NodeSpec("10.0.0.1:7330", name="a"))
    remember(path, NodeSpec("10.0.0.2:7330", name="b"))
    remember(path, NodeSpec("10.0.0.1:7330", name="a2", token_file="~/t"))
    assert [(s.address, s.name) for s in load_nodes(path)] == [
        ("10.0.0.2:7330", "b"),
        ("10.0.0.1:7330", "a2"),
    ]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # it names credential files
    forget(path, "10.0.0.2:7330")
    assert [s.name for s in load_nodes(path)] == ["a2"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[[node]\n", "not valid TOML"),
        ("node = 3\n", "array of tables"),
        ("[[node]]\nname = 'x'\n", "needs an address"),
        ("[[node]]\naddress = 'h:1'\ncolour = 'red'\n", "unknown key 'colour'"),
        ("[[node]]\naddress = 'h:1'\ntls = 'yes'\n", "tls has the wrong type"),
    ],
)
def test_broken_nodes_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "nodes.toml"
    path.write_text(content)
    with pytest.raises(ObserverError, match=message):
        load_nodes(path)


def test_token_is_never_written_only_its_file(tmp_path):
    out = dumps_nodes([NodeSpec("h:1", token_file="/secrets/op.token")])
    assert 'token_file = "/secrets/op.token"' in out


def test_gui_uses_remembered_nodes_unless_some_are_named(tmp_path):
    path = tmp_path / "nodes.toml"
    save_nodes(path, [NodeSpec("10.0.0.1:7330", name="eu")])
    parser = build_parser()
    remembered = gui_specs(parser.parse_args(["gui", "--nodes-file", str(path)]))
    assert [s.name for s in remembered] == ["eu"]
    named = gui_specs(
        parser.parse_args(
            ["gui", "h:1", "h:2", "--token-file", "t", "--fingerprint", "sha256:ab", "--no-tls"]
        )
    )
    assert [(s.address, s.token_file, s.fingerprint, s.tls) for s in named] == [
        ("h:1", "t", "sha256:ab", False),
        ("h:2", "t", "sha256:ab", False),
    ]
