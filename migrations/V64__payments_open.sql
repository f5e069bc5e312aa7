-- The debit path's hot writes (issue 5: 2,000 payments/s with durable commits) are status changes
-- on `payments`. PostgreSQL can make an update HOT (a new row version on the same page, no index
-- entry written) only when no indexed column changes, and a column named in a partial index's
-- predicate counts. `payments_in_flight` (V1) named `status`, so every status change wrote a new
-- entry into each of the table's indexes, and the final status cost four.
--
-- The payments still open (awaiting the customer, awaiting the code, processing) are now listed
-- in their own small table, which triggers keep exact for every writer: a payment is listed when
-- it is inserted open and unlisted when it leaves the open statuses. The expiry sweep and the
-- reload after a restart read it instead of the partial index.
CREATE TABLE payments_open (
    payment_id           TEXT PRIMARY KEY,
    expires_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX payments_open_expiry ON payments_open (expires_at);

INSERT INTO payments_open (payment_id, expires_at)
SELECT id, expires_at FROM payments
 WHERE status IN ('awaiting_customer', 'awaiting_code', 'processing');

CREATE FUNCTION payments_open_list() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO payments_open (payment_id, expires_at) VALUES (NEW.id, NEW.expires_at);
    RETURN NULL;
END
$$;

CREATE FUNCTION payments_open_unlist() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM payments_open WHERE payment_id = OLD.id;
    RETURN NULL;
END
$$;

CREATE TRIGGER payments_opened AFTER INSERT ON payments FOR EACH ROW
    WHEN (NEW.status IN ('awaiting_customer', 'awaiting_code', 'processing'))
    EXECUTE FUNCTION payments_open_list();

CREATE TRIGGER payments_closed AFTER UPDATE OF status ON payments FOR EACH ROW
    WHEN (OLD.status IN ('awaiting_customer', 'awaiting_code', 'processing')
          AND NEW.status NOT IN ('awaiting_customer', 'awaiting_code', 'processing'))
    EXECUTE FUNCTION payments_open_unlist();

DROP INDEX payments_in_flight;

-- Room on each page for the new versions of its rows, so that status changes stay on the page
-- (pages written from now on; existing ones are left as they are).
ALTER TABLE payments SET (fillfactor = 75);

-- A message row is written only for a payment that exists: the outcome notice's by the statement
-- that moves the payment to its final status, the code message's by the channel at the request of
-- the payment's own actor. The foreign key's check (a lookup and a KEY SHARE lock on the payment
-- row, per message) guarded nothing more, and cost about 40 µs per row: a sixth of the
-- final-status statement.
ALTER TABLE customer_messages DROP CONSTRAINT customer_messages_payment_id_fkey;

-- Likewise, an attempt row is written only by the webhook worker, for an event it has just read.
ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_event_id_fkey;
