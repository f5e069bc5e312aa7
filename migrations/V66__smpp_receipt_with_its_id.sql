-- An SMSC may send a delivery receipt right after its submit_sm_resp. When the receipt comes while
-- its message id's write is still queued, the gateway hands the receipt to that write: one row
-- update and one commit, where a receipt written on its own cost a second function call, a second
-- update of the row and a second commit.
--
-- p_stat is that receipt's stat (NULL when none came along). A receipt kept aside earlier is
-- still taken out; it is applied only when none came along, since the one that did is the newer.
CREATE FUNCTION smpp_mark_sent(p_id BIGINT, p_ref TEXT, p_at TIMESTAMPTZ, p_stat TEXT)
RETURNS VOID
LANGUAGE plpgsql AS $$
DECLARE
    early TEXT;
BEGIN
    PERFORM pg_advisory_xact_lock(3034, hashtext(p_ref));
    UPDATE customer_messages
       SET status = COALESCE(smpp_row_status(p_stat), 'sent'),
           receipt_status = COALESCE(p_stat, receipt_status),
           message_ref = p_ref, updated_at = p_at
     WHERE id = p_id;
    DELETE FROM smpp_early_receipts WHERE message_ref = p_ref RETURNING stat INTO early;
    IF early IS NOT NULL AND p_stat IS NULL THEN
        PERFORM smpp_apply_receipt(p_ref, early, p_at);
    END IF;
END
$$;

-- V60's form, for a gateway of the previous release still running beside this one.
CREATE OR REPLACE FUNCTION smpp_mark_sent(p_id BIGINT, p_ref TEXT, p_at TIMESTAMPTZ)
RETURNS VOID
LANGUAGE sql AS $$
    SELECT smpp_mark_sent(p_id, p_ref, p_at, NULL::text)
$$;
