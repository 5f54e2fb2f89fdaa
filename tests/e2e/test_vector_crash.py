"""Crash test of the vector store through the real server: a writer
upserts batches in a loop (each acknowledged only once durable) while the
server is killed with SIGKILL at random moments, 20 times. After each
restart every acknowledged point is present with its exact payload, no
batch is half-present, and search works.
"""

from __future__ import annotations

import random
import threading
import time

import requests

import e2e_util as u

BATCH = 20
EMBED_ONLY = u.TINY_QUEUE_CONFIG.split("---")[0]


def _batch(b: int) -> dict:
    ids = list(range(b * BATCH, (b + 1) * BATCH))
    return {"batch": {"ids": ids,
                      "vectors": [[float(i), 1.0, float(i % 7), 2.0] for i in ids],
                      "payloads": [{"batch": b, "id": i, "text": f"point {i}"} for i in ids]}}


def test_sigkill_while_writing_loses_no_acknowledged_point(tmp_path, cache_dir):
    server = u.Server(tmp_path, cache_dir, config=EMBED_ONLY, name="vector-crash")
    server.start()
    try:
        r = requests.put(server.url + "/collections/c", timeout=30, json={
            "vectors": {"size": 4, "distance": "Euclid"}})
        assert r.status_code == 200, r.text
        rng = random.Random(4)
        acked: set[int] = set()
        next_batch = 0
        for cycle in range(20):
            url = server.url
            stop = threading.Event()
            state = {"next": next_batch}

            def writer():
                with requests.Session() as s:
                    while not stop.is_set():
                        b = state["next"]
                        try:
                            r = s.put(url + "/collections/c/points?wait=true", json=_batch(b),
                                      timeout=30)
                        except requests.RequestException:
                            return  # the server died mid-request: not acknowledged
                        if r.status_code != 200:
                            return
                        acked.add(b)
                        state["next"] = b + 1

            t = threading.Thread(target=writer)
            t.start()
            time.sleep(rng.uniform(0.05, 0.6))
            server.kill()  # SIGKILL, mid-write
            stop.set()
            t.join(timeout=60)
            assert not t.is_alive()

            server.start()
            scroll = requests.post(server.url + "/collections/c/points/scroll", timeout=60,
                                   json={"limit": 1_000_000, "with_payload": True,
                                         "with_vector": True}).json()["result"]
            assert scroll["next_page_offset"] is None
            per_batch: dict[int, int] = {}
            for p in scroll["points"]:
                i = p["id"]
                b = i // BATCH
                assert p["payload"] == {"batch": b, "id": i, "text": f"point {i}"}, p
                assert p["vector"] == [float(i), 1.0, float(i % 7), 2.0], p
                per_batch[b] = per_batch.get(b, 0) + 1
            half = {b: n for b, n in per_batch.items() if n != BATCH}
            assert not half, f"cycle {cycle}: half-applied batches {half}"
            lost = acked - set(per_batch)
            assert not lost, f"cycle {cycle}: acknowledged batches lost: {sorted(lost)}"
            # A batch written but not acknowledged (killed before the answer)
            # may be there in full; continue after the last one present.
            next_batch = max(per_batch, default=-1) + 1
            assert set(per_batch) == set(range(next_batch)), f"cycle {cycle}: a gap"
            if per_batch:
                last = max(per_batch) * BATCH
                query = [float(last), 1.0, float(last % 7), 2.0]
                # Exact: the recovered data is all there to search...
                hit = requests.post(server.url + "/collections/c/points/search", timeout=30,
                                    json={"vector": query, "limit": 1,
                                          "params": {"exact": True}}).json()["result"]
                assert hit[0]["id"] == last and hit[0]["score"] == 0.0
                # ...and the rebuilt graph answers (these points lie almost on
                # a line, a hard case for HNSW: ask only for a near neighbour).
                hit = requests.post(server.url + "/collections/c/points/search", timeout=30,
                                    json={"vector": query, "limit": 1}).json()["result"]
                assert len(hit) == 1 and hit[0]["score"] < 10.0, hit
        assert len(acked) >= 20, f"only {len(acked)} batches acknowledged in 20 cycles"
    finally:
        server.kill()
