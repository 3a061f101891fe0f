//! The controller's deployment files, run as written: the image's `ENTRYPOINT`, `CMD` and
//! `ENV` (`deploy/controller/Dockerfile`) and the systemd unit's `ExecStart` and
//! `Environment` (`deploy/controller/postern-controller.service`) start the real binary in a
//! network namespace of this test's, as an unprivileged user with no capabilities, with
//! the volume or state directory in a temporary directory. Each must come up on SQLite,
//! print its setup code and fingerprint, and serve HTTPS. Both systemd units also pass
//! `systemd-analyze verify`.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use e2e::deploy::{build_binaries, repo_root};
use e2e::{Netns, wait_for, workspace_binary};

/// The uid and gid the controller runs as here (the image's `postern` user is 10002).
const UID: &str = "10002";

/// A Dockerfile's last stage: its `ENV` pairs, and `ENTRYPOINT` followed by `CMD`.
fn dockerfile(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let last = text.rsplit_once("\nFROM ").map_or(text, |(_, l)| l);
    // Join continuation lines.
    let joined = last.replace("\\\n", " ");
    let mut env = Vec::new();
    let mut argv = Vec::new();
    let mut cmd = Vec::new();
    for line in joined.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("ENV ") {
            for pair in rest.split_whitespace() {
                let (k, v) = pair.split_once('=').unwrap();
                env.push((k.to_owned(), v.to_owned()));
            }
        } else if let Some(rest) = line.strip_prefix("ENTRYPOINT ") {
            argv = serde_json::from_str(rest).unwrap();
        } else if let Some(rest) = line.strip_prefix("CMD ") {
            cmd = serde_json::from_str(rest).unwrap();
        }
    }
    argv.extend(cmd);
    (env, argv)
}

/// A unit's `Environment=` pairs and `ExecStart=` words.
fn unit(text: &str) -> (Vec<(String, String)>, Vec<String>) {
    let mut env = Vec::new();
    let mut argv = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("Environment=") {
            let (k, v) = rest.split_once('=').unwrap();
            env.push((k.to_owned(), v.to_owned()));
        } else if let Some(rest) = line.strip_prefix("ExecStart=") {
            argv = rest.split_whitespace().map(str::to_owned).collect();
        }
    }
    (env, argv)
}

/// Runs the controller as `argv` and `env` say, the binary at `installed` replaced by the
/// one built here and the data directory `data_dir` moved into `dir`; checks it serves.
fn runs_as_written(
    name: &str,
    env: &[(String, String)],
    argv: &[String],
    installed: &str,
    data_dir: &str,
    dir: &Path,
) {
    assert_eq!(
        argv.first().map(String::as_str),
        Some(installed),
        "{argv:?}"
    );
    assert!(
        env.iter()
            .any(|(k, v)| k == "POSTERN_DATA_DIR" && v == data_dir),
        "{name}: the data dir is {data_dir}: {env:?}"
    );
    // The binary and the data dir where an unprivileged user can use them.
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.join("postern-controller");
    std::fs::copy(workspace_binary("postern-controller"), &bin).unwrap();
    let data = dir.join("data");
    std::fs::create_dir(&data).unwrap();
    let chown = Command::new("chown")
        .args([&format!("{UID}:{UID}"), data.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());

    let ns = Netns::new("dep").unwrap();
    // Exactly the files' environment (`env -i`), then the unprivileged user with no
    // capabilities at all.
    let mut cmd = Command::new("env");
    cmd.args(["-i", "PATH=/usr/bin:/bin"]);
    for (k, v) in env {
        let v = if k == "POSTERN_DATA_DIR" {
            data.display().to_string()
        } else {
            v.clone()
        };
        cmd.arg(format!("{k}={v}"));
    }
    cmd.args([
        "setpriv",
        "--reuid",
        UID,
        "--regid",
        UID,
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
    ])
    .arg(&bin)
    .args(&argv[1..]);
    let log = dir.join(format!("{name}.log"));
    let _process = ns.spawn(cmd, &log).unwrap();
    let out = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|s| s.contains("storage: "))
    })
    .unwrap_or_else(|| {
        panic!(
            "{name}: the controller did not start\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(out.contains("One-time setup code: "), "{name}: {out}");
    assert!(out.contains("fingerprint"), "{name}: {out}");
    assert!(
        out.contains(&format!("storage: SQLite in {}", data.display())),
        "{name}: {out}"
    );
    assert!(data.join("postern.db").exists());

    // HTTPS on the port the files name, with the certificate it made.
    let port = env
        .iter()
        .find(|(k, _)| k == "POSTERN_LISTEN")
        .and_then(|(_, v)| v.rsplit_once(':'))
        .map(|(_, p)| p.to_owned())
        .unwrap();
    let pem = std::fs::read(data.join("tls/cert.pem")).unwrap();
    let path = format!("/var/run/netns/{}", ns.name());
    let status = e2e::in_namespace(&path, async move {
        let client = reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&pem)?)
            .resolve("localhost", ([127, 0, 0, 1], port.parse()?).into())
            .timeout(Duration::from_secs(10))
            .build()?;
        let res = client
            .get(format!("https://localhost:{port}/healthz"))
            .send()
            .await?;
        Ok::<_, anyhow::Error>(res.status().as_u16())
    })
    .unwrap()
    .unwrap();
    assert_eq!(status, 200, "{name}");
}

#[test]
fn the_controller_image_runs_as_its_dockerfile_says() {
    build_binaries();
    let text = std::fs::read_to_string(repo_root().join("deploy/controller/Dockerfile")).unwrap();
    assert!(
        text.contains("\nUSER postern\n"),
        "the image runs unprivileged"
    );
    let (env, argv) = dockerfile(&text);
    let dir = tempfile::tempdir().unwrap();
    runs_as_written(
        "image",
        &env,
        &argv,
        "/usr/local/bin/postern-controller",
        "/var/lib/postern",
        dir.path(),
    );
}

#[test]
fn the_controller_unit_runs_as_it_says() {
    build_binaries();
    let text =
        std::fs::read_to_string(repo_root().join("deploy/controller/postern-controller.service"))
            .unwrap();
    assert!(
        text.contains("\nDynamicUser=yes\n"),
        "the unit runs unprivileged"
    );
    assert!(
        text.contains("\nCapabilityBoundingSet=\n"),
        "with no capabilities"
    );
    let (env, argv) = unit(&text);
    let dir = tempfile::tempdir().unwrap();
    runs_as_written(
        "unit",
        &env,
        &argv,
        "/usr/bin/postern-controller",
        "/var/lib/postern-controller",
        dir.path(),
    );
}

#[test]
fn the_systemd_units_verify() {
    build_binaries();
    let dir = tempfile::tempdir().unwrap();
    for (file, installed, binary) in [
        (
            "deploy/controller/postern-controller.service",
            "/usr/bin/postern-controller",
            "postern-controller",
        ),
        (
            "deploy/client/postern.service",
            "/usr/bin/postern",
            "postern",
        ),
    ] {
        // The binary at the path the unit names is the one built here.
        let text = std::fs::read_to_string(repo_root().join(file))
            .unwrap()
            .replace(
                &format!("ExecStart={installed} "),
                &format!("ExecStart={} ", workspace_binary(binary).display()),
            );
        let name = Path::new(file).file_name().unwrap();
        let copy = dir.path().join(name);
        std::fs::write(&copy, text).unwrap();
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{file}: {stderr}"
        );
    }
}
