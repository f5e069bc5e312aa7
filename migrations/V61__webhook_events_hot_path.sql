-- A payment's webhook event is written by the same statement that makes the payment final
-- (`FINISH_SQL`), from the payment row it has just updated: the event's payment and merchant
-- exist by construction, and neither payments nor merchants are ever deleted. The two foreign
-- keys added no protection. Their cost was real: every final status took a KEY SHARE lock on the
-- merchant's row. With many payments of one merchant finishing at once, those locks become
-- multixacts, the contention V50 removed from payment inserts.
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_merchant_id_fkey;
ALTER TABLE webhook_events DROP CONSTRAINT webhook_events_payment_id_fkey;
