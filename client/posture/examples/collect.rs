//! Prints this device's posture report and the findings behind it, as JSON.
//!
//! `cargo run -p posture --example collect -- [ROOT] [PROCESS...]`

fn main() {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "/".to_owned());
    let mut probe = posture::Probe::system(env!("CARGO_PKG_VERSION"), args.collect());
    probe.root = root.into();
    let collected = posture::collect_detailed(&probe, jiff::Timestamp::now());
    match serde_json::to_string_pretty(&collected) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("could not print the report: {e}"),
    }
}
