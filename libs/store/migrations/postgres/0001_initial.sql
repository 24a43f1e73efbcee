-- croft schema, Postgres dialect. Kept equivalent to ../sqlite/0001_initial.sql: the same
-- tables, columns and constraints; only id generation and types differ where the engines do.
CREATE TABLE users (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL,
    username_key TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    session_id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    session_id TEXT NOT NULL REFERENCES sessions(session_id),
    user_id BIGINT NOT NULL REFERENCES users(id),
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens(family_id);

CREATE TABLE friends (
    user_id BIGINT NOT NULL REFERENCES users(id),
    friend_id BIGINT NOT NULL REFERENCES users(id),
    status TEXT NOT NULL CHECK (status IN ('pending', 'accepted')),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, friend_id),
    CHECK (user_id <> friend_id)
);

CREATE TABLE inventory (
    user_id BIGINT NOT NULL REFERENCES users(id),
    item_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (user_id, item_id)
);

CREATE TABLE collection (
    user_id BIGINT NOT NULL REFERENCES users(id),
    card_id TEXT NOT NULL,
    quantity BIGINT NOT NULL CHECK (quantity >= 0),
    PRIMARY KEY (user_id, card_id)
);

CREATE TABLE decks (
    id BIGINT PRIMARY KEY,
    user_id BIGINT NOT NULL REFERENCES users(id),
    name TEXT NOT NULL,
    cards TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL
);
CREATE INDEX decks_user ON decks(user_id);

CREATE TABLE match_results (
    match_id BIGINT PRIMARY KEY,
    player_a BIGINT NOT NULL,
    player_b BIGINT NOT NULL,
    winner BIGINT,
    reason TEXT NOT NULL,
    turns INTEGER NOT NULL,
    data_version TEXT NOT NULL,
    record TEXT NOT NULL,
    ended_at BIGINT NOT NULL
);

CREATE TABLE card_definitions (
    version TEXT NOT NULL,
    card_id TEXT NOT NULL,
    definition TEXT NOT NULL,
    PRIMARY KEY (version, card_id)
);

CREATE TABLE outbox (
    id BIGSERIAL PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    event_key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX outbox_unsent ON outbox(id) WHERE sent_at IS NULL;
