//! The single `ember` binary.

fn main() -> std::process::ExitCode {
    ember::cli::main()
}
