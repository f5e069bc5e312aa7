-- V78 put a receipt on the newest SMS row with its id of the last three days. An id the SMSC used
-- again within those days still found the earlier message's row while the new message's id was
-- being written: the receipt rewrote that row's final state, and the new message stayed `sent`.
-- A receipt is now for the newest such row that has no final receipt yet; with none, it is kept
-- aside for the row whose id is on its way (a repeated final receipt for a message is kept aside
-- too, and dropped with the other strays).
CREATE OR REPLACE FUNCTION smpp_apply_receipt(p_ref TEXT, p_stat TEXT, p_at TIMESTAMPTZ)
RETURNS BOOLEAN
LANGUAGE plpgsql AS $$
BEGIN
    UPDATE customer_messages
       SET receipt_status = p_stat, status = COALESCE(smpp_row_status(p_stat), status),
           updated_at = p_at
     WHERE id = (SELECT id FROM customer_messages
                  WHERE message_ref = p_ref AND channel = 'sms'
                    AND created_at > p_at - interval '3 days'
                    AND smpp_row_status(receipt_status) IS NULL
                  ORDER BY id DESC LIMIT 1);
    RETURN FOUND;
END
$$;
