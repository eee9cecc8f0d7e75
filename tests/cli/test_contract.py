"""spec/cli.md, the command-line contract, held to the ``tidings`` command.

Both ways: every command and option the contract names exists under that name in the click tree, and
every command and option of the tree (bar the bridges' own sub-commands) is named in the contract;
every JSON field it promises is printed by a real run of the command in a temporary home (real
processes, a running node for the network commands). Also the usage rules it states: ``tidings``
alone prints the help, usage errors are one line with exit status 2, the main commands' ``--help``
has examples that name real commands and options.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import click
import pytest
from tidings.cli.main import EXAMPLES, cli

from tests.support.nodes import next_host
from tests.support.processes import TIDINGS, Running

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "spec" / "cli.md"
#: Options every command has; the contract names them once, under "Common to all commands".
COMMON = {"--home", "--debug", "--json", "--help", "-h"}


# -- reading the contract ---------------------------------------------------------------------------------
def _sections() -> list[tuple[str, list[str]]]:
    """(heading, lines) of each ``##`` section that is not *Planned*."""
    out: list[tuple[str, list[str]]] = [("", [])]
    for line in CONTRACT.read_text().splitlines():
        if line.startswith("## "):
            out.append((line[3:].strip(), []))
        else:
            out[-1][1].append(line)
    return [(title, lines) for title, lines in out if "planned" not in title.lower()]


def _spans(text: str) -> list[str]:
    return [s for s in re.findall(r"`([^`]+)`", text) if s.startswith("tidings")]


def _fields(text: str) -> set[str]:
    return {name for braces in re.findall(r"\{([^{}]*)\}", text) for name in re.findall(r'"(\w+)"', braces)}


def _rows() -> list[tuple[str, set[str]]]:
    """(first command of the row, JSON fields the row promises) of each table row that promises some."""
    rows = []
    for _, lines in _sections():
        for line in lines:
            if line.startswith("|") and _spans(line) and _fields(line):
                rows.append((_spans(line)[0], _fields(line)))
    return rows


def _sub(group: click.Group, name: str) -> click.Command | None:
    with click.Context(group) as ctx:  # active: the bridge group finds its plugins through it
        return group.get_command(ctx, name)


def _resolve(span: str) -> tuple[tuple[str, ...], click.Command, list[str]]:
    """Walk ``tidings sub sub ... --opt VALUE`` down the click tree: (command path, command, options
    named). A lowercase word under a group must be one of its commands."""
    words = [w.strip("[]().,;|") for w in shlex.split(span.split("#")[0])]
    assert words and words[0] == "tidings", span
    command: click.Command = cli
    path: list[str] = []
    options: list[str] = []
    for word in words[1:]:
        word = word.removesuffix("...").strip("[]")
        if word.startswith("-") and word != "-":  # "-": standard input
            options.append(word.split("=")[0])
        elif isinstance(command, click.Group) and re.fullmatch(r"[a-z][a-z-]*", word):
            found = _sub(command, word)
            assert found is not None, f"{span!r}: no command {' '.join(['tidings', *path, word])!r}"
            command, path = found, [*path, word]
    return tuple(path), command, options


def _option_names(command: click.Command) -> dict[str, set[str]]:
    """Each option of ``command`` by its names (``-v`` and ``--verbose`` are one option)."""
    names: dict[str, set[str]] = {}
    for param in command.get_params(click.Context(command)):
        if isinstance(param, click.Option):
            every = set(param.opts) | set(param.secondary_opts)
            for name in every:
                names[name] = every
    return names


def _documented() -> dict[tuple[str, ...], set[str]]:
    """Every command path the contract names, with the options it names for it; each checked to exist."""
    seen: dict[tuple[str, ...], set[str]] = {}
    for _, lines in _sections():
        for span in _spans("\n".join(lines)):
            path, command, options = _resolve(span)
            known = _option_names(command)
            for option in options:
                assert option in known, f"spec/cli.md: {span!r}: 'tidings {' '.join(path)}' has no {option}"
            seen.setdefault(path, set()).update(options)
    return seen


def _tree(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    found = [(path, command)]
    if isinstance(command, click.Group) and path[:1] != ("bridge",):  # a bridge documents its own
        for name in command.list_commands(click.Context(command)):
            sub = _sub(command, name)
            assert sub is not None
            found += _tree(sub, (*path, name))
    elif isinstance(command, click.Group):  # ``bridge``: its own list and config only
        for name in ("list", "config"):
            sub = _sub(command, name)
            assert sub is not None
            found.append(((*path, name), sub))
    return found


def test_every_command_and_option_named_exists_and_every_one_is_named() -> None:
    documented = _documented()
    missing = []
    for path, command in _tree(cli):
        if path and isinstance(command, click.Group):
            continue  # a group is named through its commands
        if path not in documented:
            missing.append(f"tidings {' '.join(path)}")
            continue
        for option, names in _option_names(command).items():
            if option.startswith("--") and not names & (documented[path] | COMMON):
                missing.append(f"tidings {' '.join(path)} {option}")
    assert missing == [], f"not in spec/cli.md: {missing}"


def test_a_name_the_code_lacks_is_caught() -> None:
    """The check can fail: a made-up option and a made-up command are reported."""
    with pytest.raises(AssertionError, match="no command 'tidings swarm frobnicate'"):
        _resolve("tidings swarm frobnicate NAME")
    _, command, options = _resolve("tidings run [--listen HOST:PORT] [--no-such-option]")
    assert options == ["--listen", "--no-such-option"] and "--no-such-option" not in _option_names(command)


def test_the_planned_commands_are_not_built() -> None:
    """What the contract calls planned does not exist yet (when it does, move it out of *Planned*)."""
    ctx = click.Context(cli)
    for name in ("device", "recover"):
        assert cli.get_command(ctx, name) is None, name


# -- the JSON fields, from real runs ------------------------------------------------------------------------
def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run([*TIDINGS, "--home", str(home), *args], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "Traceback" not in out.stderr, f"tidings {' '.join(args)}: {out.stderr}"
    return out


def _objects(home: Path, *args: str) -> list[dict[str, Any]]:
    lines = [line for line in _run(home, *args, "--json").stdout.splitlines() if line.strip()]
    assert lines, f"tidings {' '.join(args)} --json printed nothing"
    return [json.loads(line) for line in lines]


@pytest.mark.slow
def test_every_promised_json_field_is_printed(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _run(b, "init", "--name", "bob")
    _run(b, "post", "bob grows gardens")
    fb = _objects(b, "id")[0]["feed"]
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG not really")
    node = Running(b, "--http", f"{next_host()}:0")
    try:
        # in the order the runs depend on each other; keyed by the first command of the contract's row
        runs: list[tuple[str, tuple[str, ...]]] = [
            ("tidings init [--name NAME] [--encrypt]", ("init", "--name", "alice")),
            ("tidings id", ("id",)),
            ("tidings post TEXT [--reply-to ENTRY]", ("post", "alice gardens too")),
            ("tidings react ENTRY EMOJI", ("react", "%LAST", "🌱")),
            ("tidings repost ENTRY", ("repost", "%LAST")),
            ("tidings delete ENTRY", ("delete", "%LAST")),
            ("tidings profile [FEED] [--name NAME] [--bio BIO]", ("profile", "--bio", "gardens")),
            ("tidings follow FEED", ("follow", fb)),
            ("tidings following", ("following",)),
            ("tidings dm FEED [FEED]... TEXT [--reply ENTRY]", ("dm", fb, "psst, bob")),
            ("tidings inbox [--requests]", ("inbox",)),
            ("tidings conversation FEED [FEED]...", ("conversation", fb)),
            ("tidings mute FEED", ("mute", "--word", "spoilers")),
            ("tidings mute --list", ("mute", "--list")),
            ("tidings unmute FEED", ("unmute", "--word", "spoilers")),
            ("tidings sync HOST:PORT [--network-key KEY] [--timeout SECONDS]", ("sync", node.address)),
            ("tidings peers", ("peers",)),
            ("tidings log [FEED] [--limit N] [--raw]", ("log", fb)),
            ("tidings timeline", ("timeline", "--explain")),
            ("tidings thread ENTRY", ("thread", "%BOB")),
            ("tidings search QUERY [--limit N]", ("search", "grows")),
            ("tidings verify [FEED]", ("verify",)),
            ("tidings export FILE [--force]", ("export", str(tmp_path / "a.tidings"))),
            ("tidings import FILE", ("import", str(tmp_path / "a.tidings"))),
            ("tidings status", ("status",)),
            ("tidings swarm join NAME", ("swarm", "join", "gardening")),
            ("tidings swarm list", ("swarm", "list")),
            ("tidings swarm leave NAME", ("swarm", "leave", "gardening")),
            ("tidings rankers", ("rankers",)),
            ("tidings bridge list", ("bridge", "list")),
            ("tidings unfollow FEED", ("unfollow", fb)),
            ("tidings block FEED", ("block", fb)),
            ("tidings unblock FEED", ("unblock", fb)),
            ("tidings blob add FILE", ("blob", "add", str(picture))),
            ("tidings blob ls", ("blob", "ls")),
            ("tidings blob get BLOB", ("blob", "get", "&BLOB", "-o", str(tmp_path / "copy.png"))),
            ("tidings blob gc", ("blob", "gc")),
            ("tidings blob ls --wanted", ("blob", "ls", "--wanted")),
        ]
        on_b = {"tidings open [--print]": ("open", "--print"), "tidings status": ("status",)}
        rows = _rows()
        keyed = {span.split(" [")[0]: fields for span, fields in rows}
        planned = {span.split(" [")[0] for span, _ in runs} | {span.split(" [")[0] for span in on_b}
        assert set(keyed) <= planned, (
            f"rows of spec/cli.md with JSON fields and no run here: {set(keyed) - planned}"
        )
        last = bob_post = blob = ""
        printed: dict[str, list[dict[str, Any]]] = {}
        for span, args in runs:
            if args == ("blob", "ls", "--wanted"):  # a blob not here: wanted from peers from now on
                missing = subprocess.run(
                    [*TIDINGS, "--home", str(a), "blob", "get", "&" + "a" * 52, "--wait", "0", "-o", "x"],
                    capture_output=True,
                    text=True,
                    timeout=60,
                )
                assert missing.returncode == 1 and "wanted now" in missing.stderr, missing.stderr
            swap = {"%LAST": last, "%BOB": bob_post, "&BLOB": blob}
            args = tuple(swap.get(x, x) for x in args)
            objects = _objects(a, *args)
            printed.setdefault(span.split(" [")[0], []).extend(objects)
            if args[0] == "post":
                last = objects[0]["id"]
            if args[0] == "log":
                bob_post = objects[0]["id"]
            if args[:2] == ("blob", "add"):
                blob = objects[0]["id"]
        for span, args in on_b.items():
            printed.setdefault(span.split(" [")[0] + " (running)", []).extend(_objects(b, *args))
        for span, fields in rows:
            key = span.split(" [")[0]
            for name in (key, key + " (running)"):
                for obj in printed.get(name, []):
                    assert fields <= set(obj), f"{span}: promises {sorted(fields - set(obj))}, got {obj}"
        (running,) = printed["tidings status (running)"]
        assert running["running"] is True and running["listen"] == node.address
        # node.json, as the contract describes it
        item = next(
            line for line in CONTRACT.read_text().splitlines() if "`node.json`" in line and "{" in line
        )
        info = json.loads((b / "node.json").read_text())
        assert _fields(item) <= set(info) and info["services"]["web"]["url"].startswith("http://")
        node.stop()
    finally:
        node.kill()


# -- usage ----------------------------------------------------------------------------------------------------
def _cli(*args: str, home: Path | None = None) -> subprocess.CompletedProcess[str]:
    argv = [*TIDINGS, *(["--home", str(home)] if home else []), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def test_tidings_alone_prints_the_help(tmp_path: Path) -> None:
    for home in (None, tmp_path / "nowhere"):
        out = _cli(home=home)
        assert out.returncode == 0 and out.stderr == "", out.stderr
        assert (
            out.stdout.startswith("Usage: tidings")
            and "Commands:" in out.stdout
            and "Examples:" in out.stdout
        )
    assert not (tmp_path / "nowhere").exists()  # the help creates no home


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (("post",), "error: missing argument 'TEXT' (see 'tidings post --help')"),
        (("nosuch",), "error: no such command 'nosuch' (see 'tidings --help')"),
        (
            ("run", "--listen", "nonsense"),
            "error: invalid value for '--listen': not a HOST:PORT address: 'nonsense' (see 'tidings run --help')",
        ),
        (("swarm", "join"), "error: missing argument 'NAME' (see 'tidings swarm join --help')"),
        (("--no-such-option",), "error: no such option '--no-such-option' (see 'tidings --help')"),
    ],
)
def test_usage_errors_are_one_line_with_exit_status_2(
    tmp_path: Path, args: tuple[str, ...], line: str
) -> None:
    out = _cli(*args, home=tmp_path / "h")
    assert (out.returncode, out.stdout, out.stderr) == (2, "", line + "\n")


def test_the_contract_and_the_readme_state_the_same_error_rules() -> None:
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "spec/cli.md" in readme and "CLI.md` of the project docs" not in readme
    assert "one `error:` line on stderr: exit status 1 when the command failed, 2 for a usage error" in readme
    assert "exit status **2**: a usage error" in CONTRACT.read_text()


def test_main_commands_have_examples_that_name_real_commands_and_options() -> None:
    for name, text in EXAMPLES.items():
        out = _cli(*([name] if name else []), "--help")
        assert out.returncode == 0 and "Examples:" in out.stdout, name
        for example in text.strip().splitlines():
            for part in example.split("&&"):
                command = part.split("#")[0].split("|")[-1].strip()
                path, found, options = _resolve(command)
                assert path, example
                unknown = [o for o in options if o not in _option_names(found)]
                assert unknown == [], f"{example}: {unknown}"
