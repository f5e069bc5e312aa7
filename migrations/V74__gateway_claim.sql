-- The serving gateway's heartbeat (src/single_gateway.rs). The advisory lock says who holds the
-- database only while its session lives: after a failover to a standby, or a restart of the
-- server, no session of the earlier gateway is left to see, yet that gateway writes on (its pool
-- reconnects) until its own check finds the claim lost, up to three check intervals after its
-- last good check. Each check of the holder writes `checked_at`, so a new gateway waits until
-- four of the holder's intervals have passed since it (three and a margin), unless the holder
-- released the claim as it stopped. One row.
CREATE TABLE gateway_claim (
    id                 BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    holder             TEXT NOT NULL,                 -- the holder's session name
    checked_at         TIMESTAMPTZ NOT NULL,          -- its last good check, on the server's clock
    check_interval_ms  BIGINT NOT NULL,
    released           BOOLEAN NOT NULL DEFAULT false -- it stopped cleanly
);
