//! clawline-benches — whole-system benchmarks (binaries in `src/bin/`) and their shared pieces.
//! Reports land in `benches/results/`; timing never decides a test.

pub mod ingest;
