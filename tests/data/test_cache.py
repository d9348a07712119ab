"""The decoded-image cache: decoding, reuse, rebuilds, corrupt images, parallel workers, checksums."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from neuralcodes.data import cache, cache_integrity, decode_pool
from neuralcodes.data.cache import CacheError, default_cache_dir, file_sha256
from neuralcodes.data.decode import CorruptImageError
from neuralcodes.data.sources import ZipSource, load_dataset


def cache_folders(cache_dir: Path) -> list[Path]:
    return sorted(p for p in cache_dir.iterdir() if p.is_dir() and p.name != "downloads")


def read_meta(cache_dir: Path) -> dict:
    (folder,) = cache_folders(cache_dir)
    return json.loads((folder / "meta.json").read_text())


@pytest.fixture
def count_decodes(monkeypatch):
    """Counts calls of the decoder (in-process decoding only: one worker)."""
    calls = []
    real = decode_pool.decode_image

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(decode_pool, "decode_image", counting)
    return calls


# --- reuse and rebuilds ------------------------------------------------------------------------


def test_second_load_reuses_the_cache_without_decoding(
    synthetic_tiny_imagenet, tmp_path, count_decodes
) -> None:
    path = synthetic_tiny_imagenet()
    first = load_dataset(path, cache_dir=tmp_path / "c", workers=1)
    assert len(count_decodes) == 9 + 6
    second = load_dataset(path, cache_dir=tmp_path / "c", workers=1)
    assert len(count_decodes) == 15
    np.testing.assert_array_equal(first.train.images, second.train.images)
    assert isinstance(second.train.images, np.memmap) and not second.train.images.flags.writeable
    assert second.checksum == hashlib.sha256(path.read_bytes()).hexdigest()


def test_changed_source_is_decoded_again(synthetic_tiny_imagenet, tmp_path, count_decodes) -> None:
    path = synthetic_tiny_imagenet(seed=1)
    before = load_dataset(path, cache_dir=tmp_path / "c", workers=1)
    synthetic_tiny_imagenet(seed=2)  # same path, new pixels
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    after = load_dataset(path, cache_dir=tmp_path / "c", workers=1)
    assert len(count_decodes) == 2 * 15
    assert before.checksum != after.checksum
    assert not np.array_equal(before.train.images, after.train.images)
    assert len(cache_folders(tmp_path / "c")) == 2


@pytest.mark.parametrize(
    "damage", ["delete meta", "old format", "truncate labels", "delete images"]
)
def test_partial_or_stale_cache_is_rebuilt(
    synthetic_tiny_imagenet, tmp_path, count_decodes, damage
) -> None:
    path = synthetic_tiny_imagenet()
    expected = load_dataset(path, cache_dir=tmp_path / "c", workers=1).train.images.copy()
    (folder,) = cache_folders(tmp_path / "c")
    if damage == "delete meta":
        (folder / "meta.json").unlink()
    elif damage == "old format":
        meta = json.loads((folder / "meta.json").read_text())
        (folder / "meta.json").write_text(json.dumps({**meta, "format": 0}))
    elif damage == "truncate labels":
        np.save(folder / "train_labels.npy", np.zeros(2, dtype=np.int64))
    else:
        (folder / "train_images.npy").unlink()
    rebuilt = load_dataset(path, cache_dir=tmp_path / "c", workers=1)
    assert len(count_decodes) == 2 * 15
    np.testing.assert_array_equal(rebuilt.train.images, expected)
    assert [p.name for p in cache_folders(tmp_path / "c")] == [folder.name]


def test_leftover_temporary_folders_are_ignored_and_cleaned(
    synthetic_tiny_imagenet, tmp_path
) -> None:
    path = synthetic_tiny_imagenet()
    cache_dir = tmp_path / "c"
    folder_name = f"tiny-{hashlib.sha256(path.read_bytes()).hexdigest()[:16]}-64px"
    stale = cache_dir / f".{folder_name}.deadbeef.tmp"
    stale.mkdir(parents=True)
    (stale / "train_images.npy").write_bytes(b"half")
    os.utime(stale, (0, 0))
    dataset = load_dataset(path, cache_dir=cache_dir)
    assert len(dataset.train) == 9
    assert not stale.exists()
    assert [p.name for p in cache_dir.iterdir() if p.is_dir()] == [folder_name]


# --- corrupt images ----------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_corrupt_image_error_names_the_member_and_leaves_no_cache(
    synthetic_tiny_imagenet, tmp_path, workers
) -> None:
    path = synthetic_tiny_imagenet(corrupt=("n02_1.JPEG",), train_per_class=8)
    source = ZipSource(path)
    member = r"tiny-imagenet-200/train/n02/images/n02_1\.JPEG"
    with pytest.raises(CorruptImageError, match=rf"{member} in .*tiny\.zip.*skip_corrupt"):
        cache.load_or_build(source, tmp_path / "c", workers=workers, chunk_size=3)
    assert cache_folders(tmp_path / "c") == []
    assert not [p for p in (tmp_path / "c").iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("workers", [1, 2])
def test_skip_corrupt_skips_counts_and_lists(synthetic_tiny_imagenet, tmp_path, workers) -> None:
    path = synthetic_tiny_imagenet(
        corrupt=("n02_1.JPEG", "val_4.JPEG"), grayscale=("n03_0.JPEG",), train_per_class=8
    )
    clean = load_dataset(
        synthetic_tiny_imagenet(name="clean.zip", train_per_class=8), cache_dir=tmp_path / "c0"
    )
    dataset = cache.load_or_build(
        ZipSource(path), tmp_path / "c", skip_corrupt=True, workers=workers, chunk_size=3
    )
    assert len(dataset.train) == 23 and len(dataset.val) == 5
    assert "tiny-imagenet-200/train/n02/images/n02_1.JPEG" not in dataset.train.files
    assert [file for file, _ in dataset.skipped] == [
        "tiny-imagenet-200/train/n02/images/n02_1.JPEG",
        "tiny-imagenet-200/val/images/val_4.JPEG",
    ]
    assert all(
        reason.startswith("not an image") and "skip_corrupt" not in reason
        for _, reason in dataset.skipped
    )
    # Labels and files stay aligned with the kept images.
    kept = [clean.train.files.index(f) for f in dataset.train.files]
    np.testing.assert_array_equal(dataset.train.labels, clean.train.labels[kept])
    np.testing.assert_array_equal(np.bincount(dataset.train.labels), [8, 7, 8])
    meta = read_meta(tmp_path / "c")
    assert meta["skipped_count"] == 2
    assert [s["file"] for s in meta["splits"]["train"]["skipped"]] == [
        "tiny-imagenet-200/train/n02/images/n02_1.JPEG"
    ]
    assert [s["file"] for s in meta["splits"]["val"]["skipped"]] == [
        "tiny-imagenet-200/val/images/val_4.JPEG"
    ]
    assert meta["splits"]["train"]["grayscale"] == 1 and meta["grayscale_count"] == 1
    # The cache now lacks images: opening it without skip_corrupt says so instead of shrinking silently.
    with pytest.raises(
        CorruptImageError, match=r"leaves out 2 unreadable image\(s\) .*n02_1\.JPEG"
    ):
        cache.load_or_build(ZipSource(path), tmp_path / "c")


def test_parallel_build_equals_serial_build(synthetic_tiny_imagenet, tmp_path) -> None:
    path = synthetic_tiny_imagenet(train_per_class=10, grayscale=("n01_3.JPEG", "val_2.JPEG"))
    serial = cache.load_or_build(ZipSource(path), tmp_path / "serial", workers=1)
    parallel = cache.load_or_build(ZipSource(path), tmp_path / "parallel", workers=2, chunk_size=4)
    for a, b in ((serial.train, parallel.train), (serial.val, parallel.val)):
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.files == b.files
    assert read_meta(tmp_path / "parallel")["splits"] == read_meta(tmp_path / "serial")["splits"]
    assert read_meta(tmp_path / "parallel")["grayscale_count"] == 2


# --- checksums and locations -------------------------------------------------------------------


def test_file_sha256_is_remembered_by_path_size_and_mtime(tmp_path) -> None:
    target = tmp_path / "archive.zip"
    target.write_bytes(os.urandom(3 * 2**20))
    truth = hashlib.sha256(target.read_bytes()).hexdigest()
    assert file_sha256(target, tmp_path / "c") == truth
    memo_path = tmp_path / "c" / "checksums.json"
    memo = json.loads(memo_path.read_text())
    memo[str(target.resolve())]["sha256"] = "remembered"
    memo_path.write_text(json.dumps(memo))
    assert file_sha256(target, tmp_path / "c") == "remembered"  # not hashed again
    os.utime(target, ns=(0, target.stat().st_mtime_ns + 10**9))
    assert file_sha256(target, tmp_path / "c") == truth  # touched: hashed again
    memo_path.write_text("{ not json")
    assert file_sha256(target, tmp_path / "c") == truth  # a broken memo is only a cache miss


def test_default_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("NEURALCODES_CACHE", str(tmp_path / "here"))
    assert default_cache_dir() == tmp_path / "here"
    monkeypatch.delenv("NEURALCODES_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / ".cache" / "neuralcodes"


def test_load_uses_the_default_cache_dir_from_the_environment(
    synthetic_tiny_imagenet, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("NEURALCODES_CACHE", str(tmp_path / "env-cache"))
    load_dataset(synthetic_tiny_imagenet())
    assert len(cache_folders(tmp_path / "env-cache")) == 1


# --- damaged caches are detected and rebuilt -----------------------------------------------------


@pytest.mark.parametrize(
    "part",
    [
        "train_images.npy",
        "train_labels.npy",
        "train_files.txt",
        "train_rows.npy",
        "val_images.npy",
        "meta.json",
    ],
)
def test_zero_byte_part_is_rebuilt_with_a_reason(
    synthetic_tiny_imagenet, tmp_path, count_decodes, caplog, part
) -> None:
    path = synthetic_tiny_imagenet()
    expected = load_dataset(path, cache_dir=tmp_path / "c", workers=1).train.images.copy()
    (folder,) = cache_folders(tmp_path / "c")
    (folder / part).write_bytes(b"")
    with caplog.at_level("WARNING", logger="neuralcodes.data.cache"):
        rebuilt = load_dataset(path, cache_dir=tmp_path / "c", workers=1)
    assert len(count_decodes) == 2 * 15
    np.testing.assert_array_equal(rebuilt.train.images, expected)
    (record,) = [r for r in caplog.records if "rebuilding" in r.getMessage()]
    assert folder.name in record.getMessage()
    assert load_dataset(path, cache_dir=tmp_path / "c", workers=1).checksum == rebuilt.checksum
    assert len(count_decodes) == 2 * 15  # the rebuilt cache is used as is


def test_pixel_array_overwritten_in_place_is_detected(
    synthetic_tiny_imagenet, tmp_path, count_decodes, caplog
) -> None:
    path = synthetic_tiny_imagenet()
    expected = load_dataset(path, cache_dir=tmp_path / "c", workers=1).train.images.copy()
    (folder,) = cache_folders(tmp_path / "c")
    images = np.load(folder / "train_images.npy", mmap_mode="r+")
    images[:] = images[::-1].copy()  # same size, same header, same bytes in another order
    images.flush()
    del images
    with caplog.at_level("WARNING", logger="neuralcodes.data.cache"):
        rebuilt = load_dataset(path, cache_dir=tmp_path / "c", workers=1)
    assert len(count_decodes) == 2 * 15
    np.testing.assert_array_equal(rebuilt.train.images, expected)
    assert "train_images.npy" in caplog.text and "do not match their checksums" in caplog.text


def test_verify_hashes_the_whole_array(
    synthetic_tiny_imagenet, tmp_path, count_decodes, caplog, monkeypatch
) -> None:
    path = synthetic_tiny_imagenet()
    expected = load_dataset(path, cache_dir=tmp_path / "c", workers=1).train.images.copy()
    (folder,) = cache_folders(tmp_path / "c")
    images = np.load(folder / "train_images.npy", mmap_mode="r+")
    images[4, 10, 10] ^= 1  # one bit of one pixel of a middle row
    images.flush()
    del images
    monkeypatch.setattr(cache_integrity, "SAMPLE_ROWS", 0)  # so that only the full hash can notice
    assert not np.array_equal(
        load_dataset(path, cache_dir=tmp_path / "c", workers=1).train.images, expected
    )
    assert len(count_decodes) == 15  # a sample of rows can miss a single changed row...
    with caplog.at_level("WARNING", logger="neuralcodes.data.cache"):
        verified = load_dataset(path, cache_dir=tmp_path / "c", workers=1, verify=True)
    assert len(count_decodes) == 2 * 15  # ...verify=True does not
    np.testing.assert_array_equal(verified.train.images, expected)
    assert "full verification" in caplog.text


def test_checksums_in_meta_match_an_independent_hash(synthetic_tiny_imagenet, tmp_path) -> None:
    dataset = load_dataset(synthetic_tiny_imagenet(), cache_dir=tmp_path / "c", workers=1)
    meta = read_meta(tmp_path / "c")
    (folder,) = cache_folders(tmp_path / "c")
    for split, images in (("train", dataset.train.images), ("val", dataset.val.images)):
        sums = meta["splits"][split]["checksums"]
        assert sums["images"] == hashlib.sha256(np.ascontiguousarray(images).tobytes()).hexdigest()
        assert (
            sums["labels.npy"]
            == hashlib.sha256((folder / f"{split}_labels.npy").read_bytes()).hexdigest()
        )
        rows = np.load(folder / f"{split}_rows.npy")
        assert [int(r) for r in rows] == [
            zlib.crc32(np.ascontiguousarray(row).tobytes()) for row in images
        ]


# --- a cache folder that cannot be written ----------------------------------------------------------


def test_unwritable_cache_folder_is_a_clear_error(
    synthetic_tiny_imagenet, tmp_path, monkeypatch
) -> None:
    path = synthetic_tiny_imagenet()
    cache_dir = tmp_path / "c"
    real_mkdir = Path.mkdir

    def refusing_mkdir(self, *args, **kwargs):
        if str(self).startswith(str(cache_dir)):
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", refusing_mkdir)
    with pytest.raises(
        CacheError,
        match=rf"cannot write the decoded-image cache in {cache_dir}: Permission denied"
        rf".*NEURALCODES_CACHE",
    ) as caught:
        load_dataset(path, cache_dir=cache_dir)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


@pytest.mark.skipif(
    os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders"
)
def test_read_only_cache_folder_is_a_clear_error(synthetic_tiny_imagenet, tmp_path) -> None:
    cache_dir = tmp_path / "c"
    cache_dir.mkdir()
    cache_dir.chmod(0o500)
    try:
        with pytest.raises(CacheError, match="NEURALCODES_CACHE"):
            load_dataset(synthetic_tiny_imagenet(), cache_dir=cache_dir)
    finally:
        cache_dir.chmod(0o700)


def test_full_disk_is_a_clear_error_before_decoding(
    synthetic_tiny_imagenet, tmp_path, monkeypatch, count_decodes
) -> None:
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(CacheError, match=r"in .*/c: No space left on device.*NEURALCODES_CACHE"):
        load_dataset(synthetic_tiny_imagenet(), cache_dir=tmp_path / "c", workers=1)
    assert count_decodes == []
    assert cache_folders(tmp_path / "c") == []
