"""The command line documents itself: every argument of every command has
help that shows its default, and ``solve`` takes a URL without a scheme."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator

import pytest

from service.cli.main import build_parser
from service.cli.solve import payload_of, service_url


def _parsers(
    parser: argparse.ArgumentParser, path: str = "divconq"
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}")


def test_every_argument_has_help_showing_its_default() -> None:
    missing = []
    for path, parser in _parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            name = action.option_strings[0] if action.option_strings else action.dest
            if not action.help:
                missing.append(f"{path} {name}: no help")
            elif action.option_strings and "%(default)" not in (
                formatter._get_help_string(action) or ""
            ):
                missing.append(f"{path} {name}: no default shown")
    assert missing == []


def test_solve_help_lists_its_options() -> None:
    [(_, solve)] = [(p, s) for p, s in _parsers(build_parser()) if p == "divconq solve"]
    text = solve.format_help()
    for option in ("--context", "--solver", "--stream", "--json", "--mode", "--url"):
        assert option in text
    assert "(default: False)" in text


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("localhost:8000", "http://localhost:8000"),
        ("127.0.0.1:9000/", "http://127.0.0.1:9000"),
        ("https://divconq.example.com", "https://divconq.example.com"),
    ],
)
def test_a_url_without_a_scheme_is_http(given: str, url: str) -> None:
    assert service_url(given) == url


def test_solve_sends_what_it_was_given() -> None:
    args = build_parser().parse_args(
        ["solve", "Q?", "--context", "C", "--solver", "claude", "--stream", "--mode", "hinted"]
    )
    assert payload_of(args) == {
        "question": "Q?",
        "mode": "hinted",
        "context": "C",
        "solver": "claude",
        "stream": True,
    }
    bare = build_parser().parse_args(["solve", "Q?"])
    assert payload_of(bare) == {"question": "Q?"}


def test_solve_stream_prints_each_event_and_json_prints_one_per_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from service.cli.main import main
    from tests.fakes import FakeDecomposer, Q, ScriptedSolver, settings_for
    from tests.streams import live

    plan = "1. How many apples does Tom have?\n2. How many pears does Ann buy?"
    with live(settings_for(), ScriptedSolver("ok"), FakeDecomposer(plan)) as url:
        url = url.removeprefix("http://")  # no scheme: still the service
        assert main(["solve", Q, "--url", url, "--stream"]) == 0
        text = capsys.readouterr().out
        assert main(["solve", Q, "--url", url, "--stream", "--json"]) == 0
        lines = capsys.readouterr().out.splitlines()
    assert text.index("subquestions:") < text.index("  1. How many apples") < text.index("answer:")
    assert "-> The answer is 7." in text and "total" in text
    # The final answer's text as it was written, then the answer it holds.
    assert text.index("answer_text: The answer is 7.\n") < text.index("answer: 7")
    events = [json.loads(line)["event"] for line in lines]
    # (one answer_delta or more: this second run's final call may come from the cache)
    deltas = [i for i, e in enumerate(events) if e == "answer_delta"]
    assert deltas and deltas == list(range(3, 3 + len(deltas)))
    assert [e for e in events if e != "answer_delta"] == [
        "decomposition", "subquestion", "subquestion", "answer", "usage", "done",
    ]  # fmt: skip
