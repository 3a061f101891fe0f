//! `postern`: the client CLI and daemon. Built by the client issue; this binary only
//! reports that it is not available yet.

fn main() -> std::process::ExitCode {
    eprintln!("postern: the client is not part of this build yet");
    std::process::ExitCode::from(2)
}
