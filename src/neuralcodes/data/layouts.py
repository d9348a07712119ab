"""The two layouts a source's file names can have, read into a :class:`~neuralcodes.data.listing.SourceListing`.

* Tiny ImageNet: ``wnids.txt``, ``words.txt``, ``train/<wnid>/images/*.JPEG``, ``val/images/*.JPEG``
  with ``val/val_annotations.txt``, under one top folder of any name (or none). Classes are numbered
  by the sorted ``train/`` folder names (``wnids.txt`` is not sorted), the images of a class by
  sorted file name (plain string sort: ``_0, _1, _10, _100, ...``), as in the course notebook.
  Images must be 64x64.
* A generic labelled image folder: one sub-folder per class (sorted names), any image format PIL
  reads, every image stretched to ``image_size`` x ``image_size`` (aspect ratio not kept).

Only names are read here, and the layout's text files through the source's ``read_text``; zips and
folders are :mod:`neuralcodes.data.sources`.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np

from neuralcodes.data.decode import decodable_extensions
from neuralcodes.data.listing import SourceListing, SplitListing

TINY_IMAGENET_SIZE_PX = 64

EXPECTED_SOURCES = (
    "expected 'sample', 'tiny-imagenet', an http(s) URL of a zip, a Tiny ImageNet zip, or a folder in "
    "the Tiny ImageNet layout (wnids.txt, words.txt, train/<wnid>/images/, val/) or with one sub-folder "
    "of images per class"
)


class SourceError(ValueError):
    """A source is missing or not in a layout this package reads."""


def tiny_imagenet_root(names: list[str]) -> str | None:
    """The prefix ("" or "<top folder>/") under which ``names`` hold wnids.txt and train/, or None."""
    for name in sorted(n for n in names if n.endswith("wnids.txt") and n.count("/") <= 1):
        prefix = name[: -len("wnids.txt")]
        if prefix and not prefix.endswith("/"):
            continue
        if any(n.startswith(prefix + "train/") for n in names):
            return prefix
    return None


def tiny_imagenet_listing(
    names: list[str], prefix: str, read_text: Callable[[str], str], image_size: int, where: str
) -> SourceListing:
    """Number the classes and list the train and official val images of a Tiny ImageNet layout."""
    if image_size != TINY_IMAGENET_SIZE_PX:
        raise SourceError(
            f"{where} is Tiny ImageNet, whose images are {TINY_IMAGENET_SIZE_PX}x{TINY_IMAGENET_SIZE_PX}; "
            f"image_size={image_size} applies only to generic image folders (resize later instead)"
        )
    train_prefix = prefix + "train/"
    by_class: dict[str, list[str]] = {}
    for name in names:
        if name.startswith(train_prefix):
            parts = name[len(train_prefix) :].split("/")
            if len(parts) == 3 and parts[1] == "images" and is_image_name(parts[2]):
                by_class.setdefault(parts[0], []).append(name)
    class_ids = sorted(by_class)
    if not class_ids:
        raise SourceError(f"{where}: {train_prefix} holds no <wnid>/images/*.JPEG files")
    wnids = read_text(prefix + "wnids.txt").split()
    if set(wnids) != set(class_ids):
        missing, extra = sorted(set(wnids) - set(class_ids)), sorted(set(class_ids) - set(wnids))
        raise SourceError(
            f"{where}: wnids.txt and the train/ folders disagree (listed but without images: {missing[:5]}; "
            f"folders not listed: {extra[:5]}); the archive is incomplete, download it again"
        )
    words = _read_words(names, prefix, read_text)
    full_names = [words.get(wnid, wnid) for wnid in class_ids]
    files = [f for wnid in class_ids for f in sorted(by_class[wnid])]
    labels = np.repeat(np.arange(len(class_ids)), [len(by_class[w]) for w in class_ids])
    return SourceListing(
        layout="tiny-imagenet",
        class_ids=class_ids,
        class_names=[n.split(",")[0].strip() for n in full_names],
        class_full_names=full_names,
        train=SplitListing(files, labels),
        val=_tiny_imagenet_val(names, prefix, read_text, class_ids, where),
        image_size=TINY_IMAGENET_SIZE_PX,
    )


def image_folder_listing(names: list[str], image_size: int, where: str) -> SourceListing:
    """One class per top-level sub-folder (sorted names); its images anywhere below it, sorted."""
    if image_size < 1:
        raise SourceError(f"image_size must be positive, got {image_size}")
    by_class: dict[str, list[str]] = {}
    for name in names:
        parts = name.split("/")
        if (
            len(parts) >= 2
            and not any(p.startswith(".") for p in parts)
            and is_image_name(parts[-1])
        ):
            by_class.setdefault(parts[0], []).append(name)
    if len(by_class) < 2:
        raise SourceError(
            f"{where}: found {len(by_class)} class folder(s) with images; {EXPECTED_SOURCES}"
        )
    class_ids = sorted(by_class)
    return SourceListing(
        layout="image-folder",
        class_ids=class_ids,
        class_names=list(class_ids),
        class_full_names=list(class_ids),
        train=SplitListing(
            [f for c in class_ids for f in sorted(by_class[c])],
            np.repeat(np.arange(len(class_ids)), [len(by_class[c]) for c in class_ids]),
        ),
        val=None,
        image_size=image_size,
        resize=True,
        notes=[
            f"every image was resized to {image_size}x{image_size} (bicubic, aspect ratio not kept)"
        ],
    )


def is_image_name(filename: str) -> bool:
    """Whether the decoder reads files with this extension (hidden files never count)."""
    return (
        not filename.startswith(".")
        and os.path.splitext(filename)[1].lower() in decodable_extensions()
    )


def _read_words(names: list[str], prefix: str, read_text: Callable[[str], str]) -> dict[str, str]:
    if prefix + "words.txt" not in names:
        return {}
    words = {}
    for line in read_text(prefix + "words.txt").splitlines():
        wnid, _, text = line.partition("\t")
        if text:
            words[wnid.strip()] = text.strip()
    return words


def _tiny_imagenet_val(
    names: list[str], prefix: str, read_text: Callable[[str], str], class_ids: list[str], where: str
) -> SplitListing | None:
    annotations = prefix + "val/val_annotations.txt"
    if annotations not in names:
        return None
    present = set(names)
    index = {wnid: i for i, wnid in enumerate(class_ids)}
    files, labels = [], []
    for number, line in enumerate(read_text(annotations).splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        member = prefix + "val/images/" + fields[0]
        if len(fields) < 2 or fields[1] not in index or member not in present:
            raise SourceError(
                f"{where}: line {number} of val/val_annotations.txt ({line.strip()[:60]!r}) should be "
                f"'<file>\\t<wnid>\\t<box>' with the file in val/images/ and the wnid one of train/'s classes"
            )
        files.append(member)
        labels.append(index[fields[1]])
    return SplitListing(files, np.asarray(labels, dtype=np.int64)) if files else None
