-- The payer's bank of each reversal (field 100 of its debit): a reversal whose link is no longer
-- configured goes to the link that routes this bank. NULL for reversals queued before V71, whose
-- payment's customer names it.
ALTER TABLE reversals ADD COLUMN payer_bank TEXT;
