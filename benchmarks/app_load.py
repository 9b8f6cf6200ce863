"""Load test of the web app: N parallel gradio_client calls of /anonymize (blur) on a real photo.

Starts the app on a free loopback port (no weights needed), sends every request at once, and prints
the latency percentiles. Bounded: one photo, `--clients` calls (24 by default), 127.0.0.1 only.

    python benchmarks/app_load.py [--clients 24] [--method blur] [--photo PATH] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path


def group_photo() -> Path:
    import insightface

    return Path(os.path.dirname(insightface.__file__)) / "data" / "images" / "t1.jpg"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def run_load(url: str, photo: Path, clients: int, method: str) -> dict:
    from gradio_client import Client, handle_file

    connections = [Client(url, verbose=False) for _ in range(clients)]
    latencies: list[float] = []
    errors: list[str] = []
    start = threading.Barrier(clients)

    def one(client) -> None:
        start.wait()
        began = time.perf_counter()
        try:
            client.predict(handle_file(photo), method=method, api_name="/anonymize")
        except Exception as error:  # counted, not raised: the figures say how many failed
            errors.append(f"{type(error).__name__}: {error}")
            return
        latencies.append(time.perf_counter() - began)

    threads = [threading.Thread(target=one, args=(c,)) for c in connections]
    wall = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - wall
    figures = {
        "clients": clients,
        "method": method,
        "photo": photo.name,
        "ok": len(latencies),
        "errors": len(errors),
        "wall_s": round(wall, 2),
    }
    if latencies:
        figures.update(
            p50_s=round(statistics.median(latencies), 2),
            p95_s=round(percentile(latencies, 0.95), 2),
            max_s=round(max(latencies), 2),
            min_s=round(min(latencies), 2),
        )
    if errors:
        figures["first_error"] = errors[0][:300]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--method", default="blur")
    parser.add_argument("--photo", type=Path, default=None, help="default: insightface's t1.jpg (6 faces)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if not 1 <= args.clients <= 64:
        parser.error("--clients must be between 1 and 64")
    from faceanon.webapp.testing import running_app

    photo = args.photo or group_photo()
    with (
        tempfile.TemporaryDirectory(prefix="faceanon-load-") as workdir,
        running_app({"HF_HOME": os.path.join(workdir, "hf")}, workdir=workdir) as url,
    ):
        run_load(url, photo, 2, args.method)  # warm-up: models loaded, first-call costs paid
        figures = run_load(url, photo, args.clients, args.method)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
