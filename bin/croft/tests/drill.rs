//! The drill, small: `croft drill` with 20 bots for 2 minutes kills and restarts a matchmaking
//! leader, a connection server, an instance with matches running and an auth replica, stops
//! the broker for 10 s and cuts Postgres off for 5 s, and must find nothing lost.

use std::process::Command;

/// Runs `croft drill ARGS` on the test Postgres and Redis in a fresh folder; asserts it found
/// nothing lost and answers its standard output (the folder is removed).
fn drill(name: &str, args: &[&str]) -> String {
    let dir = test_stack::fresh_dir(name);
    let postgres = std::env::var("CROFT_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let redis =
        std::env::var("CROFT_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let out = Command::new(env!("CARGO_BIN_EXE_croft"))
        .arg("drill")
        .args(args)
        .arg("--dir")
        .arg(&dir)
        .arg("--cards")
        .arg(test_stack::cards_dir())
        .args(["--postgres", &postgres, "--redis", &redis])
        .output()
        .expect("croft drill runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    assert!(
        out.status.success() && stdout.contains("drill: nothing lost"),
        "croft drill {args:?} failed ({}):\n{stdout}\n--- stderr (last lines) ---\n{tail}",
        out.status
    );
    let _ = std::fs::remove_dir_all(&dir);
    stdout
}

#[test]
fn killing_any_process_loses_nothing() {
    let stdout = drill("drill", &["--bots", "20", "--minutes", "2"]);
    // Every fault happened.
    for fault in [
        "(the leader)",
        "kill -9 connection-1",
        "kill -9 instance-",
        "kill -9 auth-1",
        "broker down",
        "database cut off",
    ] {
        assert!(stdout.contains(fault), "no {fault:?} in:\n{stdout}");
    }
}

/// The soak, small: no faults, every process's memory sampled and judged flat after warm-up,
/// login-to-seated times printed, and the drill's checks.
#[test]
fn a_soak_samples_memory_and_loses_nothing() {
    let stdout = drill(
        "soak",
        &[
            "--soak",
            "--bots",
            "6",
            "--minutes",
            "0.6",
            "--sample-secs",
            "4",
            "--instances",
            "1",
        ],
    );
    assert!(
        !stdout.contains("kill -9"),
        "a soak kills nothing:\n{stdout}"
    );
    let samples = stdout.lines().filter(|l| l.contains("rss: ")).count();
    assert!(samples >= 8, "{samples} memory samples in:\n{stdout}");
    for part in [
        "broker",
        "auth-1",
        "auth-2",
        "matchmaking-1",
        "connection-2",
        "instance-1",
    ] {
        assert!(
            stdout.contains(&format!("drill: memory of {part}: ")),
            "no memory line for {part} in:\n{stdout}"
        );
    }
    let seated = stdout
        .lines()
        .find(|l| l.starts_with("drill: login -> seated"))
        .unwrap_or_else(|| panic!("no login -> seated line in:\n{stdout}"));
    assert!(seated.ends_with("(6 bots)"), "{seated}");
}
