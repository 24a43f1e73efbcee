use super::*;

/// The shipped data under `assets/cards` must always load.
pub(crate) fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../assets/cards")
}

#[test]
fn shipped_data_loads() {
    let data = GameData::load_dir(&shipped_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(data.cards.len() >= 30, "only {} cards", data.cards.len());
    assert!(data.starter_decks.len() >= 2);
    for deck in &data.starter_decks {
        data.resolve_deck(&deck.cards)
            .unwrap_or_else(|e| panic!("{}: {e}", deck.id));
    }
    let creatures = data
        .cards
        .iter()
        .filter(|c| matches!(c.kind, CardKind::Creature { .. }))
        .count();
    assert!(creatures > 0 && creatures < data.cards.len());
}

fn load_with(cards: &str, decks: &str) -> Result<GameData, DataErrors> {
    let dir = shipped_dir();
    let read = |n: &str| std::fs::read_to_string(dir.join(n)).unwrap();
    let (rules, items, crops, recipes) = (
        read(RULES_FILE),
        read(ITEMS_FILE),
        read(CROPS_FILE),
        read(RECIPES_FILE),
    );
    GameData::from_sources(
        (Path::new("rules.ron"), &rules),
        (Path::new("cards.ron"), cards),
        (Path::new("items.ron"), &items),
        (Path::new("crops.ron"), &crops),
        (Path::new("recipes.ron"), &recipes),
        (Path::new("decks.ron"), decks),
    )
}

fn shipped_cards() -> String {
    std::fs::read_to_string(shipped_dir().join(CARDS_FILE)).unwrap()
}
fn shipped_decks() -> String {
    std::fs::read_to_string(shipped_dir().join(DECKS_FILE)).unwrap()
}

#[test]
fn negative_cost_names_card_and_field() {
    let cards = shipped_cards().replacen("cost: 1,", "cost: -3,", 1);
    let errs = load_with(&cards, &shipped_decks()).unwrap_err();
    let e = errs
        .0
        .iter()
        .find(|e| e.field.as_deref() == Some("cost"))
        .expect("a cost error");
    assert_eq!(e.file, Path::new("cards.ron"));
    assert!(e.entry.is_some());
    assert!(e.message.contains("-3"), "{e}");
}

#[test]
fn duplicate_id_is_reported() {
    let cards = shipped_cards();
    let dup = cards.replacen(
        "[",
        "[\n(id: \"ember_fox\", name: \"Copy\", cost: 1, kind: Creature(attack: 1, health: 1)),",
        1,
    );
    let errs = load_with(&dup, &shipped_decks()).unwrap_err();
    assert!(
        errs.0
            .iter()
            .any(|e| e.entry.as_deref() == Some("ember_fox") && e.message == "duplicate id"),
        "{errs}"
    );
}

#[test]
fn unknown_card_in_deck_names_deck() {
    let decks = shipped_decks().replacen("\"ember_fox\"", "\"no_such_card\"", 1);
    let errs = load_with(&shipped_cards(), &decks).unwrap_err();
    let e = errs
        .0
        .iter()
        .find(|e| e.message.contains("no_such_card"))
        .expect("unknown card error");
    assert_eq!(e.field.as_deref(), Some("cards"));
    assert_eq!(e.file, Path::new("decks.ron"));
}

#[test]
fn missing_field_names_entry_and_field() {
    let broken = "[\n (id: \"a\", name: \"A\", cost: 1, kind: Creature(attack: 1, health: 1)),\n (id: \"b\", name: \"B\", kind: Creature(attack: 1, health: 1)),\n]";
    let errs = load_with(broken, &shipped_decks()).unwrap_err();
    let e = &errs.0[0];
    assert_eq!(e.entry.as_deref(), Some("b"), "{e}");
    assert_eq!(e.field.as_deref(), Some("cost"), "{e}");
}

#[test]
fn bad_ron_is_an_error_with_position() {
    let errs = load_with("[ (id: \"a\", name: ", &shipped_decks()).unwrap_err();
    assert!(errs.0[0].message.contains("line"), "{}", errs);
}
