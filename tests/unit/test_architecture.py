"""Grep gates: the model adapter (``prefopt/models/``) is the only code that knows a model family.

Outside ``prefopt/models/`` no module may name a family-specific tensor key (anywhere, comments and docstrings
included), name a family or a transformers family class in code, branch on ``model_type``, or read TRL's
family-specific private token ids. A new family then needs no edit outside ``prefopt/models/``.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from prefopt.models.registry import adapter_class, families
from tests.helpers import ROOT as REPO_ROOT

ROOT = REPO_ROOT / "prefopt"
MODELS = ROOT / "models"

#: Processor outputs / forward arguments that exist for some families only.
TENSOR_KEYS = (
    "image_grid_thw",
    "video_grid_thw",
    "pixel_values_videos",
    "mm_token_type_ids",
    "second_per_grid_ts",
    "image_sizes",
)
#: transformers class-name fragments of the supported families, and TRL's per-family private token ids.
CLASS_FRAGMENTS = ("Qwen2_5_VL", "Qwen2VL", "Qwen3VL", "LlavaFor", "LlavaProcessor", "CLIPImageProcessor")
PRIVATE_IDS = ("_image_pad_token_id", "_video_pad_token_id", "_vision_start_token_id")


def _sources() -> list[Path]:
    return sorted(p for p in ROOT.rglob("*.py") if MODELS not in p.parents)


def _family_ids() -> set[str]:
    """Family names and model types. ``llava`` is left out: it is also the name of the LLaVA conversation
    data layout (``data.format: llava``), which is not a model fact; branching on it is caught by the
    ``model_type`` gate below."""
    ids = set(families())
    for family in families():
        ids |= set(adapter_class(family).model_types)
    return ids - {"llava"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the docstring nodes of a module and its classes and functions."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _code_words(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, text) of every identifier, attribute and non-docstring string constant."""
    skip = _docstrings(tree)
    words = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            words.append((node.lineno, node.id))
        elif isinstance(node, ast.Attribute):
            words.append((node.lineno, node.attr))
        elif isinstance(node, ast.alias):
            words.append((node.lineno, node.name))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            words.append((node.lineno, node.value))
    return words


def test_sources_found():
    assert len(_sources()) > 40 and not any(MODELS in p.parents for p in _sources())


@pytest.mark.parametrize("key", TENSOR_KEYS)
def test_no_family_tensor_key_outside_models(key):
    hits = [
        f"{p.relative_to(ROOT.parent)}:{i}"
        for p in _sources()
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if key in line
    ]
    assert not hits, f"{key!r} named outside prefopt/models/ (ask the adapter instead): {hits}"


def test_no_family_name_or_class_in_code_outside_models():
    family_ids = _family_ids()
    pattern = re.compile("|".join(map(re.escape, CLASS_FRAGMENTS + PRIVATE_IDS)))
    hits = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for line, word in _code_words(tree):
            if pattern.search(word) or any(f in word.lower() for f in family_ids):
                hits.append(f"{path.relative_to(ROOT.parent)}:{line}: {word!r}")
    assert not hits, "model-family names in code outside prefopt/models/:\n" + "\n".join(hits)


def test_no_branch_on_model_type_outside_models():
    hits = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare):
                sides = [node.left, *node.comparators]
                if any(isinstance(s, ast.Attribute) and s.attr == "model_type" for s in sides):
                    hits.append(f"{path.relative_to(ROOT.parent)}:{node.lineno}")
    assert not hits, f"branches on model_type outside prefopt/models/: {hits}"


def test_gate_catches_a_planted_key(tmp_path):
    """The code-word scan sees identifiers and strings but not docstrings or comments."""
    tree = ast.parse('"""qwen3_vl in a docstring."""\n# Qwen3VL in a comment\nx = batch["Qwen3VLThing"]\n')
    words = [w for _, w in _code_words(tree)]
    assert "Qwen3VLThing" in words and not any("docstring" in w for w in words)
