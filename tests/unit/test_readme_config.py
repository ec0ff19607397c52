"""What README.md and the manual (docs/*.md) show cannot drift from the code: the config reference shows the
defaults that `Config()` really resolves, every config example validates, every `yolo-pipeline ...` command line
parses with the real CLI parser (parsed only, never run), and the README's links lead to files that exist."""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest
import yaml

from pipeline.augment.spec import describe
from pipeline.cli import build_parser
from pipeline.config import Config, build_config

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
CONFIG_REFERENCE = REPO / "docs" / "first-training.md"  # the full config reference, under its "## Config" heading
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_MAX_LINES = 150  # what a newcomer needs first; the rest is the manual's

FENCE = re.compile(r"^\s*```")
COMMAND_LINE = re.compile(r"^\s*(?:\$\s+)?(?:\S*/)?yolo-pipeline\s")  # `yolo-pipeline`, `.venv/bin/...`, `$ ...`
INLINE_COMMAND = re.compile(r"(?<!`)`((?:\S*/)?yolo-pipeline\s[^`]+)`(?!`)")  # may wrap over lines in prose


def config_reference_block() -> dict:
    text = CONFIG_REFERENCE.read_text(encoding="utf-8")
    section = text[text.index("\n## Config\n") :]
    section = section[: section.index("\n## ", 1)]
    return yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1))


def test_every_value_shown_is_the_resolved_default() -> None:
    shown, defaults = config_reference_block(), Config().to_dict()
    assert list(shown) == list(defaults)  # every section, in the config's order
    for section, keys in shown.items():
        assert set(keys) <= set(defaults[section]), f"{section}: keys the config does not have"
        assert {key: defaults[section][key] for key in keys} == keys, section


def test_the_default_albumentations_pipeline_is_empty_as_shown() -> None:
    augment = config_reference_block()["augment"]
    assert augment["albumentations"] == [] and describe(Config().augment) == []


def yaml_blocks(page: Path) -> list[tuple[int, str]]:
    text = page.read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1)) for m in re.finditer(r"```yaml\n(.*?)```", text, re.DOTALL)]


CONFIG_EXAMPLES = [
    pytest.param(block, id=f"{page.relative_to(REPO)}:{line}")
    for page in PAGES
    for line, block in yaml_blocks(page)
    if isinstance(loaded := yaml.safe_load(block), dict) and set(loaded) <= set(Config().to_dict())
]


def test_there_are_config_examples_to_check() -> None:
    assert any("README.md" in example.id for example in CONFIG_EXAMPLES)  # the README's short config
    assert any("first-training.md" in example.id for example in CONFIG_EXAMPLES)  # the reference


@pytest.mark.parametrize("block", CONFIG_EXAMPLES)
def test_every_config_example_validates(block: str) -> None:
    build_config(yaml.safe_load(block), "<example>")  # a wrong key, type or range raises a one-line ConfigError


def command_lines(page: Path) -> list[tuple[int, str]]:
    """Every `yolo-pipeline ...` line of a page, with its line number: lines of fenced code blocks (a trailing
    backslash joins the next line; a `$ ` prompt is dropped) and inline code spans in prose (a span that wraps
    over lines is joined with spaces)."""
    lines = page.read_text(encoding="utf-8").split("\n")
    found: list[tuple[int, str]] = []
    prose: list[tuple[int, str]] = []
    in_code, pending = False, ""
    for number, line in enumerate(lines, 1):
        if FENCE.match(line):
            in_code = not in_code
            continue
        if not in_code:
            prose.append((number, line))
            continue
        if pending or COMMAND_LINE.match(line):
            pending += line.rstrip("\\").strip() + " "
            if not line.rstrip().endswith("\\"):
                found.append((number, re.sub(r"^\$\s+", "", pending.strip())))
                pending = ""
    text = "\n".join(line for _, line in prose)
    for match in INLINE_COMMAND.finditer(text):
        number = prose[text[: match.start()].count("\n")][0]
        found.append((number, " ".join(match.group(1).split())))
    return found


def is_synopsis(words: list[str]) -> bool:
    """A usage pattern rather than a complete command: optional parts in brackets (`[--split val]`), alternatives
    (`RUN_ID|best`, `val|test`, ` | `) or repetition (`ID ...`). Placeholders in capitals (DATASET, RUN_ID, DIR) are
    not synopsis notation: a complete command takes them as values."""
    return any(word.startswith("[") or word.endswith("...") or "|" in word for word in words)


# Lines that are no command at all, only a placeholder for one: `yolo-pipeline COMMAND --help` (any command).
NOT_A_COMMAND = re.compile(r"^(?:\S*/)?yolo-pipeline COMMAND\b")

COMMANDS = [
    pytest.param(command, id=f"{page.relative_to(REPO)}:{line}")
    for page in PAGES
    for line, command in command_lines(page)
    if not NOT_A_COMMAND.match(command)
]


def test_there_are_commands_to_check() -> None:
    ids = " ".join(command.id for command in COMMANDS)
    assert "README.md" in ids and "docs/index.md" in ids and len(COMMANDS) > 40


def _words(command: str) -> list[str]:
    words = shlex.split(command, comments=True)  # a trailing `# comment` is not part of the command
    assert words[0].endswith("yolo-pipeline"), command
    return words[1:]


def _subcommand(parser: argparse.ArgumentParser, words: list[str]) -> tuple[argparse.ArgumentParser, list[str]]:
    """The (sub)parser the words name (`data import` -> data's import parser), and the words after its name."""
    while True:
        choices = next((a.choices for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        if choices is None:
            return parser, words
        name = next((word for word in words if not word.startswith("-")), None)
        assert name in choices, f"{name!r} is not a command here (one of: {', '.join(choices)})"
        parser, words = choices[name], words[words.index(name) + 1 :]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_documented_command_parses(command: str) -> None:
    words = _words(command)
    if is_synopsis(words):
        # A usage pattern: its command must exist and every option it names must be one of that command's.
        parser, rest = _subcommand(build_parser(), words)
        known = set(parser._option_string_actions)
        named = {word.strip("[]").split("=")[0] for word in rest if word.strip("[]").startswith("-")}
        assert named <= known, f"{command}: options the command does not have: {sorted(named - known)}"
        return
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = build_parser().parse_args(words)
    except SystemExit:
        pytest.fail(f"{command}: {errors.getvalue().strip().splitlines()[-1]}")
    if args.command == "train":  # the overrides name real keys with valid values (`train --data P k=v`: no file)
        overrides = [args.config] if args.config and "=" in args.config else []
        if overrides + args.overrides:
            build_config({}, "<command line>", overrides + args.overrides)


def test_readme_links_lead_to_files_that_exist() -> None:
    text = README.read_text(encoding="utf-8")
    targets = {target.split("#")[0] for target in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in target}
    assert targets, "the README links to the manual"
    assert [target for target in sorted(targets) if not (REPO / target).exists()] == []


def test_the_readme_stays_short() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) <= README_MAX_LINES
