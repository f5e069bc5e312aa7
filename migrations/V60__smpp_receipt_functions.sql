-- The two sides of the race between a delivery receipt and the recording of its SMSC message id,
-- each one statement (one round trip, one commit) instead of a transaction of four to six. Both
-- take the same transaction advisory lock on the id (class 3034), so whichever commits second sees
-- the first; in READ COMMITTED each statement below takes a fresh snapshot after the lock.

-- The customer_messages.status a receipt's final state leads to; NULL keeps the status.
CREATE FUNCTION smpp_row_status(p_stat TEXT) RETURNS TEXT
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE
        WHEN p_stat = 'DELIVRD' THEN 'delivered'
        WHEN p_stat IN ('EXPIRED', 'DELETED', 'UNDELIV', 'REJECTD') THEN 'undeliverable'
    END
$$;

-- Puts a receipt on the message row that carries its id; returns whether a row did.
CREATE FUNCTION smpp_apply_receipt(p_ref TEXT, p_stat TEXT, p_at TIMESTAMPTZ) RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE customer_messages
       SET receipt_status = p_stat, status = COALESCE(smpp_row_status(p_stat), status),
           updated_at = p_at
     WHERE message_ref = p_ref AND channel = 'sms';
    RETURN FOUND;
END
$$;

-- The SMSC accepted message row p_id as p_ref; a receipt that came first is applied now.
CREATE FUNCTION smpp_mark_sent(p_id BIGINT, p_ref TEXT, p_at TIMESTAMPTZ) RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    early TEXT;
BEGIN
    PERFORM pg_advisory_xact_lock(3034, hashtext(p_ref));
    UPDATE customer_messages SET status = 'sent', message_ref = p_ref, updated_at = p_at
     WHERE id = p_id;
    DELETE FROM smpp_early_receipts WHERE message_ref = p_ref RETURNING stat INTO early;
    IF early IS NOT NULL THEN
        PERFORM smpp_apply_receipt(p_ref, early, p_at);
    END IF;
END
$$;

-- A receipt: on its message row, or kept aside until the row has the id (receipts kept aside
-- since before p_keep_since are dropped).
-- Returns whether a row carried the id already.
CREATE FUNCTION smpp_record_receipt(p_ref TEXT, p_stat TEXT, p_at TIMESTAMPTZ,
                                    p_keep_since TIMESTAMPTZ)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(3034, hashtext(p_ref));
    IF smpp_apply_receipt(p_ref, p_stat, p_at) THEN
        RETURN TRUE;
    END IF;
    DELETE FROM smpp_early_receipts WHERE received_at < p_keep_since;
    INSERT INTO smpp_early_receipts (message_ref, stat, received_at) VALUES (p_ref, p_stat, p_at)
        ON CONFLICT (message_ref)
        DO UPDATE SET stat = EXCLUDED.stat, received_at = EXCLUDED.received_at;
    RETURN FALSE;
END
$$;
