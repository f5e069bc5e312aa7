-- The 0200's field 32 (the gateway's institution id when it left), beside its field 11 and
-- field 7. A reversal after a restart repeats it in field 32 and field 90; with the id taken from
-- the configuration of the day, a change of `[institution] id` between the debit and its
-- reversal named an acquirer that never sent the debit, and a strict BIPS undid nothing.
-- Payments sent before this migration keep NULL: their reversal uses the configured id.
ALTER TABLE payments ADD COLUMN debit_acquirer_id TEXT;
