//! pack + unpack of the `debit_0200` vector, payhub-iso8583 against iso8583_rs, in one run; prints
//! the ratio of their mean times (target: payhub-iso8583 at least 20x faster).
//!
//! Each library packs a message it holds already built and unpacks the bytes it packed, in its
//! own wire form (iso8583_rs writes binary bitmaps, the profile hex ones; the fields are the same
//! bytes). Run: `cargo bench -p payhub-iso8583 --bench codec`.

#[path = "../tests/support/rs_peer.rs"]
mod rs_peer;

use criterion::{Criterion, black_box};
use payhub_iso8583::Message;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

const VECTORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/vectors/iso8583.json"
);

fn debit_0200() -> Vec<u8> {
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(VECTORS).expect("vectors file"))
            .expect("JSON");
    let vector = json["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["name"] == "debit_0200")
        .expect("debit_0200");
    hex::decode(vector["hex"].as_str().expect("hex")).expect("hex")
}

/// Total time and iterations of every sample criterion took, to compare the two means.
#[derive(Clone, Default)]
struct Tally(Rc<Cell<(Duration, u64)>>);

impl Tally {
    fn add(&self, elapsed: Duration, iters: u64) {
        let (total, n) = self.0.get();
        self.0.set((total + elapsed, n + iters));
    }

    fn mean_ns(&self) -> f64 {
        let (total, n) = self.0.get();
        total.as_nanos() as f64 / n.max(1) as f64
    }
}

fn main() {
    rs_peer::run_with_spec_file();
    let wire = debit_0200();
    let ours = Message::unpack(&wire).expect("vector unpacks");
    let fields: Vec<(u8, String)> = ours.fields().map(|(f, v)| (f, v.to_owned())).collect();
    let theirs = rs_peer::build(ours.mti(), fields.iter().map(|(f, v)| (*f, v.as_str())));
    let spec = theirs.spec;

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("debit_0200 pack+unpack");
    let (ours_tally, theirs_tally) = (Tally::default(), Tally::default());

    let tally = ours_tally.clone();
    let mut buf = Vec::with_capacity(512);
    group.bench_function("payhub-iso8583", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                buf.clear();
                black_box(&ours).pack_into(&mut buf).expect("pack");
                black_box(Message::unpack(black_box(&buf)).expect("unpack"));
            }
            let elapsed = start.elapsed();
            tally.add(elapsed, iters);
            elapsed
        })
    });

    let tally = theirs_tally.clone();
    group.bench_function("iso8583_rs", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let mut bytes = black_box(&theirs).assemble().expect("assemble");
                black_box(spec.parse(black_box(&mut bytes)).expect("parse"));
            }
            let elapsed = start.elapsed();
            tally.add(elapsed, iters);
            elapsed
        })
    });
    group.finish();

    let mut split = c.benchmark_group("payhub-iso8583 debit_0200");
    split.bench_function("pack_into", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&ours).pack_into(&mut buf).expect("pack");
        })
    });
    split.bench_function("unpack", |b| {
        b.iter(|| Message::unpack(black_box(&wire)).expect("unpack"))
    });
    split.finish();
    c.final_summary();

    let (ours_ns, theirs_ns) = (ours_tally.mean_ns(), theirs_tally.mean_ns());
    println!(
        "debit_0200 pack+unpack mean over all samples: payhub-iso8583 {ours_ns:.0} ns, iso8583_rs {theirs_ns:.0} ns, ratio {:.1}x (target >= 20x)",
        theirs_ns / ours_ns.max(f64::MIN_POSITIVE)
    );
}
