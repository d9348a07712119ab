"""The JSON API with FastAPI's test client: search by upload, bad uploads, path traversal, no stack traces."""

from __future__ import annotations

import io
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from synthetic import png_header  # tests/synthetic.py
from neuralcodes.cli import build_parser
from neuralcodes.cli.serve import is_loopback
from neuralcodes.index import Index, build_index
from neuralcodes.serve import create_app

LIMIT = 64 << 10


@pytest.fixture(scope="module")
def index(served_index: Path):
    with Index.open(served_index) as opened:
        yield opened


@pytest.fixture(scope="module")
def client(index: Index) -> TestClient:
    return TestClient(create_app(index, max_upload_bytes=LIMIT), raise_server_exceptions=False)


def _upload(client: TestClient, data: bytes, k: int = 3):
    return client.post(f"/api/search?k={k}", files={"image": ("photo.jpg", data, "image/jpeg")})


def test_an_uploaded_image_of_the_collection_comes_back_first(
    client: TestClient, served_photos: Path
) -> None:
    for file in sorted(served_photos.rglob("*.JPEG"))[::4]:
        response = _upload(client, file.read_bytes(), k=4)
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert [r["rank"] for r in results] == [1, 2, 3, 4]
        assert results[0]["path"] == file.relative_to(served_photos).as_posix()
        assert results[0]["label"] == file.parent.name and results[0]["distance"] < 1e-3
        assert results[0]["thumbnail"] == f"/api/images/{results[0]['id']}/thumbnail"
        assert "source" not in results[0]  # the server's folders stay private


def test_searching_with_a_collection_image_by_id(client: TestClient) -> None:
    response = client.get("/api/images/5/neighbours?k=3")
    assert response.status_code == 200
    assert response.json()["query"]["id"] == 5 and response.json()["results"][0]["id"] == 5


def test_images_and_thumbnails_are_served_by_id(
    client: TestClient, index: Index, served_photos: Path, evil_label: str
) -> None:
    hit = index.record(7)
    response = client.get("/api/images/7")
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert response.content == (served_photos / hit.path).read_bytes()
    thumb = client.get("/api/images/7/thumbnail?size=96")
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).format == "JPEG"
    assert max(Image.open(io.BytesIO(thumb.content)).size) <= 96
    assert client.get("/api/images/7/thumbnail?size=5000").status_code == 422
    listing = client.get("/api/images?limit=100").json()
    assert listing["total"] == 12 and evil_label in {
        i["label"] for i in listing["images"]
    }  # data, unchanged


def _jpeg(size: tuple[int, int] = (64, 64)) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(
        np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    ).save(buffer, "JPEG")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "the upload is empty"),
        (b"just some text, not an image", 415, "not an image this server can read"),
        (_jpeg()[:400], 415, "not an image this server can read"),
        (png_header(30000, 30000), 413, "decompression bomb"),
        (os.urandom(LIMIT + 1000), 413, "over the upload limit of 64 KiB"),
        (
            os.urandom(3 * LIMIT),
            413,
            "request body is over the upload limit",
        ),  # refused before it is read
    ],
    ids=["empty", "text", "truncated-jpeg", "30000x30000-png", "oversized-file", "oversized-body"],
)
def test_bad_uploads_get_a_4xx_with_a_clear_message(
    client: TestClient, data: bytes, status: int, message: str
) -> None:
    response = _upload(client, data)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]


def test_an_oversized_body_without_a_length_is_cut_off(client: TestClient) -> None:
    def chunks():  # chunked transfer encoding: no Content-Length to check up front
        yield b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\n\r\n'
        for _ in range(40):
            yield os.urandom(8192)
        yield b"\r\n--b--\r\n"

    response = client.post(
        "/api/search", content=chunks(), headers={"content-type": "multipart/form-data; boundary=b"}
    )
    assert response.status_code == 413 and "over the upload limit" in response.json()["detail"]
    assert client.post("/api/search").status_code == 422  # no file at all


TRAVERSALS = [
    "../../../../etc/passwd",
    "..%2F..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "....//....//etc/passwd",
    "%252e%252e%252fetc%252fpasswd",
    "..\\..\\etc\\passwd",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "1/../../../etc/passwd",
    "-1",
    "99999",
    "0x1",
    "1e3",
    "1;cat%20%2Fetc%2Fpasswd",
    "%00",
    "1%00",
    str(2**70),
    "",
]


@pytest.mark.parametrize(
    "route", ["/api/images/{}", "/api/images/{}/thumbnail", "/api/images/{}/neighbours"]
)
def test_path_traversal_attempts_never_reach_the_file_system(
    client: TestClient, route: str
) -> None:
    for attempt in TRAVERSALS:
        response = client.get(route.format(attempt))
        assert 400 <= response.status_code < 500 or (attempt == "" and route == "/api/images/{}"), (
            attempt,
            response.status_code,
        )
        assert "root:" not in response.text and "Traceback" not in response.text


def test_a_stored_path_that_leaves_the_collection_is_refused(
    served_index: Path, served_photos: Path, tmp_path: Path
) -> None:
    """Defence in depth: a tampered database, or a file replaced by a link, still cannot reach outside."""
    copy = Path(shutil.copytree(served_index, tmp_path / "idx"))
    with sqlite3.connect(copy / "metadata.sqlite") as db:
        db.execute("UPDATE images SET path = '../../../../../../etc/passwd' WHERE id = 0")
    photos = Path(shutil.copytree(served_photos, tmp_path / "photos"))
    with sqlite3.connect(copy / "metadata.sqlite") as db:
        db.execute("UPDATE sources SET location = ?", (str(photos),))
        linked = db.execute("SELECT path FROM images WHERE id = 1").fetchone()[0]
    (photos / linked).unlink()
    (photos / linked).symlink_to("/etc/passwd")
    with Index.open(copy) as index:
        client = TestClient(create_app(index), raise_server_exceptions=False)
        for image_id in (0, 1):
            for route in ("/api/images/{}", "/api/images/{}/thumbnail"):
                response = client.get(route.format(image_id))
                assert response.status_code == 404 and "root:" not in response.text
                assert "/etc" not in response.text and str(tmp_path) not in response.text


def test_images_of_a_moved_collection_folder_get_a_404(served_index: Path, tmp_path: Path) -> None:
    """The whole image folder moved away after the build: a 404 that says the file is gone, not a 500."""
    copy = Path(shutil.copytree(served_index, tmp_path / "idx"))
    with sqlite3.connect(copy / "metadata.sqlite") as db:
        db.execute("UPDATE sources SET location = ?", (str(tmp_path / "moved-away"),))
    with Index.open(copy) as index:
        client = TestClient(create_app(index), raise_server_exceptions=False)
        for route in ("/api/images/0", "/api/images/0/thumbnail"):
            response = client.get(route)
            assert (
                response.status_code == 404 and "can no longer be read" in response.json()["detail"]
            ), route
            assert "moved-away" not in response.text


def test_an_internal_error_carries_no_stack_trace(index: Index, monkeypatch) -> None:
    client = TestClient(create_app(index), raise_server_exceptions=False)

    def broken(*args, **kwargs):
        raise RuntimeError("secret detail of the server at /srv/private")

    monkeypatch.setattr(index, "search", broken)
    response = client.post("/api/search", files={"image": ("a.jpg", _jpeg(), "image/jpeg")})
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error; the server's log says more"}
    assert "secret" not in response.text and "Traceback" not in response.text


def test_the_page_its_script_and_the_schema(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "Drop an image here" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert (
        "<script>" not in page.text and "onerror" not in page.text
    )  # no inline script; no label in the HTML
    script = client.get("/app.js").text
    assert (
        "textContent" in script and "innerHTML" not in script and "insertAdjacentHTML" not in script
    )
    schema = client.get("/openapi.json").json()
    assert {
        "/api/search",
        "/api/images",
        "/api/images/{image_id}",
        "/api/images/{image_id}/thumbnail",
        "/api/images/{image_id}/neighbours",
        "/api/health",
    } <= set(schema["paths"])
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["images"] == 12


def test_safe_defaults_of_the_server(index: Index) -> None:
    args = build_parser().parse_args(["serve", "some-index"])
    assert args.host == "127.0.0.1" and args.port == 8000
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.5")
    local = TestClient(
        create_app(index, allowed_hosts=["127.0.0.1", "localhost"]), base_url="http://127.0.0.1"
    )
    assert local.get("/api/health").status_code == 200
    assert (
        local.get("/api/health", headers={"host": "attacker.example"}).status_code == 400
    )  # DNS rebinding


def test_thumbnails_show_the_pixels_that_were_indexed(tmp_path: Path) -> None:
    """A 16-bit PNG is scaled (not clipped to white) and transparent pixels are white (not their hidden
    colour) in thumbnails too, as in the index; the EXIF orientation is applied."""
    folder = tmp_path / "photos"
    folder.mkdir()
    half = np.zeros((20, 40), np.uint8)
    half[:, 20:] = 100  # left black, right dark grey
    Image.fromarray(half.astype(np.uint16) * 257).save(folder / "a_sixteen.png")
    hidden = np.zeros((20, 40, 4), np.uint8)
    hidden[..., 3] = np.where(
        np.arange(40) < 20, 0, 255
    )  # left invisible black, right opaque black
    Image.fromarray(hidden, "RGBA").save(folder / "b_transparent.png")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(half).save(folder / "c_rotated.jpg", quality=95, exif=exif)
    build_index(tmp_path / "idx", "tiny", images=folder, image_size=32)
    with Index.open(tmp_path / "idx") as index:
        client = TestClient(create_app(index), raise_server_exceptions=False)
        thumbs = []
        for image_id in range(3):
            response = client.get(f"/api/images/{image_id}/thumbnail?size=96")
            assert response.status_code == 200, response.text
            thumbs.append(
                np.asarray(Image.open(io.BytesIO(response.content)).convert("L"), dtype=int)
            )
    sixteen, transparent, rotated = thumbs
    assert sixteen.shape == (20, 40)  # never enlarged
    assert sixteen[:, :16].mean() < 8 and abs(sixteen[:, 24:].mean() - 100) < 8
    assert transparent[:, :16].mean() > 245 and transparent[:, 24:].mean() < 10
    assert rotated.shape == (40, 20)


def test_both_searches_rerank_and_say_so(
    client: TestClient, index: Index, served_photos: Path
) -> None:
    file = sorted(served_photos.rglob("*.JPEG"))[2]  # one whose order the step changes
    plain = _upload(client, file.read_bytes(), k=5).json()
    assert (plain["rerank"], plain["shortlist"]) == (None, None)
    response = client.post(
        "/api/search",
        params={"k": 5, "rerank": "dba+qe", "shortlist": 8},
        files={"image": ("photo.jpg", file.read_bytes(), "image/jpeg")},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["k"], body["rerank"], body["shortlist"]) == (5, "dba+qe", 8)
    want = index.search([file], k=5, rerank="dba+qe", shortlist=8)
    assert (
        [r["id"] for r in body["results"]]
        == want.ids[0].tolist()
        != [r["id"] for r in plain["results"]]
    )
    assert [r["distance"] for r in body["results"]] == pytest.approx(want.distances[0].tolist())
    assert [r["rank"] for r in body["results"]] == [1, 2, 3, 4, 5]

    near = client.get(
        "/api/images/5/neighbours", params={"k": 4, "rerank": "k_reciprocal", "shortlist": 6}
    ).json()
    assert (near["rerank"], near["shortlist"], near["query"]["id"]) == ("k_reciprocal", 6, 5)
    want = index.search_ids([5], k=4, rerank="k_reciprocal", shortlist=6).ids[0].tolist()
    assert [r["id"] for r in near["results"]] == want != index.search_ids([5], k=4).ids[0].tolist()
    default = client.get("/api/images/5/neighbours?k=4&rerank=aqe").json()
    assert (default["rerank"], default["shortlist"]) == (
        "aqe",
        12,
    )  # 100 by default, clamped to the collection
    assert client.get("/api/images/5/neighbours?k=4&rerank=none").json()["rerank"] is None


@pytest.mark.parametrize(
    "query", ["rerank=nope", "rerank=dba qe", "rerank=aqe&shortlist=0", "rerank=aqe&shortlist=1001"]
)
def test_bad_reranking_options_get_a_422(
    client: TestClient, served_photos: Path, query: str
) -> None:
    data = sorted(served_photos.rglob("*.JPEG"))[0].read_bytes()
    for response in (
        client.post(f"/api/search?k=3&{query}", files={"image": ("photo.jpg", data, "image/jpeg")}),
        client.get(f"/api/images/2/neighbours?k=3&{query}"),
    ):
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        if "shortlist" in query:
            assert detail[0]["loc"] == ["query", "shortlist"]
        else:  # a sentence the page shows as it is, naming every step
            assert (
                detail.startswith("unknown re-ranking")
                and "aqe, alpha_qe, dba, dba+qe, diffusion, k_reciprocal" in detail
            )
    # Unknown steps are refused before the upload is looked at.
    assert (
        client.post(
            "/api/search?rerank=nope", files={"image": ("e.jpg", b"", "image/jpeg")}
        ).status_code
        == 422
    )


def test_the_rerankers_are_listed_and_offered_on_the_page(client: TestClient) -> None:
    from neuralcodes.retrieval.rerank import RERANKERS

    listed = client.get("/api/rerankers").json()["rerankers"]
    assert [r["name"] for r in listed] == list(RERANKERS)
    assert {r["name"]: (r["about"], r["uses_database"]) for r in listed} == {
        name: (step.about, step.uses_database) for name, step in RERANKERS.items()
    }
    page = client.get("/").text
    assert '<select id="rerank"><option value="" selected>none</option>' in page
    for name, step in RERANKERS.items():
        assert f'<option value="{name}">{step.about}</option>' in page
    assert "/api/rerankers" in client.get("/openapi.json").json()["paths"]


def test_the_page_sends_the_chosen_reranking_with_both_searches(tmp_path: Path) -> None:
    """The page's script run in Node against a stand-in DOM: which URLs it fetches."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the page's script cannot be run without a browser")
    from neuralcodes.serve.page import SCRIPT

    stand_in = r"""
const made = {};
const element = (id) => made[id] ??= { id, value: "", hidden: false, textContent: "", className: "", dataset: {},
  classList: { add() {}, remove() {} }, addEventListener() {}, append() {}, replaceChildren() {} };
let counter = 0;
globalThis.document = { getElementById: element, body: { dataset: { maxUpload: "1000000" } },
                        createElement: () => element("new" + counter++) };
globalThis.window = { scrollTo() {} };
URL.createObjectURL = () => "blob:query";
globalThis.FormData = class { append() {} };
const fetched = [];
globalThis.fetch = async (url) => {
  fetched.push(url);
  const rerank = new URL(url, "http://page").searchParams.get("rerank");
  return { ok: true, json: async () => ({ images: [], total: 0, results: [], rerank, query: { path: "a/b.jpg" } }) };
};
element("k").value = "6";
"""
    steps = r"""
(async () => {
  const titles = [];
  for (const step of ["dba+qe", ""]) {
    $("rerank").value = step;
    await searchById(3);
    titles.push($("results-title").textContent);
    await searchFile({ size: 10, name: "q.jpg" });
  }
  console.log(JSON.stringify({ fetched, titles }));
})();
"""
    script = tmp_path / "page.js"
    script.write_text(stand_in + SCRIPT + steps)
    import json
    import subprocess

    out = json.loads(
        subprocess.run(
            [node, str(script)], capture_output=True, text=True, check=True, timeout=60
        ).stdout
    )
    assert out["fetched"] == [
        "/api/images?limit=48&offset=0",
        "/api/images/3/neighbours?k=6&rerank=dba%2Bqe",
        "/api/search?k=6&rerank=dba%2Bqe",
        "/api/images/3/neighbours?k=6",
        "/api/search?k=6",
    ]
    assert out["titles"] == ["Nearest to a/b.jpg (re-ranked: dba+qe)", "Nearest to a/b.jpg"]
