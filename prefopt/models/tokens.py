"""Special-token surgery: add tokens to the tokenizer and give them embedding rows that start sensibly.

The REVERSE tags are declared here, once (:data:`REVERSE_TOKENS`); every other module imports them.

What the REVERSE seed scripts do (``scripts/add_new_token_to_{llava,qwen}.py``, transformers 4.43): add the
three tags, then ``model.resize_token_embeddings(len(tokenizer))``.

- LLaVA (Vicuna, 32000 rows, all used): the matrices grow by three rows, which transformers 4.43 fills with
  the model's random weight initialisation.
- Qwen2.5-VL (151936 rows for 151665 tokenizer ids): ``len(tokenizer)`` is then 151668, so the resize SHRINKS
  both matrices to 151668 rows; the tags get ids 151665-151667, i.e. spare rows that keep whatever values
  the checkpoint stored there, and the remaining spare rows are dropped.

How prefopt departs: the matrices never shrink (a Qwen checkpoint keeps its row count, the tags take spare
rows), and each new row of the input *and* output embedding starts at the mean of the rows the tokenizer
already used, for both families (the "mean resizing" argument of Hewitt, 2021: the new tokens then barely
move the next-token distribution before training). Rows grow only when the ids do not fit.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.errors import ModelError

logger = logging.getLogger(__name__)

#: REVERSE tags (SPEC 4.1): ``<SPAN>`` opens a phrase, ``</CN>`` closes a confident one, ``</UN>`` an unconfident one.
SPAN_OPEN = "<SPAN>"
CONFIDENT_CLOSE = "</CN>"
UNCONFIDENT_CLOSE = "</UN>"
REVERSE_TOKENS: tuple[str, ...] = (SPAN_OPEN, CONFIDENT_CLOSE, UNCONFIDENT_CLOSE)

#: Names accepted by ``--tokens`` for predefined token sets.
TOKEN_SETS: dict[str, tuple[str, ...]] = {"reverse": REVERSE_TOKENS}


def parse_token_list(spec: str) -> list[str]:
    """Turn ``"reverse"`` or a comma list ``"<A>,<B>"`` into a list of tokens (duplicates and blanks refused)."""
    if spec.strip().lower() in TOKEN_SETS:
        return list(TOKEN_SETS[spec.strip().lower()])
    tokens = [t.strip() for t in spec.split(",")]
    if not spec.strip() or any(not t for t in tokens):
        raise ModelError(
            f"--tokens '{spec}': give a set name ({', '.join(TOKEN_SETS)}) or a comma list without blanks"
        )
    _refuse_duplicates(tokens)
    refuse_plain_text(tokens)
    return tokens


_PLAIN_TEXT = re.compile(r"[\w\s.,;:!?'\"()-]+")


def refuse_plain_text(tokens: Sequence[str]) -> None:
    """Refuse tokens that ordinary text contains: a special token matches anywhere in a text, so adding
    ``the`` would cut "other" into ``o`` + ``the`` + ``r`` and change how every sentence is tokenised."""
    for token in tokens:
        if token != token.strip():
            raise ModelError(f"token {token!r} starts or ends with whitespace; give the token without it")
        if _PLAIN_TEXT.fullmatch(token):
            raise ModelError(
                f"token {token!r} is ordinary text (a word or punctuation): as a special token it would "
                "re-tokenise every text that contains it; use markup no text holds, such as <obj> or [OBJ]"
            )


def _refuse_duplicates(tokens: Sequence[str]) -> None:
    seen: set[str] = set()
    for token in tokens:
        if token in seen:
            raise ModelError(f"token {token!r} is listed twice")
        seen.add(token)


def add_special_tokens(adapter: Any, tokens: Sequence[str]) -> dict[str, int]:
    """Add ``tokens`` as special tokens, make room in both embeddings, set new rows to the old rows' mean.

    Refuses tokens the tokenizer already knows. Returns ``{token: id}``.
    """
    from tokenizers import AddedToken

    tokens = list(tokens)
    if not tokens:
        raise ModelError("no tokens to add")
    _refuse_duplicates(tokens)
    refuse_plain_text(tokens)
    tokenizer = adapter.tokenizer
    vocab = tokenizer.get_vocab()
    present = [f"{t!r} (id {vocab[t]})" for t in tokens if t in vocab]
    if present:
        raise ModelError(f"tokens already in the tokenizer of {adapter.name_or_path}: {', '.join(present)}")
    old_len = len(tokenizer)
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)
    ids = {t: int(tokenizer.convert_tokens_to_ids(t)) for t in tokens}
    # A token that the tokenizer would split (or map to unk) cannot be learnt as one unit.
    for token, token_id in ids.items():
        if token_id < old_len or tokenizer.encode(token, add_special_tokens=False).count(token_id) != 1:
            raise ModelError(f"token {token!r} was not added as a single new id (got {token_id})")
    if adapter.model is not None:
        init_new_rows(adapter.model, sorted(ids.values()), n_old=old_len)
    logger.info("added special tokens %s", ids)
    return ids


def init_new_rows(model: Any, new_ids: Sequence[int], n_old: int) -> None:
    """Grow the embeddings if ``new_ids`` do not fit, then set those rows to the mean of rows ``[0, n_old)``."""
    import torch

    rows = model.get_input_embeddings().weight.shape[0]
    needed = max(new_ids) + 1
    if needed > rows:
        # mean_resizing=False: its random draw would be overwritten below anyway, and it is slow for big vocabularies.
        model.resize_token_embeddings(needed, mean_resizing=False)
    sync_vocab_size(model)
    index = torch.tensor(list(new_ids), dtype=torch.long)
    embeddings = [model.get_input_embeddings()]
    output = model.get_output_embeddings()
    if output is not None and output.weight is not embeddings[0].weight:
        embeddings.append(output)
    with torch.no_grad():
        for module in embeddings:
            weight = module.weight
            # Spare rows past n_old are untrained padding, so they must not pull the mean.
            mean = weight[:n_old].float().mean(dim=0)
            weight[index] = mean.to(weight.dtype).expand(len(index), -1)
            bias = getattr(module, "bias", None)
            if bias is not None:
                bias[index] = bias[:n_old].float().mean().to(bias.dtype)


def sync_vocab_size(model: Any) -> int:
    """Write the input-embedding row count into every ``vocab_size`` the config (and its sub-configs) carries."""
    rows = int(model.get_input_embeddings().weight.shape[0])
    configs = [model.config, model.config.get_text_config()]
    for config in configs:
        if getattr(config, "vocab_size", None) is not None:
            config.vocab_size = rows
    return rows


def save_model_dir(model: Any, processor: Any, out_dir: str | Path) -> Path:
    """Save model weights (safetensors), generation config, processor, tokenizer and chat template to ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    processor.save_pretrained(out)
    from prefopt.training.common import readable_modes

    readable_modes(out)  # safetensors writes 0600; a model folder is for others to load too
    return out
