"""REVERSE training data: tag checks on tagged answers and the optional hint augmentation.

Answers carry ``<SPAN>phrase</CN>`` around confident phrases; a hallucinated phrase ``<SPAN>wrong</UN>``
ends the answer. :func:`check_tagged_answer` refuses answers whose tags do not nest that way (naming the
file and row), since a stray tag would silently mask the wrong tokens.

Hint augmentation (the seed's ``query_injection``, on in REVERSE SFT with ``hint_prob`` [0.2]): each time a
record is served (:class:`HintedDataset`, so every epoch draws afresh, seeded), with probability ``p`` a
record that flags phrases with ``</UN>`` gets "(Hint: potential incorrect phrases -> …)" appended to its
last user turn, naming those phrases. The answer is unchanged, so the model learns that a hinted phrase is
one to close with ``</UN>``, which is what retrospective resampling's query rewriting relies on. The seed
reads the phrases from a ``hint`` field of its data and hints every question of a conversation whose answer
is a ``general_answer``; prefopt derives them from the answer's own ``</UN>`` phrases.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from prefopt.data.schema import ConversationExample, message_text
from prefopt.errors import DataError
from prefopt.reverse.resample import ResampleConfig, strip_tags, with_hint

_TOKEN_RE = re.compile(r"<SPAN>|</CN>|</UN>")
_UNCONFIDENT_RE = re.compile(r"<SPAN>((?:(?!<SPAN>|</CN>).)*?)</UN>", re.DOTALL)


def check_tagged_answer(text: str, path: str | None = None, row: int | None = None) -> None:
    """Raise :class:`DataError` unless every ``<SPAN>`` is closed by one ``</CN>``/``</UN>`` and nothing nests."""
    open_span = False
    for match in _TOKEN_RE.finditer(text):
        tag = match.group(0)
        if tag == "<SPAN>":
            if open_span:
                raise DataError(f"nested <SPAN> at character {match.start()} in answer {text[:80]!r}", path=path, row=row)
            open_span = True
        else:
            if not open_span:
                raise DataError(f"{tag} without an open <SPAN> at character {match.start()}", path=path, row=row)
            open_span = False
    if open_span:
        raise DataError(f"<SPAN> never closed in answer {text[:80]!r}", path=path, row=row)


def unconfident_phrases(text: str) -> list[str]:
    """Phrases the answer closes with ``</UN>``, in order, without tags."""
    return [strip_tags(m) for m in _UNCONFIDENT_RE.findall(text) if strip_tags(m)]


def assistant_texts(example: ConversationExample) -> list[str]:
    """Text of each assistant turn."""
    return [message_text(m) for m in example.messages if m.get("role") == "assistant"]


def add_hint(
    example: ConversationExample, rng: random.Random, probability: float = 0.2, template: str | None = None,
    max_phrases: int = 5,
) -> ConversationExample:
    """With ``probability``, a copy whose last user turn before the flagged answer names its ``</UN>`` phrases."""
    template = template or ResampleConfig.hint_template
    # Draw for every record (flagged or not) so that the choice of one record never shifts the others.
    draw = rng.random()
    messages = example.messages
    last_assistant = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
    if draw >= probability or last_assistant is None:
        return example
    phrases = unconfident_phrases(message_text(messages[last_assistant]))[-max_phrases:]
    if not phrases:
        return example
    head = with_hint(messages[:last_assistant], phrases, template)
    out = copy.copy(example)
    out.messages = head + copy.deepcopy(messages[last_assistant:])
    out.extra = {**example.extra, "hint": phrases}
    return out


class HintedDataset:
    """A map-style dataset serving :func:`add_hint` copies of its records, one fresh seeded draw per visit."""

    def __init__(self, items: Sequence[ConversationExample], probability: float = 0.2, seed: int = 0):
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"hint probability must be in [0, 1], got {probability}")
        self.items, self.probability, self.seed = list(items), probability, seed
        self._visits = [0] * len(self.items)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> ConversationExample:
        # the draw depends on (seed, index, visit), not on the order a sampler asks in
        rng = random.Random(f"{self.seed}:{index}:{self._visits[index]}")
        self._visits[index] += 1
        return add_hint(self.items[index], rng, self.probability)


def prepare_reverse_examples(
    examples: Iterable[ConversationExample], path: str | None = None, hint_probability: float = 0.0, seed: int = 0,
) -> Iterator[ConversationExample]:
    """Check the tags of every assistant turn and apply the seeded hint augmentation."""
    rng = random.Random(seed)
    for row, example in enumerate(examples):
        for text in assistant_texts(example):
            check_tagged_answer(text, path=path, row=row + 1)
        yield add_hint(example, rng, hint_probability) if hint_probability > 0 else example


def load_reverse_conversations(
    path: str | Path, image_root: str | Path | None = None, hint_probability: float = 0.0, seed: int = 0,
) -> list[ConversationExample]:
    """Read LLaVA conversation JSON with tagged answers, checked and (optionally) hint-augmented."""
    from prefopt.data.formats import read_llava_conversations

    examples = read_llava_conversations(path, image_root=image_root)
    return list(prepare_reverse_examples(examples, str(path), hint_probability, seed))


def tag_answer(confident: Sequence[str], joiner: str = " ", unconfident: str | None = None, tail: str = ".") -> str:
    """Build a tagged answer: confident phrases joined, optionally ending with one ``</UN>`` phrase."""
    parts = [f"<SPAN>{p}</CN>" for p in confident]
    text = joiner.join(parts)
    if unconfident is not None:
        return f"{text}{joiner if parts else ''}<SPAN>{unconfident}</UN>"
    return text + tail
