"""Reads while the index is written: every answer holds whole rasters only (never the committed part of one
still being written, never a tile of a removed one), new rasters are seen without a restart, and no request
fails. ``benchmarks/serve_load.py --writes`` runs the same at scale."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import lancedb
import pytest
from conftest import GEORET_EXE, TINY, Server, invoke_cli

from georet.search import open_index
from georet.testing.rasters import write_raster

TILING = ["--tile-size", "64", "--batch-size", "8", "--quiet", *TINY]


def _set_state(db: Path, source: str, state: str) -> None:
    """What a writer's manifest says of ``source`` while it writes (incomplete) and once done (complete)."""
    manifest = json.loads((db / "georet.json").read_text())
    manifest["sources"][source]["state"] = state
    (db / "georet.json").write_text(json.dumps(manifest))


def test_a_raster_not_completely_written_is_never_in_an_answer(tmp_path):
    rasters = [write_raster(tmp_path / f"r{i}.tif", size=(512, 512), seed=i) for i in range(2)]
    db = tmp_path / "idx.db"
    invoke_cli("index", *rasters, "--db", db, *TILING, check=True)
    index = open_index(db, device="cpu")
    queries = ["fields", "a river near houses", "grey roofs"]

    def sources() -> Counter:
        seen = Counter()
        for query in queries:
            seen.update(index.search(query, k=200)["source"])
        return seen

    complete = sources()
    assert set(complete) == {str(r) for r in rasters}
    _set_state(db, str(rasters[1]), "incomplete")  # as the manifest says while its rows are committed
    hidden = sources()
    assert set(hidden) == {str(rasters[0])} and hidden[str(rasters[0])] == complete[str(rasters[0])]
    for store_search in (index.search("a river near houses", k=5), index.search("fields", k=5, when="2016")):
        assert str(rasters[1]) not in set(store_search["source"])
    _set_state(db, str(rasters[1]), "complete")  # the same table version: the result cache must not answer
    assert sources() == complete


@pytest.mark.slow
def test_the_server_answers_consistently_while_rasters_are_added_and_removed(tmp_path):
    first = write_raster(tmp_path / "a.tif", size=(512, 512), seed=1)
    # 576 tiles: committed in three batches (every 256 tiles), so a reader could meet a third or two of it
    added = [write_raster(tmp_path / "big.tif", size=(1536, 1536), seed=10),
             write_raster(tmp_path / "b.tif", size=(512, 512), seed=11)]
    whole = {str(first): 64, str(added[0]): 576, str(added[1]): 64}
    db = tmp_path / "idx.db"
    invoke_cli("index", first, "--db", db, *TILING, check=True)
    server = Server(db)
    answers: list[tuple[float, int, Counter]] = []
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            status, body = server.get("/search?q=fields&k=1000&plain=true")
            counts = Counter(f["properties"]["source"] for f in json.loads(body)["features"]) if status == 200 \
                else Counter()
            answers.append((time.monotonic(), status, counts))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        writer = subprocess.run([GEORET_EXE, "index", *map(str, added), "--db", str(db), *TILING],
                                capture_output=True, text=True, timeout=600)
        indexed_at = time.monotonic()
        assert writer.returncode == 0, writer.stderr
        time.sleep(1.0)
        remover = subprocess.run([GEORET_EXE, "remove", "--db", str(db), first.name], capture_output=True,
                                 text=True, timeout=120)
        removed_at = time.monotonic()
        assert remover.returncode == 0, remover.stderr
        time.sleep(1.0)
    finally:
        stop.set()
        for reader in readers:
            reader.join(timeout=60)
        server.stop()

    assert len(answers) > 20 and {status for _, status, _ in answers} == {200}
    for _, _, counts in answers:  # whole rasters only
        assert all(whole[source] == n for source, n in counts.items()), counts
    assert len({tuple(sorted(c)) for _, _, c in answers}) >= 3  # the readers saw the index grow, then shrink
    seen_added = [t for t, _, c in answers if all(str(r) in c for r in added)]
    assert seen_added and seen_added[0] - indexed_at < 1.0  # the first answer after the writer exits
    after_removal = [c for t, _, c in answers if t > removed_at + 0.5]
    assert after_removal and all(str(first) not in c for c in after_removal)
    assert lancedb.connect(str(db)).open_table("tiles").count_rows() == 576 + 64
