//! The `croft` binary's commands as an operator runs them.

use std::path::{Path, PathBuf};
use std::process::Command;

fn croft() -> Command {
    Command::new(env!("CARGO_BIN_EXE_croft"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn check(dir: &Path) -> (bool, String, String) {
    let out = croft().args(["cards", "check"]).arg(dir).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cards_check_accepts_the_shipped_data() {
    let (ok, stdout, stderr) = check(&test_stack::cards_dir());
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("ok: "), "{stdout}");
}

#[test]
fn cards_check_names_file_card_and_field_and_fails() {
    let (ok, _, stderr) = check(&fixture("cards-broken"));
    assert!(!ok);
    assert!(
        stderr.contains("cards.ron: `broken_cost` field `cost`: -2 is out of range"),
        "{stderr}"
    );
    assert!(
        stderr.contains("`dup_card` field `id`: duplicate id"),
        "{stderr}"
    );
    assert!(
        stderr.contains("decks.ron: `starter_grove` field `cards`: unknown card `ghost_card`"),
        "{stderr}"
    );
    // Crops, recipes and the starter kit are checked the same way.
    for want in [
        "crops.ron: `bad_crop` field `seed`: unknown item `no_seed`",
        "crops.ron: `bad_crop` field `stages`: 0 is out of range",
        "recipes.ron: `bad_recipe` field `inputs`: unknown item `ghost_item`",
        "recipes.ron: `bad_recipe` field `output`: unknown card `ghost_card`",
        "rules.ron: `rules` field `starter_items`: unknown item `ghost_item`",
    ] {
        assert!(stderr.contains(want), "{want}\n{stderr}");
    }
}

#[test]
fn cards_check_reports_bad_ron_and_missing_fields() {
    let (ok, _, stderr) = check(&fixture("cards-bad-ron"));
    assert!(!ok);
    assert!(stderr.contains("cards.ron: `half_written`"), "{stderr}");
    assert!(stderr.contains("line "), "{stderr}");
    let (ok, _, stderr) = check(&fixture("cards-missing-field"));
    assert!(!ok);
    assert!(stderr.contains("`no_cost_card` field `cost`"), "{stderr}");
}

#[test]
fn cards_check_on_a_missing_folder_fails_clearly() {
    let (ok, _, stderr) = check(Path::new("/nonexistent/cards"));
    assert!(!ok);
    assert!(stderr.contains("cannot read file"), "{stderr}");
}

/// Runs `croft up` on `dir` with the shipped cards, any free ports and `args` until it exits;
/// asserts it succeeded and returns what it printed.
fn croft_up(dir: &Path, args: &[&str]) -> String {
    let out = test_stack::up_command(Path::new(env!("CARGO_BIN_EXE_croft")), dir)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn croft_up_eight_bots_log_in_queue_and_play_two_matches_each() {
    let dir = std::env::temp_dir().join(format!("croft-up-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = croft_up(&dir, &["--bots", "8", "--matches", "2", "--think-ms", "10"]);
    // 8 bots x 2 matches: every bot queued twice and finished both, and every player ended
    // idle (out of the queue, no match open).
    assert!(
        stdout.contains("players 16 finished 16 failed 0"),
        "{stdout}"
    );
    assert!(stdout.contains("login -> match start: p50"), "{stdout}");
    assert!(
        stdout.contains("matchmaking after the bots: 0 queued, 0 matches open"),
        "{stdout}"
    );
    // Every bot farmed (6 plantings and 6 waterings), crafted (wheat to flour twice, then a
    // Mill Golem), walked 4 steps in the common area and queued with a deck holding the golem.
    assert!(
        stdout.contains(
            "before queueing: 96 farm actions, 24 crafts, 8 decks built, 32 steps in the common area (8 bots)"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("croft stopped"), "{stdout}");
    assert!(stdout.contains("kafka         127.0.0.1:"), "{stdout}");
    // The results and events landed in the database; the match logs hold 4 matches.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (results, found, logins) = rt.block_on(async {
        let url = format!("sqlite://{}/croft.db", dir.display());
        let store = store::Store::connect(&url, &store::PoolSettings::default())
            .await
            .unwrap();
        let events = store.outbox(1000).await.unwrap();
        // Every event the services wrote matches the JSON Schema of its type, and the relay
        // had every one acknowledged by the (embedded) broker before croft up stopped.
        for e in &events {
            assert!(e.sent_at.is_some(), "{} not published", e.event.event_type);
            let path = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../docs/events")
                .join(format!("{}.schema.json", e.event.event_type));
            let schema: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let payload: serde_json::Value = serde_json::from_str(&e.event.payload).unwrap();
            let validator = jsonschema::validator_for(&schema).unwrap();
            let errors: Vec<String> = validator
                .iter_errors(&payload)
                .map(|err| err.to_string())
                .collect();
            assert!(errors.is_empty(), "{}: {errors:?}", e.event.event_type);
            assert_eq!(
                payload["event_id"].as_str(),
                Some(e.event.event_id.as_str())
            );
        }
        let count = |t: &str| events.iter().filter(|e| e.event.event_type == t).count();
        assert_eq!(count("item_crafted"), 24);
        // Each bot's farm was written: six wheat plots, watered.
        let farms = store.farm_count().await.unwrap();
        assert_eq!(farms, 8);
        (
            store.match_count().await.unwrap(),
            count("match_found"),
            count("user_login"),
        )
    });
    assert_eq!(results, 8);
    assert_eq!(found, 8);
    assert_eq!(logins, 8);
    let logged: usize = std::fs::read_dir(dir.join("instances"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".matches.jsonl"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap().lines().count())
        .sum();
    assert_eq!(logged, 8);
    // Every player played the deck they built, with their crafted Mill Golem in it.
    let data = shared_sim::GameData::load_dir(&test_stack::cards_dir()).unwrap();
    let golem = u64::from(data.card_idx("mill_golem").unwrap().0);
    for entry in std::fs::read_dir(dir.join("instances")).unwrap().flatten() {
        if !entry
            .file_name()
            .to_string_lossy()
            .ends_with(".matches.jsonl")
        {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let record: serde_json::Value = serde_json::from_str(line).unwrap();
            for deck in record["setup"]["decks"].as_array().unwrap() {
                let cards: Vec<u64> = deck
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_u64().unwrap())
                    .collect();
                assert!(cards.contains(&golem), "{cards:?}");
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn croft_up_a_websocket_bot_plays_a_udp_bot() {
    // Two bots: the first speaks WebSocket everywhere (lobby, farm, common area, match), as a
    // web export does; the second UDP. They are the only two queued, so they meet.
    let dir = std::env::temp_dir().join(format!("croft-up-ws-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = croft_up(
        &dir,
        &[
            "--bots",
            "2",
            "--ws-bots",
            "1",
            "--matches",
            "1",
            "--think-ms",
            "10",
        ],
    );
    assert!(stdout.contains("1 of them over WebSocket"), "{stdout}");
    assert!(stdout.contains("players 2 finished 2 failed 0"), "{stdout}");
    assert!(
        stdout.contains(
            "before queueing: 24 farm actions, 6 crafts, 2 decks built, 8 steps in the common area (2 bots)"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("over WebSocket: 1 bots, 1 matches finished"),
        "{stdout}"
    );
    assert!(stdout.contains("ws ws://127.0.0.1:"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn croft_up_starts_more_instances_when_the_warm_one_is_full() {
    let dir = std::env::temp_dir().join(format!("croft-up-scale-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = croft_up(
        &dir,
        &[
            "--bots",
            "6",
            "--matches",
            "1",
            "--think-ms",
            "10",
            "--instance-max-matches",
            "1",
            "--max-instances",
            "3",
        ],
    );
    assert!(stdout.contains("players 6 finished 6 failed 0"), "{stdout}");
    // One match per instance: the three matches ran on three instance processes.
    let logs = std::fs::read_dir(dir.join("instances"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".matches.jsonl"))
        .filter(|e| !std::fs::read_to_string(e.path()).unwrap().is_empty())
        .count();
    assert_eq!(logs, 3, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn servers_refuse_a_weak_netcode_key_and_keygen_writes_a_good_one() {
    let dir = std::env::temp_dir().join(format!("croft-key-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let weak = dir.join("weak.key");
    std::fs::write(&weak, "00".repeat(32)).unwrap();
    let out = croft()
        .args(["instance", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .arg("--cards")
        .arg(test_stack::cards_dir())
        .arg("--netcode-key-file")
        .arg(&weak)
        .env(
            "CROFT_CONTROL_TOKEN",
            "a-control-credential-of-enough-length",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("all zeros"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let good = dir.join("good.key");
    assert!(
        croft()
            .arg("keygen")
            .arg("--out")
            .arg(&good)
            .status()
            .unwrap()
            .success()
    );
    let key = token::NetcodeKey::read_file(&good).unwrap();
    assert_ne!(key.bytes(), &[0u8; 32]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn croft_with_stdin(args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = croft()
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn user_add_import_and_migrate_on_sqlite() {
    let dir = std::env::temp_dir().join(format!("croft-users-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let url = format!("sqlite://{}/croft.db", dir.display());
    let out = croft()
        .args(["migrate", "--database", &url])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = croft_with_stdin(
        &[
            "user",
            "add",
            "--database",
            &url,
            "Alice",
            "--password-stdin",
        ],
        "correct horse battery\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("created user `Alice`"));
    // Same name in another case: refused, and says why.
    let out = croft_with_stdin(
        &[
            "user",
            "add",
            "--database",
            &url,
            "alice",
            "--password-stdin",
        ],
        "another password\n",
    );
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already exists"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = croft_with_stdin(
        &["user", "add", "--database", &url, "bob", "--password-stdin"],
        "short\n",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("password must be"));

    // Import keeps existing argon2 hashes; anything else is refused with the line number.
    let hash = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0c1Hf9pPvN7nB7X4mEXcG0xDQJxjlV1m1yP1Gc2v7lQ";
    let list = dir.join("users.txt");
    std::fs::write(&list, format!("# name:phc\ncarol:{hash}\n")).unwrap();
    let out = croft()
        .args(["user", "import", "--database", &url])
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("imported 1 of 1"));
    std::fs::write(&list, "dave:$pbkdf2$nope\n").unwrap();
    let out = croft()
        .args(["user", "import", "--database", &url])
        .arg(&list)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills a child process when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn croft_auth_dev_logs_in_a_user_added_from_the_cli_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("croft-auth-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}/croft.db", dir.display());
    let out = croft_with_stdin(
        &[
            "user",
            "add",
            "--database",
            &url,
            "Gwen",
            "--password-stdin",
        ],
        "correct horse battery\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Without secrets and without --dev it refuses to start.
    let out = croft()
        .args(["auth", "--http", "127.0.0.1:0", "--database", &url])
        .arg("--data-dir")
        .arg(&dir)
        .env_remove("CROFT_NETCODE_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--jwt-key-file"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Plain HTTP off loopback needs an explicit opt-in.
    let out = croft()
        .args(["auth", "--dev", "--http", "0.0.0.0:0", "--database", &url])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("plain HTTP"));

    let ready = dir.join("auth.ready");
    let child = croft()
        .args([
            "auth",
            "--dev",
            "--http",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--database",
            &url,
        ])
        .arg("--data-dir")
        .arg(&dir)
        .arg("--ready-file")
        .arg(&ready)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (addr, metrics_addr) = loop {
        assert!(std::time::Instant::now() < deadline, "auth did not start");
        if let Ok(text) = std::fs::read_to_string(&ready)
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            break (
                v["http"].as_str().unwrap().to_string(),
                v["metrics"].as_str().unwrap().to_string(),
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(dir.join("jwt.key").exists() && dir.join("netcode.key").exists());
    let http = reqwest::blocking::Client::new();
    // The internal listener also serves the revocation feed (game servers in a cluster poll
    // it over plain HTTP while the public listener speaks HTTPS).
    let feed = http
        .get(format!("http://{metrics_addr}/v1/auth/revocations?since=0"))
        .send()
        .unwrap();
    assert_eq!(feed.status(), 200);
    let feed: serde_json::Value = feed.json().unwrap();
    assert!(feed["revoked"].is_array(), "{feed}");
    let resp = http
        .post(format!("http://{addr}/v1/auth/login"))
        .json(&serde_json::json!({"username": "gwen", "password": "correct horse battery"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().unwrap();
    for field in [
        "access_token",
        "refresh_token",
        "expires_in",
        "connect_token",
        "connection_servers",
    ] {
        assert!(!body[field].is_null(), "missing {field}: {body}");
    }
    // The edge: a request id comes back, oversized bodies are 413, login floods are 429.
    let resp = http
        .post(format!("http://{addr}/v1/auth/login"))
        .header("content-type", "application/json")
        // Over the 16 KiB limit, yet small enough to sit in the socket buffer whole: a larger
        // body can meet the server's early answer with a connection reset mid-send.
        .body("x".repeat(20 * 1024))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 413);
    assert!(resp.headers().contains_key("x-request-id"));
    let statuses: Vec<u16> = (0..12)
        .map(|_| {
            http.post(format!("http://{addr}/v1/auth/login"))
                .json(&serde_json::json!({"username": "gwen", "password": "wrong password"}))
                .send()
                .unwrap()
                .status()
                .as_u16()
        })
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
    let metrics = http
        .get(format!("http://{metrics_addr}/metrics"))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(metrics.contains("http_requests_total"), "{metrics}");
    // Not on the public address.
    let public = http.get(format!("http://{addr}/metrics")).send().unwrap();
    assert_eq!(public.status(), 404);
    // SIGTERM: graceful stop.
    let pid = child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline + std::time::Duration::from_secs(10),
            "auth did not stop"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn croft_up_with_kafka_leaves_its_events_in_that_cluster() {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    // A Kafka-protocol broker outside croft up (librdkafka's mock cluster in this process).
    let cluster = rdkafka::mocking::MockCluster::new(1).unwrap();
    let brokers = cluster.bootstrap_servers();
    let dir = std::env::temp_dir().join(format!("croft-up-kafka-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = croft_up(
        &dir,
        &[
            "--bots",
            "4",
            "--matches",
            "1",
            "--think-ms",
            "10",
            "--kafka",
            &brokers,
            "--topic-prefix",
            "t1.",
        ],
    );
    assert!(
        stdout.contains(&format!("kafka         {brokers} (external)")),
        "{stdout}"
    );
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", "croft-up-test")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer
        .subscribe(&["t1.user_login", "t1.match_found", "t1.game_ended"])
        .unwrap();
    let (mut logins, mut found, mut ended) = (0, 0, 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while (logins < 4 || found < 2 || ended < 2) && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(std::time::Duration::from_millis(200)) {
            let v: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
            assert_eq!(v["event_type"].as_str(), m.topic().strip_prefix("t1."));
            match m.topic() {
                "t1.user_login" => logins += 1,
                "t1.match_found" => found += 1,
                _ => ended += 1,
            }
        }
    }
    // Logins from auth, matches from matchmaking (both through the outbox), match ends from
    // the instance servers (through their bounded event queue).
    assert_eq!((logins, found, ended), (4, 2, 2));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Services whose database role cannot change the schema start with `--skip-migrations`:
/// they only check that `croft migrate` (run as another role) has brought it up to date.
#[test]
fn skip_migrations_checks_the_schema_and_migrate_reads_its_url_from_a_file() {
    let dir = std::env::temp_dir().join(format!("croft-skipmig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let url_file = dir.join("database.url");
    std::fs::write(&url_file, format!("sqlite://{}/fresh.db\n", dir.display())).unwrap();
    let run = |extra: &[&str]| {
        croft()
            .arg("migrate")
            .arg("--database-url-file")
            .arg(&url_file)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--skip-migrations"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("croft migrate"), "{err}");
    let out = run(&[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.join("fresh.db").exists(), "the URL came from the file");
    let out = run(&["--skip-migrations"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("is current"));
    // The same switch on the services, through the environment.
    let out = croft()
        .args(["matchmaking", "--http", "127.0.0.1:0", "--database"])
        .arg(format!("sqlite://{}/other.db", dir.display()))
        .env("CROFT_SKIP_MIGRATIONS", "true")
        .env("CROFT_SERVICE_TOKEN", "a-service-token-long-enough-for-it")
        .env("CROFT_CONTROL_TOKEN", "a-control-token-long-enough-for-it")
        .env("CROFT_NETCODE_KEY", "0123456789abcdef".repeat(4))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not migrated") || err.contains("not applied"),
        "{err}"
    );
    // The Kubernetes allocators outside a cluster (no service account, no kubeconfig): a
    // clear error at start-up.
    let out = croft()
        .args([
            "matchmaking",
            "--http",
            "127.0.0.1:0",
            "--allocator",
            "agones",
            "--database",
        ])
        .arg(format!("sqlite://{}/fresh.db", dir.display()))
        .arg("--cards")
        .arg(test_stack::cards_dir())
        .env("CROFT_SERVICE_TOKEN", "a-service-token-long-enough-for-it")
        .env("CROFT_CONTROL_TOKEN", "a-control-token-long-enough-for-it")
        .env("CROFT_NETCODE_KEY", "0123456789abcdef".repeat(4))
        .env("KUBECONFIG", dir.join("no-kubeconfig"))
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("connecting to the Kubernetes API"), "{err}");
    // The outbox relay needs a broker to publish to.
    let out = croft()
        .args(["matchmaking", "--outbox-relay"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--kafka"));
    // A connection server's public IP from a file: a bad one is refused by name.
    let ip_file = dir.join("public-ip");
    std::fs::write(&ip_file, "not-an-ip\n").unwrap();
    let out = croft()
        .args([
            "connection",
            "--udp",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .arg("--public-ip-file")
        .arg(&ip_file)
        .arg("--cards")
        .arg(test_stack::cards_dir())
        .arg("--database")
        .arg(format!("sqlite://{}/fresh.db", dir.display()))
        .env("CROFT_SERVICE_TOKEN", "a-service-token-long-enough-for-it")
        .env("CROFT_NETCODE_KEY", "0123456789abcdef".repeat(4))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`not-an-ip` is not an IP address"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
