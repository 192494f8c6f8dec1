//! Evaluation overheads, apart from the models themselves: the rule grader per response, and
//! `eval mllm` per question against an instant loopback endpoint (HTTP, base64 images, the
//! cache, grading and the tables), uncached and cached.

use blindspot::eval::grade;
use blindspot::eval::mllm;
use blindspot::eval::mllm::MllmEntry;
use blindspot::progress::NoProgress;
use blindspot::storage::Location;
use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

// The tests' scripted server; the bench uses only part of it.
#[allow(dead_code)]
#[path = "../tests/support/openai.rs"]
mod openai;

const RESPONSES: [&str; 8] = [
    "(a)",
    "The answer is (b).",
    "A dog is facing the camera, so the door is open.",
    "B) Closed",
    "Answer: **B**",
    "It looks closed to me.",
    "I cannot tell from this image.",
    "The door is not open; it is closed.",
];

fn graders(c: &mut Criterion) {
    let choices = grade::parse_options("(a) Open (b) Closed").expect("options");
    let mut g = c.benchmark_group("grade");
    g.throughput(Throughput::Elements(RESPONSES.len() as u64));
    g.bench_function("rules", |b| {
        b.iter(|| {
            RESPONSES
                .iter()
                .filter_map(|r| grade::rules(r, &choices))
                .count()
        })
    });
    g.finish();
}

/// An MMVP benchmark of `n` questions with 32x32 PNG images, in memory.
async fn benchmark(name: &str, n: u32) -> Location {
    let root = Location::open(&format!("memory://{name}")).expect("memory store");
    let mut sheet = String::from("Index,Question,Options,Correct Answer,Pattern\n");
    for i in 1..=n {
        let img = image::RgbImage::from_pixel(32, 32, image::Rgb([i as u8, 90, 200]));
        let mut png = std::io::Cursor::new(Vec::new());
        img.write_to(&mut png, image::ImageFormat::Png)
            .expect("png");
        root.put(
            &format!("MMVP Images/{i}.png"),
            Bytes::from(png.into_inner()),
        )
        .await
        .expect("put");
        sheet.push_str(&format!(
            "{i},Item {i}: is the door open?,(a) Open (b) Closed,(a),Color\n"
        ));
    }
    root.put("Questions.csv", Bytes::from(sheet))
        .await
        .expect("put");
    root
}

fn mllm_overhead(c: &mut Criterion) {
    const N: u32 = 64;
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let server = openai::Server::start(|l, _| {
        openai::Reply::Text(RESPONSES[l.prompt.len() % RESPONSES.len()].to_string())
    });
    let bench = rt.block_on(benchmark("bench-eval-mmvp", N));
    let entry = MllmEntry::new(&server.url, "bench");
    let eval = |root: &Location| {
        rt.block_on(mllm::eval_entry(&entry, &bench, root, &NoProgress))
            .expect("eval")
    };
    let mut g = c.benchmark_group("eval_mllm");
    g.throughput(Throughput::Elements(N as u64));
    g.sample_size(10);
    let mut run = 0;
    g.bench_function("uncached", |b| {
        b.iter(|| {
            run += 1;
            eval(&Location::open(&format!("memory://bench-eval-root-{run}")).expect("root"))
        })
    });
    let warm = Location::open("memory://bench-eval-warm").expect("root");
    eval(&warm);
    g.bench_function("cached", |b| b.iter(|| eval(&warm)));
    g.finish();
}

criterion_group!(benches, graders, mllm_overhead);
criterion_main!(benches);
