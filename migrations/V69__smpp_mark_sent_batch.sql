-- The recording of SMSC message ids, a batch at a time in one statement. Before, a batch called
-- `smpp_mark_sent` once per message: a PL/pgSQL call and three statements each (the lock, the
-- update, the early receipt's delete). In pgbench on a copy of the schema, 16 ids at a time, the
-- batch took about 70 µs a message against 110 µs.
--
-- Same rules as `smpp_mark_sent` (V66): each id's advisory lock (class 3034) first, in the batch's
-- order (the gateway sends the ids sorted, as its receipt batches are); a receipt kept aside
-- earlier is taken out, and applied when none rode with the write (the one that rode is newer).
-- The kept receipt is applied to the row being marked: it was kept aside because no row carried
-- the id when it came. `smpp_mark_sent` stays for a gateway of the previous release.
CREATE FUNCTION smpp_mark_sent_batch(p_ids BIGINT[], p_refs TEXT[], p_ats TIMESTAMPTZ[],
                                     p_stats TEXT[])
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
        DELETE FROM smpp_early_receipts e USING input i WHERE e.message_ref = i.ref
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
