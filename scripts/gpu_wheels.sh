#!/usr/bin/env bash
# Download the Python 3.12 wheels that scripts/gpu_check.py needs on the bare GPU machine (which has torch,
# transformers, peft and accelerate, but not TRL, datasets or the rest) into the ignored folder .whl/, then
# pack them into .whl/wheels.tar.xz: the wheels are re-zipped uncompressed and the tar is xz-compressed,
# which takes them from ~74 MB to ~47 MB so that they fit the device tool's 64 MiB carry.
# Usage (from the repository root, needs the package index):  bash scripts/gpu_wheels.sh
# On the device:  tar -xJf .whl/wheels.tar.xz -C .whl && python3 -m pip install ... .whl/*.whl  (docs/gpu.md)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# Exact versions: the ones this repository is tested with (constraints of /work/main/.venv, Dec 2026).
# trl, datasets and their deps; pillow (images); openai + jiter + sniffio (the caption judge's client);
# rouge-score + absl-py + nltk + joblib + six (free-form accuracy reward of the grounded check).
WHEELS=(
  trl==1.16.0 datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19 xxhash==4.1.0
  pyarrow==26.0.1 pandas==3.1.1 python-dateutil==4.0.0 tzdata==2026.6 pillow==13.0.0
  openai==3.57.0 jiter==0.19.0 sniffio==1.3.1
  absl-py==2.5.1 nltk==3.10.4 joblib==1.6.0 six==1.17.0 defusedxml==0.7.1 cloudpickle==3.1.3
)
# Set TORCHVISION=x.y.z to add the torchvision wheel matching the device's torch (Qwen2.5-VL's processor needs
# torchvision; the device is expected to have it next to torch, gpu_check.json's env records it).
mkdir -p .whl/dl
for spec in "${WHEELS[@]}"; do
  # pure-python (py3-none-any) wheels are accepted under the manylinux --platform tags as well
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl/dl "$spec"
done
if [[ -n "${TORCHVISION:-}" ]]; then
  "$PY" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl/dl "torchvision==$TORCHVISION"
fi
# rouge-score publishes only an sdist: build its pure-python (py3-none-any) wheel here
"$PY" -m pip wheel --no-deps -w .whl/dl rouge-score==0.1.2
rm -rf .whl/stored && mkdir -p .whl/stored
"$PY" - <<'PYEOF'
import pathlib, zipfile
for src in sorted(pathlib.Path(".whl/dl").glob("*.whl")):
    dst = pathlib.Path(".whl/stored") / src.name
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():  # same members, same order, no compression
            data = zin.read(info)  # read before changing the entry's compression
            info.compress_type = zipfile.ZIP_STORED
            zout.writestr(info, data)
PYEOF
tar -C .whl/stored -cf - . | xz -9 -T0 > .whl/wheels.tar.xz
rm -rf .whl/stored
ls -l .whl/dl .whl/wheels.tar.xz
echo "carry: .whl/wheels.tar.xz ($(du -m .whl/wheels.tar.xz | cut -f1) MiB; must stay under the 64 MiB carry with the tree)"
