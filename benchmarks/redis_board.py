"""The Redis board's costs against a local redis-server: round trips per second, memory per URL.

    python benchmarks/redis_board.py [--urls 20000 --seconds 10]

Starts its own redis-server on a free 127.0.0.1 port (no persistence) and one
RedisBoard in this process, then measures, each run bounded by ``--urls`` and
``--seconds``:

* lease+report: ``lease(1)`` then ``report`` of that URL, as a tutorial-style
  worker does: pairs per second.
* exchange x1: one ``exchange`` per URL (its report and the next lease in one
  script), as our workers do when busy: calls per second.
* exchange x64: 64 URLs per exchange: URLs per second.
* memory: the broker's ``used_memory`` growth per URL, queued and then final
  (the final result stays in the results stream).
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the tests' redis-server helper

from crawler.board.memory import BoardPolicy  # noqa: E402 - needs the path above
from crawler.board.redis import RedisBoard  # noqa: E402
from crawler.model.outcome import Attempt  # noqa: E402
from tests.redis_server import RedisServer, redis_server_path  # noqa: E402

POLICY = BoardPolicy(lease_timeout=60.0, host_delay=0.0, host_concurrency=1000,
                     batch_size=64)


def stored(url: str) -> Attempt:
    return Attempt(url=url, ok=True, path="images/http/h/" + url.rsplit("/", 1)[-1],
                   bytes=16384, sha256="ab" * 32, content_type="image/png", width=640,
                   height=480, elapsed_s=0.0123)


def fill(board: RedisBoard, urls: int) -> None:
    with board._client.pipeline(transaction=True) as pipe:
        board.queue_puts(pipe, (
            (f"http://img{n % 50}.example:8080/a/folder/of/images/picture-{n:08d}.png",
             f"img{n % 50}.example:8080", "http://site.example/", None) for n in range(urls)))
        pipe.execute()


def lease_report(board: RedisBoard, urls: int, seconds: float) -> float:
    done, started = 0, time.perf_counter()
    while done < urls and time.perf_counter() - started < seconds:
        tasks = board.lease("w", 1, 0)["tasks"]
        if not tasks:
            break
        board.report("w", [stored(tasks[0][0])])
        done += 1
    return done / (time.perf_counter() - started)


def exchanges(board: RedisBoard, batch: int, urls: int, seconds: float) -> float:
    done, number, reports = 0, 0, []
    started = time.perf_counter()
    while done < urls and time.perf_counter() - started < seconds:
        number += 1
        tasks = board.exchange("x", number, reports, [], batch, 0)["tasks"]
        done += len(reports)
        if not tasks:
            break
        reports = [stored(url) for url, _ in tasks]
    return done / (time.perf_counter() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--urls", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args(argv)
    if redis_server_path() is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as folder:
        server = RedisServer(Path(folder)).start()
        try:
            client = server.client()
            rows = []
            for name, run in (
                    ("lease+report pairs/s", lambda b: lease_report(b, args.urls, args.seconds)),
                    ("exchange x1 calls/s", lambda b: exchanges(b, 1, args.urls, args.seconds)),
                    ("exchange x64 URLs/s",
                     lambda b: exchanges(b, 64, args.urls, args.seconds))):
                board = RedisBoard(client, f"bench-{secrets.token_hex(4)}", POLICY)
                fill(board, args.urls)
                rows.append((name, run(board)))
            client.flushdb()
            before = int(client.info("memory")["used_memory"])
            board = RedisBoard(client, "memory", POLICY)
            fill(board, args.urls)
            queued = int(client.info("memory")["used_memory"])
            exchanges(board, 64, args.urls, 600.0)
            final = int(client.info("memory")["used_memory"])
            rows.append(("bytes per queued URL", (queued - before) / args.urls))
            rows.append(("bytes per final URL", (final - before) / args.urls))
            for name, value in rows:
                print(f"{name:24} {value:10.0f}")
        finally:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
