"""The model-adapter protocol: everything model-family specific lives behind this interface.

Algorithm code (trainers, rewards, evaluation) receives a :class:`VLMAdapter` and never asks which
family it holds. Implementations: ``prefopt.models.llava.LlavaAdapter`` and
``prefopt.models.qwen2_5_vl.Qwen25VLAdapter``; :func:`load_adapter` picks one from ``config.json``.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from prefopt.errors import ModelError

Messages = list[dict[str, Any]]

_REGISTRY: dict[str, type[VLMAdapter]] = {}


def register(cls: type[VLMAdapter]) -> type[VLMAdapter]:
    """Class decorator: make an adapter available under its ``family`` and ``model_types``."""
    _REGISTRY[cls.family] = cls
    for model_type in cls.model_types:
        _REGISTRY[model_type] = cls
    return cls


class VLMAdapter(abc.ABC):
    """A loaded vision-language model and processor, plus the family facts algorithms need."""

    family: ClassVar[str]
    #: ``config.json`` ``model_type`` values this adapter serves.
    model_types: ClassVar[tuple[str, ...]] = ()
    supports_video: ClassVar[bool] = False

    def __init__(self, model: Any, processor: Any, name_or_path: str | None = None):
        self.model = model
        self.processor = processor
        self.name_or_path = name_or_path

    # ---- loading -------------------------------------------------------------------------
    @classmethod
    @abc.abstractmethod
    def load(
        cls,
        name_or_path: str,
        *,
        dtype: str = "auto",
        attn_implementation: str | None = None,
        device_map: Any = None,
        quantization: str | None = None,  # None, "4bit" or "8bit" (bitsandbytes)
        trust_remote_code: bool = False,
        load_model: bool = True,  # False: processor only
    ) -> VLMAdapter:
        """Load model and processor from a hub id or a local directory."""

    # ---- tokenisation ----------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @abc.abstractmethod
    def encode_prompts(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Left-padded generation inputs (chat template with the generation prompt appended).

        Returns a ``BatchFeature`` with ``input_ids``, ``attention_mask`` and the family's image
        tensors (``pixel_values``, and ``image_grid_thw`` for Qwen2.5-VL).
        """

    @abc.abstractmethod
    def encode_conversations(
        self,
        conversations: Sequence[Messages],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Right-padded training inputs with ``labels``: -100 everywhere except assistant turns.

        Assistant content and the end-of-turn token are supervised; system/user text, the
        assistant header, image tokens and padding are not.
        """

    def encode_prompt_response(
        self,
        prompts: Sequence[Messages],
        responses: Sequence[str],
        images: Sequence[Sequence[Any]] | None = None,
        videos: Sequence[Sequence[Any]] | None = None,
    ) -> Any:
        """Training inputs for ``prompt + assistant(response)``; only the response is supervised."""
        from prefopt.data.schema import assistant_message

        conversations = [list(p) + [assistant_message(r)] for p, r in zip(prompts, responses, strict=True)]
        return self.encode_conversations(conversations, images, videos)

    def decode(self, token_ids: Any, skip_special_tokens: bool = True) -> list[str]:
        """Decode a batch of generated ids."""
        return self.tokenizer.batch_decode(token_ids, skip_special_tokens=skip_special_tokens)

    # ---- structure -----------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def image_token_ids(self) -> list[int]:
        """Token ids that stand for image (and video) features in ``input_ids``."""

    @property
    @abc.abstractmethod
    def vision_tower_prefixes(self) -> list[str]:
        """Module-name prefixes of the vision encoder in ``self.model``."""

    @property
    @abc.abstractmethod
    def projector_prefixes(self) -> list[str]:
        """Module-name prefixes of the vision-to-language projector / merger."""

    @property
    @abc.abstractmethod
    def language_model_prefixes(self) -> list[str]:
        """Module-name prefixes of the language model (including ``lm_head``)."""

    @property
    def image_input_keys(self) -> tuple[str, ...]:
        """Names of the image tensors in encoded batches (beyond ids and masks)."""
        return ("pixel_values",)

    def lora_target_modules(self, include_vision: bool = False) -> list[str]:
        """Full module names of the linear layers LoRA should wrap (language model's attention + MLP)."""
        import torch

        leaves = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
        prefixes = list(self.language_model_prefixes)
        if include_vision:
            prefixes += list(self.vision_tower_prefixes) + list(self.projector_prefixes)
        names = []
        for name, module in self.model.named_modules():
            if not isinstance(module, torch.nn.Linear) or name.endswith("lm_head"):
                continue
            in_scope = any(name == p or name.startswith(p + ".") for p in prefixes)
            vision_leaf = include_vision and not any(
                name.startswith(p + ".") for p in self.language_model_prefixes
            )
            if in_scope and (name.rsplit(".", 1)[-1] in leaves or vision_leaf):
                names.append(name)
        return names

    def freeze_vision(self, freeze_tower: bool = True, freeze_projector: bool = False) -> None:
        """Turn off gradients for the vision tower (and optionally the projector)."""
        prefixes = list(self.vision_tower_prefixes) if freeze_tower else []
        if freeze_projector:
            prefixes += list(self.projector_prefixes)
        for name, param in self.model.named_parameters():
            if any(name.startswith(p + ".") for p in prefixes):
                param.requires_grad_(False)


def detect_family(name_or_path: str) -> str:
    """The adapter family of a local checkpoint (from ``config.json``) or of a hub id (from its name)."""
    path = Path(name_or_path)
    if path.is_dir():
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise ModelError(f"{path}: no config.json; is this a model directory?")
        try:
            model_type = json.loads(cfg_file.read_text())["model_type"]
        except (json.JSONDecodeError, KeyError) as err:
            raise ModelError(f"{cfg_file}: unreadable or without model_type ({err})") from err
        if model_type not in _known():
            raise ModelError(
                f"{path}: model_type '{model_type}' is not supported; prefopt supports {sorted(set(_families()))}"
            )
        return _known()[model_type].family
    if path.is_absolute() or name_or_path.startswith((".", "~")) or name_or_path.count("/") > 1:
        # a path, not a hub id (owner/name): say it is missing rather than guess a family from its name
        raise ModelError(f"{name_or_path}: model directory does not exist")
    lowered = name_or_path.lower()
    if "qwen2.5-vl" in lowered or "qwen2_5_vl" in lowered:
        return "qwen2_5_vl"
    if "llava" in lowered:
        return "llava"
    raise ModelError(
        f"cannot tell the model family of '{name_or_path}': not a local directory and the name matches no "
        f"supported family ({sorted(set(_families()))}); pass --family"
    )


def _known() -> dict[str, type[VLMAdapter]]:
    import prefopt.models.llava  # noqa: F401  (registers)
    import prefopt.models.qwen2_5_vl  # noqa: F401

    return _REGISTRY


def _families() -> list[str]:
    return [cls.family for cls in _known().values()]


def adapter_class(family: str) -> type[VLMAdapter]:
    """The adapter class registered for ``family``."""
    known = _known()
    if family not in known:
        raise ModelError(f"unknown model family '{family}'; choose one of {sorted(set(_families()))}")
    return known[family]


def load_adapter(name_or_path: str, family: str | None = None, **kwargs: Any) -> VLMAdapter:
    """Load a model + processor through the adapter of its family (detected when not given)."""
    cls = adapter_class(family or detect_family(name_or_path))
    return cls.load(name_or_path, **kwargs)
