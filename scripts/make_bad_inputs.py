"""Write a folder of awkward and broken inputs, as the tests use them.

Each file's name says what it is and what blindspot must do with it. Good-but-awkward images
(CMYK, 16-bit, greyscale, alpha, EXIF-rotated, animated, WebP) must be embedded; broken ones
(truncated, empty, text, decompression bomb) must become `errors` rows. A webdataset tar with
junk members goes to a separate folder.

    .venv/bin/python scripts/make_bad_inputs.py OUT_DIR
"""

import io
import struct
import sys
import tarfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def photo(w, h, seed):
    """A smooth, photo-like RGB image."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    base = np.stack([x / w, y / h, (x + y) / (w + h)], -1) * 200 + 30
    base += rng.normal(0, 4, base.shape)
    return Image.fromarray(base.clip(0, 255).astype(np.uint8), "RGB")


def jpeg_bytes(img, **kw):
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90, **kw)
    return buf.getvalue()


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(w=100_000, h=100_000):
    """A tiny PNG that declares a huge size (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def main(out):
    out = Path(out)
    good, bad, tars = out / "images", out / "images", out / "tars"
    good.mkdir(parents=True, exist_ok=True)
    tars.mkdir(parents=True, exist_ok=True)

    photo(96, 72, 1).save(good / "good-rgb.jpg", quality=90)
    photo(80, 60, 2).convert("CMYK").save(good / "good-cmyk.jpg", quality=90)
    Image.fromarray((np.asarray(photo(70, 50, 3).convert("L"), np.uint16) * 257).astype("<u2")).save(good / "good-16bit.png")
    photo(64, 64, 4).convert("L").save(good / "good-grey.png")
    rgba = photo(64, 48, 5).convert("RGBA")
    rgba.putalpha(128)
    rgba.save(good / "good-rgba.png")
    # Stored 80x40; EXIF orientation 6 says "rotate 90 clockwise to view", so upright it is 40x80.
    exif = Image.Exif()
    exif[0x0112] = 6
    (good / "good-exif-rotated.jpg").write_bytes(jpeg_bytes(photo(80, 40, 6), exif=exif.tobytes()))
    frames = [photo(48, 48, 7 + i) for i in range(3)]
    frames[0].save(good / "good-animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    photo(64, 64, 10).save(good / "good-lossy.webp", quality=80)

    whole = jpeg_bytes(photo(120, 90, 11))
    (bad / "bad-truncated.jpg").write_bytes(whole[: len(whole) // 2])
    (bad / "bad-empty.jpg").write_bytes(b"")
    (bad / "bad-text.jpg").write_text("this is not an image, only a text file named .jpg\n")
    (bad / "bad-bomb.png").write_bytes(bomb_png())

    with tarfile.open(tars / "00000.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            tar.addfile(info, io.BytesIO(data))

        add("000000000.jpg", jpeg_bytes(photo(64, 64, 12)))
        add("000000000.json", b'{"key": "000000000", "status": "success"}')
        add("000000000.txt", b"a caption")
        add(".DS_Store", b"\x00\x00\x00\x01Bud1")
        add("notes.md", b"# junk that is not part of any sample\n")
        add("000000001.jpg", jpeg_bytes(photo(64, 64, 13)))
        add("000000001.txt", b"another caption")
        add("000000002.jpg", b"\xff\xd8\xff\xe0 definitely not a full jpeg")


if __name__ == "__main__":
    main(sys.argv[1])
