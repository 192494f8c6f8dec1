//! Decode + preprocess per image, for both encoders at once (decode once, two transforms),
//! on photo-sized JPEGs: with the tiny encoders' geometry and with CLIP ViT-L/14 + DINOv2's.

use std::hint::black_box;
use std::path::PathBuf;

use blindspot::encoder::preprocess::prepare;
use blindspot::encoder::preprocess::{DecodeParams, Preprocessor, Transform};
use blindspot::encoder::{load_manifest_unchecked, Manifest};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn photo_jpeg(w: u32, h: u32) -> bytes::Bytes {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            ((x ^ y) & 0x3f) as u8 + 96,
        ])
    });
    let mut buf = std::io::Cursor::new(Vec::new());
    img.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
        &mut buf, 90,
    ))
    .unwrap();
    bytes::Bytes::from(buf.into_inner())
}

fn tiny() -> (Manifest, Manifest) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
    (
        load_manifest_unchecked(&dir.join("clip-tiny.toml")).unwrap(),
        load_manifest_unchecked(&dir.join("dino-tiny.toml")).unwrap(),
    )
}

/// The geometry of CLIP ViT-L/14 (224, bicubic) and DINOv2 (256 then crop 224, bicubic).
fn real() -> (Manifest, Manifest) {
    let (mut clip, mut dino) = tiny();
    clip.image_size = 224;
    clip.resize_size = Some(224);
    dino.image_size = 224;
    dino.resize_size = Some(256);
    (clip, dino)
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode+preprocess");
    group.throughput(Throughput::Elements(1));
    for (size, (w, h)) in [("640x480", (640, 480)), ("1024x768", (1024, 768))] {
        let jpeg = photo_jpeg(w, h);
        for (name, (clip, dino)) in [("tiny", tiny()), ("vit-l-14", real())] {
            for dct in [true, false] {
                let mut pre = Preprocessor::new(vec![Transform::new(&clip), Transform::new(&dino)]);
                let params = DecodeParams {
                    dct_scaling: dct,
                    ..Default::default()
                };
                let id = format!("{name}/{size}/{}", if dct { "dct" } else { "full" });
                group.bench_function(id, |b| {
                    b.iter(|| black_box(prepare(&mut pre, &jpeg, &params).unwrap()))
                });
            }
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
