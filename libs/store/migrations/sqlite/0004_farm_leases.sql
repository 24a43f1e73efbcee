-- Who hosts each farm: one instance at a time. `epoch` grows by one with every grant and is
-- never reset (a released lease keeps its row with `expires_at` 0), so a write carrying an
-- older epoch, from a host that lost the farm while paused, is refused. Times are ms since
-- the Unix epoch.
CREATE TABLE farm_leases (
    user_id BIGINT PRIMARY KEY REFERENCES users(id),
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
