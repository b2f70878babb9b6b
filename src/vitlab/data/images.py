"""Reading image files: one place that turns a path into pixels.

``load_image`` returns a PIL image (for ``vitlab predict``); ``read_image``
returns a uint8 tensor ``(C, H, W)`` for datasets, decoded by torchvision's
libjpeg/libpng decoders (about three times faster than PIL on small JPEGs),
with PIL as the fallback for the formats torchvision does not decode (BMP,
TIFF, PPM/PGM) and for torchvision versions without these decoders (they are
deprecated since 0.29 in favour of TorchCodec; their deprecation warning is
silenced here). Both raise ``UserError`` with one line naming the file when it
is missing, empty, corrupt or not an image.

``scan_images`` lists the image files of a folder tree by extension only
(``os.scandir``, no file is opened), so that 50,000 files are listed in well
under a second; files with other extensions are counted, not listed.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import UserError

try:  # torchvision's decoders: fast, deprecated since 0.29 in favour of TorchCodec; PIL when gone
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
except ImportError:  # pragma: no cover
    decode_image = decode_jpeg = None
else:
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)

__all__ = ["IMG_EXTENSIONS", "load_image", "read_image", "read_images", "scan_images"]


def _read_bytes(path: str | os.PathLike) -> bytes:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image file")
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"image not found: {path}") from None
    except OSError as e:
        raise UserError(f"cannot read image {path}: {e.strerror or e}") from None
    if not raw:
        raise UserError(f"cannot read image {path}: the file is empty")
    return raw


def _pil_from_bytes(raw: bytes, path) -> Image.Image:
    try:
        img = Image.open(io.BytesIO(raw))
        img.load()  # decode now, so that a truncated file fails here and not later
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        if "cannot identify image file" in reason:
            reason = "not an image file"
        raise UserError(f"cannot read image {path}: {reason} (corrupt or not an image; "
                        "delete or replace the file)") from None
    return img


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file as a PIL image (any mode; convert as needed)."""
    return _pil_from_bytes(_read_bytes(path), path)


def read_image(path: str | os.PathLike, channels: int = 3) -> torch.Tensor:
    """Decode an image file to a uint8 tensor (channels, H, W); grey images
    are expanded to RGB and colour images turned grey as ``channels`` asks,
    an alpha channel is dropped."""
    return _decode(_read_bytes(path), path, channels)


def _mode(channels: int):
    return ImageReadMode.RGB if channels == 3 else ImageReadMode.GRAY


def _decode(raw: bytes, path, channels: int) -> torch.Tensor:
    if decode_image is not None:
        try:
            return decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=_mode(channels))
        except RuntimeError:
            pass  # a format torchvision does not decode, or a corrupt file: PIL decides
    img = _pil_from_bytes(raw, path)
    return pil_to_tensor(img.convert("RGB" if channels == 3 else "L"))


def read_images(paths: list[str], channels: int = 3) -> list[torch.Tensor]:
    """``read_image`` of many files; JPEGs are decoded in one batched call
    (about twice as fast as one call per file)."""
    raws = [_read_bytes(p) for p in paths]
    if decode_jpeg is not None and raws and all(p.lower().endswith((".jpg", ".jpeg")) for p in paths):
        try:
            return decode_jpeg([torch.frombuffer(bytearray(r), dtype=torch.uint8) for r in raws],
                               mode=_mode(channels))
        except (RuntimeError, TypeError, AttributeError, ValueError):
            pass  # a corrupt file, or a torchvision without batched decoding: one by one
    return [_decode(r, p, channels) for r, p in zip(raws, paths, strict=True)]


def scan_images(folder: str | os.PathLike) -> tuple[list[str], int]:
    """All image files under ``folder`` (recursively, sorted) and the number of
    other files skipped. Hidden files and folders are ignored."""
    paths: list[str] = []
    skipped = 0
    stack = [os.fspath(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_dir():
                    stack.append(e.path)
                elif e.name.lower().endswith(IMG_EXTENSIONS):
                    paths.append(e.path)
                else:
                    skipped += 1
    paths.sort()
    return paths, skipped
