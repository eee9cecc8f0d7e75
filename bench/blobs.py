"""Blob benchmark: fetching a set of blobs over loopback, beside the bare cipher; and post-to-picture latency.

    python bench/blobs.py                # 100 MB of blobs (8 MiB each, then 1 MiB each), 20 photo posts
    python bench/blobs.py --smoke        # 16 MB, 3 photo posts, for CI
    python bench/blobs.py --total 200 --posts 50

1. **Transfer.** Alice (a real ``tidings run`` process) holds ``--total`` MB of random blobs, named by her
   posts (four attachments each); Bob, a fresh home that follows her, starts as a real process with
   Alice as its peer and fetches them all (spec §12.12). Printed: MB/s from Bob's start until every
   blob is in his store (his process start, the handshake, the sync of the posts and every blob,
   hashed and fsynced), beside the bare ChaCha20-Poly1305 throughput measured in the same run (the
   ``cryptography`` AEAD the Noise transport uses, encrypting and decrypting the same bytes in 64 KB
   frames on one core: the floor of what a transfer must do to each byte). Bob's peak RSS (``VmHWM``)
   is printed for blobs of 8 MiB and for the same total in blobs of 1 MiB: flat when no blob is held
   in memory. Goal (issue 18): at least 50% of the bare cipher, RSS flat in the blob size.
2. **Post to picture.** Bob runs, following Alice and connected to her; Alice posts a photo with
   ``tidings post --attach`` (a real process, which re-encodes it first). Timed from the post's
   timestamp until Bob's web page serves the picture (``GET /api/blobs/&id`` answers 200 with its bytes).
   Printed: p50, p95, max over ``--posts``. Goal: p95 < 2 s.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from tidings.node.home import Home
from tidings.protocol import BlobRef, Follow, Post
from tidings.storage.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support: the test pictures

from replicate import start_node, stop

from tests.support.pictures import phone_photo

TIDINGS = [sys.executable, "-m", "tidings.cli.main"]
MB = 1_000_000


def bare_cipher_rate(total: int, frame: int = 65_519) -> float:
    """Bytes per second of ChaCha20-Poly1305 encrypting and decrypting ``total`` bytes in frames."""
    aead = ChaCha20Poly1305(os.urandom(32))
    data = os.urandom(frame)
    start = time.perf_counter()
    for n in range(total // frame):
        nonce = n.to_bytes(12, "little")
        aead.decrypt(nonce, aead.encrypt(nonce, data, None), None)
    return (total // frame) * frame / (time.perf_counter() - start)


def bare_hash_rate(total: int, chunk: int = 64_512) -> float:
    """Bytes per second of BLAKE2b-256 (the blob id, spec §8.5) over ``total`` bytes fed in chunks: the
    other thing every received byte must go through."""
    hasher = hashlib.blake2b(digest_size=32)
    data = os.urandom(chunk)
    start = time.perf_counter()
    for _ in range(total // chunk):
        hasher.update(data)
    return (total // chunk) * chunk / (time.perf_counter() - start)


def build(root: Path, total: int, size: int) -> tuple[Home, Home, list[BlobRef]]:
    """Alice holding ``total`` bytes of random blobs of ``size`` bytes (not posted yet); Bob following her."""
    ha, hb = Home(root / "alice"), Home(root / "bob")
    ka, kb = ha.init(name="alice"), hb.init(name="bob")
    refs = []
    with Store(ha.store_path) as store:
        blobs = ha.open_blobs(store)
        for _ in range(total // size):
            blob = blobs.put_bytes(os.urandom(size), pinned=True)
            refs.append(BlobRef(blob=blob.hash, size=size, mime="application/octet-stream"))
    with Store(hb.store_path) as store:
        store.append(kb, Follow(feed=ka.public_key))
    return ha, hb, refs


def post_refs(home: Home, refs: list[BlobRef]) -> None:
    """Post ``refs``, four to a post, as another process would (the running node notices them)."""
    key = home.load_key()
    with Store(home.store_path) as store:
        for start in range(0, len(refs), 4):
            store.append(key, Post(text=f"files {start}", attachments=tuple(refs[start : start + 4])))


def held(home: Home, blob: bytes) -> bool:
    return (home.blobs_path / blob.hex()[:2] / blob.hex()).is_file()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def transfer(total: int, size: int) -> tuple[float, float, float]:
    """Bob fetching Alice's blobs: (MB/s from the posts to the last blob held, MB/s from Bob's process
    start, Bob's peak RSS in MB)."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        ha, hb, refs = build(Path(tmp), total, size)
        alice, address = start_node(ha, "--listen", "127.0.0.2:0", "--http", "off")
        try:
            t0 = time.perf_counter()
            bob, _ = start_node(hb, "--listen", "127.0.0.3:0", "--http", "off", "--peer", address)
            try:
                connected(hb)
                started = time.perf_counter() - t0
                t1 = time.perf_counter()
                post_refs(ha, refs)
                deadline = time.time() + 600
                while not all(held(hb, ref.blob) for ref in refs):
                    if time.time() > deadline or bob.poll() is not None:
                        raise SystemExit("the blobs did not arrive")
                    time.sleep(0.005)
                elapsed = time.perf_counter() - t1
                rss = peak_rss_mb(bob.pid)
            finally:
                stop(bob)
        finally:
            stop(alice)
    moved = len(refs) * size / MB
    return moved / elapsed, moved / (elapsed + started), rss


def connected(home: Home, timeout: float = 20.0) -> None:
    """Until the running node of ``home`` has a connection (its node.json)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if json.loads(home.node_file.read_text()).get("peers"):
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    raise SystemExit("bob did not connect to alice")


def photo_latency(posts: int) -> list[float]:
    """Seconds from each photo post on Alice to Bob's page serving the picture."""
    with tempfile.TemporaryDirectory(prefix="tidings-bench-") as tmp:
        ha, hb, _ = build(Path(tmp), 0, 1)
        alice, address = start_node(ha, "--listen", "127.0.0.4:0", "--http", "off")
        bob = None
        try:
            bob, _ = start_node(hb, "--listen", "127.0.0.5:0", "--http", "127.0.0.5:0", "--peer", address)
            page = _page_url(hb)
            token = (hb.path / "web.token").read_text().strip()
            time.sleep(1.0)
            latencies = []
            for i in range(posts):
                photo = phone_photo(Path(tmp) / f"photo{i}.jpg", (1600, 1200), noise=True)
                out = subprocess.run(
                    [
                        *TIDINGS,
                        "--home",
                        str(ha.path),
                        "post",
                        f"photo {i}",
                        "--attach",
                        str(photo),
                        "--alt",
                        "noise",
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout
                posted = json.loads(out)
                blob = _attachment(ha, posted["id"])
                deadline = time.time() + 30
                while not _served(page, blob, token):
                    if time.time() > deadline:
                        raise SystemExit("the photo did not reach the page in 30 s")
                    time.sleep(0.01)
                latencies.append(time.time() - posted["ts"] / 1000)
            return latencies
        finally:
            if bob is not None:
                stop(bob)
            stop(alice)


def _attachment(home: Home, entry: str) -> str:
    """The blob id of the first attachment of our entry ``entry`` (from ``tidings log --json``)."""
    me = json.loads(
        subprocess.run(
            [*TIDINGS, "--home", str(home.path), "id", "--json"], capture_output=True, text=True, check=True
        ).stdout
    )["feed"]
    log = subprocess.run(
        [*TIDINGS, "--home", str(home.path), "log", me, "--json"], capture_output=True, text=True, check=True
    ).stdout
    for line in log.splitlines():
        row = json.loads(line)
        if row["id"] == entry:
            return str(row["content"]["attachments"][0]["blob"])
    raise SystemExit(f"{entry} is not in the log")


def _page_url(home: Home) -> str:
    deadline = time.time() + 20
    while time.time() < deadline:
        try:
            info = json.loads(home.node_file.read_text())
            for service in info.get("services", {}).values():
                url = service.get("url") if isinstance(service, dict) else None
                if url:
                    return str(url)
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise SystemExit("the web page did not start")


def _served(page: str, blob: str, token: str) -> bool:
    request = urllib.request.Request(
        f"{page}/api/blobs/{urllib.parse.quote(blob)}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status == 200 and bool(answer.read())
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--total", type=int, default=100, help="MB of blobs to transfer")
    parser.add_argument("--posts", type=int, default=20, help="photo posts for the latency figure")
    parser.add_argument("--smoke", action="store_true", help="small and quick, for CI")
    args = parser.parse_args()
    if args.smoke:
        args.total, args.posts = 16, 3
    total = args.total * MB
    bare = bare_cipher_rate(min(total, 200 * MB)) / MB
    print(f"bare ChaCha20-Poly1305 (cryptography), encrypt + decrypt, one core: {bare:,.0f} MB/s")
    hashing = bare_hash_rate(min(total, 200 * MB)) / MB
    print(f"bare BLAKE2b-256 (hashlib), one core: {hashing:,.0f} MB/s (every received byte is hashed too)")
    for size in (8 * 1024 * 1024, 1024 * 1024):
        rate, with_start, rss = transfer(total, size)
        print(
            f"transfer of {args.total} MB in blobs of {size // 1024 // 1024} MiB: {rate:,.1f} MB/s from the posts "
            f"to the last blob held ({100 * rate / bare:.0f}% of the bare cipher), {with_start:,.1f} MB/s "
            f"counting Bob's process start; Bob's peak RSS {rss:.0f} MB"
        )
    latencies = sorted(photo_latency(args.posts))
    p95 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.95))]
    print(
        f"post with a photo -> shown by the follower's page, over {len(latencies)} posts: "
        f"p50 {statistics.median(latencies):.2f} s, p95 {p95:.2f} s, max {latencies[-1]:.2f} s"
    )


if __name__ == "__main__":
    main()
