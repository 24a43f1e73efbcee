//! For tests and benches: starts a whole croft stack (`croft up`) on ports the OS picks, with a
//! fresh data folder and the shipped cards, waits for its ready file, and stops it with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

/// The password [`Stack::add_user`] gives accounts when a test does not care.
pub const PASSWORD: &str = "a long enough password";

/// Ports chosen by the OS for every listener of `croft up`, so tests can run side by side.
pub const ANY_PORTS: [&str; 12] = [
    "--auth-http",
    "127.0.0.1:0",
    "--auth-metrics",
    "127.0.0.1:0",
    "--matchmaking-http",
    "127.0.0.1:0",
    "--connection-udp",
    "127.0.0.1:0",
    "--connection-ws",
    "127.0.0.1:0",
    "--connection-http",
    "127.0.0.1:0",
];

/// The shipped card data (`assets/cards`).
pub fn cards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../assets/cards")
}

/// An empty folder under the system's temporary folder, unique to this test process.
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("croft-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `croft up` on `dir` with the shipped cards and [`ANY_PORTS`]; logs at `CROFT_TEST_LOG` (else
/// `warn`). Callers add their flags and choose what happens to the output.
pub fn up_command(croft: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(croft);
    cmd.arg("up")
        .arg("--data-dir")
        .arg(dir)
        .arg("--cards")
        .arg(cards_dir())
        .args(ANY_PORTS)
        .env(
            "RUST_LOG",
            std::env::var("CROFT_TEST_LOG").unwrap_or_else(|_| "warn".into()),
        );
    cmd
}

/// Waits until `path` holds a whole JSON document and returns it; panics if `child` exits first
/// or `within` passes.
pub fn wait_ready<T: DeserializeOwned>(path: &Path, child: &mut Child, within: Duration) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(text) = std::fs::read(path)
            && let Ok(v) = serde_json::from_slice(&text)
        {
            return v;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the process exited during start-up ({status})");
        }
        assert!(
            Instant::now() < deadline,
            "no ready file at {} within {within:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Sends SIGTERM (a clean shutdown) to `child`.
pub fn sigterm(child: &Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
}

/// The exit status of `child` once it exits, or `None` if it is still running after `within`.
pub fn wait_exit(child: &mut Child, within: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `croft up`; stopped (SIGTERM, then SIGKILL) and its folder removed on drop.
pub struct Stack {
    pub child: Child,
    pub dir: PathBuf,
    /// The ready file: the parts' URLs and addresses.
    pub info: serde_json::Value,
}

impl Stack {
    /// Starts `croft up` (the binary at `croft`) in `dir` with `extra` flags, waiting up to
    /// `within` for it to be ready.
    pub fn start(croft: &Path, dir: PathBuf, extra: &[&str], within: Duration) -> Self {
        let ready = dir.join("up.ready.json");
        let mut child = up_command(croft, &dir)
            .args(extra)
            .arg("--ready-file")
            .arg(&ready)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let info = wait_ready(&ready, &mut child, within);
        Stack { child, dir, info }
    }

    /// A URL from the ready file (`auth`, `matchmaking`, `connection_http` ...).
    pub fn url(&self, part: &str) -> String {
        self.info[part]
            .as_str()
            .unwrap_or_else(|| panic!("no `{part}` in the ready file: {}", self.info))
            .to_string()
    }

    /// A secret `croft up` wrote into its folder (`admin.token`, `service.token` ...).
    pub fn secret(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Creates an account through the auth service's admin API (on its internal listener).
    pub fn add_user(&self, name: &str, password: &str) {
        let resp = reqwest::blocking::Client::new()
            .post(format!("{}/v1/admin/users", self.url("auth_internal")))
            .bearer_auth(self.secret("admin.token"))
            .json(&serde_json::json!({ "username": name, "password": password }))
            .send()
            .unwrap();
        assert_eq!(resp.status().as_u16(), 201, "{:?}", resp.text());
    }

    /// SIGTERM, then the exit status (within 30 s).
    pub fn stop(&mut self) -> ExitStatus {
        sigterm(&self.child);
        wait_exit(&mut self.child, Duration::from_secs(30)).expect("croft up did not stop")
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        sigterm(&self.child);
        if wait_exit(&mut self.child, Duration::from_secs(30)).is_some() {
            let _ = std::fs::remove_dir_all(&self.dir);
        } else {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
