//! The build script of every crate that links libtorch (the model library and each binary that
//! uses it; their manifests point here): an rpath to libtorch, so binaries run without
//! `LD_LIBRARY_PATH`, and, with `CLAWLINE_TORCH_CUDA=1`, libtorch's CUDA library linked in. No
//! symbol of it is used directly, so the linker's `--as-needed` leaves it out, and CUDA is then
//! "not available" however the machine is equipped; on the CPU-only setup its dependencies are
//! not installed, so it is linked only when asked for.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=CLAWLINE_TORCH_CUDA");
    if let Ok(lt) = std::env::var("LIBTORCH") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lt}/lib");
    }
    if std::env::var("CLAWLINE_TORCH_CUDA").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
