-- An SMSC's message ids are not unique for ever: a short counter wraps, and another SMSC (after a
-- change of provider) starts its own from the beginning. A receipt was put on every SMS row that
-- ever carried its id: it rewrote old rows' history, and, finding an old row, was not kept aside
-- for the new message whose id was still being written, which then stayed `sent` for good.
-- A receipt is now for the newest SMS row with its id among those of the last three days (longer
-- than an SMSC's usual validity period); with none, it is kept aside as before.
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
                  ORDER BY id DESC LIMIT 1);
    RETURN FOUND;
END
$$;
