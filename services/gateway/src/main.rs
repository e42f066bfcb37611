//! `clawline-gateway`: the front door (OpenAI, Anthropic, Claw-R1 HTTP); flags: its `Args`.

clawline_runtime::service_main!(clawline_gateway);
