"""One explicit rule for how prefopt's ``Trainer`` subclasses scale their loss under gradient accumulation.

``transformers.Trainer`` decides by itself whether ``compute_loss`` already divided by the number of
accumulated micro-batches: when the model's ``forward`` takes ``**kwargs`` (LLaVA's does) it assumes the model
normalised by ``num_items_in_batch`` and skips the division. prefopt's losses are per-micro-batch means that
never see ``num_items_in_batch``, so that guess makes ``gradient_accumulation_steps=k`` sum k micro-batch
gradients instead of averaging them. :class:`MeanLossTrainerMixin` states the rule instead of inheriting it.
"""

from __future__ import annotations

from typing import Any


class MeanLossTrainerMixin:
    """For ``Trainer`` subclasses whose ``compute_loss`` returns a per-micro-batch mean.

    ``Trainer`` then divides that loss by the accumulation steps (and does not count tokens across
    micro-batches for the model), so k accumulated micro-batches give the gradient of their mean loss.
    """

    #: transformers >= 5: the loss from ``compute_loss`` is not yet scaled for gradient accumulation.
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # older transformers read only this flag; it also keeps num_items_in_batch out of the forward
        self.model_accepts_loss_kwargs = False
