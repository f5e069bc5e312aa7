-- Receipts kept aside are bounded in number as well as in age. An SMSC that sends receipts for ids
-- payhub never recorded (a broken or hostile peer) would otherwise grow smpp_early_receipts for a
-- day without bound. Past p_keep_max the oldest go first: a receipt that really races its id's
-- write waits there for milliseconds, so the newest are the ones worth keeping.
CREATE FUNCTION smpp_record_receipt(p_ref TEXT, p_stat TEXT, p_at TIMESTAMPTZ,
                                    p_keep_since TIMESTAMPTZ, p_keep_max INTEGER)
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
    DELETE FROM smpp_early_receipts WHERE message_ref IN (
        SELECT message_ref FROM smpp_early_receipts
         ORDER BY received_at DESC, message_ref DESC OFFSET p_keep_max);
    RETURN FALSE;
END
$$;

-- V60's form, for a gateway of the previous release still running beside this one: bounded too.
CREATE OR REPLACE FUNCTION smpp_record_receipt(p_ref TEXT, p_stat TEXT, p_at TIMESTAMPTZ,
                                               p_keep_since TIMESTAMPTZ)
RETURNS BOOLEAN
LANGUAGE sql AS $$
    SELECT smpp_record_receipt(p_ref, p_stat, p_at, p_keep_since, 4096)
$$;
