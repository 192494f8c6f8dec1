"""Generate blindspot's tiny synthetic encoders, deterministically, with their manifests.

Both encoders compute a soft colour histogram per pixel: feature k of a pixel is
exp(-|rgb - prototype_k|^2 / sigma^2), on the de-normalised [0, 1] colour. Mid-grey, the
background of every synthetic image, is subtracted so it contributes nothing.

- clip-tiny averages those features over the whole image, then rotates them (an orthogonal
  matrix), so it sees colour statistics only: blind to orientation, position and arrangement.
- dino-tiny averages them over a coarse 4x4 grid of cells and projects the grid, so it keeps
  where each colour is and tells a shape from its mirror image.

Different input sizes, dimensions and output names on purpose, so nothing downstream assumes
one shape.

clip-tiny also gets a text tower, so MMVP-VLM-style statements can be scored with it:

- tokenizer.json: a CLIP-style byte-level BPE tokenizer (the components of
  openai/clip-vit-large-patch14's, `<|startoftext|>` and `<|endoftext|>` as the last two ids)
  whose merges make each colour name and common statement word one token; any other text falls
  apart into smaller pieces, down to single bytes.
- clip-tiny-text.onnx: `input_ids` and `attention_mask` (int64 [batch, seq]) -> `text_embeds`
  [batch, 64], the masked sum of per-token embeddings. A colour name's token embeds as the
  normalised sum of clip-tiny's embeddings of the solid palette colours it names; every other
  token as one small fixed vector. By construction clip-tiny then gets colour statements right
  and is at chance on orientation and position: "... pointing left" and "... pointing right"
  embed identically.
- colour-names.json: every combination of the synthetic palette's levels with its colour name.
- clip-tiny-text.toml: the text tower's manifest.

After writing, the script checks the text tower against clip-tiny on blocks of every palette
colour (as the corpus's singles, preprocessed as clip-tiny's manifest says) and fails unless
each colour statement is closer to its own block than to any block of another colour name, and
left/right statements embed identically. Run from the repository root:

    .venv/bin/python scripts/make_tiny_encoders.py models/tiny
"""

import itertools
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

# Pillow is imported where the check needs it: scripts/export_encoders.py imports this file without it.

OPSET = 17
GREY = np.array([0.5, 0.5, 0.5], dtype=np.float32)
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
# clip-tiny's colour prototypes (the synthetic palette's levels 26, 89, 166, 230 over 255) and width.
CLIP_LEVELS = [0.1, 0.35, 0.65, 0.9]
CLIP_SIGMA = 0.15


def prototypes(levels):
    """Colour prototypes on a grid of levels, without the one at mid-grey."""
    protos = [p for p in itertools.product(levels, repeat=3) if not np.allclose(p, GREY)]
    return np.array(protos, dtype=np.float32)


def rbf(rgb, protos, sigma):
    """The per-pixel features for a batch of colours, as the graph computes them."""
    d2 = ((rgb[:, None, :] - protos[None, :, :]) ** 2).sum(-1)
    return np.exp(-d2 / sigma**2).astype(np.float32)


def feature_nodes(protos, sigma, mean, std, size, fp16_input=False):
    """Nodes from the normalised input to per-pixel features `feat` [N, K, size, size]."""
    k = len(protos)
    pixels = "pixel_values_f32" if fp16_input else "pixel_values"
    inits = [
        numpy_helper.from_array(np.array(std, np.float32).reshape(1, 3, 1, 1), "std"),
        numpy_helper.from_array(np.array(mean, np.float32).reshape(1, 3, 1, 1), "mean"),
        numpy_helper.from_array((2 * protos / sigma**2).reshape(k, 3, 1, 1), "w"),
        numpy_helper.from_array(-(protos**2).sum(1) / sigma**2, "b"),
        numpy_helper.from_array(np.array(1 / sigma**2, np.float32), "inv_s2"),
    ]
    nodes = [helper.make_node("Cast", ["pixel_values"], [pixels], to=TensorProto.FLOAT)] if fp16_input else []
    nodes += [
        helper.make_node("Mul", [pixels, "std"], ["scaled"]),
        helper.make_node("Add", ["scaled", "mean"], ["rgb"]),
        helper.make_node("Conv", ["rgb", "w", "b"], ["cross"], kernel_shape=[1, 1]),
        helper.make_node("ReduceSumSquare", ["rgb"], ["sq"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["sq", "inv_s2"], ["sq_s"]),
        helper.make_node("Sub", ["cross", "sq_s"], ["logit"]),
        helper.make_node("Exp", ["logit"], ["feat"]),
    ]
    return nodes, inits


def save(model_nodes, inits, outputs, size, name, out_dir, fp16_input=False):
    dtype = TensorProto.FLOAT16 if fp16_input else TensorProto.FLOAT
    inputs = [helper.make_tensor_value_info("pixel_values", dtype, ["batch", 3, size, size])]
    write_model(model_nodes, inits, inputs, outputs, name, out_dir)


def write_model(model_nodes, inits, inputs, outputs, name, out_dir):
    graph = helper.make_graph(model_nodes, name, inputs, outputs, inits)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="blindspot/scripts/make_tiny_encoders.py",
    )
    model.ir_version = 8
    onnx.checker.check_model(model)
    (out_dir / f"{name}.onnx").write_bytes(model.SerializeToString())


def clip_tiny(out_dir, rotation, name="clip-tiny", fp16_input=False):
    size, sigma = 64, CLIP_SIGMA
    protos = prototypes(CLIP_LEVELS)
    k = len(protos)
    nodes, inits = feature_nodes(protos, sigma, CLIP_MEAN, CLIP_STD, size, fp16_input)
    inits += [
        numpy_helper.from_array(rbf(GREY[None], protos, sigma)[0], "grey_feat"),
        numpy_helper.from_array(rotation, "proj"),
    ]
    nodes += [
        helper.make_node("GlobalAveragePool", ["feat"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["hist"], axis=1),
        helper.make_node("Sub", ["hist", "grey_feat"], ["centred"]),
        helper.make_node("MatMul", ["centred", "proj"], ["image_embeds"]),
    ]
    outputs = [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", k])]
    save(nodes, inits, outputs, size, name, out_dir, fp16_input)
    return k


def dino_tiny(out_dir, rng):
    size, sigma, grid, dim = 56, 0.2, 4, 96
    protos = prototypes([0.1, 0.5, 0.9])
    k = len(protos)
    cell = size // grid
    projection = (rng.standard_normal((k * grid * grid, dim)) / np.sqrt(dim)).astype(np.float32)
    nodes, inits = feature_nodes(protos, sigma, IMAGENET_MEAN, IMAGENET_STD, size)
    inits += [
        numpy_helper.from_array(rbf(GREY[None], protos, sigma)[0].reshape(k, 1, 1), "grey_feat"),
        numpy_helper.from_array(projection, "proj"),
    ]
    nodes += [
        helper.make_node("AveragePool", ["feat"], ["cells"], kernel_shape=[cell, cell], strides=[cell, cell]),
        helper.make_node("Sub", ["cells", "grey_feat"], ["grid"]),
        helper.make_node("Flatten", ["grid"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "proj"], ["cls"]),
    ]
    outputs = [
        helper.make_tensor_value_info("grid", TensorProto.FLOAT, ["batch", k, grid, grid]),
        helper.make_tensor_value_info("cls", TensorProto.FLOAT, ["batch", dim]),
    ]
    save(nodes, inits, outputs, size, "dino-tiny", out_dir)
    return dim


# The synthetic corpus's palette (src/synth.rs): every channel at one of these levels, and at
# least one channel at 26 or 230 (56 of the 64 combinations).
PALETTE_LEVELS = [26, 89, 166, 230]
# Colour names and the RGB each stands for; a level combination takes the nearest (Euclidean).
COLOUR_NAMES = {
    "red": (220, 30, 30),
    "orange": (240, 140, 30),
    "yellow": (220, 210, 40),
    "green": (30, 160, 40),
    "cyan": (40, 210, 220),
    "blue": (30, 50, 220),
    "purple": (120, 50, 170),
    "pink": (240, 150, 190),
    "brown": (120, 70, 30),
    "black": (25, 25, 25),
    "white": (235, 235, 235),
}
# Words the tiny tokenizer knows whole (one token each); anything else falls apart into smaller
# pieces, down to single bytes, so every text tokenizes.
STATEMENT_WORDS = (
    "a an the of photo picture image this that there it its is are has have with without and or "
    "in on at to from by next beside above below under over near than one two three shape shapes "
    "block blocks square rectangle l t bar leg foot pointing facing points faces left right top "
    "bottom up down upward downward side middle centre center mirror swapped shifted copy colour "
    "color coloured colored"
).split()
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
END_OF_WORD = "</w>"
CONTEXT_LENGTH = 77
# Every token but the colour names embeds as this much of one fixed unit vector.
OTHER_TOKEN_SCALE = 0.01


def bytes_to_unicode():
    """GPT-2 / CLIP's byte -> printable character table, in CLIP's vocabulary order."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def train_bpe(words):
    """Byte-pair merges that make each word (lower-case ASCII) one token, deterministically.

    Each step merges the most frequent adjacent pair over the word list (ties: the smallest pair
    of strings), until every word is a single symbol; the last symbol carries `</w>` as in CLIP.
    """
    symbols = [list(w[:-1]) + [w[-1] + END_OF_WORD] for w in sorted(set(words))]
    merges = []
    while True:
        counts = {}
        for syms in symbols:
            for pair in zip(syms, syms[1:]):
                counts[pair] = counts.get(pair, 0) + 1
        if not counts:
            return merges
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        merges.append(best)
        for syms in symbols:
            i = 0
            while i < len(syms) - 1:
                if (syms[i], syms[i + 1]) == best:
                    syms[i : i + 2] = [best[0] + best[1]]
                i += 1


def tiny_tokenizer(words):
    """A CLIP-style byte-level BPE tokenizer (as openai/clip-vit-large-patch14's) over `words`."""
    chars = list(bytes_to_unicode().values())
    merges = train_bpe(words)
    tokens = chars + [c + END_OF_WORD for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab = {t: i for i, t in enumerate(tokens)}
    assert len(vocab) == len(tokens), "duplicate tokens"
    tok = Tokenizer(
        models.BPE(
            vocab=vocab,
            merges=merges,
            unk_token=EOT,
            continuing_subword_prefix="",
            end_of_word_suffix=END_OF_WORD,
            fuse_unk=False,
            byte_fallback=False,
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(
                Regex(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""),
                behavior="removed",
                invert=True,
            ),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.RobertaProcessing(
        (EOT, vocab[EOT]), (SOT, vocab[SOT]), trim_offsets=False, add_prefix_space=False
    )
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, normalized=True, special=True) for t in (SOT, EOT)])
    return tok


def colour_names():
    """Every combination of the palette levels with its nearest colour name, in palette order."""
    named = []
    for rgb in itertools.product(PALETTE_LEVELS, repeat=3):
        name = min(COLOUR_NAMES, key=lambda n: sum((a - b) ** 2 for a, b in zip(rgb, COLOUR_NAMES[n])))
        named.append((list(rgb), name))
    return named


def solid_clip_embeds(rgbs, rotation):
    """clip-tiny's embedding of a solid image of each colour (0-255), as its graph computes it."""
    protos = prototypes(CLIP_LEVELS)
    rgb = np.array(rgbs, np.float32) / np.float32(255)
    centred = rbf(rgb, protos, CLIP_SIGMA) - rbf(GREY[None], protos, CLIP_SIGMA)[0]
    return centred @ rotation


def clip_tiny_text(out_dir, rotation, tokenizer, named, name="clip-tiny-text"):
    """A bag-of-words text tower in clip-tiny's space: the masked sum of per-token embeddings.

    A colour name's token embeds as the normalised sum of clip-tiny's embeddings of the solid
    colours it names; every other token (the special ones included) as the same small vector,
    so statements that differ only in other words (left / right, top / bottom) embed alike.
    """
    vocab = tokenizer.get_vocab()
    dim = rotation.shape[1]
    u = np.random.default_rng(20240110).standard_normal(dim)
    table = np.tile((OTHER_TOKEN_SCALE * u / np.linalg.norm(u)).astype(np.float32), (len(vocab), 1))
    embeds = solid_clip_embeds([rgb for rgb, _ in named], rotation)
    for colour in COLOUR_NAMES:
        total = embeds[[i for i, (_, n) in enumerate(named) if n == colour]].sum(0)
        table[vocab[colour + END_OF_WORD]] = total / np.linalg.norm(total)
    inits = [
        numpy_helper.from_array(table, "token_embeds"),
        numpy_helper.from_array(np.array([-1], np.int64), "last_axis"),
        numpy_helper.from_array(np.array([1], np.int64), "seq_axis"),
    ]
    nodes = [
        helper.make_node("Gather", ["token_embeds", "input_ids"], ["tokens"], axis=0),
        helper.make_node("Cast", ["attention_mask"], ["mask_f32"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask_f32", "last_axis"], ["mask"]),
        helper.make_node("Mul", ["tokens", "mask"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "seq_axis"], ["text_embeds"], keepdims=0),
    ]
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
        for n in ("input_ids", "attention_mask")
    ]
    outputs = [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", dim])]
    write_model(nodes, inits, inputs, outputs, name, out_dir)
    return dim


TEXT_MANIFEST = """\
# {comment}
# Generated by: .venv/bin/python scripts/make_tiny_encoders.py models/tiny
id = "{id}"
onnx = "{id}.onnx"
tokenizer = "tokenizer.json"
input-ids = "input_ids"
attention-mask = "attention_mask"
output = "text_embeds"
dim = {dim}
context-length = {context}
pad-token = "{pad}"
"""


def block_image(rgb, i):
    """A 40x30 block of one colour on a 128x128 mid-grey canvas, like the corpus's singles."""
    from PIL import Image

    img = Image.new("RGB", (128, 128), (128, 128, 128))
    x, y = 24 + (7 * i) % 50, 10 + (11 * i) % 60
    img.paste(tuple(rgb), (x, y, x + 40, y + 30))
    return img


def clip_pixels(img, size=64):
    """clip-tiny's preprocessing: bicubic resize of the shortest side, centre crop, normalise."""
    from PIL import Image

    w, h = img.size
    scale = size / min(w, h)
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    left, top = (img.size[0] - size) // 2, (img.size[1] - size) // 2
    x = np.asarray(img.crop((left, top, left + size, top + size)), np.float32) / 255
    x = (x - np.array(CLIP_MEAN, np.float32)) / np.array(CLIP_STD, np.float32)
    return x.transpose(2, 0, 1)


def expect(ok, what):
    if not ok:
        sys.exit(f"check failed: {what}")


def check(out_dir):
    """Run the generated text tower against clip-tiny and fail unless it behaves as designed.

    - the tokenizer file loads, every known word is one token, and any text tokenizes;
    - "a photo of a {name} block" is closer to a block of its own colour than to one of any
      other palette colour with another name (every ordered pair);
    - statements that differ only in non-colour words embed identically.
    """
    tok = Tokenizer.from_file(str(out_dir / "tokenizer.json"))
    vocab = tok.get_vocab()
    sot, eot = vocab[SOT], vocab[EOT]
    text_session = ort.InferenceSession(str(out_dir / "clip-tiny-text.onnx"), providers=["CPUExecutionProvider"])
    for word in [*COLOUR_NAMES, *STATEMENT_WORDS]:
        ids = tok.encode(word).ids
        expect(ids == [sot, vocab[word + END_OF_WORD], eot], f"{word!r} is not one token: {ids}")
    ids = tok.encode("Ünïcode,  naïve 42 — it's a RED\tBlock!").ids
    expect(ids[0] == sot and ids[-1] == eot and eot not in ids[1:-1], f"a text with unknown pieces: {ids}")

    def embed_texts(texts):
        ids = np.full((len(texts), CONTEXT_LENGTH), eot, np.int64)
        mask = np.zeros_like(ids)
        for row, text in enumerate(texts):
            enc = tok.encode(text).ids[:CONTEXT_LENGTH]
            ids[row, : len(enc)] = enc
            mask[row, : len(enc)] = 1
        return text_session.run(["text_embeds"], {"input_ids": ids, "attention_mask": mask})[0]

    palette = [(rgb, n) for rgb, n in colour_names() if min(rgb) == 26 or max(rgb) == 230]
    expect(len(palette) == 56, f"{len(palette)} palette colours, expected 56")
    pixels = np.stack([clip_pixels(block_image(rgb, i)) for i, (rgb, _) in enumerate(palette)])
    session = ort.InferenceSession(str(out_dir / "clip-tiny.onnx"), providers=["CPUExecutionProvider"])
    images = session.run(["image_embeds"], {"pixel_values": pixels})[0]
    texts = embed_texts([f"a photo of a {n} block" for _, n in palette])

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cos = unit(texts) @ unit(images).T  # [text of colour i, image of colour j]
    margins = np.array(
        [cos[i, i] - cos[i, j] for i in range(56) for j in range(56) if palette[i][1] != palette[j][1]]
    )
    expect(margins.min() > 0, f"a colour statement prefers another colour's block (margin {margins.min():.4f})")

    same = embed_texts(
        [
            "a photo of an l shape with its foot pointing left",
            "a photo of an l shape with its foot pointing right",
            "a photo of a bar at the top",
            "a photo of a bar at the bottom",
        ]
    )
    expect(np.array_equal(same[0], same[1]) and np.array_equal(same[2], same[3]), "non-colour words matter")
    print(
        f"check: {len(margins)} colour statement/image pairs right, cosine margin min {margins.min():.4f} "
        f"median {np.median(margins):.4f} mean {margins.mean():.4f} max {margins.max():.4f}; "
        "left/right and top/bottom statements embed identically"
    )


MANIFEST = """\
# {comment}
# Generated by: .venv/bin/python scripts/make_tiny_encoders.py models/tiny
id = "{id}"
onnx = "{id}.onnx"
input = "pixel_values"
input-dtype = "{dtype}"
output = "{output}"
dim = {dim}
image-size = {size}
resize-size = {resize}
resize = "shortest-side"
interpolation = "bicubic"
mean = {mean}
std = {std}
"""


def main():
    out_dir = Path(sys.argv[1] if len(sys.argv) > 1 else "models/tiny")
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(20240109)
    k = len(prototypes(CLIP_LEVELS))
    rotation = np.linalg.qr(rng.standard_normal((k, k)))[0].astype(np.float32)
    clip_dim = clip_tiny(out_dir, rotation)
    dino_dim = dino_tiny(out_dir, rng)
    # The same CLIP with a float16 input, so the fp16 path of exported models is tested too.
    clip_tiny(out_dir, rotation, "clip-tiny-fp16", fp16_input=True)
    for name, dtype, comment in [
        ("clip-tiny", "float32", "Tiny CLIP-like encoder: global colour statistics only (blind to layout)."),
        ("clip-tiny-fp16", "float16", "clip-tiny with a float16 input, as --fp16 exports have."),
    ]:
        (out_dir / f"{name}.toml").write_text(
            MANIFEST.format(
                comment=comment, id=name, dtype=dtype, output="image_embeds", dim=clip_dim, size=64, resize=64,
                mean=CLIP_MEAN, std=CLIP_STD,
            )
        )
    (out_dir / "dino-tiny.toml").write_text(
        MANIFEST.format(
            comment="Tiny DINOv2-like encoder: colour statistics on a 4x4 grid (sees layout).",
            id="dino-tiny", dtype="float32", output="cls", dim=dino_dim, size=56, resize=64,
            mean=IMAGENET_MEAN, std=IMAGENET_STD,
        )
    )

    # clip-tiny's text tower, its tokenizer and the colour names behind it.
    named = colour_names()
    tokenizer = tiny_tokenizer([*COLOUR_NAMES, *STATEMENT_WORDS])
    tokenizer.save(str(out_dir / "tokenizer.json"), pretty=True)
    text_dim = clip_tiny_text(out_dir, rotation, tokenizer, named)
    colours = ",\n".join(f"    {json.dumps({'rgb': rgb, 'name': n})}" for rgb, n in named)
    (out_dir / "colour-names.json").write_text(
        f'{{\n  "levels": {json.dumps(PALETTE_LEVELS)},\n  "colours": [\n{colours}\n  ]\n}}\n'
    )
    (out_dir / "clip-tiny-text.toml").write_text(
        TEXT_MANIFEST.format(
            comment="Tiny CLIP-like text tower: colour names only, in clip-tiny's space (blind to layout words).",
            id="clip-tiny-text", dim=text_dim, context=CONTEXT_LENGTH, pad=EOT,
        )
    )
    check(out_dir)


if __name__ == "__main__":
    main()
