//! Farm leases on SQLite and Postgres: one holder at a time, epochs that only grow, expiry,
//! renewal and release.

use store::testing::both;

const TTL: i64 = 10_000;

#[tokio::test]
async fn a_farm_lease_has_one_holder_at_a_time_and_its_epoch_only_grows() {
    for (engine, store) in both().await {
        let u = store.create_user("leased", "$h").await.unwrap().id;
        let t0 = 1_000_000;
        assert_eq!(store.farm_lease(u).await.unwrap(), None, "{engine}");
        let a = store
            .acquire_farm_lease(u, "inst-a", t0, TTL)
            .await
            .unwrap();
        assert_eq!(a, Some(1), "{engine}");
        // Another instance cannot take it while it runs, however often it asks.
        for dt in [0, 1, TTL - 1] {
            let b = store.acquire_farm_lease(u, "inst-b", t0 + dt, TTL).await;
            assert_eq!(b.unwrap(), None, "{engine} at +{dt} ms");
        }
        // The holder renews it; a stale epoch or another holder cannot.
        assert!(
            store
                .renew_farm_lease(u, "inst-a", 1, t0 + 5_000, TTL)
                .await
                .unwrap()
        );
        assert!(
            !store
                .renew_farm_lease(u, "inst-a", 0, t0 + 5_000, TTL)
                .await
                .unwrap()
        );
        assert!(
            !store
                .renew_farm_lease(u, "inst-b", 1, t0 + 5_000, TTL)
                .await
                .unwrap()
        );
        assert_eq!(
            store
                .acquire_farm_lease(u, "inst-b", t0 + TTL, TTL)
                .await
                .unwrap(),
            None,
            "{engine}: the renewal moved the expiry"
        );
        // Expired: the next holder takes it with a new epoch, and the old one has lost it.
        let later = t0 + 5_000 + TTL;
        let b = store
            .acquire_farm_lease(u, "inst-b", later, TTL)
            .await
            .unwrap();
        assert_eq!(b, Some(2), "{engine}");
        assert!(
            !store
                .renew_farm_lease(u, "inst-a", 1, later, TTL)
                .await
                .unwrap()
        );
        assert!(!store.release_farm_lease(u, "inst-a", 1).await.unwrap());
        let lease = store.farm_lease(u).await.unwrap().unwrap();
        assert_eq!(
            (lease.holder.as_str(), lease.epoch),
            ("inst-b", 2),
            "{engine}"
        );
        // Released: free at once for anyone, and the epoch keeps growing.
        assert!(store.release_farm_lease(u, "inst-b", 2).await.unwrap());
        assert!(
            !store
                .renew_farm_lease(u, "inst-b", 2, later, TTL)
                .await
                .unwrap()
        );
        let a = store
            .acquire_farm_lease(u, "inst-a", later, TTL)
            .await
            .unwrap();
        assert_eq!(a, Some(3), "{engine}");
        // The same name asking again (a restarted process) gets a new epoch, never the old one.
        let again = store
            .acquire_farm_lease(u, "inst-a", later + 1, TTL)
            .await
            .unwrap();
        assert_eq!(again, Some(4), "{engine}");
        // Leases are per farm.
        let v = store.create_user("other", "$h").await.unwrap().id;
        let other = store
            .acquire_farm_lease(v, "inst-b", later, TTL)
            .await
            .unwrap();
        assert_eq!(other, Some(1), "{engine}");
    }
}
