//! How the `ember` binary's allocator (mimalloc) takes memory from the
//! kernel and hands it back.

/// mimalloc's `purge_delay` option (its place in `mi_option_e`).
const PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed memory stays with the process before mimalloc returns it
/// to the kernel, unless `MIMALLOC_PURGE_DELAY` says otherwise.
pub const PURGE_DELAY_MS: i64 = 1000;

/// Sets the allocator up for a query engine's bursts of large buffers.
/// Call first thing in `main`, before any other thread starts: mimalloc's
/// options are not meant to change under running threads.
///
/// - Freed memory stays for [`PURGE_DELAY_MS`] instead of mimalloc's
///   10 ms. A query frees and allocates large buffers all the time, in
///   bursts further apart than 10 ms: memory handed back in between comes
///   back as fresh pages the kernel must zero (and a virtual machine's host
///   must provide again), which cost a query in `local[2]` more time than
///   its operators. A second still gives memory back to the system when a
///   long-lived process (a worker, a shell's driver) goes idle.
/// - Transparent huge pages are off for the process (and the executors a
///   worker starts, which inherit it), unless `MIMALLOC_ALLOW_THP` says
///   otherwise. mimalloc asks for them on its whole heap, and a process's
///   first touch of each 2 MB then costs a huge page the kernel must find
///   and zero whole: on a virtual machine that hands idle memory back to its
///   host, about three times the cost per byte of small pages, and for
///   whole 2 MB where a task needed less. Measured on the 2-core machine
///   the benchmarks run on, each run a new process after a second or more
///   idle: TPC-H Q18 in `local[2]` 1.24 s with huge pages, 0.77 s
///   without, Q06 0.32 s and 0.16 s, Q07 0.63 s and 0.39 s
///   (docs/operations.md).
pub fn configure() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: no other thread runs yet; the option is a plain integer.
        unsafe { libmimalloc_sys::mi_option_set(PURGE_DELAY, PURGE_DELAY_MS as _) };
    }
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        // The kernel checks the flag at each page fault, so it also covers
        // the heap mimalloc reserved (and asked huge pages for) before
        // `main`. Children inherit it, across exec too. Kernels without it
        // (before 3.15) refuse the call, and nothing changes.
        // SAFETY: prctl with integer arguments touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    }
}
