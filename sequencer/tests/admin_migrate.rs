//! `stateset-sequencer-admin migrate` (what the operator's migration Job runs) waits, bounded by
//! `--wait-secs`/`DB_CONNECT_WAIT_SECS`, for a database that does not accept connections yet, and does
//! not wait for one that refused it.

#[path = "common/private_pg.rs"]
mod private_pg;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use private_pg::PrivatePg;
use uuid::Uuid;

fn spawn_migrate(url: &str, wait_secs: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_stateset-sequencer-admin"))
        .args(["migrate", "--wait-secs", wait_secs])
        .env("DATABASE_URL", url)
        .env_remove("PGSSLMODE")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stateset-sequencer-admin")
}

/// Waits (bounded) for the process to exit.
fn finish(mut child: Child, within: Duration) -> Output {
    let deadline = Instant::now() + within;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("stateset-sequencer-admin migrate still running after {within:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn migrate_waits_for_a_database_that_comes_up_late_and_then_migrates() {
    let pg = PrivatePg::init();
    let mut child = spawn_migrate(&pg.url(""), "120");
    // Once it has said that it is waiting, the database comes up.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let said = rx.recv_timeout(Duration::from_secs(30)).expect("migrate says that it waits");
    assert!(said.contains("does not accept connections yet"), "{said}");
    pg.start("");
    let out = finish(child, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "migrate after the database came up: {stdout}");
    assert!(stdout.contains("applied migrations [1, 2, 3, 4, 5"), "{stdout}");
}

#[test]
fn migrate_gives_up_after_its_wait_when_no_database_comes() {
    let pg = PrivatePg::init(); // never started: nothing listens on its port
    let start = Instant::now();
    let out = finish(spawn_migrate(&pg.url(""), "2"), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("within 2s"), "{stderr}");
    assert!(start.elapsed() >= Duration::from_secs(1), "it waited: {:?}", start.elapsed());
}

#[test]
fn migrate_does_not_wait_for_a_database_that_refuses_it() {
    let admin =
        std::env::var("TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (base, _) = admin.rsplit_once('/').unwrap();
    let url = format!("{base}/no_such_database_{}", Uuid::new_v4().simple());
    let start = Instant::now();
    let out = finish(spawn_migrate(&url, "120"), Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("does not exist"), "{stderr}");
    assert!(start.elapsed() < Duration::from_secs(20), "no waiting on a refusal: {:?}", start.elapsed());
}
