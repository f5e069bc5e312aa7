-- The wire identity of a payment's 0200, committed together with `processing` (and `bank_link`)
-- before the 0200 leaves the process: field 11 (STAN) and field 7 (transmission date and time,
-- MMDDhhmmss). A reversal after a restart puts them into field 90, so a strict BIPS finds the
-- original debit (iso8583-profile.md: the 0420 undoes "the debit identified by field 37 and field
-- 90"). NULL for payments whose debit was never prepared.
ALTER TABLE payments
    ADD COLUMN debit_stan TEXT CHECK (debit_stan ~ '^[0-9]{6}$'),
    ADD COLUMN debit_f7   TEXT CHECK (debit_f7 ~ '^[0-9]{10}$');
