"""LoRA / QLoRA set-up around a :class:`VLMAdapter`, adapter saving, and merging an adapter into its base.

Three failures users of VLM fine-tuning repos report, and what this module does about each:

* New special tokens never train under LoRA: :func:`apply_lora` makes the new rows of the input and
  output embeddings trainable through peft's ``trainable_token_indices`` (only those rows, not the
  whole matrix; tied embeddings share one set of rows).
* Merged models lose the vision tower or the new tokens: :func:`merge_lora` loads the *whole* base
  model (vision tower and projector included), re-creates the added tokens from the tokenizer saved
  with the adapter, merges LoRA, trainable token rows and ``modules_to_save``, and saves everything.
* Merges that do not load with plain transformers: the output is a normal ``save_pretrained`` folder
  (safetensors + processor, tokenizer, chat template) with consistent ``vocab_size`` values.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prefopt.errors import ModelError
from prefopt.models.registry import load_adapter
from prefopt.models.settings import LoraSettings
from prefopt.models.tokens import add_special_tokens, save_model_dir, sync_vocab_size

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def load_base_for_lora(
    name_or_path: str,
    family: str | None = None,
    quantization: str | None = None,
    dtype: str = "auto",
    gradient_checkpointing: bool = False,
    **load_kwargs: Any,
) -> Any:
    """Load an adapter whose model is ready for LoRA: optionally a 4-bit/8-bit bitsandbytes base (QLoRA)."""

    if quantization not in (None, "4bit", "8bit"):
        raise ModelError(f"quantization must be 4bit, 8bit or empty, not {quantization!r}")
    if quantization:
        try:
            import bitsandbytes  # noqa: F401
        except ImportError as err:
            raise ModelError(
                "a 4bit/8bit base needs bitsandbytes: pip install 'prefopt[bitsandbytes]'"
            ) from err
    adapter = load_adapter(name_or_path, family=family, dtype=dtype, quantization=quantization, **load_kwargs)
    if quantization:
        from peft import prepare_model_for_kbit_training

        # Casts norms to float32 and enables input grads so LoRA on a frozen quantised base gets gradients.
        adapter.model = prepare_model_for_kbit_training(
            adapter.model, use_gradient_checkpointing=gradient_checkpointing
        )
    elif gradient_checkpointing:
        adapter.model.gradient_checkpointing_enable()
    return adapter


def _module_name(model: Any, module: Any) -> str:
    for name, candidate in model.named_modules():
        if candidate is module:
            return name
    raise ModelError(f"cannot find module {type(module).__name__} in {type(model).__name__}")


def new_token_targets(model: Any, token_ids: Sequence[int]) -> dict[str, list[int]]:
    """``trainable_token_indices`` for ``token_ids``: the input embedding, plus the LM head unless it is tied."""
    ids = sorted(int(i) for i in token_ids)
    rows = model.get_input_embeddings().weight.shape[0]
    if ids and (ids[0] < 0 or ids[-1] >= rows):
        raise ModelError(
            f"new token ids {ids} do not fit the embedding with {rows} rows; add the tokens first"
        )
    embedding = model.get_input_embeddings()
    targets = {_module_name(model, embedding): ids}
    head = model.get_output_embeddings()
    # A tied head shares the embedding tensor; peft follows the embedding's trainable rows for it.
    if head is not None and head.weight is not embedding.weight:
        targets[_module_name(model, head)] = ids
    return targets


def resolve_targets(adapter: Any, settings: LoraSettings) -> list[str]:
    """Full names of the Linear layers to wrap; user-given short names never reach the vision side unless asked."""
    import torch

    if not settings.target_modules:
        targets = adapter.lora_target_modules(settings.include_vision)
    else:
        prefixes = list(adapter.language_model_prefixes)
        if settings.include_vision:
            prefixes += list(adapter.vision_tower_prefixes) + list(adapter.projector_prefixes)
        wanted = list(settings.target_modules)
        targets = [
            name
            for name, module in adapter.model.named_modules()
            if isinstance(module, torch.nn.Linear)
            and any(name == p or name.startswith(p + ".") for p in prefixes)
            and any(name == t or name.endswith("." + t) for t in wanted)
        ]
    if not targets:
        scope = "language model and vision side" if settings.include_vision else "language model"
        raise ModelError(
            f"lora.target_modules {settings.target_modules} match no Linear layer of the {scope} "
            f"of {type(adapter.model).__name__}"
        )
    return targets


def apply_lora(adapter: Any, settings: LoraSettings, new_token_ids: Sequence[int] | None = None) -> Any:
    """Wrap ``adapter.model`` with LoRA (language model only unless ``include_vision``); return the PeftModel.

    ``new_token_ids`` (rows added by :func:`add_special_tokens`) become trainable in the input and output
    embeddings when ``settings.train_new_token_rows``, so that new special tokens actually learn.
    """
    from peft import LoraConfig, get_peft_model

    model = adapter.model
    targets = resolve_targets(adapter, settings)
    token_targets = None
    if new_token_ids and settings.train_new_token_rows:
        token_targets = new_token_targets(model, new_token_ids)
        clash = [
            m for m in settings.modules_to_save if any(t == m or t.endswith("." + m) for t in token_targets)
        ]
        if clash:
            raise ModelError(
                f"lora.modules_to_save {clash} already trains the whole embedding; set "
                "lora.train_new_token_rows=false or drop them from modules_to_save"
            )
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=list(settings.modules_to_save) or None,
        trainable_token_indices=token_targets,
        task_type=None,
    )
    peft_model = get_peft_model(model, config)
    if token_targets:
        _check_head_follows(peft_model)
    return peft_model


def _check_head_follows(peft_model: Any) -> None:
    """Fail loudly when the output head would ignore the trained rows (a tied head peft did not wrap)."""
    from peft.utils.other import TrainableTokensWrapper

    head = peft_model.get_output_embeddings()
    if head is not None and not isinstance(head, TrainableTokensWrapper):
        raise ModelError(
            f"the output head {type(head).__name__} is not covered by the trainable token rows; "
            "use lora.modules_to_save=[embed_tokens, lm_head] and lora.train_new_token_rows=false"
        )


def save_adapter(peft_model: Any, processor: Any, out_dir: str | Path) -> Path:
    """Save a LoRA adapter together with the processor/tokenizer, so that a merge knows the added tokens."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


# ---- merging --------------------------------------------------------------------------------------


def read_adapter_config(adapter_dir: str | Path) -> dict[str, Any]:
    """The ``adapter_config.json`` of a LoRA adapter folder (ModelError when missing or not LoRA)."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        raise ModelError(f"{adapter_dir}: no adapter_config.json; is this a PEFT adapter folder?")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}: not valid JSON ({err})") from err
    if config.get("peft_type") != "LORA":
        raise ModelError(
            f"{path}: peft_type is {config.get('peft_type')!r}; only LoRA adapters can be merged"
        )
    return config


def check_base_name(recorded: str | None, base: str, allow_other_base: bool = False) -> None:
    """Refuse a base that is not the one the adapter was trained on (same path, or same hub id / folder name)."""
    if not recorded or allow_other_base:
        return
    if Path(recorded).exists() and Path(base).exists():
        same = Path(recorded).resolve() == Path(base).resolve()
    else:
        # A hub id recorded at training time matches a local download with the same final name.
        same = recorded.rstrip("/").split("/")[-1] == str(base).rstrip("/").split("/")[-1]
    if not same:
        raise ModelError(
            f"the adapter was trained on '{recorded}' but the base given is '{base}'; "
            "pass the right base (or --allow-other-base if it is a copy of the same model)"
        )


def reconcile_tokens(base_adapter: Any, adapter_tokenizer: Any, adapter_dir: str | Path) -> dict[str, int]:
    """Add to the base the tokens the adapter's tokenizer has beyond it, with the same ids; refuse conflicts."""
    base_vocab = base_adapter.tokenizer.get_vocab()
    adapter_vocab = adapter_tokenizer.get_vocab()
    changed = [t for t, i in base_vocab.items() if adapter_vocab.get(t) != i]
    if changed:
        raise ModelError(
            f"{adapter_dir}: the adapter's tokenizer disagrees with the base's on {len(changed)} tokens "
            f"(e.g. {changed[:3]}); it was trained on another model"
        )
    extra = sorted((i, t) for t, i in adapter_vocab.items() if t not in base_vocab)
    if not extra:
        return {}
    tokens = [t for _, t in extra]
    added = add_special_tokens(base_adapter, tokens)
    wrong = {t: (i, added[t]) for i, t in extra if added[t] != i}
    if wrong:
        raise ModelError(
            f"{adapter_dir}: added tokens land on other ids in the base (token: (adapter, base)) {wrong}"
        )
    return added


def _adapter_tensors(adapter_dir: Path) -> dict[str, Any]:
    from safetensors.torch import load_file

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise ModelError(f"{adapter_dir}: no adapter_model.safetensors")
    return load_file(str(path))


def check_adapter_shapes(model: Any, tensors: dict[str, Any], adapter_dir: str | Path) -> None:
    """Compare every saved LoRA / token-row / saved-module tensor with the base module it belongs to."""
    modules = dict(model.named_modules())
    params = dict(model.named_parameters())
    problems = []
    for key, tensor in tensors.items():
        name = key.removeprefix("base_model.model.")
        for part, check in _SHAPE_RULES:
            if part in name:
                module_name = name.split(part)[0]
                module = modules.get(module_name)
                if module is None:
                    problems.append(f"{key}: base has no module '{module_name}'")
                elif not check(module, tuple(tensor.shape)):
                    problems.append(f"{key}: shape {tuple(tensor.shape)} does not fit {_describe(module)}")
                break
        else:
            if name in params and tuple(params[name].shape) != tuple(tensor.shape):
                problems.append(f"{key}: shape {tuple(tensor.shape)} vs base {tuple(params[name].shape)}")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; … {len(problems) - 4} more" if len(problems) > 4 else "")
        raise ModelError(f"{adapter_dir}: adapter does not match the base model: {shown}")


def _in_out(module: Any) -> tuple[int, int]:
    weight = module.weight
    if hasattr(module, "in_features"):
        return int(module.in_features), int(module.out_features)
    return int(weight.shape[1]), int(weight.shape[0])


def _describe(module: Any) -> str:
    return f"{type(module).__name__} (in {_in_out(module)[0]}, out {_in_out(module)[1]})"


_SHAPE_RULES = (
    (".lora_A.", lambda m, s: s[-1] == _in_out(m)[0]),
    (".lora_B.", lambda m, s: s[0] == _in_out(m)[1]),
    # Embedding rows have width embedding_dim; an LM head's rows have width in_features.
    (
        ".token_adapter.trainable_tokens_delta",
        lambda m, s: s[-1] == getattr(m, "embedding_dim", _in_out(m)[0]),
    ),
    (".trainable_tokens_delta", lambda m, s: s[-1] == getattr(m, "embedding_dim", _in_out(m)[0])),
)


def _check_token_indices(model: Any, config: dict[str, Any], adapter_dir: str | Path) -> None:
    indices = config.get("trainable_token_indices") or {}
    if isinstance(indices, list):
        indices = {"embed_tokens": indices}
    rows = model.get_input_embeddings().weight.shape[0]
    for layer, ids in indices.items():
        if ids and max(ids) >= rows:
            raise ModelError(
                f"{adapter_dir}: trainable token ids up to {max(ids)} on '{layer}' but the base vocabulary has "
                f"{rows} rows (vocab size mismatch: was the adapter trained after adding tokens?)"
            )


def _load_adapter_processor(adapter_dir: Path) -> Any | None:
    from transformers import AutoProcessor

    if not any((adapter_dir / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json")):
        return None
    try:
        return AutoProcessor.from_pretrained(adapter_dir)
    except (OSError, ValueError) as err:
        raise ModelError(f"{adapter_dir}: the saved processor/tokenizer cannot be loaded ({err})") from err


def _saved_dtype(base: str) -> Any:
    """The dtype the base checkpoint declares (float32 when it declares none)."""
    import torch
    from transformers import AutoConfig

    declared = getattr(AutoConfig.from_pretrained(base), "dtype", None)
    if isinstance(declared, str):
        declared = getattr(torch, declared, None)
    return declared if isinstance(declared, torch.dtype) else torch.float32


def merge_lora(
    adapter_dir: str | Path,
    base: str | None,
    out: str | Path,
    dtype: str | None = None,
    allow_other_base: bool = False,
) -> Path:
    """Merge a LoRA adapter (token rows, saved modules, vision LoRA) into its full-precision base; save to ``out``.

    ``dtype`` is the dtype of the saved weights; by default the one the base checkpoint declares.
    """
    import torch
    from peft import PeftModel


    adapter_dir = Path(adapter_dir)
    if dtype is not None and dtype not in DTYPES:
        raise ModelError(f"--dtype must be one of {DTYPES}, not {dtype!r}")
    config = read_adapter_config(adapter_dir)
    recorded = config.get("base_model_name_or_path")
    base = base or recorded
    if not base:
        raise ModelError(f"{adapter_dir}: adapter_config.json names no base model; pass --base")
    check_base_name(recorded, str(base), allow_other_base)
    # Never quantised here: a QLoRA adapter merges into the full-precision weights of the same base.
    # The merge itself runs in float32 so that W + BA is not rounded twice; the result is cast afterwards.
    save_dtype = getattr(torch, dtype) if dtype else _saved_dtype(str(base))
    base_adapter = load_adapter(str(base), dtype="float32")
    processor = _load_adapter_processor(adapter_dir)
    if processor is not None:
        reconcile_tokens(base_adapter, getattr(processor, "tokenizer", processor), adapter_dir)
    _check_token_indices(base_adapter.model, config, adapter_dir)
    check_adapter_shapes(base_adapter.model, _adapter_tensors(adapter_dir), adapter_dir)
    try:
        peft_model = PeftModel.from_pretrained(base_adapter.model, str(adapter_dir))
    except (RuntimeError, ValueError, KeyError) as err:
        raise ModelError(f"{adapter_dir}: cannot load the adapter onto {base}: {err}") from err
    merged = peft_model.merge_and_unload()
    merged = merged.to(save_dtype)
    sync_vocab_size(merged)
    merged.config.name_or_path = str(out)
    # A trainer may have saved only the tokenizer; the image processor then comes from the base.
    if processor is None or not hasattr(processor, "image_processor"):
        processor = base_adapter.processor
    save_model_dir(merged, processor, out)
    logger.info("merged %s into %s -> %s", adapter_dir, base, out)
    return Path(out)
