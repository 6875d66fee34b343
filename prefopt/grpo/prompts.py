"""Re-export of :mod:`prefopt.prompts` (the shared prompt templates moved there, below every user)."""

from prefopt.prompts import (  # noqa: F401
    FOUR_STAGE_INSTRUCTION,
    R1_INSTRUCTION,
    TEMPLATES,
    TYPE_SUFFIX,
    build_prompt,
    llava_cot_to_four_stage,
    render_options,
)
