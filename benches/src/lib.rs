//! clawline-benches — whole-system benchmarks (binaries in `src/bin/`) and their shared pieces.
//! Reports land in `benches/results/`; timing never decides a test.

pub mod floor;
pub mod ingest;

/// The median of some measurements (the upper one of the middle two for an even count).
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
