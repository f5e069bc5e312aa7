-- The address of the link a payment's 0200 went over, committed with `bank_link`. A payment found
-- `processing` after a restart is reversed over the link of that name, or else over the
-- configured link with this address (the same BIPS, renamed); with neither, its reversal waits
-- under the old name with this address, and the next start moves it to a link that has it. NULL
-- for debits prepared before V72.
ALTER TABLE payments ADD COLUMN debit_link_addr TEXT;
