//! How the `ember` binary's allocator (mimalloc) hands memory back.

/// mimalloc's `purge_delay` option (its place in `mi_option_e`).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc returns it
/// to the kernel, unless `MIMALLOC_PURGE_DELAY` says otherwise.
pub const PURGE_DELAY_MS: i64 = 1000;

/// Keeps freed memory for [`PURGE_DELAY_MS`] instead of mimalloc's 10 ms.
/// A query frees and allocates large buffers all the time, in bursts further
/// apart than 10 ms: memory handed back in between comes back as fresh
/// pages the kernel must zero (and a virtual machine's host must provide
/// again), which cost a query in `local[2]` more time than its operators.
/// A second still gives memory back to the system when a long-lived
/// process (a worker, a shell's driver) goes idle.
///
/// Call first thing in `main`, before any other thread starts: mimalloc's
/// options are not meant to change under running threads.
pub fn keep_freed_memory() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: no other thread runs yet; the option is a plain integer.
    unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _) };
}
