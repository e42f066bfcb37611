//! `clawline-reward`: scores steps and feedback; flags: its `Args`.

clawline_runtime::service_main!(clawline_reward);
