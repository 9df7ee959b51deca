"""Character n-gram naive Bayes language identification, in plain Python.

Trained at image build time from the texts in ``train/``; the trained counts are stored
as JSON so that the served model loads without recomputing anything.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

ORDERS = (1, 2, 3)
LANGUAGE_NAMES = {
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "it": "Italian",
}
_NON_LETTERS = re.compile(r"[^\w]+|[\d_]+")


class InputRejected(ValueError):
    """The text cannot be classified; the message says why (answered as 422)."""


def normalise(text: str) -> str:
    words = _NON_LETTERS.sub(" ", text.lower()).split()
    return " ".join(words)


def ngrams(text: str) -> Counter[str]:
    padded = f" {text} "
    grams: Counter[str] = Counter()
    for n in ORDERS:
        for i in range(len(padded) - n + 1):
            gram = padded[i : i + n]
            if gram.strip():
                grams[gram] += 1
    return grams


def train(train_dir: Path) -> dict[str, object]:
    languages: dict[str, dict[str, object]] = {}
    vocabulary: set[str] = set()
    for path in sorted(train_dir.glob("*.txt")):
        counts = ngrams(normalise(path.read_text(encoding="utf-8")))
        vocabulary.update(counts)
        languages[path.stem] = {"total": sum(counts.values()), "counts": dict(sorted(counts.items()))}
    if not languages:
        raise SystemExit(f"no training texts (*.txt) in {train_dir}")
    return {"orders": list(ORDERS), "vocabularySize": len(vocabulary), "languages": languages}


class LanguageIdentifier:
    def __init__(self, trained: dict[str, object]) -> None:
        self._vocabulary_size = int(trained["vocabularySize"])  # type: ignore[call-overload]
        self._languages: dict[str, dict[str, object]] = trained["languages"]  # type: ignore[assignment]

    @classmethod
    def load(cls, path: Path) -> LanguageIdentifier:
        return cls(json.loads(path.read_text(encoding="utf-8")))

    def predict(self, raw: bytes) -> dict[str, object]:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise InputRejected(f"input is not valid UTF-8 text (byte {exc.start})") from None
        if not text.strip():
            raise InputRejected("input text is empty")
        grams = ngrams(normalise(text))
        if not grams:
            raise InputRejected("input text contains no letters")
        n_grams = sum(grams.values())
        scores: dict[str, float] = {}
        for language, stats in self._languages.items():
            counts: dict[str, int] = stats["counts"]  # type: ignore[assignment]
            denominator = int(stats["total"]) + self._vocabulary_size  # type: ignore[call-overload]
            log_likelihood = sum(
                seen * math.log((counts.get(gram, 0) + 1) / denominator) for gram, seen in grams.items()
            )
            scores[language] = log_likelihood / n_grams
        best = max(scores, key=scores.__getitem__)
        return {
            "language": best,
            "languageName": LANGUAGE_NAMES.get(best, best),
            "meanLogProbability": {lang: round(score, 4) for lang, score in sorted(scores.items())},
            "ngrams": n_grams,
        }


def main(argv: list[str]) -> None:
    if len(argv) != 2:
        raise SystemExit("usage: python3 -m langid_app.model TRAIN_DIR OUTPUT_JSON")
    trained = train(Path(argv[0]))
    Path(argv[1]).write_text(json.dumps(trained, sort_keys=True), encoding="utf-8")
    print(f"trained on {len(trained['languages'])} languages, {trained['vocabularySize']} n-grams")  # type: ignore[arg-type]


if __name__ == "__main__":
    main(sys.argv[1:])
