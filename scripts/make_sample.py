"""Derive the embedded 30-class sample from the real Tiny ImageNet archive.

    python scripts/make_sample.py --source ../shared/data/tiny-imagenet-200.zip \
        --out src/neuralcodes/data/sample/tiny-imagenet-sample.zip

30 classes: 20 in-domain ones spread evenly over the first 190 sorted wnids, plus the real 10 OOD
classes (the last 10 sorted wnids), so the sample's last 10 classes are OOD as in the full set.
Per class the first 100 train images in sorted file order and the first 20 official val images;
the original JPEG bytes are copied, never re-encoded. The zip is byte-for-byte deterministic
(sorted members, fixed timestamps and permissions).
"""

from __future__ import annotations

import argparse
import io
import sys
import zipfile
from pathlib import Path

from PIL import Image

from neuralcodes.io import atomic_path

TOP = "tiny-imagenet-sample"
N_IN_DOMAIN, N_OOD, N_FULL_IN_DOMAIN = 20, 10, 190
TRAIN_PER_CLASS, VAL_PER_CLASS = 100, 20
_EPOCH = (1980, 1, 1, 0, 0, 0)


def pick_classes(sorted_wnids: list[str]) -> list[str]:
    """20 wnids evenly spread over the first 190, then the last 10."""
    step = N_FULL_IN_DOMAIN / N_IN_DOMAIN
    return [sorted_wnids[int(i * step)] for i in range(N_IN_DOMAIN)] + sorted_wnids[-N_OOD:]


def is_grayscale(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as im:
        return im.mode == "L"


def pick_train(
    z: zipfile.ZipFile, classes: list[str], by_class: dict[str, list[str]]
) -> dict[str, list[str]]:
    """The first 100 images per class; if none of them is grayscale, swap one grayscale image in."""
    picked = {wnid: sorted(by_class[wnid])[:TRAIN_PER_CLASS] for wnid in classes}
    if any(is_grayscale(z.read(m)) for files in picked.values() for m in files):
        return picked
    for wnid in classes:
        for member in sorted(by_class[wnid])[TRAIN_PER_CLASS:]:
            if is_grayscale(z.read(member)):
                picked[wnid] = sorted(picked[wnid][:-1] + [member])
                return picked
    raise SystemExit("no grayscale image in the chosen classes; pick other classes")


def build(source: Path) -> dict[str, bytes]:
    """Sample members (path inside the new zip -> bytes)."""
    z = zipfile.ZipFile(source)
    names = z.namelist()
    root = next(
        n[: -len("wnids.txt")] for n in names if n.endswith("wnids.txt") and n.count("/") <= 1
    )
    by_class: dict[str, list[str]] = {}
    for n in names:
        parts = n[len(root) :].split("/")
        if (
            len(parts) == 4
            and parts[0] == "train"
            and parts[2] == "images"
            and parts[3].endswith(".JPEG")
        ):
            by_class.setdefault(parts[1], []).append(n)
    classes = pick_classes(sorted(by_class))
    chosen = set(classes)
    out: dict[str, bytes] = {}

    wnids = [
        w for w in z.read(root + "wnids.txt").decode().split() if w in chosen
    ]  # original (unsorted) order
    out[f"{TOP}/wnids.txt"] = "".join(w + "\n" for w in wnids).encode()
    words = [
        ln for ln in z.read(root + "words.txt").decode().splitlines() if ln.split("\t")[0] in chosen
    ]
    out[f"{TOP}/words.txt"] = "".join(ln + "\n" for ln in words).encode()

    for wnid, files in pick_train(z, classes, by_class).items():
        for member in files:
            out[f"{TOP}/train/{wnid}/images/{member.rsplit('/', 1)[1]}"] = z.read(member)

    kept_lines, per_class = [], {w: 0 for w in classes}
    for line in z.read(root + "val/val_annotations.txt").decode().splitlines():
        fields = line.split("\t")
        if len(fields) > 1 and fields[1] in chosen and per_class[fields[1]] < VAL_PER_CLASS:
            per_class[fields[1]] += 1
            kept_lines.append(line)
            out[f"{TOP}/val/images/{fields[0]}"] = z.read(root + "val/images/" + fields[0])
    out[f"{TOP}/val/val_annotations.txt"] = "".join(ln + "\n" for ln in kept_lines).encode()
    return out


def write_zip(members: dict[str, bytes], path: Path) -> None:
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w") as zout:
            for name in sorted(members):
                info = zipfile.ZipInfo(name, date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                info.create_system = 3  # unix, whatever machine builds it
                # JPEGs barely compress; storing them keeps the zip simple and deterministic.
                info.compress_type = (
                    zipfile.ZIP_STORED if name.endswith(".JPEG") else zipfile.ZIP_DEFLATED
                )
                zout.writestr(info, members[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="the real tiny-imagenet-200.zip")
    parser.add_argument("--out", type=Path, required=True, help="where to write the sample zip")
    args = parser.parse_args(argv)
    if not zipfile.is_zipfile(args.source):
        parser.error(f"{args.source} is not a zip archive (expected tiny-imagenet-200.zip)")
    members = build(args.source)
    write_zip(members, args.out)
    n_train = sum("/train/" in n for n in members)
    n_val = sum("/val/images/" in n for n in members)
    print(
        f"wrote {args.out}: {args.out.stat().st_size / 1e6:.2f} MB, {n_train} train + {n_val} val images"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
