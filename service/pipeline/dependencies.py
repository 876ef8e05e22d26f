"""Which static subquestions may be solved at the same time.

The rule (documented in README): subquestion *i* depends on the earlier ones
when it refers back ("that", "these", "the rest", "in total", "both", ...) or
shares a content word with an earlier subquestion (the same quantity asked
about again, like "red car" in "How much cheaper is the red car?" and "How
much does the red car cost?"). Otherwise it asks about something new in the
problem text and needs no earlier answer. Consecutive independent
subquestions form a *wave* solved concurrently; a dependent one starts a new
wave after everything before it. The rule is conservative: a false
"dependent" only costs latency, a false "independent" would cost accuracy.
"""

from __future__ import annotations

import re

_BACK_REFERENCE = re.compile(
    r"\b(that|this|these|those|it|its|they|them|their|result|rest|remaining|remainder|left|"
    r"total|altogether|combined|both|together|overall|then|after|now|new|difference|"
    r"sum|average|each|per)\b",
    re.IGNORECASE,
)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "the",
        "of",
        "in",
        "on",
        "at",
        "to",
        "for",
        "from",
        "by",
        "with",
        "and",
        "or",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "does",
        "do",
        "did",
        "has",
        "have",
        "had",
        "how",
        "many",
        "much",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "will",
        "would",
        "can",
        "could",
        "should",
        "there",
        "his",
        "her",
        "he",
        "she",
        "him",
        "we",
        "you",
        "i",
        "my",
        "your",
        "our",
        "one",
        "two",
        "three",
    ]
)


def _content_words(text: str) -> set[str]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {w.rstrip("s") for w in words if w not in _STOPWORDS and len(w) > 2}


def depends_on_earlier(sub: str, earlier: list[str]) -> bool:
    if not earlier:
        return False
    if _BACK_REFERENCE.search(sub):
        return True
    mine = _content_words(sub)
    return any(mine & _content_words(e) for e in earlier)


def waves(subquestions: list[str]) -> list[list[int]]:
    """Indices grouped into waves; each wave may run concurrently."""
    groups: list[list[int]] = []
    for i, sub in enumerate(subquestions):
        if groups and not depends_on_earlier(sub, subquestions[:i]):
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups
