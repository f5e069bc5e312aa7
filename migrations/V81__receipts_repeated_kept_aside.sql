-- V80 took a final receipt that matched no row but repeated the state of a recent row with its id
-- for that row's repeat, and dropped it. With an id the SMSC used again, that was usually the new
-- message's own receipt (DELIVRD both times) come before its id was written: the new message
-- stayed `sent`. Such a receipt is kept aside again, as in V60. A repeat kept aside is still not
-- taken by a later message: V80's rule applies a kept receipt only to a row written before it
-- came, here with a minute's allowance for the gateway's clock.
CREATE OR REPLACE FUNCTION smpp_record_receipt(p_ref TEXT, p_stat TEXT, p_at TIMESTAMPTZ,
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

CREATE OR REPLACE FUNCTION smpp_mark_sent_batch(p_ids BIGINT[], p_refs TEXT[],
                                                p_ats TIMESTAMPTZ[], p_stats TEXT[])
RETURNS VOID
LANGUAGE plpgsql AS $$
BEGIN
    -- A statement of its own: the update below then takes its snapshot after every lock.
    PERFORM pg_advisory_xact_lock(3034, hashtext(r.ref))
       FROM unnest(p_refs) WITH ORDINALITY AS r(ref, n)
      ORDER BY r.n;
    WITH input AS (
        SELECT * FROM unnest(p_ids, p_refs, p_ats, p_stats) AS t(id, ref, at, stat)
    ), early AS (
        DELETE FROM smpp_early_receipts e
         USING input i JOIN customer_messages c ON c.id = i.id
         WHERE e.message_ref = i.ref AND e.received_at >= c.created_at - interval '1 minute'
        RETURNING e.message_ref, e.stat
    )
    UPDATE customer_messages m
       SET status = COALESCE(smpp_row_status(COALESCE(i.stat, early.stat)), 'sent'),
           receipt_status = COALESCE(i.stat, early.stat, m.receipt_status),
           message_ref = i.ref, updated_at = i.at
      FROM input i LEFT JOIN early ON early.message_ref = i.ref
     WHERE m.id = i.id;
END
$$;
