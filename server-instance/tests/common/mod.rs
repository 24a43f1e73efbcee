//! Starts the real `server-instance` binary on loopback ports for end-to-end tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use contracts::instance::v1::ReadyInfo;
use headless_bot::dev::DevMatchmaker;
use shared_sim::GameData;
use token::{ConnectTokenIssuer, NetcodeKey};

pub fn cards_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards")
}

pub fn game_data() -> Arc<GameData> {
    Arc::new(GameData::load_dir(&cards_dir()).expect("shipped data loads"))
}

pub struct Instance {
    child: Child,
    pub ready: ReadyInfo,
    pub dir: PathBuf,
    pub key: NetcodeKey,
    pub control_token: String,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl Instance {
    pub fn start(extra: &[&str]) -> Instance {
        Self::start_env(extra, &[])
    }

    /// Starts with extra flags (one that is also a default, such as `--udp` or `--cards`,
    /// replaces the default) and environment variables.
    pub fn start_env(extra: &[&str], env: &[(&str, String)]) -> Instance {
        let dir = std::env::temp_dir().join(format!(
            "croft-it-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let key = NetcodeKey::generate().unwrap();
        key.write_file(&dir.join("netcode.key")).unwrap();
        let control_token = token::generate_secret().unwrap();
        std::fs::write(dir.join("control.token"), &control_token).unwrap();
        let ready_file = dir.join("ready.json");
        let path = |p: PathBuf| p.display().to_string();
        let defaults = [
            ("--udp", "127.0.0.1:0".to_string()),
            ("--http", "127.0.0.1:0".to_string()),
            ("--netcode-key-file", path(dir.join("netcode.key"))),
            ("--control-token-file", path(dir.join("control.token"))),
            ("--cards", path(cards_dir())),
            ("--match-log", path(dir.join("matches.jsonl"))),
            ("--ready-file", path(ready_file.clone())),
        ];
        // A bench may measure another build (`CROFT_BENCH_SERVER`, see `BENCHMARKS.md`).
        let mut command = Command::new(
            std::env::var_os("CROFT_BENCH_SERVER")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_server-instance").into()),
        );
        for (flag, value) in &defaults {
            if !extra.contains(flag) {
                command.args([flag, value.as_str()]);
            }
        }
        let child = command
            .args(extra)
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            // CROFT_TEST_LOGS=info (or any filter) shows the server's log.
            .env(
                "RUST_LOG",
                std::env::var("CROFT_TEST_LOGS").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(match std::env::var_os("CROFT_TEST_LOGS") {
                Some(_) => Stdio::inherit(),
                None => Stdio::null(),
            })
            .stderr(Stdio::inherit())
            .spawn()
            .expect("server-instance starts");
        let mut instance = Instance {
            child,
            ready: ReadyInfo {
                http: "0.0.0.0:0".parse().unwrap(),
                udp: vec![],
                ws: None,
            },
            dir,
            key,
            control_token,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "server did not become ready");
            if let Some(status) = instance.child.try_wait().unwrap() {
                panic!("server exited during start-up: {status}");
            }
            if let Ok(bytes) = std::fs::read(&ready_file)
                && let Ok(info) = serde_json::from_slice::<ReadyInfo>(&bytes)
            {
                instance.ready = info;
                return instance;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn control_url(&self) -> String {
        format!("http://{}", self.ready.http)
    }

    pub fn issuer(&self) -> ConnectTokenIssuer {
        ConnectTokenIssuer::new(self.key.clone())
    }

    pub fn matchmaker(&self, first_match_id: u64) -> DevMatchmaker {
        DevMatchmaker::new(
            self.control_url(),
            self.control_token.clone(),
            self.issuer(),
            first_match_id,
        )
        .unwrap()
    }

    pub fn http(&self) -> reqwest::blocking::Client {
        reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
    }

    pub fn match_log(&self) -> Vec<serde_json::Value> {
        // A line still being written (no newline yet) is not read.
        std::fs::read_to_string(self.dir.join("matches.jsonl"))
            .unwrap_or_default()
            .split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .map(|l| serde_json::from_str(l).expect("match log lines are JSON"))
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls a raw connection until `want` matches a message or the time runs out.
pub fn wait_for(
    conn: &mut headless_bot::Connection,
    timeout: Duration,
    mut want: impl FnMut(&shared_sim::protocol::ServerMessage) -> bool,
) -> Option<shared_sim::protocol::ServerMessage> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if conn.update().is_err() {
            return None;
        }
        while let Some(msg) = conn.receive() {
            let msg = msg.expect("server messages decode");
            if want(&msg) {
                return Some(msg);
            }
        }
        let _ = conn.flush();
        std::thread::sleep(Duration::from_millis(5));
    }
    None
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh, migrated SQLite database in its own folder: (folder, URL, store).
pub fn database(
    rt: &tokio::runtime::Runtime,
    name: &str,
) -> (std::path::PathBuf, String, store::Store) {
    let dir = std::env::temp_dir().join(format!("croft-instance-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("instance.db").display());
    let store = rt.block_on(async {
        let s = store::Store::connect(&url, &store::PoolSettings::default())
            .await
            .unwrap();
        s.migrate().await.unwrap();
        s
    });
    (dir, url, store)
}
