"""REVERSE label masking: hand-worked tensors, and token-exact on the real tiny tokenizers after add-tokens."""

from __future__ import annotations

import pytest
import torch

from prefopt.data.schema import assistant_message, user_message
from prefopt.errors import ModelError
from prefopt.reverse.masking import apply_reverse_masking, reverse_labels

S, C, U = 91, 92, 93  # <SPAN>, </CN>, </UN>
M = -100


def test_reverse_labels_hand_worked():
    """Row 0: prompt [5, S(prompt), 6] unsupervised, then ``S 7 C 8 S 9 10 U 2``.

    Only 9 and 10 sit strictly between the supervised ``S`` and ``U`` -> -100; the tags, the confident span
    ``7``, the plain ``8`` and EOS ``2`` stay. The ``S`` in the prompt (label -100) is ignored, so its
    ``C`` later in row 0 does not close anything. Row 1: ``U`` without an open span masks nothing, and a
    ``</CN>`` closes its span so the later ``U`` finds no open ``S``.
    """
    ids = torch.tensor([[5, S, 6, S, 7, C, 8, S, 9, 10, U, 2],
                        [U, 4, S, 7, C, 11, U, 2, 0, 0, 0, 0]])
    labels = torch.tensor([[M, M, M, S, 7, C, 8, S, 9, 10, U, 2],
                           [U, 4, S, 7, C, 11, U, 2, M, M, M, M]])
    want = torch.tensor([[M, M, M, S, 7, C, 8, S, M, M, U, 2],
                         [U, 4, S, 7, C, 11, U, 2, M, M, M, M]])
    out = reverse_labels(ids, labels, S, C, U)
    assert torch.equal(out, want)
    assert labels[0, 8] == 9  # input not modified


def test_reverse_labels_shape_check():
    with pytest.raises(ValueError, match="differ in shape"):
        reverse_labels(torch.zeros(1, 3, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long), S, C, U)


class _Vocab:
    def __init__(self, vocab):
        self._vocab = vocab

    def get_vocab(self):
        return self._vocab


def test_loss_weights_hand_worked():
    """tag_weight 2: supervised tags weigh 2, other supervised tokens 1, masked positions 0.

    ``[5, S, 7, C, S, 9, U, 2]`` with the prompt ``5`` masked: weights ``[0, 2, 1, 2, 2, 0, 2, 1]``.
    """
    tok = _Vocab({"<SPAN>": S, "</CN>": C, "</UN>": U})
    ids = torch.tensor([[5, S, 7, C, S, 9, U, 2]])
    batch = {"input_ids": ids, "labels": torch.tensor([[M, S, 7, C, S, 9, U, 2]])}
    out = apply_reverse_masking(dict(batch), tok, tag_weight=2.0)
    assert out["labels"].tolist() == [[M, S, 7, C, S, M, U, 2]]
    assert out["loss_weights"].tolist() == [[0.0, 2.0, 1.0, 2.0, 2.0, 0.0, 2.0, 1.0]]
    plain = apply_reverse_masking(dict(batch), tok)
    assert "loss_weights" not in plain


def test_missing_tokens_is_a_clear_error():
    with pytest.raises(ModelError, match="add-tokens"):
        apply_reverse_masking({"input_ids": torch.zeros(1, 2), "labels": torch.zeros(1, 2)}, _Vocab({"<SPAN>": 1}))


def test_token_exact_on_tiny_tokenizer(tiny_dir):
    """Both families: after add-tokens, exactly the hallucinated words leave the loss."""
    from prefopt.models.adapter import load_adapter
    from prefopt.models.tokens import REVERSE_TOKENS, add_special_tokens

    adapter = load_adapter(str(tiny_dir), load_model=False)
    ids = add_special_tokens(adapter, REVERSE_TOKENS)
    span, cn, un = (ids[t] for t in REVERSE_TOKENS)
    tok = adapter.tokenizer
    answer = "<SPAN>A red circle</CN> and <SPAN>a blue cat</UN>"
    conv = [user_message("Describe the image."), assistant_message(answer)]
    batch = adapter.encode_conversations([conv])
    before = batch["labels"].clone()
    out = apply_reverse_masking(batch, tok, tag_weight=2.0)
    ids_row, lab_before, lab_after = out["input_ids"][0], before[0], out["labels"][0]
    kept_before = ids_row[lab_before != M].tolist()
    kept_after = ids_row[lab_after != M].tolist()
    removed = [t for t, b, a in zip(ids_row.tolist(), lab_before.tolist(), lab_after.tolist()) if b != M and a == M]
    # The removed ids are exactly the tokenisation of the hallucinated phrase.
    assert tok.decode(removed).strip() == "a blue cat"
    cut = [i for i, t in enumerate(kept_after) if t == span][-1] + 1
    assert kept_before == kept_after[:cut] + removed + kept_after[cut:]
    # Everything else that was supervised still is: both tags of each span, the confident phrase and EOS.
    assert kept_after.count(span) == 2 and kept_after.count(cn) == 1 and kept_after.count(un) == 1
    text_after = tok.decode(kept_after, skip_special_tokens=False).replace(" ", "")
    assert text_after.startswith("<SPAN>Aredcircle</CN>and<SPAN></UN>")
    assert kept_after[-1] == kept_before[-1]  # end-of-turn token stays supervised
    # Positions: the tokens strictly between the second <SPAN> and </UN>.
    pos = ids_row.tolist()
    s2 = [i for i, t in enumerate(pos) if t == span][-1]
    u = pos.index(un)
    assert (lab_after[s2 + 1 : u] == M).all() and lab_after[s2] == span and lab_after[u] == un
    weights = out["loss_weights"][0]
    assert weights[s2] == 2.0 and weights[u] == 2.0 and weights[s2 + 1 : u].sum() == 0
