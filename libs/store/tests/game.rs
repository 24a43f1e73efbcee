//! Inventory, crafting, decks, farms and grants against SQLite and Postgres.

use store::{
    Craft, CraftError, CraftOutput, FarmWrite, ItemChange, OutboxEvent, Store, StoreError,
};

async fn both() -> Vec<(&'static str, Store)> {
    store::testing::both().await
}

fn crafted(id: &str, user: i64) -> OutboxEvent {
    OutboxEvent {
        event_id: id.into(),
        event_type: "item_crafted".into(),
        key: user.to_string(),
        payload: format!("{{\"user_id\":{user}}}"),
    }
}

fn beetle() -> Craft {
    Craft {
        recipe: "craft_crystal_beetle".into(),
        inputs: vec![("crystal".into(), 2)],
        output: CraftOutput::Card("crystal_beetle".into()),
    }
}

fn flour() -> Craft {
    Craft {
        recipe: "mill_flour".into(),
        inputs: vec![("wheat".into(), 3)],
        output: CraftOutput::Item {
            id: "flour".into(),
            amount: 1,
            max_stack: 2,
        },
    }
}

async fn outbox_types(store: &Store) -> Vec<String> {
    store
        .outbox(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.event_type)
        .collect()
}

#[tokio::test]
async fn a_craft_takes_inputs_adds_the_output_and_writes_its_event_or_does_nothing() {
    for (engine, store) in both().await {
        let u = store.create_user("crafter", "$h").await.unwrap().id;
        assert!(
            store
                .grant_once(
                    u,
                    "starter",
                    &[("crystal".into(), 3), ("wheat".into(), 9)],
                    &[("ember_fox".into(), 2)]
                )
                .await
                .unwrap()
        );
        // A grant is given once.
        assert!(
            !store
                .grant_once(u, "starter", &[("crystal".into(), 3)], &[])
                .await
                .unwrap()
        );
        store.craft(u, &beetle(), crafted("e1", u)).await.unwrap();
        assert_eq!(
            store.inventory(u).await.unwrap(),
            vec![("crystal".into(), 1), ("wheat".into(), 9)],
            "{engine}"
        );
        assert_eq!(
            store.collection(u).await.unwrap(),
            vec![("crystal_beetle".into(), 1), ("ember_fox".into(), 2)],
            "{engine}"
        );
        // Not enough crystal: refused, nothing taken, no event.
        let r = store.craft(u, &beetle(), crafted("e2", u)).await;
        assert!(
            matches!(&r, Err(CraftError::Missing { item, need: 2 }) if item == "crystal"),
            "{engine}: {r:?}"
        );
        assert_eq!(store.inventory(u).await.unwrap()[0], ("crystal".into(), 1));
        // The output slot holds 2 flour: the third craft is refused and keeps its wheat.
        store.craft(u, &flour(), crafted("e3", u)).await.unwrap();
        store.craft(u, &flour(), crafted("e4", u)).await.unwrap();
        let r = store.craft(u, &flour(), crafted("e5", u)).await;
        assert!(
            matches!(&r, Err(CraftError::Full(id)) if id == "flour"),
            "{engine}: {r:?}"
        );
        assert_eq!(
            store.inventory(u).await.unwrap(),
            vec![
                ("crystal".into(), 1),
                ("flour".into(), 2),
                ("wheat".into(), 3)
            ],
            "{engine}"
        );
        let types = outbox_types(&store).await;
        assert_eq!(
            types.iter().filter(|t| *t == "item_crafted").count(),
            3,
            "{engine}: one event per successful craft"
        );
    }
}

/// Many crafts race for inputs that pay for exactly some of them: exactly those succeed and
/// the counts add up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_crafts_of_the_last_items_cannot_both_succeed() {
    for (engine, store) in both().await {
        let u = store.create_user("racer", "$h").await.unwrap().id;
        // 7 crystal: three crafts of 2 can succeed, one crystal is left.
        store
            .grant_once(u, "kit", &[("crystal".into(), 7)], &[])
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for i in 0..12 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .craft(u, &beetle(), crafted(&format!("race-{i}"), u))
                    .await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(()) => ok += 1,
                Err(CraftError::Missing { .. }) => {}
                // SQLite may answer a busy database under write contention; that craft did
                // nothing, which is what matters here.
                Err(CraftError::Store(e)) if engine == "sqlite" => {
                    eprintln!("sqlite: {e}")
                }
                Err(e) => panic!("{engine}: {e}"),
            }
        }
        let inv = store.inventory(u).await.unwrap();
        let crystal = inv.iter().find(|(i, _)| i == "crystal").map_or(0, |x| x.1);
        let beetles = store
            .collection(u)
            .await
            .unwrap()
            .iter()
            .find(|(c, _)| c == "crystal_beetle")
            .map_or(0, |x| x.1);
        assert_eq!(beetles, ok, "{engine}");
        assert_eq!(
            crystal + 2 * ok,
            7,
            "{engine}: nothing lost, nothing made twice"
        );
        if engine == "postgres" {
            assert_eq!(
                ok, 3,
                "{engine}: every craft that could be paid for succeeded"
            );
        }
        let events = outbox_types(&store).await;
        assert_eq!(
            events.iter().filter(|t| *t == "item_crafted").count() as i32,
            ok,
            "{engine}"
        );
    }
}

#[tokio::test]
async fn decks_are_saved_by_slot_and_one_is_active() {
    for (engine, store) in both().await {
        let u = store.create_user("builder", "$h").await.unwrap().id;
        let (decks, active) = store.decks(u).await.unwrap();
        assert!(decks.is_empty() && active.is_none(), "{engine}");
        assert_eq!(store.active_deck(u).await.unwrap(), None);
        let cards: Vec<String> = vec!["ember_fox".into(), "ember_fox".into()];
        store.save_deck(u, 0, "Fire", &cards).await.unwrap();
        store.save_deck(u, 1, "Other", &cards[..1]).await.unwrap();
        store.save_deck(u, 0, "Fire 2", &cards[..1]).await.unwrap();
        assert!(matches!(
            store.set_active_deck(u, Some(5)).await,
            Err(StoreError::NotFound)
        ));
        store.set_active_deck(u, Some(1)).await.unwrap();
        let (decks, active) = store.decks(u).await.unwrap();
        assert_eq!(decks.len(), 2);
        assert_eq!(decks[0].name, "Fire 2");
        assert_eq!(active, Some(1));
        assert_eq!(
            store.active_deck(u).await.unwrap(),
            Some(vec!["ember_fox".to_string()])
        );
        store.set_active_deck(u, None).await.unwrap();
        assert_eq!(store.active_deck(u).await.unwrap(), None, "{engine}");
    }
}

#[tokio::test]
async fn farm_snapshots_only_move_forward_and_actions_are_atomic() {
    for (engine, store) in both().await {
        let u = store.create_user("farmer", "$h").await.unwrap().id;
        assert_eq!(store.farm(u).await.unwrap(), None);
        assert!(store.save_farm(u, "{\"v\":1}", 1).await.unwrap());
        assert!(store.save_farm(u, "{\"v\":3}", 3).await.unwrap());
        // An older snapshot arriving late does not overwrite.
        assert!(
            !store.save_farm(u, "{\"v\":2}", 2).await.unwrap(),
            "{engine}"
        );
        assert_eq!(store.farm(u).await.unwrap(), Some(("{\"v\":3}".into(), 3)));
        store
            .grant_once(u, "seeds", &[("wheat_seed".into(), 1)], &[])
            .await
            .unwrap();
        // Planting takes the seed with the new farm state.
        let plant = [ItemChange::Take("wheat_seed".into(), 1)];
        assert!(store.farm_action(u, &plant, "{\"v\":4}", 4).await.unwrap());
        // No seed left: refused, and the farm stays at version 4.
        assert!(
            !store.farm_action(u, &plant, "{\"v\":5}", 5).await.unwrap(),
            "{engine}"
        );
        assert_eq!(store.farm(u).await.unwrap().unwrap().1, 4);
        // Harvest adds produce with the state; a full slot refuses the whole action.
        let harvest = [ItemChange::Add {
            id: "wheat".into(),
            amount: 3,
            max_stack: 5,
        }];
        assert!(
            store
                .farm_action(u, &harvest, "{\"v\":5}", 5)
                .await
                .unwrap()
        );
        assert!(
            !store
                .farm_action(u, &harvest, "{\"v\":6}", 6)
                .await
                .unwrap()
        );
        assert_eq!(
            store.inventory(u).await.unwrap(),
            vec![("wheat".into(), 3)],
            "{engine}"
        );
        assert_eq!(store.farm(u).await.unwrap().unwrap().1, 5);
    }
}

#[tokio::test]
async fn a_fenced_farm_write_writes_its_event_with_the_change_or_not_at_all() {
    for (engine, store) in both().await {
        let u = store.create_user("ledger", "$h").await.unwrap().id;
        let epoch = store
            .acquire_farm_lease(u, "inst-a", 1_000, 60_000)
            .await
            .unwrap()
            .unwrap();
        store
            .grant_once(u, "seeds", &[("wheat_seed".into(), 1)], &[])
            .await
            .unwrap();
        let plant = &[ItemChange::Take("wheat_seed".into(), 1)];
        let farmed = |n: u32| OutboxEvent {
            event_id: format!("farm-{n}"),
            event_type: "items_farmed".into(),
            key: u.to_string(),
            payload: "{}".into(),
        };
        let write = |v: i64, e: i64, ev| {
            let store = store.clone();
            async move {
                store
                    .farm_write_fenced(u, plant, &format!("{{\"v\":{v}}}"), v, e, Some(&ev))
                    .await
                    .unwrap()
            }
        };
        assert_eq!(write(1, epoch, farmed(1)).await, FarmWrite::Written);
        // No seed left: refused, and its event is not written either.
        assert_eq!(write(2, epoch, farmed(2)).await, FarmWrite::Refused);
        // Another instance took the farm: the old holder's write and event are fenced.
        store.release_farm_lease(u, "inst-a", epoch).await.unwrap();
        let newer = store
            .acquire_farm_lease(u, "inst-b", 2_000, 60_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(write(3, epoch, farmed(3)).await, FarmWrite::Fenced);
        assert!(newer > epoch);
        let ids: Vec<String> = store
            .outbox(100)
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.event.event_type == "items_farmed")
            .map(|r| r.event.event_id)
            .collect();
        assert_eq!(ids, vec!["farm-1".to_string()], "{engine}");
    }
}
