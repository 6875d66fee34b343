"""Markdown tables of a ``run_all.py`` results file (pasted into ``docs/benchmarks.md``).

python -m benchmarks.report benchmarks/results/full.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from benchmarks.run_all import verdict


def _n(value: float, digits: int = 3) -> str:
    """Short number: integers from 1000 up, else ``digits`` significant digits."""
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def _s(stats: dict, scale: float = 1.0, digits: int = 3) -> str:
    """``median (min–max)``."""
    med, lo, hi = (_n(stats[k] * scale, digits) for k in ("median", "min", "max"))
    return f"{med} ({lo}–{hi})"


def ratio_table(results: list[dict]) -> list[str]:
    """Every ratio with its goal and verdict."""
    lines = ["| ratio | value | goal | |", "|---|---:|---|---|"]
    for result in results:
        for r in result.get("ratios", []):
            lines.append(
                f"| {r['name']} | {r['value']:.3f} | {r['goal']} | {verdict(r['value'], r['goal']).strip()} |"
            )
    return lines


def _grpo(result: dict) -> list[str]:
    lines = [
        "| family | judge latency s | B, G | prefopt GWYS s/step | TRL s/step | prefopt CPU s | TRL CPU s | "
        "peak MiB prefopt / TRL | judge requests | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        t, c, p = r["times"], r.get("cpu_s", {}), r["peak_mib"]
        cpu = [_s(c[s]) if s in c else "–" for s in ("prefopt", "trl")]
        lines.append(
            f"| {r['family']} | {r.get('judge_latency_s', 0):g} | {r.get('batch', '?')}, {r.get('group', '?')} | "
            f"{_s(t['prefopt'])} | {_s(t['trl'])} | {cpu[0]} | {cpu[1]} | "
            f"{p.get('prefopt', 0):.0f} / {p.get('trl', 0):.0f} | {r['judge_requests']} | {_s(r['load'])} |"
        )
    return lines


def _symmpo(result: dict) -> list[str]:
    lines = [
        "| family | prefopt loss | prefopt ex/s | TRL DPO ex/s | prefopt ex/s, cache charged | prefopt s/step | "
        "TRL s/step | peak MiB prefopt / TRL | ref. cache build s | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        e, s, p = r["examples_per_s"], r["step_s"], r["peak_mib"]
        charged = r.get("examples_per_s_cache_charged", {}).get("prefopt")
        lines.append(
            f"| {r['family']} | {r.get('loss', 'symmpo')} | {_s(e['prefopt'])} | {_s(e['trl'])} | "
            f"{_s(charged) if charged else '–'} | {_s(s['prefopt'])} | {_s(s['trl'])} | "
            f"{p.get('prefopt', 0):.0f} / {p.get('trl', 0):.0f} | {r['reference_cache_build_s']:.2f} | "
            f"{_s(r['load'])} |"
        )
    return lines


def _ntk_train(result: dict) -> list[str]:
    lines = [
        f"d = {result['d']}, V = {result['vocab']}, B = 16; one fresh process per row.",
        "",
        "| N tokens | side | fwd+bwd s | process peak MiB | added above inputs MiB |",
        "|---:|---|---|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['tokens']} | {r['side']} | {_s(r['seconds'])} | {r['maxrss_mib']:.0f} | "
                     f"{r['added_mib']:.0f} |")
    return lines


def _vocab_memory(result: dict) -> list[str]:
    lines = [
        f"A {result['steps']}-step `symmpo --loss dpo` run, batch {result['batch']}, each run a fresh process "
        f"({result['repeats']} interleaved repeats).",
        "",
        "| vocabulary | peak RSS MiB | run s |",
        "|---|---|---|",
    ]
    for name, label in (("tiny", "tiny tokenizer"), ("real", f"resized to {result['vocab']:,}")):
        lines.append(f"| {label} | {_s(result[name]['maxrss_mib'])} | {_s(result[name]['seconds'])} |")
    return lines


def _vision(result: dict) -> list[str]:
    lines = [
        "| family | SymMPO fwd+bwd s | in the image encoder s | images encoded / distinct | share | most saved |",
        "|---|---|---|---|---:|---:|",
    ]
    for r in result["runs"]:
        lines.append(f"| {r['family']} | {_s(r['step_s'])} | {_s(r['encoder_s'])} | {r['images_encoded']} / "
                     f"{r['images_distinct']} | {r['share']:.3f} | {r['max_saving']:.3f} |")
    return lines


def _ntk(result: dict) -> list[str]:
    lines = [
        "| case | B, T, d, V | route | kernel s | autograd s | LM-head fwd+bwd s | peak MiB kernel / autograd | "
        "B·V·d floats (MiB) | max rel. err |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["cases"]:
        t = r["times"]
        auto = r.get("autograd")
        auto_t = _s(auto["times"]["autograd"]) if auto else _s(t["autograd"])
        peaks = r.get("peak_mib", {})
        auto_peak = (
            f"{auto['maxrss_mib']:.0f} (RSS of its process)" if auto else f"{peaks.get('autograd', 0):.1f}"
        )
        err = (auto or r).get("max_rel_err", float("nan"))
        lines.append(
            f"| {r['case']} | {r['B']}, {r['T']}, {r['d']}, {r['V']} | {r['route']} | {_s(t['kernel'])} | "
            f"{auto_t} | {_s(t['fwdbwd'])} | {peaks.get('kernel', 0):.1f} / {auto_peak} | "
            f"{r['BVd_elements'] * 4 / 2**20:.0f} | {err:.1e} |"
        )
    if result.get("sweep"):
        lines += [
            "",
            "| B·T (B=4, d=512, V=8192) | pairs s | vocab s | autograd s | auto picks | load |",
            "|---:|---:|---:|---:|---|---:|",
        ]
        for row in result["sweep"]:
            lines.append(
                f"| {row['BT']} | {row['pairs']:.3f} | {row['vocab']:.3f} | {row['autograd']:.3f} | "
                f"{row['auto']} | {row['load']:.1f} |"
            )
    return lines


def _resample(result: dict) -> list[str]:
    lines = [
        "| family | no flags: retrospective s | generate s | flags | forward tokens cached / seed | "
        "time cached / seed s | peak MiB retro / generate |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        nf, ff = r["no_flags"], r["frequent_flags"]
        lines.append(
            f"| {r['family']} | {_s(nf['times']['retrospective'])} | {_s(nf['times']['generate'])} | "
            f"{ff['attempts']} | {ff['forward_tokens']['cached']} / {ff['forward_tokens']['seed']} | "
            f"{_s(ff['times']['cached'])} / {_s(ff['times']['seed'])} | "
            f"{nf['peak_mib']['retrospective']:.1f} / {nf['peak_mib']['generate']:.1f} |"
        )
    return lines


def _select(result: dict) -> list[str]:
    lines = [
        "| family | k | prompts × tokens | shared prefill s | num_return_sequences s | per-sample loop s | "
        "peak MiB batched / loop | load |",
        "|---|---:|---|---|---|---|---|---|",
    ]
    for r in result["runs"]:
        t, p = r["times"], r["peak_mib"]
        lines.append(
            f"| {r['family']} | {r['k']} | {r['prompts']} × {r['max_new_tokens']} | {_s(t['batched'])} | "
            f"{_s(t['expanded']) if 'expanded' in t else '–'} | {_s(t['loop'])} | {p['batched']:.1f} / {p['loop']:.1f} | {_s(t['load'])} |"
        )
    return lines


DETAIL = {"grpo": _grpo, "symmpo": _symmpo, "ntk": _ntk, "resample": _resample, "select": _select,
          "ntk_training_path": _ntk_train, "vocab_memory": _vocab_memory, "vision_share": _vision}


def render(results: list[dict]) -> str:
    """All tables as markdown."""
    env = next((r["env"] for r in results if "env" in r), {})
    out = [
        f"Machine: {env.get('cpu')} × {env.get('cores')} cores (shared), torch threads {env.get('torch_threads')}, "
        f"GPU {env.get('cuda') or 'none'}; Python {env.get('python')}, torch {env.get('torch')}, "
        f"transformers {env.get('transformers')}, TRL {env.get('trl')}.",
        "",
        *ratio_table(results),
    ]
    for result in results:
        if "error" not in result and result["target"] in DETAIL:
            out += ["", f"#### {result['target']}", "", *DETAIL[result["target"]](result)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    """Print the tables of a results file."""
    args = argv if argv is not None else sys.argv[1:]
    path = Path(args[0] if args else "benchmarks/results/full.json")
    print(render(json.loads(path.read_text())))


if __name__ == "__main__":
    main()
