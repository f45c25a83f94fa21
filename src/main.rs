//! `streamflix`: the stream processor's command line (see `streamflix::cli`).

fn main() -> std::process::ExitCode {
    streamflix::cli::main()
}
