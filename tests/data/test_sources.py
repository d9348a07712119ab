"""Sources: Tiny ImageNet layout (zip, folder, URL), generic image folders, the embedded sample."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from neuralcodes.data.decode import ImageSizeError, UnreadableFileError
from neuralcodes.data.layouts import SourceError
from neuralcodes.data.sources import (
    SAMPLE_ZIP,
    find_tiny_imagenet,
    load_dataset,
)
from neuralcodes.data.splits import course_split

REPO = Path(__file__).resolve().parents[2]
OOD_NAMES = [
    "meat loaf",
    "pizza",
    "potpie",
    "espresso",
    "alp",
    "cliff",
    "coral reef",
    "lakeside",
    "seashore",
    "acorn",
]


def decode_reference(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def zip_members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def test_classes_numbered_by_sorted_train_folders_not_wnids_txt(
    synthetic_tiny_imagenet, tmp_path
) -> None:
    path = synthetic_tiny_imagenet(wnids=["n09", "n02", "n05", "n01"], train_per_class=2)
    dataset = load_dataset(path, cache_dir=tmp_path / "cache")
    assert dataset.train.class_ids == ["n01", "n02", "n05", "n09"]
    assert dataset.train.class_names == ["name of n01", "name of n02", "name of n05", "name of n09"]
    for file, label in zip(dataset.train.files, dataset.train.labels):
        assert f"/train/{dataset.train.class_ids[label]}/images/" in file
    np.testing.assert_array_equal(dataset.train.labels, [0, 0, 1, 1, 2, 2, 3, 3])


def test_images_in_plain_string_order_and_pixels_match_pil(
    synthetic_tiny_imagenet, tmp_path
) -> None:
    path = synthetic_tiny_imagenet(wnids=["n02", "n01"], train_per_class=12)
    dataset = load_dataset(path, cache_dir=tmp_path / "cache")
    names = [f.rsplit("/", 1)[1] for f in dataset.train.files[:12]]
    assert names[:5] == ["n01_0.JPEG", "n01_1.JPEG", "n01_10.JPEG", "n01_11.JPEG", "n01_2.JPEG"]
    assert names == sorted(names)
    members = zip_members(path)
    for image, file in zip(dataset.train.images, dataset.train.files):
        np.testing.assert_array_equal(image, decode_reference(members[file]))


def test_official_val_set_labelled_with_the_same_numbering(
    synthetic_tiny_imagenet, tmp_path
) -> None:
    path = synthetic_tiny_imagenet(wnids=["n03", "n01", "n02"], val_per_class=3)
    dataset = load_dataset(path, cache_dir=tmp_path / "cache")
    members = zip_members(path)
    annotations = dict(
        line.split("\t")[:2]
        for line in members["tiny-imagenet-200/val/val_annotations.txt"].decode().splitlines()
    )
    assert len(dataset.val) == 9
    for file, label, image in zip(dataset.val.files, dataset.val.labels, dataset.val.images):
        assert dataset.val.class_ids[label] == annotations[file.rsplit("/", 1)[1]]
        np.testing.assert_array_equal(image, decode_reference(members[file]))


@pytest.mark.parametrize("top", ["", "some-other-name"])
def test_top_folder_name_does_not_matter(synthetic_tiny_imagenet, tmp_path, top) -> None:
    dataset = load_dataset(synthetic_tiny_imagenet(top=top), cache_dir=tmp_path / "cache")
    assert dataset.train.class_ids == ["n01", "n02", "n03"] and len(dataset.train) == 9
    assert dataset.train.files[0] == f"{top + '/' if top else ''}train/n01/images/n01_0.JPEG"


def test_extracted_folder_equals_zip(synthetic_tiny_imagenet, tmp_path) -> None:
    from_zip = load_dataset(synthetic_tiny_imagenet(), cache_dir=tmp_path / "cache")
    folder = synthetic_tiny_imagenet(name="extracted", as_folder=True)
    for spec in (folder, folder / "tiny-imagenet-200"):  # the folder, or its single child
        from_folder = load_dataset(spec, cache_dir=tmp_path / "cache")
        for a, b in ((from_zip.train, from_folder.train), (from_zip.val, from_folder.val)):
            np.testing.assert_array_equal(a.images, b.images)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert a.class_ids == b.class_ids
            assert [f.removeprefix("tiny-imagenet-200/") for f in a.files] == [
                f.removeprefix("tiny-imagenet-200/") for f in b.files
            ]


def test_grayscale_becomes_rgb_with_the_gray_value_in_every_channel(
    synthetic_tiny_imagenet, tmp_path
) -> None:
    path = synthetic_tiny_imagenet(grayscale=("n02_1.JPEG",))
    dataset = load_dataset(path, cache_dir=tmp_path / "cache")
    i = dataset.train.files.index("tiny-imagenet-200/train/n02/images/n02_1.JPEG")
    gray = np.asarray(Image.open(io.BytesIO(zip_members(path)[dataset.train.files[i]])))
    assert gray.ndim == 2
    for channel in range(3):
        np.testing.assert_array_equal(dataset.train.images[i][..., channel], gray)
    assert gray.std() > 10  # a real picture, not a constant that any conversion gets right


def test_tiny_imagenet_images_must_be_64x64(tmp_path, synthetic_tiny_imagenet) -> None:
    folder = synthetic_tiny_imagenet(name="t", as_folder=True)
    bad = folder / "tiny-imagenet-200/train/n02/images/n02_1.JPEG"
    Image.new("RGB", (65, 64)).save(bad, format="JPEG")
    with pytest.raises(ImageSizeError, match=r"n02/images/n02_1\.JPEG.* is 65x64 .* must be 64x64"):
        load_dataset(folder, cache_dir=tmp_path / "cache")
    with pytest.raises(SourceError, match="image_size=32 applies only to generic image folders"):
        load_dataset(synthetic_tiny_imagenet(), cache_dir=tmp_path / "cache", image_size=32)


def test_inconsistent_tiny_imagenet_layouts_are_explained(
    tmp_path, synthetic_tiny_imagenet
) -> None:
    folder = synthetic_tiny_imagenet(name="a", as_folder=True)
    (folder / "tiny-imagenet-200/wnids.txt").write_text("n01\nn02\nn03\nn04\n")
    with pytest.raises(SourceError, match=r"wnids.txt and the train/ folders disagree .*\['n04'\]"):
        load_dataset(folder, cache_dir=tmp_path / "cache")
    folder = synthetic_tiny_imagenet(name="b", as_folder=True)
    with open(folder / "tiny-imagenet-200/val/val_annotations.txt", "a") as f:
        f.write("val_99.JPEG\tn01\t0\t0\t1\t1\n")
    with pytest.raises(SourceError, match=r"line 7 of val/val_annotations.txt \('val_99.JPEG"):
        load_dataset(folder, cache_dir=tmp_path / "cache")


def write_image(path: Path, size: tuple[int, int], mode: str, fmt: str, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    image = image.quantize(16) if mode == "P" else image.convert(mode)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format=fmt)


def test_generic_image_folder_is_resized_and_converted(tmp_path) -> None:
    root = tmp_path / "photos"
    write_image(root / "zebra" / "b.png", (100, 80), "RGBA", "PNG", 1)
    write_image(root / "zebra" / "a.bmp", (64, 64), "L", "BMP", 2)
    write_image(root / "ant" / "x" / "deep.gif", (30, 50), "P", "GIF", 3)
    write_image(root / "ant" / "cmyk.jpg", (70, 70), "CMYK", "JPEG", 4)
    (root / "ant" / "notes.txt").write_text("not an image")
    (root / "README.md").write_text("top-level files belong to no class")
    for size in (64, 32):
        dataset = load_dataset(root, cache_dir=tmp_path / "cache", image_size=size)
        assert dataset.name == "photos" and dataset.val is None
        assert dataset.train.class_ids == ["ant", "zebra"] and dataset.train.class_names == [
            "ant",
            "zebra",
        ]
        assert dataset.train.files == [
            "ant/cmyk.jpg",
            "ant/x/deep.gif",
            "zebra/a.bmp",
            "zebra/b.png",
        ]
        np.testing.assert_array_equal(dataset.train.labels, [0, 0, 1, 1])
        assert dataset.train.images.shape == (4, size, size, 3)
        for image, file in zip(dataset.train.images, dataset.train.files):
            reference = Image.open(root / file).convert("RGB")
            if reference.size != (size, size):
                reference = reference.resize((size, size), Image.Resampling.BICUBIC)
            np.testing.assert_array_equal(image, np.asarray(reference))
    assert course_split(dataset.train.labels, 2, n_ood=1).sizes["ood"] == 2


def text_file(root: Path) -> Path:
    (root / "f.zip").write_text("text")
    return root / "f.zip"


def empty_zip(root: Path) -> Path:
    zipfile.ZipFile(root / "z.zip", "w").close()
    return root / "z.zip"


def flat_folder(root: Path) -> Path:
    write_image(root / "flat" / "a.png", (8, 8), "RGB", "PNG", 0)
    return root / "flat"


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda root: root / "missing", "does not exist; expected 'sample', 'tiny-imagenet'"),
        (text_file, "is not a zip archive"),
        (empty_zip, "is not a Tiny ImageNet archive"),
        (flat_folder, "found 0 class folder"),
    ],
)
def test_unusable_specs_say_what_was_expected(tmp_path, make, message) -> None:
    with pytest.raises(SourceError, match=message):
        load_dataset(make(tmp_path), cache_dir=tmp_path / "cache")


def test_url_is_downloaded_into_the_cache_then_loaded(
    synthetic_tiny_imagenet, serve_directory, tmp_path
) -> None:
    path = synthetic_tiny_imagenet(name="remote.zip")
    url = serve_directory(path.parent)
    dataset = load_dataset(f"{url}/remote.zip", cache_dir=tmp_path / "cache")
    assert (tmp_path / "cache" / "downloads" / "remote.zip").read_bytes() == path.read_bytes()
    assert dataset.name == "remote" and len(dataset.train) == 9 and len(dataset.val) == 6


def test_find_tiny_imagenet(tmp_path, monkeypatch, synthetic_tiny_imagenet) -> None:
    archive = synthetic_tiny_imagenet()
    monkeypatch.setenv("NEURALCODES_TINY_IMAGENET", str(archive))
    assert find_tiny_imagenet() == archive.resolve()
    dataset = load_dataset(
        "tiny-imagenet", cache_dir=tmp_path / "cache"
    )  # the local archive, no download
    assert dataset.name == "tiny" and len(dataset.train) == 9
    monkeypatch.setenv("NEURALCODES_TINY_IMAGENET", str(tmp_path / "nowhere.zip"))
    with pytest.raises(SourceError, match="NEURALCODES_TINY_IMAGENET=.*nowhere.zip does not exist"):
        find_tiny_imagenet()
    monkeypatch.delenv("NEURALCODES_TINY_IMAGENET")
    shared = tmp_path / "shared" / "data"
    shared.mkdir(parents=True)
    (shared / "tiny-imagenet-200.zip").write_bytes(archive.read_bytes())
    (tmp_path / "checkout").mkdir()
    monkeypatch.chdir(tmp_path / "checkout")
    assert find_tiny_imagenet() == (shared / "tiny-imagenet-200.zip").resolve()


# --- the embedded sample -----------------------------------------------------------------------


def test_embedded_sample(sample_dataset) -> None:
    assert SAMPLE_ZIP.stat().st_size <= 10 * 2**20
    train, val = sample_dataset.train, sample_dataset.val
    assert sample_dataset.name == "tiny-imagenet-sample"
    assert (train.num_classes, len(train), len(val)) == (30, 3000, 600)
    np.testing.assert_array_equal(np.bincount(train.labels), [100] * 30)
    np.testing.assert_array_equal(np.bincount(val.labels), [20] * 30)
    assert train.class_ids == sorted(train.class_ids)
    assert train.class_names[-10:] == OOD_NAMES
    split = course_split(train.labels, train.num_classes)
    assert split.sizes == {"train": 1600, "val": 200, "test": 200, "ood": 1000}
    gray = [
        i
        for i in range(len(train))
        if np.array_equal(train.images[i][..., 0], train.images[i][..., 2])
    ]
    assert gray, "the sample should hold at least one grayscale image"
    assert not train.images.flags.writeable  # a read-only memory map of the cache


def test_embedded_sample_is_reproduced_by_make_sample(tiny_imagenet_zip, tmp_path) -> None:
    out = tmp_path / "sample.zip"
    subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "make_sample.py"),
            "--source",
            str(tiny_imagenet_zip),
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    assert out.read_bytes() == SAMPLE_ZIP.read_bytes()


@pytest.mark.slow
def test_real_tiny_imagenet(tiny_imagenet_zip, tmp_path) -> None:
    import json

    cache_dir = tmp_path / "cache"
    dataset = load_dataset(tiny_imagenet_zip, cache_dir=cache_dir)
    train = dataset.train
    assert (len(train), len(dataset.val), train.num_classes) == (100_000, 10_000, 200)
    np.testing.assert_array_equal(np.bincount(train.labels), [500] * 200)
    np.testing.assert_array_equal(np.bincount(dataset.val.labels), [50] * 200)
    assert train.class_names[-10:] == OOD_NAMES
    assert course_split(train.labels, 200).sizes == {
        "train": 76_000,
        "val": 9_500,
        "test": 9_500,
        "ood": 5_000,
    }
    (meta_path,) = cache_dir.glob("*/meta.json")
    meta = json.loads(meta_path.read_text())
    assert meta["splits"]["train"]["grayscale"] == 1821
    assert meta["skipped_count"] == 0
    with zipfile.ZipFile(tiny_imagenet_zip) as z:  # spot-check pixels against an independent decode
        for i in (0, 12_345, 99_999):
            np.testing.assert_array_equal(train.images[i], decode_reference(z.read(train.files[i])))


# --- file-level problems: one-line errors naming the file, skippable -----------------------------


def damage_member(path: Path, member: str) -> None:
    """Flip one byte inside ``member``'s stored data: its CRC-32 no longer matches."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(member)
        assert info.compress_type == zipfile.ZIP_STORED
    data = bytearray(path.read_bytes())
    name_len, extra_len = struct.unpack(
        "<HH", data[info.header_offset + 26 : info.header_offset + 30]
    )
    start = info.header_offset + 30 + name_len + extra_len
    data[start + info.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_zip_member_is_named_and_skippable(synthetic_tiny_imagenet, tmp_path) -> None:
    path = synthetic_tiny_imagenet()
    member = "tiny-imagenet-200/train/n02/images/n02_1.JPEG"
    damage_member(path, member)
    with pytest.raises(UnreadableFileError) as caught:
        load_dataset(path, cache_dir=tmp_path / "cache", workers=1)
    message = str(caught.value)
    assert f"cannot read {member} in {path}: Bad CRC-32" in message
    assert "download it again" in message and "skip_corrupt" in message and "\n" not in message
    dataset = load_dataset(path, cache_dir=tmp_path / "cache", skip_corrupt=True, workers=2)
    assert len(dataset.train) == 8 and member not in dataset.train.files
    ((file, reason),) = dataset.skipped
    assert file == member and reason.startswith("Bad CRC-32")
    meta = json.loads(next((tmp_path / "cache").glob("*/meta.json")).read_text())
    assert meta["splits"]["train"]["skipped"] == [{"file": member, "error": reason}]


def test_damaged_layout_file_in_zip_is_a_source_error(synthetic_tiny_imagenet, tmp_path) -> None:
    path = synthetic_tiny_imagenet()
    damage_member(path, "tiny-imagenet-200/wnids.txt")
    with pytest.raises(
        SourceError,
        match=r"cannot read tiny-imagenet-200/wnids\.txt \(Bad CRC-32.*download it again",
    ):
        load_dataset(path, cache_dir=tmp_path / "cache", skip_corrupt=True)


def image_folder_with_bad_files(root: Path) -> Path:
    write_image(root / "ant" / "a.png", (8, 8), "RGB", "PNG", 0)
    write_image(root / "ant" / "b.png", (8, 8), "RGB", "PNG", 1)
    write_image(root / "bee" / "c.png", (8, 8), "RGB", "PNG", 2)
    (root / "bee" / "loop.png").symlink_to("loop.png")  # points at itself
    (root / "bee" / "gone.png").symlink_to("nowhere.png")
    return root


@pytest.mark.skipif(os.name != "posix", reason="symbolic links")
def test_symlink_loop_and_dangling_link_are_named_and_skippable(tmp_path) -> None:
    root = image_folder_with_bad_files(tmp_path / "photos")
    with pytest.raises(
        UnreadableFileError,
        match=r"cannot read bee/gone\.png in .*photos: it is a dangling symbolic "
        r"link \(to nowhere\.png.*skip_corrupt",
    ):
        load_dataset(root, cache_dir=tmp_path / "cache", image_size=8, workers=1)
    dataset = load_dataset(
        root, cache_dir=tmp_path / "cache", image_size=8, skip_corrupt=True, workers=1
    )
    assert dataset.train.files == ["ant/a.png", "ant/b.png", "bee/c.png"]
    reasons = dict(dataset.skipped)
    assert sorted(reasons) == ["bee/gone.png", "bee/loop.png"]
    assert "symbolic link loop" in reasons["bee/loop.png"] and "dangling" in reasons["bee/gone.png"]


@pytest.mark.skipif(sys.platform != "linux", reason="file names as raw bytes")
def test_file_name_that_is_not_utf8_is_named_and_skippable(tmp_path) -> None:
    root = tmp_path / "photos"
    write_image(root / "ant" / "a.png", (8, 8), "RGB", "PNG", 0)
    write_image(root / "bee" / "c.png", (8, 8), "RGB", "PNG", 2)
    os.rename(
        root / "bee" / "c.png", os.fsencode(root / "bee") + b"/caf\xe9.png"
    )  # Latin-1, not UTF-8
    write_image(root / "bee" / "d.png", (8, 8), "RGB", "PNG", 3)
    with pytest.raises(
        UnreadableFileError, match=r"bee/caf\\\\xe9\.png.*not valid UTF-8; rename the file"
    ):
        load_dataset(root, cache_dir=tmp_path / "cache", image_size=8, workers=1)
    dataset = load_dataset(
        root, cache_dir=tmp_path / "cache", image_size=8, skip_corrupt=True, workers=1
    )
    assert dataset.train.files == ["ant/a.png", "bee/d.png"]
    assert dataset.skipped == [("bee/caf\\xe9.png", "its name is not valid UTF-8; rename the file")]
    json.dumps(dataset.skipped).encode("utf-8")  # printable and storable as it is


def test_wrong_size_image_is_skippable(synthetic_tiny_imagenet, tmp_path) -> None:
    folder = synthetic_tiny_imagenet(name="t", as_folder=True)
    Image.new("RGB", (65, 64)).save(
        folder / "tiny-imagenet-200/train/n02/images/n02_1.JPEG", format="JPEG"
    )
    dataset = load_dataset(folder, cache_dir=tmp_path / "cache", skip_corrupt=True, workers=1)
    assert dataset.skipped == [
        (
            "tiny-imagenet-200/train/n02/images/n02_1.JPEG",
            "it is 65x64 but this source's images must be 64x64",
        )
    ]
