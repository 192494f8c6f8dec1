#!/usr/bin/env python3
"""Images/s per core of the two-encoder preprocessing: the Python way vs blindspot.

Python way (single thread): every file is read into memory first; per image, Pillow decodes ONCE
(open + EXIF transpose + RGB), then both manifests' transforms run via
reference_preprocess.preprocess (= torchvision Resize/CenterCrop/ToTensor/Normalize on a PIL image).

blindspot: `BINARY bench-preprocess --images DIR --clip M --dino M --threads 1 --repeat R`, which
prints one JSON line such as {"images": 200, "seconds": 1.23, "images_per_sec": 162.6, "threads": 1}.

Without --images a deterministic corpus of --count JPEGs is generated in a temporary directory.
--real swaps the tiny manifests for CLIP ViT-L/14- and DINOv2-like ones (224 / 256->224 bicubic).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL
from PIL import Image, ImageDraw, ImageFilter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from reference_preprocess import load_image, load_manifest, preprocess  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = REPO / "models" / "tiny" / "clip-tiny.toml"
DEFAULT_DINO = REPO / "models" / "tiny" / "dino-tiny.toml"
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp"}
MIN_TRIAL_SECONDS = 3.0
TRIALS = 3

REAL_CLIP_TOML = """\
# Mimics openai/clip-vit-large-patch14 preprocessing (only the preprocessing fields matter here).
id = "clip-vit-l14"
onnx = "clip-vit-l14.onnx"
input = "pixel_values"
input-dtype = "float32"
output = "image_embeds"
dim = 768
image-size = 224
resize-size = 224
resize = "shortest-side"
interpolation = "bicubic"
mean = [0.48145466, 0.4578275, 0.40821073]
std = [0.26862954, 0.26130258, 0.27577711]
"""

REAL_DINO_TOML = """\
# Mimics DINOv2 ViT-L/14 evaluation preprocessing (Resize(256, bicubic), CenterCrop(224), ImageNet stats).
id = "dinov2-vitl14"
onnx = "dinov2-vitl14.onnx"
input = "pixel_values"
input-dtype = "float32"
output = "pooler_output"
dim = 1024
image-size = 224
resize-size = 256
resize = "shortest-side"
interpolation = "bicubic"
mean = [0.485, 0.456, 0.406]
std = [0.229, 0.224, 0.225]
"""

# Realistic photo sizes (w, h): landscape camera/web sizes and their portrait counterparts.
CORPUS_SIZES = [
    (640, 480), (800, 600), (1024, 768), (500, 375),
    (640, 480), (800, 600), (1024, 768), (500, 375),
    (480, 640), (600, 800), (768, 1024), (375, 500),
]
EXIF_ORIENTATION = 0x0112


def _synthetic_photo(rng: np.random.Generator, w: int, h: int) -> Image.Image:
    """Smooth, natural-ish content: a lit gradient, a few blurred shapes, mild sensor noise."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = xx / w, yy / h
    c0, c1, c2 = (rng.uniform(20, 235, size=3).astype(np.float32) for _ in range(3))
    angle = rng.uniform(0, 2 * np.pi)
    t = np.clip(0.5 + (u - 0.5) * np.cos(angle) + (v - 0.5) * np.sin(angle), 0, 1)[..., None]
    base = (1 - t) * c0 + t * c1
    cx, cy = rng.uniform(0.2, 0.8, size=2)
    vignette = np.exp(-((u - cx) ** 2 + (v - cy) ** 2) * rng.uniform(1.0, 3.0))[..., None]
    base = base * (0.6 + 0.4 * vignette) + c2 * 0.15 * (1 - vignette)
    img = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8), "RGB")

    layer = img.copy()
    draw = ImageDraw.Draw(layer)
    for _ in range(int(rng.integers(3, 8))):
        x0, y0 = rng.uniform(-0.1, 0.9) * w, rng.uniform(-0.1, 0.9) * h
        sw, sh = rng.uniform(0.08, 0.45) * w, rng.uniform(0.08, 0.45) * h
        colour = tuple(int(c) for c in rng.integers(0, 256, size=3))
        box = [x0, y0, x0 + sw, y0 + sh]
        if rng.random() < 0.6:
            draw.ellipse(box, fill=colour)
        else:
            draw.rectangle(box, fill=colour)
    layer = layer.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(2.0, 8.0))))
    img = Image.blend(img, layer, 0.85)

    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, 3.0, size=arr.shape).astype(np.float32)
    return Image.fromarray(np.clip(arr + 0.5, 0, 255).astype(np.uint8), "RGB")


def corpus_size(rng: np.random.Generator, i: int, sizes: str) -> tuple[int, int]:
    """(w, h) of image i: `fixed` cycles CORPUS_SIZES; `laion` draws LAION's shape (shorter side
    256 to 768, aspect w/h 0.6 to 1.8); `large` camera photos (shorter side 2000 to 3000, the
    longer at most 4000, where DCT scaling applies)."""
    if sizes == "fixed":
        return CORPUS_SIZES[i % len(CORPUS_SIZES)]
    lo, hi, cap = (256, 768, 10**6) if sizes == "laion" else (2000, 3000, 4000)
    short = int(rng.integers(lo, hi + 1))
    aspect = float(rng.uniform(0.6, 1.8))
    long = min(cap, int(round(short * max(aspect, 1 / aspect))))
    return (long, short) if aspect >= 1 else (short, long)


def generate_corpus(directory: Path, count: int, seed: int = 20240601, sizes: str = "fixed") -> None:
    """`count` JPEGs (quality 90), deterministic for a given seed and Pillow version. Every 7th image
    is stored landscape with EXIF Orientation=6 (a phone portrait), so decoding must transpose it."""
    rng = np.random.default_rng(seed)
    for i in range(count):
        w, h = corpus_size(rng, i, sizes)
        img = _synthetic_photo(rng, w, h)
        kwargs = {"quality": 90}
        if i % 7 == 6:
            exif = Image.Exif()
            exif[EXIF_ORIENTATION] = 6
            kwargs["exif"] = exif
        img.save(directory / f"img_{i:05d}.jpg", "JPEG", **kwargs)


def list_images(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def python_pass(blobs: list[bytes], manifests: list[dict]) -> None:
    for blob in blobs:
        img = load_image(blob)  # decode once
        for manifest in manifests:
            preprocess(img, manifest)


def bench_python(blobs: list[bytes], manifests: list[dict]) -> tuple[float, int, float]:
    """Best of 3 trials; each trial repeats whole passes over the corpus until at least ~3 s of work.
    Returns (images_per_sec, passes in the best trial, its seconds)."""
    python_pass(blobs, manifests)  # warm-up
    best = (0.0, 0, 0.0)
    for _ in range(TRIALS):
        passes = 0
        t0 = time.perf_counter()
        while True:
            python_pass(blobs, manifests)
            passes += 1
            elapsed = time.perf_counter() - t0
            if elapsed >= MIN_TRIAL_SECONDS:
                break
        rate = len(blobs) * passes / elapsed
        if rate > best[0]:
            best = (rate, passes, elapsed)
    return best


def bench_blindspot(binary: str, images: Path, clip: Path, dino: Path, repeat: int, extra=()) -> dict:
    cmd = [binary, "bench-preprocess", "--images", str(images), "--clip", str(clip),
           "--dino", str(dino), "--threads", "1", "--repeat", str(repeat), *extra]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"blindspot failed (exit {proc.returncode}): {' '.join(cmd)}")
    for line in reversed(proc.stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "images_per_sec" in result:
                return result
    raise SystemExit(f"blindspot printed no JSON line with images_per_sec:\n{proc.stdout}{proc.stderr}")


def describe(manifest: dict) -> str:
    s = manifest["image-size"]
    if manifest.get("resize", "shortest-side") == "squash":
        return f"squash->{s} {manifest.get('interpolation', 'bicubic')}"
    return f"short {manifest.get('resize-size', s)}->crop {s} {manifest.get('interpolation', 'bicubic')}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, help="directory of images (default: generate a corpus)")
    ap.add_argument("--count", type=int, default=200, help="images to generate without --images (200)")
    ap.add_argument("--sizes", choices=["fixed", "laion", "large"], default="fixed",
                    help="generated sizes: fixed (500-1024 px, the earlier corpus), laion (shorter side "
                         "256-768, aspect 0.6-1.8), large (2000-4000 px photos)")
    ap.add_argument("--clip", type=Path, help=f"CLIP-like manifest (default {DEFAULT_CLIP})")
    ap.add_argument("--dino", type=Path, help=f"DINOv2-like manifest (default {DEFAULT_DINO})")
    ap.add_argument("--real", action="store_true",
                    help="use CLIP ViT-L/14 and DINOv2-like manifests (224 and 256->224 bicubic)")
    ap.add_argument("--blindspot", help="path to the blindspot binary (omit to time Python only)")
    ap.add_argument("--repeat", type=int, default=3, help="--repeat passed to blindspot (3)")
    ap.add_argument("--keep", action="store_true", help="keep the generated corpus / manifests")
    args = ap.parse_args()
    if args.real and (args.clip or args.dino):
        ap.error("--real replaces --clip/--dino; give one or the other")

    tmp = Path(tempfile.mkdtemp(prefix="blindspot-bench-"))
    try:
        if args.real:
            clip_path, dino_path = tmp / "clip-vit-l14.toml", tmp / "dinov2-vitl14.toml"
            clip_path.write_text(REAL_CLIP_TOML)
            dino_path.write_text(REAL_DINO_TOML)
        else:
            clip_path, dino_path = args.clip or DEFAULT_CLIP, args.dino or DEFAULT_DINO
        for p in (clip_path, dino_path):
            if not p.is_file():
                ap.error(f"manifest {p} not found (pass --clip/--dino, or --real)")
        manifests = [load_manifest(clip_path), load_manifest(dino_path)]

        if args.images:
            image_dir = args.images
        else:
            image_dir = tmp / "corpus"
            image_dir.mkdir()
            t0 = time.perf_counter()
            generate_corpus(image_dir, args.count, sizes=args.sizes)
            print(f"generated {args.count} JPEGs in {image_dir} ({time.perf_counter() - t0:.1f} s)",
                  file=sys.stderr, flush=True)
        paths = list_images(image_dir)
        if not paths:
            ap.error(f"no images in {image_dir}")
        blobs = [p.read_bytes() for p in paths]

        py_ips, passes, best = bench_python(blobs, manifests)
        runs = []
        if args.blindspot:
            # DCT-scaled JPEG decoding is part of blindspot's method (PIL has it too, as `draft`,
            # but torchvision pipelines do not use it), so both figures are shown.
            for label, extra in [("blindspot", ()), ("blindspot, no DCT scaling", ("--no-dct-scaling",))]:
                runs.append((label, bench_blindspot(args.blindspot, image_dir, clip_path, dino_path, args.repeat, extra)))

        mb = sum(map(len, blobs)) / 1e6
        print(f"corpus:     {image_dir} ({len(blobs)} files, {mb:.1f} MB)")
        print(f"clip:       {clip_path} [{describe(manifests[0])}]")
        print(f"dino:       {dino_path} [{describe(manifests[1])}]")
        print(f"python:     {platform.python_version()}, Pillow {PIL.__version__}, numpy {np.__version__}; "
              f"best of {TRIALS} trials: {passes} pass(es) in {best:.2f} s")
        print()
        print(f"{'':<28} {'images':>8} {'img/s':>10} {'ratio':>8}")
        print(f"{'python (PIL + numpy)':<28} {len(blobs):>8} {py_ips:>10.1f} {'1.00x':>8}")
        for label, bs in runs:
            bs_ips = float(bs["images_per_sec"])
            print(f"{label:<28} {len(blobs):>8} {bs_ips:>10.1f} {bs_ips / py_ips:>7.2f}x")
            if int(bs.get("images", -1)) not in (len(blobs), len(blobs) * args.repeat):
                print(f"note: blindspot reported images={bs.get('images')}, Python saw {len(blobs)}",
                      file=sys.stderr)
            if int(bs.get("threads", 1)) != 1:
                print(f"note: blindspot reported threads={bs.get('threads')}", file=sys.stderr)
        print("(images/s per core: both sides single-threaded; one image = one decode + both transforms)")
        return 0
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
