//! Finished matches leave the tick through a channel to a writer thread that appends them to
//! the match log; the tick never waits for the disk.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use bevy::prelude::Resource;
use shared_sim::plugin::MatchRecord;

#[derive(Resource, Clone)]
pub struct RecordSink(pub Sender<MatchRecord>);

pub struct RecordWriter {
    pub sink: RecordSink,
    pub thread: JoinHandle<()>,
}

/// Starts the writer; it ends when every [`RecordSink`] is dropped, after writing what it got.
pub fn start(path: PathBuf) -> std::io::Result<RecordWriter> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    let (tx, rx) = channel();
    let thread = std::thread::Builder::new()
        .name("match-log".into())
        .spawn(move || write_loop(file, rx, path))?;
    Ok(RecordWriter {
        sink: RecordSink(tx),
        thread,
    })
}

fn write_loop(file: std::fs::File, rx: Receiver<MatchRecord>, path: PathBuf) {
    let mut out = std::io::BufWriter::new(file);
    while let Ok(record) = rx.recv() {
        let line = match serde_json::to_string(&record) {
            Ok(line) => line,
            Err(e) => {
                tracing::error!(match_id = record.match_id, error = %e, "cannot encode match record");
                continue;
            }
        };
        // Flushed per record: a match ends rarely, and a crash should lose none.
        let written = writeln!(out, "{line}").and_then(|_| out.flush());
        match written {
            Ok(()) => metrics::counter!("croft_instance_match_records_written_total").increment(1),
            Err(e) => {
                metrics::counter!("croft_instance_match_record_errors_total").increment(1);
                tracing::error!(path = %path.display(), match_id = record.match_id, error = %e, "cannot write match record");
            }
        }
    }
    if let Err(e) = out.flush() {
        tracing::error!(path = %path.display(), error = %e, "cannot flush match log");
    }
}
