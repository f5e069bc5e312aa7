-- Two ways a receipt kept aside landed on the wrong message once V79 let a final receipt pass by
-- a row that had one:
-- * the same final receipt sent again (an SMSC resends one the gateway answered with
--   ESME_RX_T_APPN while its write was still committing) matched no row and was kept aside; the
--   next message given that id by the SMSC then took it as its own. A receipt that repeats the
--   final state of a recent row with its id is now that row's, and is not kept;
-- * a receipt is kept aside only for a row whose id is on its way: one kept before the row was
--   written (`received_at` earlier than its `created_at`) is not that row's, and is left to be
--   dropped with the other strays.
CREATE OR REPLACE FUNCTION smpp_record_receipt(p_ref TEXT, p_stat TEXT, p_at TIMESTAMPTZ,
                                               p_keep_since TIMESTAMPTZ)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(3034, hashtext(p_ref));
    IF smpp_apply_receipt(p_ref, p_stat, p_at) THEN
        RETURN TRUE;
    END IF;
    IF EXISTS (SELECT 1 FROM customer_messages
                WHERE message_ref = p_ref AND channel = 'sms'
                  AND created_at > p_at - interval '3 days' AND receipt_status = p_stat) THEN
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
         WHERE e.message_ref = i.ref AND e.received_at >= c.created_at
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
