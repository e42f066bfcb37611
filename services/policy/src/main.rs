//! `clawline-policy`: the built-in serving engine; flags: its `Args`.

clawline_runtime::service_main!(clawline_policy);
