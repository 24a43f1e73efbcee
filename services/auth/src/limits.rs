//! The REST edge's per-address token buckets in Redis, shared by every auth replica (with
//! `croft auth --redis`): N replicas allow a client the limit once, not N times.

use std::net::IpAddr;

use edge::{Rate, SharedBuckets, Take};

/// One bucket: `t` tokens as of `l` (ms), refilled at ARGV[2] per second up to ARGV[1]; the
/// key expires once it would be full again. ARGV: burst, rate, now (ms), lifetime (ms).
/// Answers 0 (taken) or the seconds until a token is there.
const TAKE: &str = r#"
local burst, rate, now, ttl = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local f = redis.call('HMGET', KEYS[1], 't', 'l')
local tokens = tonumber(f[1]) or burst
local last = tonumber(f[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - last) / 1000 * rate)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) / rate)
end
redis.call('HSET', KEYS[1], 't', tostring(tokens), 'l', now)
redis.call('PEXPIRE', KEYS[1], ttl)
return wait
"#;

pub struct RedisBuckets {
    con: redis::aio::ConnectionManager,
    prefix: String,
    take: redis::Script,
}

impl RedisBuckets {
    /// Buckets under `store`'s key prefix.
    pub fn new(store: &control_store::RedisStore) -> Self {
        Self {
            con: store.connection(),
            prefix: store.prefix().to_string(),
            take: redis::Script::new(TAKE),
        }
    }
}

impl SharedBuckets for RedisBuckets {
    fn take(&self, bucket: &'static str, ip: IpAddr, rate: Rate) -> Take<'_> {
        Box::pin(async move {
            let per_second = rate.per_second.max(0.001);
            let burst = rate.burst.max(1);
            // Empty to full, plus a second: an older key holds nothing a new one would not.
            let ttl_ms = (f64::from(burst) / per_second * 1000.0) as u64 + 1000;
            let mut inv = self.take.prepare_invoke();
            inv.key(format!("{}rl:{bucket}:{ip}", self.prefix))
                .arg(burst)
                .arg(per_second)
                .arg(now_ms())
                .arg(ttl_ms);
            let mut con = self.con.clone();
            let call = inv.invoke_async::<u64>(&mut con);
            // A slow Redis must not hold every request: past this, this replica's own buckets.
            match tokio::time::timeout(std::time::Duration::from_millis(250), call).await {
                Ok(Ok(0)) => Ok(Ok(())),
                Ok(Ok(wait)) => Ok(Err(wait)),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("Redis did not answer within 250 ms".into()),
            }
        })
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// Two replicas over the real Redis (CROFT_TEST_REDIS; scripts/services starts it) share
    /// one client's budget.
    #[tokio::test]
    async fn two_replicas_share_one_budget_per_address() {
        let store = control_store::testing::redis("auth-limits").await;
        let replicas = [
            Arc::new(RedisBuckets::new(&store)),
            Arc::new(RedisBuckets::new(&store)),
        ];
        let rate = Rate {
            burst: 4,
            per_second: 0.1,
        };
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let mut taken = 0;
        for i in 0..8 {
            if replicas[i % 2]
                .take("strict", ip, rate)
                .await
                .unwrap()
                .is_ok()
            {
                taken += 1;
            }
        }
        assert_eq!(taken, 4, "the burst once across both replicas");
        let wait = replicas[0].take("strict", ip, rate).await.unwrap();
        assert!(matches!(wait, Err(w) if (1..=10).contains(&w)), "{wait:?}");
        // Another address and another bucket have their own budgets.
        let other: IpAddr = "203.0.113.8".parse().unwrap();
        assert!(
            replicas[1]
                .take("strict", other, rate)
                .await
                .unwrap()
                .is_ok()
        );
        assert!(replicas[1].take("general", ip, rate).await.unwrap().is_ok());
        control_store::ControlStore::Redis(store)
            .clear()
            .await
            .unwrap();
    }
}
