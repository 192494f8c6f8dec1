#!/usr/bin/env python3
"""DINOv2 only where it can matter: how much of a LAION-like corpus needs DINOv2 after CLIP
candidates, and what CLIP-then-DINO saves end to end against both encoders on every image.

The corpus (seeded, PNG and JPEG, folder shards of 1000): --n images in all, of which most are
unrelated (stripes of 4-7 random colours of random widths and a few blocks, so their colour
statistics differ), --groups near-duplicate groups of 2-5 (a copy shifted by a few pixels and
recoloured by a few levels), and --mirrors pairs of a shape and its mirror image (CLIP-blind
under the tiny encoders, whose CLIP sees colour statistics only).

Both orders run on the same corpus, one after the other, each command its own process, timed:
- both: `embed` (CLIP and DINOv2) -> `partition` -> `candidates` -> `filter`
- clip-first: `embed --encoders clip` -> `partition` -> `candidates` -> `dino` -> `filter`
and the two `pairs` tables are compared. The share is `dino`'s own report (candidate images
over all images). With the tiny encoders DINOv2 inference is cheap next to decoding, so the
saving here is a floor: with ViT-L/14 DINOv2 is about half of the GPU time per image.

Usage:
    python scripts/bench_dino_share.py --blindspot target/release/blindspot --n 20000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw


def colour(rng: random.Random) -> tuple[int, int, int]:
    return tuple(rng.randrange(256) for _ in range(3))


def unrelated(rng: random.Random) -> Image.Image:
    """Vertical stripes of 4-7 random colours with random widths, then a few blocks: colour
    statistics spread over several bins in random proportions, as unrelated photos differ."""
    img = Image.new("RGB", (128, 128))
    d = ImageDraw.Draw(img)
    cuts = sorted(rng.sample(range(1, 128), rng.randint(3, 6)))
    for x0, x1 in zip([0, *cuts], [*cuts, 128]):
        d.rectangle([x0, 0, x1, 128], fill=colour(rng))
    for _ in range(rng.randint(1, 3)):
        x, y = rng.randrange(96), rng.randrange(96)
        w, h = rng.randint(8, 32), rng.randint(8, 32)
        d.rectangle([x, y, x + w, y + h], fill=colour(rng))
    return img


def near_copy(img: Image.Image, rng: random.Random) -> Image.Image:
    dx, dy = rng.randint(-4, 4), rng.randint(-4, 4)
    shifted = Image.new("RGB", img.size)
    shifted.paste(img, (dx, dy))
    shift = rng.randint(-4, 4)
    return shifted.point(lambda v: max(0, min(255, v + shift)))


def mirror_pair(rng: random.Random) -> tuple[Image.Image, Image.Image]:
    img = Image.new("RGB", (128, 128), colour(rng))
    d = ImageDraw.Draw(img)
    c = colour(rng)
    d.rectangle([16, 16, 40, 112], fill=c)
    d.rectangle([16, 88, 96, 112], fill=c)
    return img, img.transpose(Image.FLIP_LEFT_RIGHT)


def write_corpus(out: Path, n: int, groups: int, mirrors: int, seed: int) -> None:
    rng = random.Random(seed)
    images: list[Image.Image] = []
    for _ in range(mirrors):
        images.extend(mirror_pair(rng))
    for _ in range(groups):
        base = unrelated(rng)
        images.append(base)
        for _ in range(rng.randint(1, 4)):
            images.append(near_copy(base, rng))
    while len(images) < n:
        images.append(unrelated(rng))
    order = list(range(len(images)))
    rng.shuffle(order)
    for i, k in enumerate(order):
        folder = out / f"{i // 1000:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        ext = "png" if i % 2 else "jpg"
        images[k].save(folder / f"{i:07d}.{ext}", quality=92)


def run(binary: str, args: list[str]) -> tuple[float, dict]:
    env = dict(os.environ, RUST_LOG="warn")
    start = time.perf_counter()
    out = subprocess.run([binary, *args, "--json"], capture_output=True, text=True, env=env)
    took = time.perf_counter() - start
    if out.returncode != 0:
        sys.exit(f"blindspot {' '.join(args)} failed ({out.returncode}):\n{out.stderr}")
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    return took, json.loads(lines[-1]) if lines else {}


def pairs(binary: str, root: Path) -> list[str]:
    out = subprocess.run(
        [binary, "sql", "--root", str(root), "--format", "csv",
         "SELECT a, b, clip_sim, dino_sim FROM pairs ORDER BY a, b"],
        capture_output=True, text=True, check=True,
    )
    return out.stdout.splitlines()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blindspot", required=True)
    p.add_argument("--n", type=int, default=20000)
    p.add_argument("--groups", type=int, default=200)
    p.add_argument("--mirrors", type=int, default=50)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", default="/tmp/bench-dino-share")
    a = p.parse_args()
    work = Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    corpus = work / "corpus"
    t = time.perf_counter()
    write_corpus(corpus, a.n, a.groups, a.mirrors, a.seed)
    print(f"corpus: {a.n} images ({a.groups} near-duplicate groups, {a.mirrors} mirror pairs) "
          f"in {time.perf_counter() - t:.1f}s under {corpus}")

    b = a.blindspot
    both, first = work / "both", work / "clip-first"
    steps_both = [
        ("embed", ["embed", str(corpus), "--out", str(both)]),
        ("partition", ["partition", "--root", str(both)]),
        ("candidates", ["candidates", "--root", str(both)]),
        ("filter", ["filter", "--root", str(both)]),
    ]
    steps_first = [
        ("embed --encoders clip", ["embed", str(corpus), "--out", str(first), "--encoders", "clip"]),
        ("partition", ["partition", "--root", str(first)]),
        ("candidates", ["candidates", "--root", str(first)]),
        ("dino", ["dino", "--root", str(first)]),
        ("filter", ["filter", "--root", str(first)]),
    ]
    totals = {}
    share = None
    for name, steps in [("both encoders on everything", steps_both), ("CLIP, then DINOv2 on candidates", steps_first)]:
        total = 0.0
        print(f"\n{name}:")
        for label, args in steps:
            took, summary = run(b, args)
            total += took
            extra = ""
            if label == "dino":
                share = summary
                extra = (f"  ({summary['needed']} of {summary['images']} images, "
                         f"share {summary['share'] * 100:.2f}%)")
            print(f"  {label:<24} {took:8.2f} s{extra}")
        print(f"  {'total':<24} {total:8.2f} s")
        totals[name] = total
    same = pairs(b, both) == pairs(b, first)
    t_both, t_first = totals.values()
    print(f"\nshare of images that needed DINOv2: {share['share'] * 100:.2f}% "
          f"({share['candidate_images']} candidate images of {share['images']})")
    print(f"end to end: clip-first {t_first:.2f} s / both {t_both:.2f} s = {t_first / t_both:.3f}")
    print(f"pairs identical: {same} ({len(pairs(b, both)) - 1} pairs)")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
