"""Reading image files: one place that turns a path into pixels.

``load_image`` returns a PIL image (for ``vitlab predict``); ``read_image``
returns a uint8 tensor ``(C, H, W)`` for datasets, decoded by torchvision's
libjpeg/libpng decoders (about three times faster than PIL on small JPEGs),
with PIL as the fallback for the formats torchvision does not decode (BMP,
TIFF, PPM/PGM) and for torchvision versions without these decoders (they are
deprecated since 0.29 in favour of TorchCodec; their deprecation warning is
silenced here). Both raise ``UserError`` with one line naming the file when it
is missing, empty, corrupt or not an image.

Every mode and size comes out as uint8 with the channels asked for: grey,
palette (``P``, ``PA``), bilevel, CMYK, YCbCr and alpha images are converted
(alpha dropped), 16-bit and 32-bit grey (``I;16``, ``I``) and float (``F``)
images are scaled to 8 bits (``I``: as 16-bit when a value exceeds 255; ``F``:
as 0..1 when no value exceeds 1, else as 0..255), and an animated GIF gives
its first frame.

``check_image`` says why a file would fail ``read_image`` (empty, unreadable,
truncated, not an image), or ``None``: it decodes the whole file (large JPEGs
by PIL at 1/8 scale: all of the compressed data is still read, so a truncated
file fails; about twice as fast on a 6-megapixel photo).

``scan_images`` lists the image files of a folder tree by extension only
(``os.scandir``, no file is opened), so that 50,000 files are listed in well
under a second; files with other extensions are counted, not listed.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS
from torchvision.transforms.v2.functional import pil_to_tensor

from ..errors import UserError
from ..files import file_error

try:  # torchvision's decoders: fast, deprecated since 0.29 in favour of TorchCodec; PIL when gone
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg
except ImportError:  # pragma: no cover
    decode_image = decode_jpeg = None
else:
    warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                            category=DeprecationWarning)

__all__ = ["IMG_EXTENSIONS", "check_image", "convert_image", "load_image", "read_image", "read_images",
           "scan_images"]


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
    webp_to_grey = channels == 1 and raw[8:12] == b"WEBP"  # torchvision would warn and return colour
    if decode_image is not None and not webp_to_grey:
        try:
            x = decode_image(torch.frombuffer(bytearray(raw), dtype=torch.uint8), mode=_mode(channels))
        except RuntimeError:
            pass  # a format torchvision does not decode, or a corrupt file: PIL decides
        else:
            if x.dtype == torch.uint16:  # 16-bit PNG
                x = (x.to(torch.float32) / 257).round_().to(torch.uint8)
            if x.dtype == torch.uint8 and x.ndim == 3 and x.shape[0] == channels:
                return x
            # otherwise (an animated GIF's frames, a colour GIF for grey): PIL converts
    return pil_to_tensor(convert_image(_pil_from_bytes(raw, path), channels, path))


def convert_image(img: Image.Image, channels: int = 3, path=None) -> Image.Image:
    """Any PIL mode -> ``RGB`` (``channels`` 3) or ``L`` (1); high bit depths
    are scaled to 8 bits, not clipped; alpha is dropped."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):
        a = np.asarray(img, dtype=np.float32)
        if img.mode == "F":
            a = a * 255 if a.size and a.max() <= 1 else a
        elif img.mode.startswith("I;16") or (a.size and a.max() > 255):
            a = np.clip(a, 0, 65535) / 257
        img = Image.fromarray(np.clip(a, 0, 255).round().astype(np.uint8), "L")
    elif img.mode in ("P", "PA") and "transparency" in img.info:
        img = img.convert("RGBA")  # as PIL advises for palette images with transparency
    try:
        return img.convert("RGB" if channels == 3 else "L")
    except (ValueError, OSError) as e:
        where = f"cannot read image {path}: " if path is not None else ""
        raise UserError(f"{where}cannot convert an image of mode {img.mode} ({e})") from None


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


_DRAFT_BYTES = 256 * 1024  # JPEGs larger than this are checked at 1/8 scale


def check_image(path: str | os.PathLike, channels: int = 3) -> str | None:
    """Why ``read_image(path, channels)`` would fail, in a few words, or
    ``None`` when the file decodes. JPEGs are decoded as ``read_image`` does
    (large ones by PIL at 1/8 scale), other formats by PIL, which
    ``read_image`` falls back to (and which, unlike libpng, prints nothing
    on a bad file)."""
    try:
        raw = _read_bytes(path)
        if raw[:2] != b"\xff\xd8":  # not a JPEG
            convert_image(_pil_from_bytes(raw, path), channels, path)
        elif len(raw) <= _DRAFT_BYTES:
            _decode(raw, path, channels)
        else:
            with Image.open(io.BytesIO(raw)) as img:
                img.draft("RGB" if channels == 3 else "L", (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
    except UserError as e:
        msg, prefix = str(e), f"cannot read image {path}: "
        return (msg[len(prefix):] if msg.startswith(prefix) else msg).split(" (corrupt or not an image")[0]
    except Exception as e:  # noqa: BLE001 - whatever a decoder raises, the file cannot be used
        return (str(e).splitlines() or [type(e).__name__])[0]
    return None


def scan_images(folder: str | os.PathLike, others: list[str] | None = None) -> tuple[list[str], int]:
    """All image files under ``folder`` (recursively, sorted) and the number of
    other files skipped; with ``others`` (a list), the paths of those other files
    are appended to it. Hidden files and folders are ignored. Symbolic links to
    folders are followed; a link that loops (to itself, or back to a folder above
    it) and an unreadable folder are a ``UserError`` that names them."""
    paths: list[str] = []
    skipped = 0
    stack = [os.fspath(folder)]
    seen = {os.path.realpath(stack[0])}
    while stack:
        current = stack.pop()
        try:
            with os.scandir(current) as entries:
                for e in entries:
                    if e.name.startswith("."):
                        continue
                    if e.is_dir():
                        real = os.path.realpath(e.path)
                        if e.is_symlink() and (real in seen or any(real == s or s.startswith(real + os.sep)
                                                                   for s in seen)):
                            raise UserError(f"{e.path} is a symbolic link back to {real}, a folder it is in: "
                                            "a loop; remove the link")
                        seen.add(real)
                        stack.append(e.path)
                    elif e.name.lower().endswith(IMG_EXTENSIONS):
                        paths.append(e.path)
                    else:
                        skipped += 1
                        if others is not None:
                            others.append(e.path)
        except OSError as e:
            raise file_error("list the images in", getattr(e, "filename", None) or current, e) from None
    paths.sort()
    return paths, skipped
