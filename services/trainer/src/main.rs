//! `clawline-trainer`: trains on batches, publishes weight versions; flags: its `Args`.

clawline_runtime::service_main!(clawline_trainer);
