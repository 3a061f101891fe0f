//! `postern`: the client command line and daemon. See the `client` library.

fn main() -> std::process::ExitCode {
    client::cli::main()
}
