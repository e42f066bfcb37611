//! `clawline-batcher`, the DataPool: scored steps into training batches; flags: its `Args`.

#[global_allocator]
static ALLOC: clawline_runtime::alloc::MiMalloc = clawline_runtime::alloc::MiMalloc;

clawline_runtime::service_main!(clawline_batcher);
