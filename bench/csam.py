"""The CSAM signals' costs (issue 19): the term matcher per report, hashing an image, and matching one image
against 1,000,000 PDQ hashes and 10,000,000 exact digests (random lists: never real material).

    .venv/bin/python -m bench.csam            # ~1 min, ~1 GB peak
    .venv/bin/python -m bench.csam --quick    # 100 k PDQ / 1 M exact

Targets: terms 1–2 ms per 100 KB of ordinary text; matching ≤ 50 ms per image. Memory is the index's own
arrays (`KnownMaterial.nbytes`) and the process's peak RSS (VmHWM).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from gateway.known_material import KnownMaterial
from parsers.content_hashes import hash_bytes
from parsers.csam_terms import TermMatcher
from parsers.hash_lists import parse_hash_list
from parsers.types import ContentHash

_WORDS = {
    "en": "the server at http://example.com/path?id=1 sent phishing mail to our customers please check "
    "cp -r logs /tmp and the attached headers thanks regards".split(),
    "de": "der Server unter http://example.com/pfad schickt Phishing an unsere Kunden bitte prüfen "
    "Grüße".split(),
    "ru": "сервер по адресу http://example.com рассылает фишинг нашим клиентам проверьте пожалуйста".split(),
    "zh": "服务器 http://example.com 向我们的客户发送钓鱼邮件，请检查。谢谢".split(),
}


def _text(language: str, size: int) -> str:
    rng = random.Random(size)
    words = _WORDS[language]
    out, length = [], 0
    while length < size:
        word = rng.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def _ms(call: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and p95 milliseconds of `repeat` calls."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def bench_terms() -> dict[str, object]:
    matcher = TermMatcher()
    results: dict[str, object] = {}
    for language in _WORDS:
        for size in (2_048, 100_000):
            text = _text(language, size)
            assert matcher.match(text) == [], language
            median, p95 = _ms(lambda text=text: matcher.match(text), 50 if size > 10_000 else 500)
            results[f"{language}_{round(size / 1000)}KB_ms"] = round(median, 3)
            results[f"{language}_{round(size / 1000)}KB_p95_ms"] = round(p95, 3)
    return results


def bench_hashing() -> dict[str, object]:
    import io

    from PIL import Image

    rng = np.random.default_rng(7)
    small = Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).resize((640, 480))
    photo = small.resize((4000, 3000))
    results: dict[str, object] = {}
    for name, image, fmt in (("png_640x480", small, "PNG"), ("jpeg_4000x3000", photo, "JPEG")):
        out = io.BytesIO()
        image.save(out, fmt)
        data = out.getvalue()
        median, _ = _ms(lambda data=data: hash_bytes(data, []), 10)
        results[f"{name}_ms"] = round(median, 1)
        results[f"{name}_bytes"] = len(data)
    return results


def bench_matching(pdq_count: int, exact_count: int) -> dict[str, object]:
    rng = np.random.default_rng(19)
    started = time.perf_counter()
    per_algorithm = {"md5": exact_count * 4 // 10, "sha1": exact_count * 3 // 10}
    per_algorithm["sha256"] = exact_count - per_algorithm["md5"] - per_algorithm["sha1"]
    widths = {"md5": 16, "sha1": 20, "sha256": 32}
    exact = {
        algorithm: (
            rng.integers(0, 256, (count, widths[algorithm]), dtype=np.uint8),
            rng.integers(0, 4, count, dtype=np.int32),
        )
        for algorithm, count in per_algorithm.items()
    }
    pdq = rng.integers(0, 256, (pdq_count, 32), dtype=np.uint8)
    known = KnownMaterial.from_arrays(
        exact, pdq, rng.integers(0, 4, pdq_count, dtype=np.int32), ("a", "b", "c", "d")
    )
    built = time.perf_counter() - started
    listed = bytes(exact["md5"][0][123])
    queries = [
        ContentHash(
            sha256=rng.bytes(32).hex(), md5=rng.bytes(16).hex(), sha1=rng.bytes(20).hex(), size=1,
            pdq=rng.bytes(32).hex(),
        )
        for _ in range(100)
    ]
    median, p95 = _ms(lambda: known.match(queries[random.randrange(len(queries))]), 100)
    hit = ContentHash(sha256="00" * 32, md5=listed.hex(), sha1="00" * 20, size=1, pdq=pdq[5].tobytes().hex())
    matched = known.match(hit)
    assert any(m.endswith(":md5:0") for m in matched) and any(m.endswith(":pdq:0") for m in matched)
    return {
        "pdq_hashes": pdq_count,
        "exact_digests": exact_count,
        "build_s": round(built, 1),
        "match_per_image_ms": round(median, 1),
        "match_per_image_p95_ms": round(p95, 1),
        "index_mb": round(known.nbytes() / 1024 / 1024),
        "peak_rss_mb": round(_peak_rss_mb()),
    }


def bench_list_parsing(lines: int) -> dict[str, object]:
    rng = random.Random(3)
    text = "\n".join(f"{rng.getrandbits(128):032x}" for _ in range(lines))
    started = time.perf_counter()
    parsed = parse_hash_list(text, "bench")
    elapsed = time.perf_counter() - started
    assert parsed.count() == lines
    return {"lines": lines, "parse_s": round(elapsed, 2), "per_million_s": round(elapsed / lines * 1e6, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.csam", description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    args = parser.parse_args(argv)
    pdq_count, exact_count = (100_000, 1_000_000) if args.quick else (1_000_000, 10_000_000)
    figures = {
        "terms": bench_terms(),
        "hashing": bench_hashing(),
        "list_parsing": bench_list_parsing(200_000 if args.quick else 1_000_000),
        "matching": bench_matching(pdq_count, exact_count),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
