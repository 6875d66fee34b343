"""The ``prefopt`` console script: one entry point, one subcommand per module in ``prefopt.commands``.

Each command module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``,
and keeps heavy imports (torch, transformers) inside ``run`` so that ``prefopt --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import pkgutil
import sys

from prefopt import commands
from prefopt.errors import PrefoptError
from prefopt.threads import configure_threads, prepare_environment

DESCRIPTION = (
    "prefopt trains vision-language models (LLaVA-1.5, Qwen2.5-VL) to hallucinate less: online GRPO with "
    "grounded rewards, offline SymMPO/DPO/mDPO, REVERSE retrospective verification, LoRA merging, and "
    "hallucination benchmarks that compare the methods side by side."
)


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"prefopt.commands.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            yield module


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(prog="prefopt", description=DESCRIPTION)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: the free cores of this machine; PREFOPT_THREADS or OMP_NUM_THREADS also set it)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        doc = (module.__doc__ or module.HELP).strip()
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=doc,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        module.add_arguments(p)
        p.set_defaults(
            _run=module.run,
            _uses_torch=getattr(module, "USES_TORCH", True),
            _out_kind=getattr(module, "OUT_KIND", "folder"),
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    prepare_environment()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # `sft --config R a=1 --resume b=2`: overrides after an option come back unparsed; they are overrides too
    if extra and isinstance(getattr(args, "overrides", None), list) and all(
        "=" in item and not item.startswith("-") for item in extra
    ):
        args.overrides.extend(extra)
    elif extra:
        parser.parse_args(argv)  # argparse's own one-line error and exit status 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not args.verbose:  # one INFO line per judge request would drown the progress bars
        for noisy in ("httpx", "httpx2", "httpcore"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        from prefopt.training.quiet import quiet_known_warnings

        quiet_known_warnings()
    from prefopt.training.quiet import main_process_logging

    main_process_logging()  # under DDP only rank 0 logs INFO and warnings; the other ranks log errors
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    if getattr(args, "_uses_torch", True):
        configure_threads(args.threads, getattr(args, "_default_threads", None))
    try:
        if getattr(args, "out", None) and args._out_kind == "folder":
            from prefopt.commands._outdir import check_not_file

            check_not_file(args.out)  # before any work: `--out` naming a file is one line, never a traceback
        return int(args._run(args) or 0)
    except PrefoptError as err:
        print(f"prefopt {args.command}: error: {err}", file=sys.stderr)
        return 2
    except (FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError) as err:
        if args.verbose:
            raise
        # where an output cannot be written: the user's path, not a bug (-v shows the traceback)
        print(f"prefopt {args.command}: error: {err.strerror}: {err.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
