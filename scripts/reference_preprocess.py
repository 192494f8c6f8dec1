#!/usr/bin/env python3
"""Independent reference of blindspot's encoder preprocessing, done with Pillow + numpy.

It reproduces what torchvision does on a PIL image for

    Resize(resize_size, interpolation)   # shortest-side; or Resize((S, S)) for "squash"
    CenterCrop(image_size)
    ToTensor()
    Normalize(mean, std)

so the Rust pipeline can be checked against it without installing torch. The manifest's
convention keys are honoured: `alpha` (`drop`: PIL's convert("RGB"); `white`: Hugging Face
transformers' convert_to_rgb, alpha_composite over white), `crop-rounding` (`half-even`:
torchvision's round; `floor`: transformers' `//`) and `exif` (`apply`: ImageOps.exif_transpose;
`ignore`: a plain Image.open).

Usage:
    reference_preprocess.py IMAGE MANIFEST OUT.f32

writes 3 * S * S little-endian float32 values (CHW, S = image-size) to OUT.f32 and prints nothing
on success. As a module: `load_image(path_or_bytes)`, `load_manifest(path)` and
`preprocess(pil_image, manifest_dict) -> np.ndarray` (float32, shape (3, S, S)).
"""

from __future__ import annotations

import io
import os
import sys
import tomllib
from typing import Any, Mapping, Optional, Union

import numpy as np
from PIL import Image, ImageOps

__all__ = [
    "load_image",
    "load_manifest",
    "preprocess",
    "resized_output_size",
    "center_crop_box",
]

# torchvision's InterpolationMode -> PIL resample filter (torchvision.transforms.functional.pil_modes_mapping).
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
}
_RESIZE_MODES = ("shortest-side", "squash")


def load_image(
    src: Union[str, os.PathLike, bytes, bytearray, memoryview],
    exif: bool = True,
    rgb: bool = True,
    draft: Optional[tuple[int, int]] = None,
) -> Image.Image:
    """Decode once: open with PIL, apply the EXIF orientation (unless `exif` is false), convert
    to RGB (unless `rgb` is false: `preprocess` then converts as the manifest says). `draft`:
    ask the JPEG decoder for a reduced scale whose size is at least this (PIL's `draft`, which
    scales in the DCT by 1/2, 1/4 or 1/8)."""
    if isinstance(src, (bytes, bytearray, memoryview)):
        src = io.BytesIO(src)
    with Image.open(src) as img:
        if draft is not None:
            img.draft("RGB", draft)
        img = ImageOps.exif_transpose(img) if exif else img.copy()
    return img.convert("RGB") if rgb else img


def to_rgb(img: Image.Image, alpha: str) -> Image.Image:
    """`drop`: PIL's convert("RGB"). `white`: transformers' convert_to_rgb."""
    if img.mode == "RGB":
        return img
    if alpha == "white":
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def load_manifest(path: Union[str, os.PathLike]) -> dict:
    with open(path, "rb") as f:
        return tomllib.load(f)


def resized_output_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(new_w, new_h) of torchvision Resize(int): the short side becomes `size`, the long side is
    truncated, exactly as torchvision.transforms.functional._compute_resized_output_size
    (no max_size): new_long = int(size * long / short)."""
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = size, int(size * long / short)
    return (new_short, new_long) if width <= height else (new_long, new_short)


def center_crop_box(width: int, height: int, crop: int, rounding: str = "half-even") -> tuple[int, int, int, int]:
    """PIL crop box (left, top, right, bottom) of a centre crop on an image at least `crop` on
    each side: Python's round() (half to even), as torchvision uses, or floor division, as
    transformers' center_crop does."""
    if rounding == "floor":
        top, left = (height - crop) // 2, (width - crop) // 2
    else:
        top = int(round((height - crop) / 2.0))
        left = int(round((width - crop) / 2.0))
    return left, top, left + crop, top + crop


def _center_crop(img: Image.Image, crop: int, rounding: str = "half-even") -> Image.Image:
    w, h = img.size
    if crop > w or crop > h:
        # torchvision pads with zeros first: left/top get the floor half, right/bottom the rest.
        pad_l = (crop - w) // 2 if crop > w else 0
        pad_t = (crop - h) // 2 if crop > h else 0
        pad_r = (crop - w + 1) // 2 if crop > w else 0
        pad_b = (crop - h + 1) // 2 if crop > h else 0
        padded = Image.new(img.mode, (w + pad_l + pad_r, h + pad_t + pad_b), 0)
        padded.paste(img, (pad_l, pad_t))
        img = padded
        w, h = img.size
        if (w, h) == (crop, crop):
            return img
    return img.crop(center_crop_box(w, h, crop, rounding))


def _get(manifest: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = manifest.get(key, manifest.get(key.replace("-", "_"), default))
    if value is None:
        raise ValueError(f"manifest lacks `{key}`")
    return value


def preprocess(pil_image: Image.Image, manifest: Mapping[str, Any]) -> np.ndarray:
    """One image (already decoded, EXIF-transposed, RGB) -> float32 array (3, S, S), normalised."""
    image_size = int(_get(manifest, "image-size"))
    mode = str(_get(manifest, "resize", "shortest-side"))
    interp = str(_get(manifest, "interpolation", "bicubic"))
    if mode not in _RESIZE_MODES:
        raise ValueError(f"resize = {mode!r}: expected one of {_RESIZE_MODES}")
    if interp not in _RESAMPLE:
        raise ValueError(f"interpolation = {interp!r}: expected one of {tuple(_RESAMPLE)}")
    mean = np.asarray(_get(manifest, "mean"), dtype=np.float32)
    std = np.asarray(_get(manifest, "std"), dtype=np.float32)
    if mean.shape != (3,) or std.shape != (3,):
        raise ValueError("mean and std must have 3 values")
    resample = _RESAMPLE[interp]

    img = to_rgb(pil_image, str(_get(manifest, "alpha", "drop")))
    w, h = img.size
    if mode == "shortest-side":
        resize_size = int(_get(manifest, "resize-size", image_size))
        target = resized_output_size(w, h, resize_size)
    else:
        target = (image_size, image_size)
    if target != (w, h):  # torchvision returns the image untouched when the size already matches
        img = img.resize(target, resample=resample)  # reducing_gap=None, as torchvision
    if mode == "shortest-side":
        img = _center_crop(img, image_size, str(_get(manifest, "crop-rounding", "half-even")))

    # ToTensor: uint8 HWC -> float32 CHW / 255; Normalize: (x - mean) / std, all in float32.
    x = np.asarray(img, dtype=np.uint8).transpose(2, 0, 1).astype(np.float32)
    x /= np.float32(255.0)
    x -= mean[:, None, None]
    x /= std[:, None, None]
    return x


def main(argv: list[str]) -> int:
    draft = None
    if len(argv) == 7 and argv[4] == "--draft":
        draft = (int(argv[5]), int(argv[6]))
        argv = argv[:4]
    if len(argv) != 4:
        print(f"usage: {os.path.basename(argv[0])} IMAGE MANIFEST OUT.f32 [--draft W H]", file=sys.stderr)
        return 2
    image_path, manifest_path, out_path = argv[1:]
    manifest = load_manifest(manifest_path)
    exif = str(_get(manifest, "exif", "apply")) == "apply"
    out = preprocess(load_image(image_path, exif=exif, rgb=False, draft=draft), manifest)
    np.ascontiguousarray(out, dtype="<f4").tofile(out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
