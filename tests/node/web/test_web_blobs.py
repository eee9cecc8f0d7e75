"""Pictures and files on the web page (node/web/blobs.py; issue 18 item 6, spec/protocol.md §8.5): real
nodes on 127.x, real HTTP. A blob is served as a picture only when a stored post names it so and its
bytes are that picture within bounds; everything else is a download that no browser renders."""

from __future__ import annotations

import io
from typing import Any

import httpx
import trio
from PIL import Image
from tidings.node import actions
from tidings.node.clock import SYSTEM_CLOCK
from tidings.protocol import BlobId, BlobRef, SigningKey, blob_id

from tests.support.nodes import make_home
from tests.support.pictures import HTML, SVG, gps_jpeg, has_gps, png_declaring
from tests.support.web import WebNode, start_web_node, web_node

ATTACHMENT_KEYS = {"blob", "size", "mime", "width", "height", "alt", "preview", "held", "preview_held"}
OCTET = {"content-type": "application/octet-stream"}


def blob_path(blob: str) -> str:
    return f"/api/blobs/{blob}"


async def upload(c: httpx.AsyncClient, data: bytes, status: int = 200) -> dict[str, Any]:
    response = await c.post("/api/blobs", content=data, headers=OCTET)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


def assert_download(response: httpx.Response, data: bytes, what: str = "") -> None:
    """Served as a file to save: never a type a browser renders, never inline."""
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream", what
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "sandbox" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.content == data


async def posts(c: httpx.AsyncClient) -> list[dict[str, Any]]:
    """Our posts, newest first (the log holds our profile too)."""
    return [e for e in (await c.get("/api/log")).json()["items"] if e["type"] == "post"]


async def post_raw(w: WebNode, data: bytes, mime: str, **fields: Any) -> str:
    """Store ``data`` as a blob and post it labelled ``mime``, past the page's checks (as another
    node's writer may); the blob's id."""

    def write(store: Any) -> str:
        made = w.home.open_blobs(store).put_bytes(data)
        ref = BlobRef(blob=made.hash, size=len(data), mime=mime, **fields)
        actions.post(store, w.key, f"a {mime}", attachments=[ref], now=SYSTEM_CLOCK.wall_ms())
        return str(made)

    return await w.node.db.call(write)


async def test_a_photo_posted_from_the_page_loses_its_gps_and_is_served_as_a_picture(tmp_path):
    photo = gps_jpeg()
    assert has_gps(photo)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            async with w.client() as c:
                ref = await upload(c, photo)
                assert set(ref) == ATTACHMENT_KEYS and ref["alt"] is None
                assert (ref["mime"], ref["width"], ref["height"]) == ("image/jpeg", 64, 48)
                assert ref["held"] and ref["preview_held"] and ref["blob"] != str(blob_id(photo))
                # uploaded, not posted yet: no stored entry names it a picture, so it is a file
                early = await c.get(blob_path(ref["blob"]))
                assert_download(early, early.content)
                assert blob_id(early.content) == BlobId.parse(ref["blob"])

                written = await c.post(
                    "/api/post",
                    json={"text": "the garden", "attachments": [{**ref, "alt": "a grey gradient"}]},
                )
                assert written.status_code == 200, written.text

                shown = await c.get(blob_path(ref["blob"]))
                assert shown.status_code == 200
                assert shown.headers["content-type"] == "image/jpeg"
                assert shown.headers["content-disposition"].startswith("inline;")
                assert shown.headers["x-content-type-options"] == "nosniff"
                assert "default-src 'none'" in shown.headers["content-security-policy"]
                assert int(shown.headers["content-length"]) == ref["size"] == len(shown.content)
                assert blob_id(shown.content) == BlobId.parse(ref["blob"])  # the bytes are the blob
                assert not has_gps(shown.content)  # the metadata never left the machine
                assert Image.open(io.BytesIO(shown.content)).size == (64, 48)
                head = await c.head(blob_path(ref["blob"]))
                assert head.status_code == 200 and head.content == b""
                assert head.headers["content-type"] == "image/jpeg"

                preview = await c.get(blob_path(ref["preview"]))
                assert preview.headers["content-type"] == "image/webp"
                assert Image.open(io.BytesIO(preview.content)).format == "WEBP"

                timeline = await c.get("/api/timeline")
                assert "object-src 'none'" in timeline.headers["content-security-policy"]
                (item,) = timeline.json()["items"]
                assert item["attachments"] == [{**ref, "alt": "a grey gradient"}]
                # the content is as it was: the reference with its text ids
                assert item["content"]["attachments"][0]["blob"] == ref["blob"]
                (logged,) = await posts(c)
                assert logged["attachments"] == item["attachments"]
                entry = (await c.get("/api/entry", params={"entry": item["id"]})).json()
                assert entry["attachments"] == item["attachments"]
            nursery.cancel_scope.cancel()


async def test_hostile_and_opaque_blobs_are_only_ever_downloads(tmp_path):
    bomb = png_declaring(100_000, 100_000)  # a few hundred bytes that decode to 10 gigapixels
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            posed = {
                "bomb": (bomb, await post_raw(w, bomb, "image/png", width=100, height=100)),
                "svg": (SVG, await post_raw(w, SVG, "image/png")),
                "html": (HTML, await post_raw(w, HTML, "image/gif")),
                "jpeg as png": (gps_jpeg(), await post_raw(w, gps_jpeg(), "image/png")),
                "svg as svg": (SVG + b" ", await post_raw(w, SVG + b" ", "image/svg+xml")),
            }
            async with w.client() as c:
                for name, (data, blob) in posed.items():
                    response = await c.get(blob_path(blob))
                    assert_download(response, data, name)
                attached = await upload(c, SVG + b"  ")  # an SVG from the page is an opaque file
                assert attached["mime"] == "application/octet-stream" and attached["preview"] is None
                out = await c.post("/api/post", json={"text": "a drawing", "attachments": [attached]})
                assert out.status_code == 200, out.text
                assert_download(await c.get(blob_path(attached["blob"])), SVG + b"  ")
                items = (await c.get("/api/timeline")).json()["items"]
                listed = {a["blob"]: a for item in items for a in item["attachments"]}
                assert listed[posed["bomb"][1]]["mime"] == "image/png"  # listed as named; served as a file
                assert listed[attached["blob"]]["width"] is None
            nursery.cancel_scope.cancel()


async def _raw_request(w: WebNode, head: str) -> tuple[int, bytes]:
    """Send only ``head`` (request line and headers) and read the answer: status and body."""
    host, port = w.url.removeprefix("http://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(head.replace("\n", "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
            chunk = await stream.receive_some()
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.partition(b"\r\n\r\n")[2]


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def test_a_file_over_max_blob_is_refused_before_its_body_is_read(tmp_path):
    home, key = make_home(tmp_path, "alice")
    home.config_path.write_text("[limits]\nmax_blob = 65536\n")
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            w = await start_web_node(nursery, home, key)
            host = w.url.removeprefix("http://")
            head = (
                f"POST /api/blobs HTTP/1.1\nHost: {host}\nAuthorization: Bearer {w.token}\n"
                "Content-Type: application/octet-stream\nContent-Length: 100000000\n\n"
            )
            with trio.fail_after(5):  # answered at once: not a byte of the 100 MB was sent
                status, body = await _raw_request(w, head)
            assert status == 413 and b'"code":"too_large"' in body and b"65536" in body

            async def chunks():
                for _ in range(5):
                    yield b"\xff" * 20_000  # no length declared: counted as it comes

            async with w.client() as c:
                over = await c.post("/api/blobs", content=chunks(), headers=OCTET)
                assert over.status_code == 413 and over.json()["code"] == "too_large"
                fits = await upload(c, b"\x00" * 65536)
                assert fits["size"] == 65536 and fits["mime"] == "application/octet-stream"
                rows = await w.node.db.call(lambda store: home.open_blobs(store).listing())
                assert [r["id"] for r in rows] == [fits["blob"]]  # nothing of the refused ones kept
            assert list((home.path / "web-uploads").iterdir()) == []
            nursery.cancel_scope.cancel()


async def test_blob_requests_follow_the_api_rules(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            async with w.client() as c:
                ref = await upload(c, gps_jpeg())
                missing = str(blob_id(b"not here"))
                for path, status, code in (
                    (blob_path(missing), 404, "not_found"),
                    (blob_path("&nope"), 400, "bad_id"),
                    (blob_path("nope"), 400, "bad_id"),
                ):
                    response = await c.get(path)
                    assert response.status_code == status and response.json()["code"] == code, path
                    assert response.headers["x-content-type-options"] == "nosniff"
                assert (await c.post(blob_path(ref["blob"]), json={})).status_code == 405
                assert (await c.get("/api/blobs")).status_code == 405
                async with httpx.AsyncClient(base_url=w.url) as stranger:
                    assert (await stranger.get(blob_path(ref["blob"]))).status_code == 401
                    assert (await stranger.post("/api/blobs", content=b"x", headers=OCTET)).status_code == 401
                for headers in (
                    {"content-type": "text/plain"},  # what another site's request may send
                    {"content-type": "multipart/form-data; boundary=x"},
                    {**OCTET, "origin": "http://evil.example"},
                    {**OCTET, "sec-fetch-site": "cross-site"},
                ):
                    refused = await c.post("/api/blobs", content=gps_jpeg(), headers=headers)
                    assert refused.status_code == 403, headers
                assert (
                    await c.get(blob_path(ref["blob"]), headers={"sec-fetch-site": "cross-site"})
                ).status_code == 403

                async def refused_post(attachments: Any, code: str, status: int = 400) -> None:
                    out = await c.post("/api/post", json={"text": "x", "attachments": attachments})
                    assert out.status_code == status and out.json()["code"] == code, (attachments, out.text)

                await refused_post([{**ref, "mime": "image/png"}], "bad_attachment")  # a JPEG is no PNG
                await refused_post([{**ref, "size": ref["size"] + 1}], "bad_attachment")
                await refused_post([{**ref, "width": 640}], "bad_attachment")
                await refused_post([{**ref, "preview": ref["blob"]}], "bad_attachment")  # not a small WebP
                await refused_post([{**ref, "owner": "me"}], "bad_attachment")
                await refused_post([{**ref, "mime": ["image/jpeg"]}], "bad_attachment")
                await refused_post([{**ref, "alt": 5}], "bad_attachment")
                await refused_post([{**ref, "blob": 5}], "bad_id")
                await refused_post([{**ref, "blob": missing}], "not_found", 404)
                await refused_post([ref] * 5, "bad_attachment")
                await refused_post(["&x"], "bad_parameter")
                assert await posts(c) == []  # nothing was posted
                # the same file told as little as possible: the node fills in what the file is
                bare = {"blob": ref["blob"], "mime": "image/jpeg", "preview": ref["preview"], "alt": "  "}
                out = await c.post("/api/post", json={"text": "x", "attachments": [bare]})
                assert out.status_code == 200, out.text
                (item,) = await posts(c)
                assert item["attachments"] == [ref]  # a blank alt is no alt
            nursery.cancel_scope.cancel()


async def test_an_avatar_set_from_the_page_is_shown_with_the_profile(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            async with w.client() as c:
                assert "avatar" not in (await c.get("/api/profile")).json()
                face = await upload(c, gps_jpeg(32, 32))
                out = await c.post("/api/profile", json={"name": "Alice", "avatar": {**face, "alt": "me"}})
                assert out.status_code == 200, out.text
                assert out.json()["avatar"] == {**face, "alt": "me"}
                await c.post("/api/profile", json={"bio": "gardens"})  # a later profile keeps the avatar
                profile = (await c.get("/api/profile")).json()
                assert profile["bio"] == "gardens" and profile["avatar"]["blob"] == face["blob"]
                shown = await c.get(blob_path(face["blob"]))
                assert shown.headers["content-type"] == "image/jpeg"  # a profile names it a picture
                document = await upload(c, HTML)
                refused = await c.post("/api/profile", json={"avatar": document})
                assert refused.status_code == 400 and refused.json()["code"] == "not_a_picture"
            nursery.cancel_scope.cancel()


async def test_a_picture_a_post_names_but_not_held_here_is_fetched_on_request(tmp_path):
    """The page asks for a picture that is not here (spec §12.12: others' blobs are fetched on request):
    404 now, and the node wants it from its peers."""
    from tidings.storage import blob_wants

    photo = gps_jpeg()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery, web_node(nursery, tmp_path, "alice") as w:
            stranger = SigningKey(bytes([7]) * 32)  # a feed alice does not replicate: nothing wants it yet

            def write(store: Any) -> bytes:  # a post naming a picture this home does not hold
                ref = BlobRef(
                    blob=blob_id(photo).hash, size=len(photo), mime="image/jpeg", width=64, height=48
                )
                actions.post(store, stranger, "elsewhere", attachments=[ref], now=SYSTEM_CLOCK.wall_ms())
                return ref.blob

            blob = await w.node.db.call(write)
            assert await w.node.db.call(blob_wants.wants) == []
            async with w.client() as c:
                missing = await c.get(blob_path(str(BlobId(blob))))
                assert missing.status_code == 404 and missing.json()["code"] == "not_found"
                unknown = await c.get(blob_path(str(blob_id(b"named by nobody"))))
                assert unknown.status_code == 404
            wants = {w.blob: w for w in await w.node.db.call(blob_wants.wants)}
            assert set(wants) == {blob} and wants[blob].mime == "image/jpeg" and wants[blob].author is None
            nursery.cancel_scope.cancel()
