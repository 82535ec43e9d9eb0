//! The single `ember` binary.

// Tasks hold a stage's output in memory until the next stage reads it, so
// large buffers come and go all the time; mimalloc reuses them instead of
// returning them to the kernel and faulting them in again.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    ember::allocator::configure();
    ember::cli::main()
}
