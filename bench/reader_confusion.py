"""How the batching reader (``app.batching.smart.read``) reads the trace's word lists and the held-out
corpus, side by side.

    .venv/bin/python bench/reader_confusion.py [--markdown]

For each kind of fragment, the share of each reading. What matters: a fragment the writer
meant to be followed (a greeting, a piece) read *complete* closes the batch early (a
split); a whole message read *opening* or *unfinished* holds it (a single message waits).
The trace's lists (``bench/trace.py``) were written by the same hand as the reader's word
lists: they are its training data. The held-out corpus (``bench/heldout.py``) was written
apart from both.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.batching.smart import Reading, read
from bench import heldout
from bench import trace as lists

KINDS = ("greeting", "piece", "plain", "request", "thanks", "long")
HOLD, CLOSE = {Reading.OPENING, Reading.UNFINISHED}, {Reading.COMPLETE}


def readings(corpus: dict[str, dict[str, tuple[str, ...]]], kind: str) -> Counter[Reading]:
    return Counter(read(text) for language in corpus.values() for text in language.get(kind, ()))


def errors(corpus: dict[str, dict[str, tuple[str, ...]]]) -> tuple[float, float]:
    """(share of more-is-coming fragments read complete, share of whole messages read as
    opening or unfinished)."""
    more = sum((readings(corpus, k) for k in heldout.MEANS_MORE), Counter())
    whole = sum((readings(corpus, k) for k in KINDS if k not in heldout.MEANS_MORE), Counter())
    early = sum(more[r] for r in CLOSE) / max(1, sum(more.values()))
    held = sum(whole[r] for r in HOLD) / max(1, sum(whole.values()))
    return early, held


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--markdown", action="store_true")
    parser.parse_args()
    corpora = {"the trace's lists": lists.TEXT, "held-out": heldout.TEXT}
    order = list(Reading)
    print("| kind | corpus | fragments | " + " | ".join(r.value for r in order) + " |")
    print("|---|---|---|" + "---|" * len(order))
    for kind in KINDS:
        for name, corpus in corpora.items():
            seen = readings(corpus, kind)
            total = sum(seen.values())
            shares = " | ".join(f"{seen[r] / total:.0%}" if total else "—" for r in order)
            print(f"| {kind} | {name} | {total} | {shares} |")
    print()
    for name, corpus in corpora.items():
        early, held = errors(corpus)
        print(
            f"{name}: more-is-coming fragments read complete (close early): {early:.0%};"
            f" whole messages read opening/unfinished (held): {held:.0%}"
        )


if __name__ == "__main__":
    main()
