-- Issue 2's hot path again (5,000 creates/s): what each payment create costs PostgreSQL.
--
-- The idempotency record's foreign key to `merchants` made every keyed create take a KEY SHARE
-- lock on the merchant's row: the multixact contention V50 removed from the payment insert. The
-- record is written by the same statement as the payment, for the authenticated merchant, and
-- merchants are never deleted: the key added no protection.
ALTER TABLE idempotency_keys DROP CONSTRAINT idempotency_keys_merchant_id_fkey;

-- A payment has no RRN until its debit is about to be sent, yet the plain UNIQUE constraint put
-- an entry for its NULL into the index on every create. A partial index gives the same guarantee
-- (two payments never share an RRN) and is written only when the RRN is.
ALTER TABLE payments DROP CONSTRAINT payments_rrn_key;
CREATE UNIQUE INDEX payments_rrn ON payments (rrn) WHERE rrn IS NOT NULL;
