#!/usr/bin/env bash
# The archive (221 MB) is larger than one device call carries (64 MiB with the working tree, ~18 MiB):
# cut it into five parts under .gpu/ (ignored by git: add `/.gpu/` to .git/info/exclude), one per call.
#   bash scripts/device/split.sh ../shared/data/tiny-imagenet-200.zip
set -eu
mkdir -p .gpu && rm -f .gpu/p?
split -b 44400000 -a 1 --numeric-suffixes=1 "$1" .gpu/p
cp scripts/device/first.sh scripts/device/final.sh .gpu/
ls -l .gpu
# The device image has PyTorch but not pytorch-metric-learning: carry its wheel (ignored `/.whl/`) in call 1.
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 -d .whl pytorch-metric-learning==2.9.0
