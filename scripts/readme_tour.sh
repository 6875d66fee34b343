#!/usr/bin/env bash
# Run the README's CPU tour: every ```bash block that follows a `<!-- cpu-tour -->` line, top to bottom, as
# written, in a fresh folder holding only a link to this repository's recipes/. Usage: readme_tour.sh [DIR]
# `prefopt` and `accelerate` are taken from the PATH (an installed prefopt); set PREFOPT_PYTHON=/path/python
# to use that interpreter with this checkout on PYTHONPATH instead. `make demo` / `make test` are not part of
# the tour (the demo has its own test, and the tour is itself part of `make test`).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d -t prefopt-tour-XXXXXX)}"
mkdir -p "$work"
block="$(awk '/^<!-- cpu-tour -->/ {want=1; next}
              want && /^```bash/ {inside=1; next}
              inside && /^```/ {inside=0; want=0; next}
              inside {print}' "$repo/README.md")"
if [ -z "$block" ]; then
  echo "readme_tour: no <!-- cpu-tour --> bash block in README.md" >&2
  exit 1
fi
cd "$work"
[ -e recipes ] || ln -s "$repo/recipes" recipes
if [ -n "${PREFOPT_PYTHON:-}" ]; then
  mkdir -p .bin
  printf '#!/bin/sh\nexec "%s" -m prefopt.cli "$@"\n' "$PREFOPT_PYTHON" > .bin/prefopt
  printf '#!/bin/sh\nexec "%s" -m accelerate.commands.accelerate_cli "$@"\n' "$PREFOPT_PYTHON" > .bin/accelerate
  chmod +x .bin/prefopt .bin/accelerate
  export PATH="$work/.bin:$PATH" PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
fi
{
  echo 'set -euo pipefail'
  echo 'trap '"'"'for j in $(jobs -p); do kill "$j" 2>/dev/null || true; done'"'"' EXIT'
  printf '%s\n' "$block"
} > tour.sh
echo "readme_tour: running $(printf '%s\n' "$block" | grep -c .) commands in $work"
bash -x tour.sh
echo "readme_tour: every command ran"
