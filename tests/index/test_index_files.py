"""Files of every kind in a collection: odd images are indexed, bad ones skipped and listed, never fatal."""

from __future__ import annotations

import csv
import io
import os
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from neuralcodes.index import Index, build_index


def _save(image: Image.Image, path: Path, **options) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **options)


def test_bad_files_are_skipped_listed_and_counted(
    photos: Path, bomb_png: bytes, tmp_path: Path
) -> None:
    jpeg = sorted(photos.rglob("*.JPEG"))[0]
    bad = photos / "bad"
    bad.mkdir()
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.jpg").write_text("not an image, whatever the name says")
    (bad / "truncated.jpg").write_bytes(jpeg.read_bytes()[: len(jpeg.read_bytes()) // 2])
    (bad / "bomb.png").write_bytes(bomb_png)
    (bad / "readme.txt").write_text("hello")
    shutil.copy(jpeg, bad / "copy.jpg")
    os.symlink(jpeg, bad / "link.jpg")
    odd = photos / "odd"  # accepted: any size and mode
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (90, 300, 3), dtype=np.uint8)
    _save(Image.fromarray(noise), odd / "wide.jpg", quality=90)
    _save(Image.fromarray(noise[..., 0]), odd / "gray.png")
    _save(Image.fromarray(noise).convert("P"), odd / "palette.gif")
    _save(Image.fromarray(np.dstack([noise, noise[..., :1]])), odd / "alpha.png")
    _save(Image.fromarray(noise).convert("CMYK"), odd / "cmyk.jpg")
    _save(Image.fromarray((noise[..., 0].astype(np.uint16) * 257)), odd / "sixteen.png")

    summary = build_index(tmp_path / "idx", "tiny", images=photos, image_size=32, chunk=7)

    assert summary.added == 24 + 6
    assert summary.skipped == {
        "duplicate": 1,
        "empty": 1,
        "not an image": 1,
        "not followed": 1,
        "too large": 1,
        "unreadable": 2,
    }
    with open(tmp_path / "idx" / "report.csv", newline="") as f:
        report = {row["path"]: row for row in csv.DictReader(f)}
    assert {p: r["kind"] for p, r in report.items()} == {
        "bad/empty.jpg": "empty",
        "bad/notes.jpg": "unreadable",
        "bad/truncated.jpg": "unreadable",
        "bad/bomb.png": "too large",
        "bad/readme.txt": "not an image",
        "bad/link.jpg": "not followed",
        # The copy sorts first ("bad/" < "n0..."), so it is indexed and the class file is the duplicate.
        jpeg.relative_to(photos).as_posix(): "duplicate",
    }
    assert (
        "decompression bomb" in report["bad/bomb.png"]["reason"]
        and "bad/copy.jpg" in report[jpeg.relative_to(photos).as_posix()]["reason"]
    )
    assert all(r["source"] == str(photos.resolve()) for r in report.values())
    with Index.open(tmp_path / "idx") as index:
        sizes = {h.path: (h.width, h.height) for h in index.browse(limit=100)}
    assert sizes["odd/wide.jpg"] == (300, 90) and sizes["odd/sixteen.png"] == (300, 90)


def test_odd_modes_are_embedded_as_their_rgb_pixels(tmp_path: Path) -> None:
    """A grayscale PNG and the same picture as RGB give the same code: modes are converted, not mangled."""
    rng = np.random.default_rng(1)
    gray = np.repeat(
        np.repeat(rng.integers(0, 256, (8, 8), dtype=np.uint8), 4, 0), 4, 1
    )  # 32x32, blocky
    folder = tmp_path / "photos"
    _save(Image.fromarray(gray), folder / "a_gray.png")
    _save(Image.fromarray(np.dstack([gray] * 3)), folder / "b_rgb.png")
    build_index(tmp_path / "idx", "tiny", images=folder, image_size=32)
    with Index.open(tmp_path / "idx") as index:
        codes = np.asarray(index.codes)
        buffer = io.BytesIO()
        Image.fromarray(gray).save(buffer, format="PNG")
        query = index.search([buffer.getvalue()], k=2)
    np.testing.assert_allclose(codes[0], codes[1], atol=1e-6)
    assert query.distances[0, 0] < 1e-3


def _odd_pictures(folder: Path) -> list[Path]:
    """Three different pictures whose pixels PIL's plain convert("RGB") gets wrong: it ignores the EXIF
    orientation, shows the hidden colour of transparent pixels, and clips 16-bit values to white."""
    rng = np.random.default_rng(2)
    block = lambda: np.repeat(
        np.repeat(rng.integers(0, 256, (6, 10, 3), dtype=np.uint8), 4, 0), 4, 1
    )  # 24x40
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    _save(Image.fromarray(block()), folder / "rotated.jpg", quality=95, exif=exif)
    hidden = np.dstack(
        [block(), np.where(np.arange(40) < 20, 0, 255).astype(np.uint8)[None, :].repeat(24, 0)]
    )
    _save(Image.fromarray(hidden, "RGBA"), folder / "transparent.png")
    _save(Image.fromarray(block()[..., 0].astype(np.uint16) * 257), folder / "sixteen.png")
    return sorted(folder.iterdir())


def test_a_pil_image_query_finds_what_its_file_finds(tmp_path: Path) -> None:
    """Image.open(f) as a query is prepared like the file f itself (and the indexed files): same code."""
    files = _odd_pictures(tmp_path / "photos")
    build_index(tmp_path / "idx", "tiny", images=tmp_path / "photos", image_size=32)
    with Index.open(tmp_path / "idx") as index:
        by_path = index.search([str(f) for f in files], k=1)
        with Image.open(files[0]) as a, Image.open(files[1]) as b, Image.open(files[2]) as c:
            by_image = index.search([a, b, c], k=1)
    assert [h[0].path for h in by_path.hits] == [f.name for f in files]
    assert [h[0].path for h in by_image.hits] == [f.name for f in files]
    np.testing.assert_allclose(by_image.distances[:, 0], 0, atol=1e-4)


def test_names_an_index_cannot_hold_and_folder_links_are_listed(tmp_path: Path) -> None:
    """A non-UTF-8 file name used to stop the build with a bare UnicodeEncodeError (naming no file) and
    leave a half-made index; a linked folder was dropped without a word; a hidden .png was "not an image"."""
    folder = tmp_path / "photos"
    _save(Image.new("RGB", (20, 10), (200, 30, 30)), folder / "plain.jpg", quality=95)
    (folder / "other").mkdir()
    _save(Image.new("RGB", (20, 10), (30, 30, 200)), folder / "other" / "blue.png")
    (folder / "caf\udce9.png").write_bytes(
        (folder / "other" / "blue.png").read_bytes()
    )  # the byte 0xE9
    _save(Image.new("RGB", (20, 10), (30, 200, 30)), folder / ".thumb.png")
    os.symlink(folder / "other", folder / "linked")

    summary = build_index(tmp_path / "idx", "tiny", images=folder, image_size=32)

    assert summary.added == 2 and summary.skipped == {
        "hidden": 1,
        "not followed": 1,
        "unreadable": 1,
    }
    with open(tmp_path / "idx" / "report.csv", newline="", encoding="utf-8") as f:
        report = {row["path"]: row for row in csv.DictReader(f)}
    assert report["caf\\xe9.png"]["reason"].startswith("its name is not valid UTF-8")
    assert report["linked"]["reason"] == "symbolic link to a folder: links are not followed"
    assert report[".thumb.png"]["kind"] == "hidden"
    with Index.open(tmp_path / "idx") as index:
        assert sorted(h.path for h in index.browse()) == ["other/blue.png", "plain.jpg"]


def test_a_folder_that_cannot_be_read_is_listed(tmp_path: Path, monkeypatch) -> None:
    """os.walk skips a folder it cannot list (no permission) without a word: the report names it."""
    folder = tmp_path / "photos"
    _save(Image.new("RGB", (20, 10), (200, 30, 30)), folder / "plain.jpg", quality=95)
    _save(Image.new("RGB", (20, 10), (30, 30, 200)), folder / "private" / "blue.png")
    scandir = os.scandir

    def no_permission(path=".", *args):  # as chmod 000 does for any user but root
        if Path(path).name == "private":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path, *args)

    monkeypatch.setattr(os, "scandir", no_permission)
    summary = build_index(tmp_path / "idx", "tiny", images=folder, image_size=32)
    monkeypatch.undo()
    assert summary.added == 1 and summary.skipped == {"unreadable": 1}
    with open(tmp_path / "idx" / "report.csv", newline="", encoding="utf-8") as f:
        report = {row["path"]: row["reason"] for row in csv.DictReader(f)}
    assert report == {"private": "folder cannot be read: Permission denied"}
