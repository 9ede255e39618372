"""Speed and recall of the gallery index kinds, and the server's requests/s for search by id.

Builds a seeded synthetic gallery of 200,000 unit vectors of 128 dimensions (4,000 class centres, per-class noise,
so that near neighbours are mostly of one class, as a trained embedding's are) and 1,000 fresh query vectors from
the same classes, then for each kind of `unseen.retrieval.index`:

  build s       new_faiss_index on the whole gallery (IVF: k-means training included)
  batch q/s     GalleryIndex.search of the 1,000 queries at once, k=10 (faiss candidates + exact re-scoring)
  single q/s    the same, one query per call on one faiss thread (what a server request does), 300 queries
  recall@10     |top-10 ∩ exact top-10| / 10, against faiss' brute-force inner product, mean over the queries

Ratios are against the exact flat index, measured in the same process. Then the index is written to disk with a
tiny untrained network's checkpoint, `unseen serve` runs in a subprocess on 127.0.0.1, and 8 client threads with
keep-alive connections send GET /api/search/{random row}?k=10 for 20 s (bounded: at most 1,000,000 requests);
the same load on GET /api/health, the framework's floor, is the reference. Client and server share this
machine's cores, so requests/s is a lower bound on what a separate client would see.

Usage: python benchmarks/search_speed.py [--small] [--server-kind hnsw|ivf|flat] [--seconds 20] [--clients 8]
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

FULL = {"rows": 200_000, "classes": 4_000, "dim": 128}
SMALL = {"rows": 20_000, "classes": 400, "dim": 128}
QUERIES, K, SINGLE = 1_000, 10, 300
MAX_REQUESTS = 1_000_000


def gallery(rows: int, classes: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(rows × dim gallery, QUERIES × dim queries): unit vectors around seeded class centres."""
    rng = np.random.default_rng(seed)
    centres = _unit(rng.standard_normal((classes, dim)))
    noise = rng.uniform(0.6, 1.4, classes) / np.sqrt(dim)

    def draw(n: int) -> np.ndarray:
        labels = rng.integers(0, classes, n)
        return _unit(centres[labels] + noise[labels, None] * rng.standard_normal((n, dim))).astype(np.float32)

    return draw(rows), draw(QUERIES)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure_kinds(x: np.ndarray, queries: np.ndarray) -> dict[str, dict]:
    import faiss

    from unseen.retrieval.index import GalleryIndex, new_faiss_index
    from unseen.retrieval.sources import Item

    _, exact = faiss.knn(queries, x, K, metric=faiss.METRIC_INNER_PRODUCT)
    items = [Item(f"/synthetic/{i}.png", "") for i in range(len(x))]
    results = {}
    for kind in ("flat", "ivf", "hnsw"):
        start = time.perf_counter()
        faiss_index, parameters = new_faiss_index(kind, x)
        build = time.perf_counter() - start
        index = GalleryIndex({"kind": kind, "parameters": parameters, "model": {}}, faiss_index, x, items)
        batch = min(_timed(lambda index=index: index.search(queries, K)) for _ in range(3))
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # as `unseen serve` runs: one query per request, requests in parallel
        single = _timed(lambda index=index: [index.search(queries[i : i + 1], K) for i in range(SINGLE)])
        faiss.omp_set_num_threads(threads)
        _, found = index.search(queries, K)
        recall = float(np.mean([len(set(f) & set(e)) / K for f, e in zip(found.tolist(), exact.tolist(),
                                                                          strict=True)]))
        results[kind] = {"index": index, "parameters": parameters, "build": build, "batch_qps": QUERIES / batch,
                         "single_qps": SINGLE / single, "recall": recall}
        print(f"{kind:5} built in {build:6.1f} s  {parameters}", flush=True)
    return results


def _timed(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def serve_and_load(index, folder: Path, seconds: float, clients: int) -> dict[str, dict]:
    """Write `index` with a tiny checkpoint, run `unseen serve` on loopback, load it; {route: stats}."""
    import torch

    import unseen
    from unseen.config import load_config
    from unseen.models.network import build_model
    from unseen.models.spec import ModelSpec
    from unseen.retrieval.index import model_reference
    from unseen.train.checkpoint import CHECKPOINT_FORMAT, save_checkpoint

    torch.manual_seed(0)
    spec = ModelSpec(backbone="convnet", in_chans=1, embedding_dim=index.dim, channels=(4, 8), image_size=28)
    checkpoint = folder / "model.pt"
    save_checkpoint({"format": CHECKPOINT_FORMAT, "model_spec": spec.to_dict(), "model": build_model(spec).state_dict(),
                     "config": load_config(None, [f"model.embedding_dim={index.dim}"]).to_dict(), "class_names": [],
                     "commit": "benchmark", "step": 0}, checkpoint)
    index.info["model"] = model_reference(unseen.load(checkpoint))
    index.save(folder / "index")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "unseen", "serve", str(folder / "index"), "--port", str(port),
                               "--no-access-log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(port, server)
        rng = np.random.default_rng(1)
        rows = rng.integers(0, index.count, MAX_REQUESTS)
        stats = {"health": _load(port, lambda i: "/api/health", seconds, clients)}
        stats["search"] = _load(port, lambda i: f"/api/search/{rows[i]}?k={K}", seconds, clients)
    finally:
        server.terminate()
        server.wait(timeout=30)
    return stats


def _wait_for(port: int, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError("unseen serve exited before it answered")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError("unseen serve did not answer within 120 s")


def _load(port: int, path_of, seconds: float, clients: int) -> dict:
    """`clients` threads, each with one keep-alive connection, requesting until the deadline (or MAX_REQUESTS)."""
    counter = iter(range(MAX_REQUESTS))
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    deadline = time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            start = time.perf_counter()
            connection.request("GET", path_of(i))
            response = connection.getresponse()
            response.read()
            mine.append(time.perf_counter() - start)
            if response.status != 200:
                with lock:
                    errors[0] += 1
        with lock:
            latencies.extend(mine)
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": errors[0], "rps": len(latencies) / elapsed,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="a 20,000-vector gallery for a quick smoke run")
    parser.add_argument("--server-kind", default="hnsw", choices=("flat", "ivf", "hnsw"))
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration per route")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    import faiss

    shape = SMALL if args.small else FULL
    x, queries = gallery(**shape)
    print(f"load average before: {os.getloadavg()[0]:.2f} (other processes share the cores)")
    print(f"synthetic gallery: {shape['rows']:,} × {shape['dim']} unit vectors around {shape['classes']:,} centres, "
          f"{QUERIES:,} queries, k={K}, seed 0; faiss {faiss.__version__} with {faiss.omp_get_max_threads()} threads, "
          f"{os.cpu_count()} CPUs")
    results = measure_kinds(x, queries)
    flat = results["flat"]
    print(f"\n{'kind':6}{'build s':>9}{'batch q/s':>11}{'single q/s':>12}{'recall@10':>11}   ratios to flat: "
          "build, batch q/s, single q/s")
    for kind, r in results.items():
        print(f"{kind:6}{r['build']:9.2f}{r['batch_qps']:11.0f}{r['single_qps']:12.0f}{r['recall']:11.4f}   "
              f"{r['build'] / flat['build']:.1f}×, {r['batch_qps'] / flat['batch_qps']:.2f}×, "
              f"{r['single_qps'] / flat['single_qps']:.2f}×")
    with tempfile.TemporaryDirectory() as tmp:
        stats = serve_and_load(results[args.server_kind]["index"], Path(tmp), args.seconds, args.clients)
    print(f"\nserver ({args.server_kind} index, {args.clients} clients, {args.seconds:.0f} s per route, loopback):")
    for route, s in stats.items():
        print(f"  {route:7} {s['rps']:8.0f} requests/s  p50 {s['p50']:6.1f} ms  p99 {s['p99']:6.1f} ms  "
              f"({s['requests']:,} requests, {s['errors']} errors)")
    print(f"  search by id / health: {stats['search']['rps'] / stats['health']['rps']:.2f}×")


if __name__ == "__main__":
    main()
