//! Events per second through the transactional outbox relay into a Kafka-protocol broker:
//! N outbox rows written to the database, then the relay (the same code `croft up` runs)
//! publishes them (idempotent producer, acks=all, lz4) and marks them sent after the broker
//! acknowledged them. Also the direct producer (`BusProducer`, used for presence and chat)
//! on its own, for comparison.
//!
//! cargo bench -p events --bench relay -- [rows] [batch]
//!
//! The database is PostgreSQL (a throwaway database in `CROFT_TEST_POSTGRES` or the local
//! server) with `CROFT_BENCH_DB=postgres`, else SQLite in a temporary file. The broker is
//! librdkafka's mock cluster in this process, or `CROFT_BENCH_KAFKA=host:port`.

use std::time::{Duration, Instant};

use events::Event;
use events::bus::BusProducer;
use events::relay::{Relay, RelayConfig};

fn sample(i: u64) -> Event {
    Event::GameEnded {
        match_id: i,
        players: vec![i * 2, i * 2 + 1],
        winner: Some(i * 2),
        reason: "HeroDied".into(),
        turns: 11,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let rows: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(200_000);
    let batch: i64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    assert!(rows > 0 && batch > 0, "rows and batch must be at least 1");
    let (_cluster, brokers) = match std::env::var("CROFT_BENCH_KAFKA") {
        Ok(b) => (None, b),
        Err(_) => {
            let c = rdkafka::mocking::MockCluster::new(1).expect("mock cluster");
            let b = c.bootstrap_servers();
            (Some(c), b)
        }
    };
    let (db, store) = match std::env::var("CROFT_BENCH_DB").as_deref() {
        Ok("postgres") => ("postgres", store::testing::postgres().await),
        _ => ("sqlite", store::testing::sqlite().await),
    };

    // Writing the rows (not timed as relay throughput; printed for reference).
    let t = Instant::now();
    let mut chunk = Vec::with_capacity(10_000);
    for i in 0..rows {
        chunk.push(sample(i).outbox("bench"));
        if chunk.len() == 10_000 {
            store.insert_events(&chunk).await.expect("insert");
            chunk.clear();
        }
    }
    store.insert_events(&chunk).await.expect("insert");
    let insert = t.elapsed();

    // Where a batch's time goes: reading, then marking (on a copy of the work).
    if std::env::var("CROFT_BENCH_PHASES").is_ok() {
        // Three batches in turn: the first pays for connecting and preparing.
        for _ in 0..3 {
            let t = Instant::now();
            let got = store.unsent_events(batch).await.expect("read");
            let read = t.elapsed();
            let ids: Vec<i64> = got.iter().map(|r| r.id).collect();
            let t = Instant::now();
            store.mark_sent(&ids).await.expect("mark");
            println!(
                "phases: read {} rows {:.1} ms, mark {:.1} ms",
                got.len(),
                read.as_secs_f64() * 1e3,
                t.elapsed().as_secs_f64() * 1e3
            );
        }
        return;
    }
    let mut config = RelayConfig::new(&brokers);
    config.topic_prefix = "bench.".into();
    config.batch = batch;
    config.delivery_timeout = Duration::from_secs(60);
    let relay = Relay::new(store.clone(), config).expect("relay");
    let t = Instant::now();
    let published = if std::env::var("CROFT_BENCH_SERIAL").is_ok() {
        // One batch at a time (read, publish, mark), as the relay ran before its stages overlapped.
        let mut published = 0usize;
        loop {
            let n = relay.publish_batch().await.expect("publish");
            if n == 0 {
                break published;
            }
            published += n;
        }
    } else {
        relay.publish_all().await.expect("publish")
    };
    let relay_time = t.elapsed();
    assert_eq!(published as u64, rows, "every row published");
    assert!(store.unsent_events(1).await.unwrap().is_empty());
    println!(
        "relay: {rows} outbox rows ({db}, batch {batch}) -> broker {brokers}: {:.0} events/s acknowledged and marked sent ({:.2} s); rows written at {:.0}/s",
        rows as f64 / relay_time.as_secs_f64(),
        relay_time.as_secs_f64(),
        rows as f64 / insert.as_secs_f64()
    );

    // The direct producer on its own: queue, then wait for every acknowledgement.
    let producer = BusProducer::new(&brokers, "bench.", Duration::from_secs(60)).expect("producer");
    let envelopes: Vec<_> = (0..rows).map(|i| sample(i).envelope("bench")).collect();
    let t = Instant::now();
    for env in &envelopes {
        loop {
            match producer.emit(env) {
                Ok(()) => break,
                Err(events::bus::EmitError::QueueFull) => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).expect("flush");
    let direct = t.elapsed();
    println!(
        "direct producer: {rows} events: {:.0} events/s acknowledged ({:.2} s)",
        rows as f64 / direct.as_secs_f64(),
        direct.as_secs_f64()
    );
}
