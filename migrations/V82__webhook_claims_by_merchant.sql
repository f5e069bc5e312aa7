-- The webhook worker claimed due events oldest first across all merchants, through
-- `webhook_events_due` (V1). A merchant held back as slow, with a large backlog of due events
-- (expired payments' events, an endpoint down for hours), then had its events read and passed
-- over by every claim made for the other merchants, since they are the oldest: each claim cost
-- the whole backlog. And a merchant whose endpoint answered just under the slow mark took every
-- claimed slot until its backlog was drained, while the others' retries waited.
--
-- Claims now go merchant by merchant, in turns (each merchant's oldest due event first, then
-- each one's second...): the merchants with undelivered events are found by skipping from one
-- to the next along this index, and each one's due events are read from its own part of it.
CREATE INDEX IF NOT EXISTS webhook_events_pending_by_merchant ON webhook_events (merchant_id, next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;
