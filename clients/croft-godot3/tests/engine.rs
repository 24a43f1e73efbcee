//! The engine-in-the-loop test: the GDNative binding (this package's cdylib) loaded in a real
//! Godot 3 (Debian's godot3-server, headless) plays a match against a bot on a real stack.
//!
//! `croft up --bots 1` runs the services and one bot that queues; the test creates an account
//! for the Godot client over the admin API, copies `clients/godot/tests/engine3/` and the
//! built `libcroft_godot3.so` to a temporary folder, and runs `godot3-server --path` on it
//! with the auth URL and the account in the environment. The GDScript test logs in through
//! the binding, sends a friend request to the bot, queues, plays with `play_suggested()`, drops
//! its match connection once and must rejoin by itself (a fresh token from the lobby), and
//! quits with 0 only once `match_ended` arrived.
//!
//! Needs godot3-server (`scripts/build-deps` installs it; the test fails without it, it does
//! not skip) and the `croft` binary in the same target folder (`cargo test --workspace`
//! builds it; alone: `cargo build -p croft` first).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};
use test_stack::Stack;

/// `target/debug` (or the profile folder the test runs from): the test binary is in `deps/`.
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("deps folder");
    deps.parent().expect("profile folder").to_path_buf()
}

fn godot_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("GODOT3_BIN") {
        return PathBuf::from(p);
    }
    let candidates = ["/usr/bin/godot3-server", "/usr/local/bin/godot3-server"];
    for c in candidates {
        if Path::new(c).exists() {
            return PathBuf::from(c);
        }
    }
    panic!(
        "godot3-server is not installed: the engine-in-the-loop test needs it \
         (scripts/build-deps installs it: apt-get install godot3-server), or set GODOT3_BIN"
    );
}

/// The cdylib cargo built for this package. `cargo test` builds the library with both crate
/// types into `deps/` (only `cargo build` copies it up to the profile folder), so the newer
/// of the two is this build's.
fn binding_library() -> PathBuf {
    let dir = profile_dir();
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    [
        dir.join("deps/libcroft_godot3.so"),
        dir.join("libcroft_godot3.so"),
    ]
    .into_iter()
    .filter_map(|p| modified(&p).map(|t| (t, p)))
    .max_by_key(|(t, _)| *t)
    .map(|(_, p)| p)
    .unwrap_or_else(|| {
        panic!(
            "libcroft_godot3.so is not in {} (cargo builds it with this package's tests)",
            dir.display()
        )
    })
}

fn croft_bin() -> PathBuf {
    let p = profile_dir().join("croft");
    assert!(
        p.exists(),
        "the croft binary is not at {}: build it first (`cargo build -p croft`; \
         `cargo test --workspace` builds it)",
        p.display()
    );
    p
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `croft up` with one bot that farms, crafts and queues until the stack stops.
fn start_stack(dir: PathBuf) -> Stack {
    std::fs::create_dir_all(&dir).unwrap();
    Stack::start(
        &croft_bin(),
        dir,
        &["--bots", "1", "--think-ms", "50"],
        Duration::from_secs(90),
    )
}

#[test]
fn godot3_plays_a_match_through_the_binding() {
    let godot = godot_bin();
    let library = binding_library();
    let root = std::env::temp_dir().join(format!("croft-engine3-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();

    // The Godot project with the binding next to it (res:// paths stay inside the project).
    let project = root.join("project");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../godot/tests/engine3"),
        &project,
    );
    std::fs::copy(&library, project.join("libcroft_godot3.so")).unwrap();

    let stack = start_stack(root.join("stack"));
    let (user, password) = ("godot-1", "a long enough password");
    stack.add_user(user, password);

    let started = Instant::now();
    let (status, stdout, log) = run_godot(
        &godot,
        &project,
        None,
        &root.join("home"),
        &[
            ("CROFT_AUTH_URL", stack.url("auth")),
            ("CROFT_USER", user.into()),
            ("CROFT_PASSWORD", password.into()),
            ("CROFT_FRIEND", "bot-1".into()),
            ("CROFT_DROP", "1".into()),
            ("CROFT_TEST_SECONDS", "240".into()),
        ],
    );
    let took = started.elapsed();
    assert!(
        status.success(),
        "godot3-server exited with {status}\n{log}"
    );
    // Godot 3 keeps running after an error in a signal handler: none may have happened.
    assert!(!log.contains("SCRIPT ERROR"), "{log}");
    for line in [
        "engine3: logged in as godot-1",
        "engine3: friends (",
        "engine3: queued",
        "engine3: match found",
        "engine3: joined match",
        "engine3: dropping the match connection",
        "connection lost (dropped on purpose), retrying: True",
        "engine3: match ended: match",
        "engine3: PASSED",
    ] {
        assert!(stdout.contains(line), "no `{line}` in the output\n{log}");
    }
    eprintln!("godot3-server played a match in {took:?}");
    eprintln!("{stdout}");
    drop(stack);
    let _ = std::fs::remove_dir_all(&root);
}

/// Runs `godot3-server --path project [-s script]` with `env` (and its own HOME) until it exits
/// (at most 300 s); its status, stdout, and both outputs for failure messages.
fn run_godot(
    godot: &Path,
    project: &Path,
    script: Option<&str>,
    home: &Path,
    env: &[(&str, String)],
) -> (std::process::ExitStatus, String, String) {
    std::fs::create_dir_all(home).unwrap();
    let mut command = Command::new(godot);
    command.arg("--path").arg(project);
    if let Some(script) = script {
        command.args(["-s", script]);
    }
    let mut child = command
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        // Godot writes its user data and logs under HOME.
        .env("HOME", home)
        .env("XDG_DATA_HOME", home.join("data"))
        .env("XDG_CONFIG_HOME", home.join("config"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", godot.display()));
    // Read both pipes on threads so a chatty engine never blocks on a full pipe.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stdout = out_reader.join().unwrap();
    let stderr = err_reader.join().unwrap();
    let log = format!("--- godot stdout ---\n{stdout}\n--- godot stderr ---\n{stderr}");
    let Some(status) = status else {
        panic!("godot3-server did not exit within 300 s\n{log}");
    };
    (status, stdout, log)
}

/// The web path from GDScript alone: `clients/godot/tests/ws_e2e.gd` uses the pure-GDScript
/// addon (`clients/godot/addons/croft`: postcard codec and Godot 3 WebSocket transport, no
/// native code) to log in over REST, take the lobby over WebSocket, queue, follow MatchFound to
/// the instance server's WebSocket URL and play a match against a UDP bot to its end.
#[test]
fn a_gdscript_web_client_plays_a_match_over_websocket() {
    let godot = godot_bin();
    let root = std::env::temp_dir().join(format!("croft-ws-gd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).unwrap();
    let stack = start_stack(root.join("stack"));
    let (user, password) = ("web-1", "a long enough password");
    stack.add_user(user, password);
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../godot/tests");
    let (status, stdout, log) = run_godot(
        &godot,
        &tests,
        Some("ws_e2e.gd"),
        &root.join("home"),
        &[
            ("CROFT_AUTH_URL", stack.url("auth")),
            ("CROFT_E2E_USER", user.into()),
            ("CROFT_E2E_PASSWORD", password.into()),
            ("CROFT_E2E_TURNS", "3".into()),
        ],
    );
    assert!(
        status.success(),
        "godot3-server exited with {status}\n{log}"
    );
    // Godot 3 keeps running after an error in a signal handler: none may have happened.
    assert!(!log.contains("SCRIPT ERROR"), "{log}");
    for line in [
        "; lobby at ws://127.0.0.1:",
        "lobby welcome: web-1",
        " at ws://127.0.0.1:",
        "seated as ",
        "match ended: winner ",
        "PASSED",
    ] {
        assert!(stdout.contains(line), "no `{line}` in the output\n{log}");
    }
    drop(stack);
    let _ = std::fs::remove_dir_all(&root);
}
