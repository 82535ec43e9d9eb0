//! Links the `ember` binary as a position-dependent executable on Linux.
//!
//! Every query in local mode, and every executor and client-mode driver,
//! is a new `ember` process. As a position-independent executable the
//! binary carries about 260,000 relative relocations, and the loader's
//! writing them copies its 4 MB of relocated data into every process page
//! by page: 1,209 page faults and 5.8 ms before `main` does anything,
//! measured on the 2-core machine. Linked at a fixed address it needs none:
//! 173 faults and 2.2 ms for `ember --version`, and a `SELECT 1` in
//! `local[2]` went from 21.8 ms to 13.9 ms (medians of 9, runs alternating).
//! The code itself is the same (every crate is still compiled
//! position-independent), only the executable's own addresses are no
//! longer randomised; shared libraries, the stack and the heap still are.
//! `EMBER_PIE=1` at build time keeps the position-independent link.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=EMBER_PIE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    let keep_pie = std::env::var("EMBER_PIE").is_ok_and(|v| v == "1");
    if linux && !keep_pie {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
