//! Pair mining on synthetic data: the cell join kernel (pairs/s and GFLOP/s, against the
//! machine's own matrix product rate measured alongside), partition assignment (vectors/s),
//! index build and candidate search per 100k vectors at 768 dimensions, and the filter query
//! (`sql/pairs.sql`) per million candidates.

use std::sync::Arc;

use arrow::array::{FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array};
use blindspot::embed::EmbedCommit;
use blindspot::mine::ann::{self, IndexParams};
use blindspot::mine::candidates::{self, CandidateParams};
use blindspot::mine::vectors::UniqueVectors;
use blindspot::progress::NoProgress;
use blindspot::storage::Location;
use blindspot::table::schema::{self, EncoderMeta, FloatType};
use blindspot::table::{self, io, Catalog, Commit, CommitSet};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// A xorshift generator, so the data never depends on a crate's RNG.
struct Rng(u64);

impl Rng {
    fn unit(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f32 / (1u64 << 53) as f32 - 0.5
    }
    fn vector(&mut self, dim: usize) -> Vec<f32> {
        let v: Vec<f32> = (0..dim).map(|_| self.unit()).collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }
}

/// `n` unit vectors, 2% of them in planted groups of 5 near-duplicates.
fn planted(n: usize, dim: usize) -> UniqueVectors {
    let mut rng = Rng(42);
    let mut data = Vec::with_capacity(n * dim);
    while data.len() < n * dim {
        if rng.unit() < -0.49 {
            let centre = rng.vector(dim);
            for _ in 0..5 {
                let v: Vec<f32> = centre.iter().map(|c| c + rng.unit() * 0.01).collect();
                let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                data.extend(v.into_iter().map(|x| x / norm));
            }
        } else {
            data.extend(rng.vector(dim));
        }
    }
    data.truncate(n * dim);
    UniqueVectors {
        keys: (0..n).map(|i| format!("k{i:09}")).collect(),
        data,
        dim,
        duplicates: vec![],
        shards: vec![],
        rows: n as u64,
    }
}

fn vector_column(dim: usize, values: Vec<f32>) -> Arc<FixedSizeListArray> {
    let field = Arc::new(arrow::datatypes::Field::new(
        "item",
        arrow::datatypes::DataType::Float32,
        false,
    ));
    Arc::new(FixedSizeListArray::new(
        field,
        dim as i32,
        Arc::new(Float32Array::from(values)),
        None,
    ))
}

/// A run root in memory with `images` embeddings and `pairs` random candidates.
fn filter_root(rt: &tokio::runtime::Runtime, images: usize, pairs: usize) -> Location {
    let root = Location::open("memory://bench-mining/filter").unwrap();
    let (cdim, ddim) = (16, 256);
    let meta = |id: &str, dim| EncoderMeta {
        id: id.into(),
        digest: "bench".into(),
        dim,
    };
    let schema = schema::embeddings(&meta("c", cdim), Some(&meta("d", ddim)), FloatType::F32);
    let mut rng = Rng(7);
    let keys: Vec<String> = (0..images).map(|i| format!("k{i:09}")).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(keys.iter())),
            Arc::new(StringArray::from_iter_values(
                keys.iter().map(|k| format!("memory://bench/{k}.jpg")),
            )),
            Arc::new(StringArray::from_iter_values(keys.iter().map(|_| "part-0"))),
            Arc::new(UInt32Array::from_iter_values(keys.iter().map(|_| 1))),
            Arc::new(UInt32Array::from_iter_values(keys.iter().map(|_| 1))),
            Arc::new(StringArray::from_iter_values(keys.iter())),
            vector_column(cdim, (0..images).flat_map(|_| rng.vector(cdim)).collect()),
            vector_column(ddim, (0..images).flat_map(|_| rng.vector(ddim)).collect()),
            arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, images),
            arrow::array::new_null_array(&arrow::datatypes::DataType::Utf8, images),
        ],
    )
    .unwrap();
    let mut cand: Vec<(usize, usize)> = (0..pairs)
        .map(|_| {
            let a = ((rng.unit() + 0.5) * images as f32) as usize % images;
            let b = ((rng.unit() + 0.5) * images as f32) as usize % images;
            (a.min(b), a.max(b) + usize::from(a == b))
        })
        .filter(|p| p.1 < images)
        .collect();
    cand.sort();
    let cbatch = RecordBatch::try_new(
        schema::candidates(),
        vec![
            Arc::new(StringArray::from_iter_values(
                cand.iter().map(|p| keys[p.0].as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                cand.iter().map(|p| keys[p.1].as_str()),
            )),
            Arc::new(Float32Array::from_iter_values(cand.iter().map(|_| 0.97))),
        ],
    )
    .unwrap();
    rt.block_on(async {
        let catalog = Catalog::new(&root);
        let embeddings = io::write_batches(&root, "embeddings/part-0", &schema, &[batch])
            .await
            .unwrap();
        let errors = RecordBatch::new_empty(schema::errors());
        let errors = io::write_batches(&root, "errors/part-0", &schema::errors(), &[errors])
            .await
            .unwrap();
        let record = EmbedCommit {
            shard: "part-0".into(),
            shard_uri: "memory://bench/part-0".into(),
            id: "part-0".into(),
            embeddings: embeddings[0].path.clone(),
            errors: errors[0].path.clone(),
            rows: images as u64,
            error_rows: 0,
            encoders: Some(["c".into(), "d".into()]),
            skipped_rows: 0,
            version: blindspot::VERSION.into(),
        };
        let commit = Commit::new("part-0", 1, &record)
            .unwrap()
            .with(&table::EMBEDDINGS, embeddings)
            .with(&table::ERRORS, errors);
        catalog.commit(CommitSet::EMBED, &commit).await.unwrap();
        let objects = io::write_batches(
            &root,
            "candidates/candidates",
            &schema::candidates(),
            &[cbatch],
        )
        .await
        .unwrap();
        let commit = Commit::new("", 2, &serde_json::json!({"pairs": cand.len()}))
            .unwrap()
            .with(&table::CANDIDATES, objects);
        catalog
            .commit(CommitSet::CANDIDATES, &commit)
            .await
            .unwrap();
    });
    root
}

fn bench(c: &mut Criterion) {
    let n = 100_000;
    let vectors = planted(n, 768);
    let params = IndexParams::default();
    let mut group = c.benchmark_group("mining");
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("index-build/100k x 768", |b| {
        b.iter(|| ann::build(&vectors, &params, &NoProgress).unwrap())
    });
    let built = ann::build(&vectors, &params, &NoProgress).unwrap();
    let cp = CandidateParams::default();
    group.bench_function("candidates-search/100k x 768", |b| {
        b.iter(|| candidates::index_pairs(&built, &vectors, &cp, &NoProgress).unwrap())
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let root = filter_root(&rt, 200_000, 1_000_000);
    group.throughput(Throughput::Elements(1_000_000));
    // Each run takes another threshold, so every run filters the whole table (a run with the
    // same threshold would find nothing new).
    let mut run = 0u32;
    group.bench_function("filter-query/1M candidates", |b| {
        b.iter(|| {
            run += 1;
            let dino_max = 0.6 + (run % 2) as f32 * 1e-3;
            rt.block_on(blindspot::sift::filter::filter(&root, dino_max))
                .unwrap()
        })
    });
    group.finish();
}

/// The cell join: a block of 4096 x 768 joined with itself (upper triangle, as a cell's home
/// block is) and with a 4096-row guest block, against a plain matrix product of the same
/// shapes (the machine's GEMM rate through ndarray); and placing vectors on 400 centroids.
fn cells(c: &mut Criterion) {
    use blindspot::mine::{join, kmeans, partition::Placer};
    use ndarray::Array2;
    let (n, dim) = (4096, 768);
    let a = planted(n, dim);
    let b = planted(2 * n, dim);
    let x = Array2::from_shape_vec((n, dim), a.data.clone()).unwrap();
    let y = Array2::from_shape_vec((n, dim), b.data[n * dim..].to_vec()).unwrap();
    let mut group = c.benchmark_group("cells");
    group.sample_size(10);
    // Multiply-adds of a full n x n x dim product, as GFLOP (2 flops each).
    let full = (n * n) as u64;
    group.throughput(Throughput::Elements(full));
    group.bench_function("gemm/4096 x 4096 x 768 (ndarray)", |bench| {
        bench.iter(|| x.dot(&y.t()))
    });
    group.bench_function("join/home x guests 4096 x 4096 x 768", |bench| {
        bench.iter(|| join::threshold_join(x.view(), y.view(), false, 0.95, &|_, _| true))
    });
    group.throughput(Throughput::Elements(full / 2));
    group.bench_function("join/home x home 4096 x 768 (upper)", |bench| {
        bench.iter(|| join::threshold_join(x.view(), x.view(), true, 0.95, &|_, _| true))
    });
    let sample = Array2::from_shape_vec((2 * n, dim), b.data.clone()).unwrap();
    let centroids = kmeans::train(sample.view(), 400, 5, 1).centroids;
    let placer = Placer::new(centroids, 0.95, Some(2));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("placement/4096 x 768 on 400 cells (probe 2)", |bench| {
        bench.iter(|| placer.place(x.view()))
    });
    group.finish();
}

criterion_group!(benches, cells, bench);
criterion_main!(benches);
