"""Config files written by 'ship init', 'shore init', 'union init' and the demo read back
as given, whatever the names and paths hold (tomli-w writes them, not our own quoting)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from typer.testing import CliRunner

from protocol.languages import Language
from shipboard.config import load_config, to_toml
from shore.config import default_document
from shore.config import load_config as load_relay_config
from shore.union.keys import init_union, load_union
from vessel_relay.cli import app

runner = CliRunner()
AWKWARD = (
    'Sea\nStar "7" \\ \t\u0001 \u1000\u102c'  # newline, quotes, backslash, tab, control, Burmese
)


def test_ship_init_with_a_newline_in_the_name_round_trips(tmp_path: Path) -> None:
    """An owner types a vessel name with a line break (and quotes): ship init writes valid
    TOML and the agent reads the same name back."""
    shore_key = "ab" * 32
    result = runner.invoke(
        app,
        [
            "ship", "init", "--data", str(tmp_path / "ship"), "--name", AWKWARD,
            "--broker", "mqtt://127.0.0.1:1883", "--shore-key", shore_key,
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config_path = tmp_path / "ship" / "ship.toml"
    assert tomllib.loads(config_path.read_text(encoding="utf-8"))["vessel"]["name"] == AWKWARD
    assert load_config(config_path, require_union=False).vessel.name == AWKWARD


def test_to_toml_writes_tables_and_arrays_of_tables() -> None:
    """The agent's document (tables, an array of union tables, lists) reads back equal."""
    document = {
        "vessel": {"id": 7, "name": AWKWARD},
        "flags": {"on": True, "ratio": 0.25},
        "unions": [{"id": 1, "languages": ["mya", "tha"]}, {"id": 2, "languages": []}],
    }
    assert tomllib.loads(to_toml(document)) == document


def test_shore_init_writes_a_data_path_with_quotes_and_a_newline(tmp_path: Path) -> None:
    """A relay's data directory whose name holds a quote, a backslash and a newline still
    gives a relay.toml that loads with that very directory."""
    data = tmp_path / 'relay "a"\\b\nc'
    text = default_document(data)
    assert text.startswith("# vessel-relay shore relay")
    assert tomllib.loads(text)["relay"]["data_dir"] == str(data)
    result = runner.invoke(app, ["shore", "init", "--data", str(data)])
    assert result.exit_code == 0, result.output
    config = load_relay_config(data / "relay.toml")
    assert config.data_dir == data


def test_union_init_with_an_awkward_name_round_trips(tmp_path: Path) -> None:
    """A union named with quotes and a line break: union.toml reads back the same name."""
    identity = init_union(
        tmp_path / "union", 7, AWKWARD, "https://relay.example.org/", (Language.THA,)
    )
    loaded = load_union(identity.directory)
    assert (loaded.name, loaded.relay_url, loaded.languages) == (
        AWKWARD,
        "https://relay.example.org/",
        (Language.THA,),
    )
