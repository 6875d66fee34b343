"""Subcommands of the ``prefopt`` console script, one module each (discovered by ``prefopt.cli``)."""
