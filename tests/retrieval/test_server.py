"""The JSON API and the page: every route, and every bad request answered with a 4xx JSON error, never a 500."""

import io
import struct
import threading
import zlib
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from unseen.retrieval.index import build_index
from unseen.retrieval.search import Searcher
from unseen.retrieval.server import Limits, create_app, decode_upload
from unseen.retrieval.sources import list_items

LIMITS = Limits(max_upload_bytes=100_000, max_pixels=250_000, max_k=20)


@pytest.fixture
def searcher(tmp_path, embedder, gallery) -> Searcher:
    build_index(embedder, list_items(gallery), tmp_path / "index", log=lambda _: None)
    return Searcher.open(tmp_path / "index")


@pytest.fixture
def client(searcher):
    return TestClient(create_app(searcher, LIMITS), raise_server_exceptions=False)


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width×height pixels, with a tiny image stream: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


def upload(client, data: bytes, name: str = "query.png", k: int = 5, content_type: str = "image/png"):
    return client.post(f"/api/search?k={k}", files={"image": (name, data, content_type)})


def assert_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status and all(word in body["error"] for word in words), body


def test_health_index_items_and_thumbnails(client, searcher, tmp_path):
    assert client.get("/api/health").json() == {"status": "ok", "images": 24}
    info = client.get("/api/index")
    assert info.status_code == 200
    body = info.json()
    assert body["images"] == 24 and body["kind"] == "flat" and body["labels"] == 4 and body["dim"] == 8
    assert body["model"]["checkpoint"] == "best.pt" and body["limits"]["max_k"] == 20
    assert str(tmp_path) not in info.text  # no server path is given away
    items = client.get("/api/items?offset=20&limit=10").json()
    assert items["total"] == 24 and [item["row"] for item in items["items"]] == [20, 21, 22, 23]
    item = client.get("/api/items/3").json()
    assert item == {"row": 3, "name": Path(searcher.index.paths[3]).name, "label": searcher.index.labels[3],
                    "thumbnail": "/api/items/3/thumbnail"}
    thumbnail = client.get("/api/items/3/thumbnail")
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(thumbnail.content)).size == (96, 96)  # 12 px enlarged for the page


def test_search_by_row_leaves_the_row_out_and_ranks_by_similarity(client, searcher):
    answer = client.get("/api/search/5?k=4").json()
    assert answer["query"]["row"] == 5 and answer["k"] == 4
    hits = answer["hits"]
    assert [hit["rank"] for hit in hits] == [1, 2, 3, 4] and 5 not in [hit["row"] for hit in hits]
    assert [hit["similarity"] for hit in hits] == sorted((hit["similarity"] for hit in hits), reverse=True)
    expected = searcher.search_row(5, 4)
    assert [hit["row"] for hit in hits] == [hit.row for hit in expected.hits]
    assert set(hits[0]) == {"row", "name", "label", "thumbnail", "rank", "similarity"}


def test_search_by_upload_finds_the_same_image_first(client, searcher):
    row = 7
    image = Image.open(searcher.index.paths[row])
    for data, name in ((png(image), "q.png"), (jpeg(image.convert("RGB")), "q.jpg")):
        response = upload(client, data, name, k=3)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["query"] == {"name": name, "width": 12, "height": 12} and len(answer["hits"]) == 3
        if name == "q.png":
            assert answer["hits"][0]["row"] == row and answer["hits"][0]["similarity"] == pytest.approx(1.0, abs=1e-5)
    rgba = png(image.convert("RGBA"))
    assert upload(client, rgba).status_code == 200  # any mode is converted as the network expects


def test_the_page_and_its_assets_with_security_headers(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="query-file"' in page.text and "/static/app.js" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert client.get("/static/app.js").headers["content-type"].startswith("text/javascript")
    assert client.get("/static/style.css").status_code == 200
    assert_error(client.get("/static/../retrieval/server.py"), 404)


def test_bad_uploads_get_their_4xx(client, searcher):
    image = Image.open(searcher.index.paths[0]).convert("RGB").resize((64, 64))
    truncated = jpeg(image)[:-300]
    assert_error(upload(client, truncated, "cut.jpg", content_type="image/jpeg"), 422, "truncated or corrupt")
    assert_error(upload(client, b"just some text, honestly", "notes.png"), 415, "not an image file")
    assert_error(upload(client, b"\0" * 150_000, "big.png"), 413, "larger than")
    assert_error(upload(client, png_claiming(100_000, 100_000), "bomb.png"), 413, "decompression bomb")
    assert_error(upload(client, png(Image.new("L", (600, 600))), "wide.png"), 413, "600×600 = 360,000 pixels",
                 "the limit is 250,000")
    assert_error(upload(client, b"", "empty.png"), 400, "empty")
    pdf = io.BytesIO()
    image.save(pdf, format="PDF")
    assert_error(upload(client, pdf.getvalue(), "doc.pdf"), 415)
    ico = io.BytesIO()
    image.save(ico, format="ICO")
    assert_error(upload(client, ico.getvalue(), "icon.ico"), 415, "ICO files are not accepted")


def test_malformed_requests_get_their_4xx(client):
    assert_error(client.post("/api/search", content=b"raw bytes", headers={"content-type": "image/png"}), 400,
                 "multipart/form-data")
    assert_error(client.post("/api/search", data={"other": "x"}, files={"x": ("a", b"a")}), 400, "'image'")
    assert_error(client.post("/api/search", data={"image": "not a file"}), 400, "multipart")
    assert_error(client.get("/api/search/0?k=0"), 400, "k:")
    assert_error(client.get("/api/search/0?k=21"), 400, "k:")
    assert_error(client.get("/api/search/0?k=ten"), 400, "k:")
    assert_error(client.get("/api/items?limit=100000"), 400, "limit")
    assert_error(client.get("/api/search/24"), 404, "row 24: no such gallery item")
    assert_error(client.get("/api/items/-1/thumbnail"), 404, "row -1")
    assert_error(client.get("/api/nothing"), 404)
    assert_error(client.delete("/api/items/1"), 405)


def test_chunked_uploads_over_the_limit_are_cut_off(client):
    def stream():
        for _ in range(40):
            yield b"x" * 10_000

    response = client.post("/api/search", content=stream(),
                           headers={"content-type": "multipart/form-data; boundary=b"})
    assert_error(response, 413, "larger than")


@pytest.mark.parametrize("path", [
    "/api/items/..%2F..%2F..%2Fetc%2Fpasswd/thumbnail",
    "/api/items/../../../etc/passwd",
    "/api/items/%2e%2e/thumbnail",
    "/api/items/1%2F..%2F..%2Fsecret/thumbnail",
    "/api/search/..%2Findex.json",
    "/api/items/0x1/thumbnail",
    "/api/items/1.5/thumbnail",
])
def test_path_traversal_ids_never_reach_the_filesystem(client, path):
    response = client.get(path)
    assert 400 <= response.status_code < 500 and "error" in response.json()


def test_a_gallery_file_gone_since_indexing_is_a_404(client, searcher):
    Path(searcher.index.paths[2]).unlink()
    assert_error(client.get("/api/items/2/thumbnail"), 404, "no longer readable")


def test_concurrent_requests_are_answered_consistently(client, searcher):
    image = png(Image.open(searcher.index.paths[9]))
    expected_row = client.get("/api/search/4?k=5").json()
    expected_upload = upload(client, image).json()
    failures = []

    def work(i: int) -> None:
        for _ in range(5):
            if i % 2:
                answer = client.get("/api/search/4?k=5").json()
                ok = answer == expected_row
            else:
                answer = upload(client, image).json()
                ok = answer == expected_upload
            if not ok:
                failures.append(answer)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not failures


def test_decode_upload_is_usable_on_its_own():
    image = decode_upload(png(Image.new("RGB", (10, 20), "red")))
    assert image.size == (10, 20) and image.mode == "RGB"
