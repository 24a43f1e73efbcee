//! Hot reload of the card data: a thread that watches a data folder and swaps valid new data
//! into a [`DataHandle`], with the logs and metrics every server reports reloads with.

use std::path::PathBuf;

use shared_sim::GameData;
use shared_sim::data::{DataErrors, DataHandle, content_version};

/// What a reload of the data folder came to.
#[derive(Debug)]
pub enum Reload<'a> {
    /// New data is in force.
    Applied(&'a GameData),
    /// The new files are invalid; the old data stays in force.
    Rejected(&'a DataErrors),
    /// The files cannot be read (being written, removed); tried again next time.
    Unreadable(&'a std::io::Error),
}

/// Hot reload: every `every`, compares the content of the data files in `dir` with the data in
/// force; when they changed, validates them and either swaps them in (what starts from now on
/// uses them; running matches keep theirs) or keeps the old data. `report` hears each outcome
/// once per distinct content. Runs on its own thread for the life of the process.
///
/// The data and its checks are `shared_sim`'s ([`GameData`]); this only watches and swaps.
pub fn watch(
    dir: PathBuf,
    handle: DataHandle,
    every: std::time::Duration,
    report: impl Fn(Reload<'_>) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("card-data-watch".into())
        .spawn(move || {
            let mut last_bad: Option<u64> = None;
            let mut unreadable = false;
            loop {
                std::thread::sleep(every);
                let version = match content_version(&dir) {
                    Ok(v) => {
                        unreadable = false;
                        v
                    }
                    Err(e) => {
                        if !unreadable {
                            report(Reload::Unreadable(&e));
                        }
                        unreadable = true;
                        continue;
                    }
                };
                if version == handle.get().version || last_bad == Some(version) {
                    continue;
                }
                match GameData::load_dir(&dir) {
                    Ok(data) => {
                        last_bad = None;
                        let data = std::sync::Arc::new(data);
                        handle.set(data.clone());
                        report(Reload::Applied(&data));
                    }
                    Err(errors) => {
                        last_bad = Some(version);
                        report(Reload::Rejected(&errors));
                    }
                }
            }
        })
}

/// Logs and counts what a reload came to: the `report` every server passes to [`watch`].
pub fn log_reload(outcome: Reload<'_>) {
    match outcome {
        Reload::Applied(data) => {
            metrics::counter!("croft_card_data_reloads_total", "result" => "applied").increment(1);
            tracing::info!(
                version = format!("{:016x}", data.version),
                cards = data.cards.len(),
                crops = data.crops.len(),
                recipes = data.recipes.len(),
                "card data reloaded: new matches and farms use it"
            );
        }
        Reload::Rejected(errors) => {
            metrics::counter!("croft_card_data_reloads_total", "result" => "rejected").increment(1);
            for e in &errors.0 {
                tracing::error!(error = %e, "card data rejected");
            }
            tracing::error!(
                problems = errors.0.len(),
                "card data not reloaded: the old data stays in force"
            );
        }
        Reload::Unreadable(e) => {
            tracing::warn!(error = %e, "card data unreadable; trying again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;

    const SHIPPED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../assets/cards");

    fn copy_shipped(to: &Path) {
        for entry in std::fs::read_dir(SHIPPED).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }

    /// Writes a data file whole (the watch never sees half of it).
    fn put(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    /// What the watch reported, as text, in order.
    fn next(rx: &mpsc::Receiver<String>) -> String {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the watch reports within 10 s")
    }

    #[test]
    fn valid_edits_apply_invalid_ones_keep_the_old_data_and_each_is_reported_once() {
        let dir = std::env::temp_dir().join(format!("croft-card-reload-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        copy_shipped(&dir);
        let first = std::sync::Arc::new(GameData::load_dir(&dir).unwrap());
        let handle = DataHandle::from_arc(first.clone());
        let (tx, rx) = mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        watch(
            dir.clone(),
            handle.clone(),
            Duration::from_millis(20),
            move |outcome| {
                let text = match outcome {
                    Reload::Applied(d) => format!("applied {:016x}", d.version),
                    Reload::Rejected(e) => format!("rejected {}", e.0.len()),
                    Reload::Unreadable(_) => "unreadable".to_string(),
                };
                let _ = tx.lock().unwrap().send(text);
            },
        )
        .unwrap();

        // A valid edit (a comment changes the content, not the meaning) is swapped in.
        let rules = dir.join(shared_sim::data::RULES_FILE);
        let text = std::fs::read_to_string(&rules).unwrap();
        put(&rules, &format!("// edited\n{text}"));
        let applied = next(&rx);
        assert!(applied.starts_with("applied "), "{applied}");
        let second = handle.get();
        assert_ne!(second.version, first.version);
        assert_eq!(applied, format!("applied {:016x}", second.version));

        // Broken data is rejected, once, and the data in force stays.
        put(&rules, "(this is not the rules");
        let rejected = next(&rx);
        assert!(rejected.starts_with("rejected "), "{rejected}");
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            rx.try_recv().is_err(),
            "the same bad content is reported once"
        );
        assert_eq!(handle.get().version, second.version);

        // A missing file is unreadable; putting the old text back applies it again.
        std::fs::remove_file(&rules).unwrap();
        assert_eq!(next(&rx), "unreadable");
        put(&rules, &text);
        assert_eq!(next(&rx), format!("applied {:016x}", first.version));
        assert_eq!(handle.get().version, first.version);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
