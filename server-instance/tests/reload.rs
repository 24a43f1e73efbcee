//! Hot reload of the card data while the instance server runs: invalid data is rejected and the
//! old data stays in force; valid data is applied to new matches.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::Instance;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn create(inst: &Instance, match_id: u64, decks: [&str; 2]) -> u16 {
    inst.http()
        .post(format!("{}/v1/matches", inst.control_url()))
        .bearer_auth(&inst.control_token)
        .json(&serde_json::json!({
            "match_id": match_id,
            "players": [match_id * 2, match_id * 2 + 1],
            "starter_decks": decks,
        }))
        .send()
        .unwrap()
        .status()
        .as_u16()
}

/// The value of `croft_card_data_reloads_total{result=…}` on the server's /metrics.
fn reloads(inst: &Instance, result: &str) -> u64 {
    let text = inst
        .http()
        .get(format!("{}/metrics", inst.control_url()))
        .send()
        .unwrap()
        .text()
        .unwrap();
    let key = format!("croft_card_data_reloads_total{{result=\"{result}\"}}");
    text.lines()
        .find(|l| l.starts_with(&key))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn card_data_reloads_while_running_and_bad_data_is_rejected() {
    let dir = std::env::temp_dir().join(format!("croft-reload-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy_dir(&common::cards_dir(), &dir);
    let cards = dir.display().to_string();
    let inst = Instance::start(&["--cards", &cards]);
    assert_eq!(create(&inst, 1, ["starter_test", "starter_ember"]), 422);

    // A new starter deck, but cards.ron broken in the same edit: rejected as a whole.
    let data = common::game_data();
    let ember = data.starter_deck("starter_ember").unwrap();
    let cards_list = ember
        .cards
        .iter()
        .map(|c| format!("\"{c}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let decks = std::fs::read_to_string(dir.join("decks.ron")).unwrap();
    let end = decks.rfind(']').unwrap();
    let new_decks = format!(
        "{}    (id: \"starter_test\", name: \"Test\", cards: [{cards_list}]),\n{}",
        &decks[..end],
        &decks[end..]
    );
    let good_cards = std::fs::read_to_string(dir.join("cards.ron")).unwrap();
    std::fs::write(dir.join("cards.ron"), format!("{good_cards}\n(oops")).unwrap();
    std::fs::write(dir.join("decks.ron"), &new_decks).unwrap();
    wait_until("the bad data is rejected", || {
        reloads(&inst, "rejected") >= 1
    });
    assert_eq!(reloads(&inst, "applied"), 0);
    assert_eq!(create(&inst, 2, ["starter_test", "starter_ember"]), 422);
    assert_eq!(
        create(&inst, 3, ["starter_grove", "starter_ember"]),
        201,
        "the old data is still in force"
    );

    // Fixed: applied, and new matches can use the new deck.
    std::fs::write(dir.join("cards.ron"), good_cards).unwrap();
    wait_until("the fixed data is applied", || {
        reloads(&inst, "applied") >= 1
    });
    assert_eq!(create(&inst, 4, ["starter_test", "starter_ember"]), 201);
    // Rejected once per content: no repeated reports while the files stay the same.
    assert_eq!(reloads(&inst, "rejected"), 1);
    let _ = std::fs::remove_dir_all(&dir);
}
