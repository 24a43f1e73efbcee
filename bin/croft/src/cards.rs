//! `croft cards check`: validate designers' RON data and name every problem.

use std::path::PathBuf;

use anyhow::bail;
use shared_sim::GameData;
use shared_sim::data::CardKind;

pub fn check(dir: PathBuf) -> anyhow::Result<()> {
    match GameData::load_dir(&dir) {
        Ok(data) => {
            let creatures = data
                .cards
                .iter()
                .filter(|c| matches!(c.kind, CardKind::Creature { .. }))
                .count();
            println!(
                "ok: {} cards ({} creatures, {} spells), {} items, {} crops, {} recipes, {} starter decks (version {:016x})",
                data.cards.len(),
                creatures,
                data.cards.len() - creatures,
                data.items.len(),
                data.crops.len(),
                data.recipes.len(),
                data.starter_decks.len(),
                data.version
            );
            Ok(())
        }
        Err(errors) => {
            for e in &errors.0 {
                eprintln!("error: {e}");
            }
            bail!("{} problem(s) in {}", errors.0.len(), dir.display())
        }
    }
}
