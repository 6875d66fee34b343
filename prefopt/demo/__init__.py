"""The embedded default: the whole online-vs-offline study on a tiny model and the synthetic shapes world.

:func:`run_demo` chains the real ``prefopt`` subcommands (the same code paths a user runs on real models):
make-data, tiny-model, cold-start SFT, variance-guided selection, GRPO with the caption reward (judged over
HTTP by a local OpenAI-compatible server) and the NTK term, SymMPO from the same cold-start checkpoint, POPE
and CHAIR on held-out scenes for all three models, and ``compare``. See :mod:`prefopt.demo.profiles` for the
sizes and recipes, and :mod:`prefopt.demo.judge` for the local judge.
"""

from prefopt.demo.pipeline import DemoResult, run_demo
from prefopt.demo.profiles import PROFILES, DemoProfile

__all__ = ["run_demo", "DemoResult", "PROFILES", "DemoProfile"]
