"""How far the question alone decides the gold subquestion count.

Trains a logistic regression on all 7,473 GSM8K training problems (label: the
number of solution lines, capped at 8; features: TF-IDF of the question plus
counts of numbers, number words, sentences, words, '%' and '$') and scores it
on the held-out split of ``distill data``, beside "always the commonest
count". Needs scikit-learn, which the service does not (``pip install
scikit-learn``)::

    python scripts/count_baseline.py .data/distill/gsm8k/held_out.jsonl
"""

from __future__ import annotations

import json
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from scipy.sparse import csr_matrix, hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

TRAIN = Path(__file__).resolve().parents[1] / "service" / "data" / "gsm8k" / "train.jsonl"
_NUMBER_WORDS = """one two three four five six seven eight nine ten eleven twelve twenty
thirty forty fifty hundred thousand half twice double triple third quarter dozen"""
NUMBER_WORDS = frozenset(_NUMBER_WORDS.split())


def steps(answer: str) -> int:
    return sum(1 for line in answer.rsplit("####", 1)[0].splitlines() if line.strip())


def features(question: str) -> list[float]:
    words = question.lower().split()
    return [
        len(re.findall(r"\d[\d,]*\.?\d*", question)),
        sum(w.strip(".,?") in NUMBER_WORDS for w in words),
        len(re.findall(r"[.?!](\s|$)", question)),
        len(words) / 20,
        question.count("%"),
        question.count("$"),
    ]


def main(held_out: str) -> int:
    train = [json.loads(line) for line in TRAIN.read_text().splitlines()]
    held = [json.loads(line) for line in Path(held_out).read_text().splitlines()]
    q_train = [r["question"] for r in train]
    q_held = [r["question"] for r in held]
    y_train = [min(steps(r["answer"]), 8) for r in train]
    y_held = np.array([min(len(r["subquestions"]), 8) for r in held])
    tfidf = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True).fit(q_train)

    def matrix(qs: list[str]) -> csr_matrix:
        return hstack([tfidf.transform(qs), csr_matrix([features(q) for q in qs])]).tocsr()

    model = LogisticRegression(C=1.0, max_iter=5000).fit(matrix(q_train), y_train)
    pred = model.predict(matrix(q_held))
    commonest, n = Counter(y_held.tolist()).most_common(1)[0]
    print(f"problems: {len(held)}")
    print(f"always {commonest}: right count {n / len(held):.1%}")
    print(
        f"classifier on {len(train)} problems: right count {(pred == y_held).mean():.1%}, "
        f"within one {(abs(pred - y_held) <= 1).mean():.1%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
