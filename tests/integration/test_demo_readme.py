"""README.md's demo block is the rendering of the stored run docs/demo/comparison.json."""

from __future__ import annotations

import json
import shutil

import pytest

from prefopt.demo.readme import BEGIN, END, ROOT, STORED, readme_block, render, render_readme
from prefopt.errors import PrefoptError


def test_readme_block_equals_the_rendering_of_the_stored_run():
    table = json.loads((ROOT / STORED).read_text(encoding="utf-8"))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme_block(readme) == render(table), (
        "README.md's demo block is stale: run `prefopt demo --render-readme` (or python scripts/render_readme.py)"
    )


def test_stored_run_records_how_it_was_made():
    table = json.loads((ROOT / STORED).read_text(encoding="utf-8"))
    prov = table["provenance"]
    assert prov["command"].startswith("prefopt demo") and prov["seeds"] and prov["threads"] >= 1
    assert {"prefopt", "torch", "transformers", "trl"} <= set(prov["versions"]) and prov["budget"]
    assert table["methods"] == ["cold_start", "grpo", "symmpo"] and table["baseline"] == "cold_start"


def test_render_readme_rewrites_only_the_block(tmp_path):
    (tmp_path / "docs" / "demo").mkdir(parents=True)
    shutil.copyfile(ROOT / STORED, tmp_path / STORED)
    (tmp_path / "README.md").write_text(f"# title\n\nbefore\n{BEGIN}\nold numbers\n{END}\nafter\n", encoding="utf-8")
    render_readme(tmp_path)
    text = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert text.startswith("# title\n\nbefore\n") and text.endswith("\nafter\n") and "old numbers" not in text
    assert readme_block(text) == render(json.loads((tmp_path / STORED).read_text(encoding="utf-8")))
    (tmp_path / "README.md").write_text("no markers\n", encoding="utf-8")
    with pytest.raises(PrefoptError, match="no generated demo block"):
        render_readme(tmp_path)
