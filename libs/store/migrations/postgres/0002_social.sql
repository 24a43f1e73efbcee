-- Matchmaking ratings, and what the connection servers poll for revoked sessions.
ALTER TABLE users ADD COLUMN rating INTEGER NOT NULL DEFAULT 1000;
CREATE INDEX sessions_revoked ON sessions(revoked_at) WHERE revoked_at IS NOT NULL;
CREATE INDEX friends_friend ON friends(friend_id);
