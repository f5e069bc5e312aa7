-- An outcome the payment recorded for its terminal (channel 'terminal') went by SMS when the
-- terminal is a mobile or a PDA. Its message id was written, but receipts are matched among SMS
-- rows only (V79's smpp_apply_receipt), so each was kept aside, then dropped, and the row stayed
-- `sent`. A row given an SMSC message id went by SMS: it is now marked so. V81's function is
-- otherwise unchanged. Rows of the last three days (the receipts' reach) are mended.
--
-- V75's index of terminal outcomes names `channel`: those few rows now leave it (their update is
-- not HOT); an SMS row's `channel` is written with the value it has, which keeps its updates HOT.
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
           message_ref = i.ref, channel = 'sms', updated_at = i.at
      FROM input i LEFT JOIN early ON early.message_ref = i.ref
     WHERE m.id = i.id;
END
$$;

-- Dedicated terminals' rows end `delivered` or `failed` (the switch's answer), never `sent`.
UPDATE customer_messages SET channel = 'sms'
 WHERE channel = 'terminal' AND status = 'sent' AND message_ref IS NOT NULL
   AND created_at > now() - interval '3 days';
