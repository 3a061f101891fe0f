//! `postern-controller audit verify` against the real binary on a SQLite data directory: an
//! intact chain verifies, a row edited with SQL is named, and `serve` seals what it audits.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_postern-controller")
}

fn run(args: &[&str], data: &Path) -> Output {
    Command::new(bin())
        .args(args)
        .arg("--data-dir")
        .arg(data)
        .env_remove("POSTERN_DATABASE_URL")
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn sqlite(data: &Path) -> sqlx::SqliteConnection {
    use sqlx::Connection;
    let url = format!("sqlite://{}", data.join("postern.db").display());
    sqlx::SqliteConnection::connect(&url).await.unwrap()
}

#[tokio::test]
async fn audit_verify_passes_an_intact_chain_and_names_an_edited_event() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing = run(&["audit", "verify"], &data);
    assert!(!missing.status.success(), "no database yet");
    assert!(text(&missing.stderr).contains("no database"));

    for name in ["ci", "backup", "grafana"] {
        let out = run(&["admin", "create-token", "--name", name], &data);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let ok = run(&["audit", "verify"], &data);
    assert!(ok.status.success(), "{}", text(&ok.stderr));
    let stdout = text(&ok.stdout);
    assert!(
        stdout.contains("audit chain intact: 3 events verified; head #3 "),
        "{stdout}"
    );

    let mut db = sqlite(&data).await;
    let (id, at): (String, i64) = sqlx::query_as("SELECT id, at FROM audit_events WHERE seq = 2")
        .fetch_one(&mut db)
        .await
        .unwrap();
    sqlx::query("UPDATE audit_events SET details = '{}' WHERE id = $1")
        .bind(&id)
        .execute(&mut db)
        .await
        .unwrap();
    drop(db);
    let broken = run(&["audit", "verify"], &data);
    assert_eq!(broken.status.code(), Some(1));
    let stderr = text(&broken.stderr);
    let at = jiff::Timestamp::from_millisecond(at).unwrap();
    assert!(
        stderr.contains(&format!(
            "audit chain BROKEN at event #2 (id {id}, at {at}, kind token.created): \
             its contents do not match its hash (the row was edited); \
             1 events before it verified"
        )),
        "{stderr}"
    );
    assert!(text(&broken.stdout).is_empty());
}

#[tokio::test]
async fn serve_seals_its_audit_events_right_away() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = std::fs::File::create(dir.path().join("controller.log")).unwrap();
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--insecure-http"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("POSTERN_DATABASE_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let _child = Kill(child);
    let (mut base, mut code) = (None, None);
    while code.is_none() {
        let line = lines.next().unwrap().unwrap();
        if let Some(rest) = line.strip_prefix("postern-controller listening on ") {
            base = Some(rest.split_whitespace().next().unwrap().to_owned());
        }
        if let Some((_, c)) = line.split_once("One-time setup code: ") {
            code = Some(c.trim().to_owned());
        }
    }
    let status = reqwest::Client::new()
        .post(format!("{}/api/v1/setup", base.unwrap()))
        .json(&serde_json::json!({
            "code": code.unwrap(), "email": "ada@example.com", "name": "Ada"
        }))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::CREATED);

    // The sealer runs right after the audited write: within moments every event is in the
    // chain and none is pending.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let out = run(&["audit", "verify"], &data);
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{}", text(&out.stderr));
        if !stdout.contains("pending") && !stdout.contains(" 0 events verified") {
            assert!(stdout.starts_with("audit chain intact: "), "{stdout}");
            break;
        }
        assert!(Instant::now() < deadline, "never sealed: {stdout}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
