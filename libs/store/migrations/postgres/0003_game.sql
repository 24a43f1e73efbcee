-- The player's side of the game: decks, the farm, and one-time grants (the starter kit).
-- inventory and collection (user, id, quantity) are in 0001. The decks table of 0001 was never
-- used; decks are kept by slot instead.
DROP TABLE decks;

-- Decks by slot; `cards` is a JSON array of card ids.
CREATE TABLE decks (
    user_id BIGINT NOT NULL REFERENCES users(id),
    slot INTEGER NOT NULL,
    name TEXT NOT NULL,
    cards TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, slot)
);
-- The deck the player queues with (a slot in decks); NULL: the starter deck.
ALTER TABLE users ADD COLUMN active_deck INTEGER;

-- A farm as JSON (shared_sim::farm::Farm: plots and the farm tick they are at); `version`
-- grows by one per write, so an older snapshot never overwrites a newer one.
CREATE TABLE farms (
    user_id BIGINT PRIMARY KEY REFERENCES users(id),
    state TEXT NOT NULL,
    version BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE grants (
    user_id BIGINT NOT NULL REFERENCES users(id),
    grant_id TEXT NOT NULL,
    granted_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, grant_id)
);
