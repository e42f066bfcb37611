//! `clawline-broadcaster`: canary-gated weight versions onto the engines; flags: its `Args`.

clawline_runtime::service_main!(clawline_broadcaster);
