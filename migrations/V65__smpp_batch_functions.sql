-- The SMS channel's group-committed batches (message ids after submit_sm_resp, delivery receipts)
-- called V60's functions once per row: a plpgsql call, an advisory lock and two or three
-- statements for each message. These take a whole batch: the locks first, then one statement per
-- step for all rows. The race they guard is V60's: a receipt and the recording of its message id
-- take the same transaction advisory lock on the id (class 3034), so whichever commits second sees
-- the first. Each statement after the locks takes a fresh snapshot (READ COMMITTED, a volatile
-- function), so it sees what the lock's previous holder committed.

-- The advisory locks of these message ids, in one order for every caller (no deadlock between
-- the two writers' batches).
CREATE FUNCTION smpp_lock_refs(p_refs TEXT[]) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    key INT;
BEGIN
    FOR key IN SELECT DISTINCT hashtext(r) FROM unnest(p_refs) AS r ORDER BY 1 LOOP
        PERFORM pg_advisory_xact_lock(3034, key);
    END LOOP;
END
$$;

-- The SMSC accepted message row p_ids[i] as p_refs[i]; receipts that came first are applied now.
CREATE FUNCTION smpp_mark_sent_batch(p_ids BIGINT[], p_refs TEXT[], p_ats TIMESTAMPTZ[])
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM smpp_lock_refs(p_refs);
    UPDATE customer_messages c SET status = 'sent', message_ref = t.ref, updated_at = t.at
      FROM unnest(p_ids, p_refs, p_ats) AS t(id, ref, at)
     WHERE c.id = t.id;
    WITH early AS (
        DELETE FROM smpp_early_receipts e USING unnest(p_refs, p_ats) AS t(ref, at)
         WHERE e.message_ref = t.ref
        RETURNING e.message_ref, e.stat, t.at)
    UPDATE customer_messages c
       SET receipt_status = early.stat, status = COALESCE(smpp_row_status(early.stat), c.status),
           updated_at = early.at
      FROM early
     WHERE c.message_ref = early.message_ref AND c.channel = 'sms';
END
$$;

-- Receipts: each on the message row that carries its id, or kept aside until a row has it
-- (receipts kept aside since before p_keep_since are dropped). One row per receipt: whether a
-- message row carried its id already.
CREATE FUNCTION smpp_record_receipt_batch(p_refs TEXT[], p_stats TEXT[], p_ats TIMESTAMPTZ[],
                                          p_keep_since TIMESTAMPTZ)
RETURNS TABLE (o_ref TEXT, o_applied BOOLEAN)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM smpp_lock_refs(p_refs);
    DELETE FROM smpp_early_receipts WHERE received_at < p_keep_since;
    RETURN QUERY
    WITH input AS (
        SELECT * FROM unnest(p_refs, p_stats, p_ats) AS t(ref, stat, at)),
    applied AS (
        UPDATE customer_messages c
           SET receipt_status = i.stat, status = COALESCE(smpp_row_status(i.stat), c.status),
               updated_at = i.at
          FROM input i
         WHERE c.message_ref = i.ref AND c.channel = 'sms'
        RETURNING i.ref),
    kept AS (
        INSERT INTO smpp_early_receipts (message_ref, stat, received_at)
        SELECT i.ref, i.stat, i.at FROM input i WHERE i.ref NOT IN (SELECT ref FROM applied)
        ON CONFLICT (message_ref)
        DO UPDATE SET stat = EXCLUDED.stat, received_at = EXCLUDED.received_at)
    SELECT i.ref, i.ref IN (SELECT ref FROM applied) FROM input i;
END
$$;

-- Replaced by the batch forms above (one row is a batch of one).
DROP FUNCTION smpp_mark_sent(BIGINT, TEXT, TIMESTAMPTZ);
DROP FUNCTION smpp_record_receipt(TEXT, TEXT, TIMESTAMPTZ, TIMESTAMPTZ);
DROP FUNCTION smpp_apply_receipt(TEXT, TEXT, TIMESTAMPTZ);
