"""Images generated for the hashing tests: never real material. Discs of random colours on white: enough
structure for PDQ to be confident (quality 100), and a different seed is a different picture."""

from __future__ import annotations

import io
import zipfile

import numpy as np
from PIL import Image, ImageDraw


def picture(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", (640, 480), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    for _ in range(40):
        x, y, r = int(rng.integers(0, 640)), int(rng.integers(0, 480)), int(rng.integers(10, 120))
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 255, 3)))
    return image.resize(size) if size != (640, 480) else image


def encoded(image: Image.Image, fmt: str = "PNG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def original() -> bytes:
    return encoded(picture(1))


def resized_copy() -> bytes:
    """The original at half size, re-encoded as a lossy JPEG: a perceptual hash still matches it."""
    return encoded(picture(1, (320, 240)), "JPEG", quality=60)


def unrelated() -> bytes:
    return encoded(picture(2))


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()
