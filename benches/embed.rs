//! End-to-end embed throughput: the synthetic corpus in a `memory://` store, through fetch,
//! decode, the tiny encoders on ONNX Runtime and the Parquet writer, into a fresh run root.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use blindspot::embed::{embed, EmbedParams};
use blindspot::encoder::{load_manifest, OnnxEncoder, SessionParams};
use blindspot::progress::NoProgress;
use blindspot::storage::Location;
use blindspot::synth::{synth, SynthParams};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let corpus = Location::open("memory://bench-embed/corpus").unwrap();
    let truth = rt
        .block_on(synth(&corpus, &SynthParams::default()))
        .unwrap();
    let input = Location::open("memory://bench-embed/corpus/images").unwrap();
    let tiny = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tiny");
    let run = AtomicUsize::new(0);
    let mut group = c.benchmark_group("embed");
    group.sample_size(10);
    group.throughput(Throughput::Elements(truth.keys.len() as u64));
    group.bench_function("synthetic-corpus/tiny-encoders", |b| {
        b.iter(|| {
            let p = SessionParams::default();
            let clip = OnnxEncoder::load(load_manifest(&tiny.join("clip-tiny.toml")).unwrap(), &p)
                .unwrap();
            let dino = OnnxEncoder::load(load_manifest(&tiny.join("dino-tiny.toml")).unwrap(), &p)
                .unwrap();
            let root = Location::open(&format!(
                "memory://bench-embed/run-{}",
                run.fetch_add(1, Ordering::Relaxed)
            ))
            .unwrap();
            let summary = rt
                .block_on(embed(
                    &input,
                    &root,
                    clip,
                    Some(dino),
                    &EmbedParams::default(),
                    Arc::new(NoProgress),
                ))
                .unwrap();
            assert_eq!(summary.images as usize, truth.keys.len());
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
