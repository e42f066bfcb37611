//! The allocator of the binaries that run SQL over the archive (`clawline`, `clawline-history`)
//! and of the batcher (`clawline-batcher`), which decodes many small strings and vectors per step.
//! Not the gateway: there it changed no latency and nearly doubled its RSS.
//!
//! DataFusion's joins and aggregations grow hash tables of hundreds of MiB and free them again. With
//! the system allocator each growth step faults in fresh 4 KiB pages that the kernel must zero: a
//! fifth of a join's CPU time on this machine went to `clear_page_erms`. mimalloc built to use 2 MiB
//! pages (transparent huge pages through `madvise`, which is how the kernel here offers them; the
//! define is in `.cargo/config.toml`) faults up to 512 times less often; see `benches/results/sql.md`.
//! `MIMALLOC_ALLOW_LARGE_OS_PAGES=0` in the environment turns the large pages off again.
//!
//! Use: `#[global_allocator] static ALLOC: clawline_runtime::alloc::MiMalloc =
//! clawline_runtime::alloc::MiMalloc;`

pub use mimalloc::MiMalloc;
