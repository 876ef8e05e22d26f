"""Turning model text into structure: subquestion lists and final answers.

Small decomposers are sloppy, so parsing is forgiving: any list style, stray
blank lines, echoes of the prompt format and repeats are tolerated.
"""

from __future__ import annotations

import re

from service.pipeline.prompts import DONE_MARKER, NONE_MARKER

# "1.", "2)", "-", "*", "•", "Q1:", "Subquestion 2:" prefixes.
_ITEM_PREFIX = re.compile(
    r"^\s*(?:(?:\d+\s*[.):]|[-*\u2022]|q\d+\s*[:.]|subquestion\s*\d*\s*[:.])\s*)+", re.IGNORECASE
)
# Lines that start the next few-shot block or an answer, not a subquestion.
_END_OF_LIST = re.compile(r"^\s*(problem|answer|a\d+)\s*\d*\s*:", re.IGNORECASE)
_NUMBER = re.compile(r"-?\$?\s?\d[\d,]*(?:\.\d+)?")
_ANSWER_CUE = re.compile(
    r"(?:answer\s+is|answer:|####|final answer\s*(?:is|:)?)\s*:?\s*(.+)", re.IGNORECASE
)


def normalize(text: str) -> str:
    """The comparison key of a subquestion or question: lower case, letters, digits, spaces."""
    return re.sub(r"[^a-z0-9 ]", "", " ".join(text.lower().split()))


def clean_item(line: str) -> str:
    return _ITEM_PREFIX.sub("", line).strip().strip('"').strip()


def parse_subquestions(text: str, cap: int) -> list[str]:
    """Subquestions from a static decomposition: deduplicated, at most ``cap``."""
    return parse_decomposition(text, cap)[0]


def parse_decomposition(text: str, cap: int) -> tuple[list[str], int]:
    """Subquestions (deduplicated, at most ``cap``) and how many repeats were dropped.

    A repeat is an item equal to an earlier one after normalization (case,
    spacing, punctuation, list markers). Dropping them saves solver calls;
    counting them keeps the decomposer's habit of repeating itself visible.
    """
    out: list[str] = []
    seen: set[str] = set()
    repeats = 0
    for raw in text.splitlines():
        if _END_OF_LIST.match(raw):
            break
        item = clean_item(raw)
        key = normalize(item)
        if not key or key == NONE_MARKER or key == DONE_MARKER.lower():
            if key in (NONE_MARKER, DONE_MARKER.lower()) and not out:
                return [], 0
            continue
        if key in seen:
            repeats += 1
            continue
        seen.add(key)
        out.append(item)
        if len(out) >= cap:
            break
    return out, repeats


def parse_next_subquestion(text: str, previous: list[str]) -> str | None:
    """The socratic decomposer's next subquestion, or None when it is done."""
    for raw in text.splitlines():
        item = clean_item(raw)
        key = normalize(item)
        if not key:
            continue
        if DONE_MARKER.lower() in key.split() or key == NONE_MARKER:
            return None
        if key in {normalize(p) for p in previous}:
            # A repeat means the decomposer has run out of new steps.
            return None
        return item
    return None


def _clean_number(token: str) -> str:
    num = token.replace("$", "").replace(",", "").replace(" ", "")
    if "." in num:
        num = num.rstrip("0").rstrip(".")
    return num or token


def _looks_numeric(question: str) -> bool:
    return bool(re.search(r"\d", question)) or bool(
        re.search(r"\bhow (many|much)\b", question, re.IGNORECASE)
    )


def extract_answer(text: str, question: str = "") -> str:
    """The final answer: a number for math problems, else the answer sentence."""
    text = text.strip()
    if not text:
        return ""
    # The last cue wins: models restate the answer at the end.
    cues = list(_ANSWER_CUE.finditer(text))
    cue = cues[-1] if cues else None
    tail = cue.group(1).strip() if cue else None
    numeric = _looks_numeric(question) or not question
    if tail:
        numbers = _NUMBER.findall(tail)
        # "The answer is 3.5 hours" is numeric whatever the question looked like.
        if numbers and (numeric or tail.lstrip("$ ").startswith(numbers[0].lstrip("$ -"))):
            return _clean_number(numbers[0])
        return tail.rstrip(".").strip()
    if numeric:
        numbers = _NUMBER.findall(text)
        if numbers:
            return _clean_number(numbers[-1])
    # Else the first sentence: the answer, before any explanation.
    first = re.split(r"(?<=[.!?])\s+", text, maxsplit=1)[0]
    return first.strip()
