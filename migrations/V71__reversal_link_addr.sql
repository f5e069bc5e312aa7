-- The address of the link each reversal is queued on (the BIPS that received its debit). A link
-- renamed in the configuration keeps its address: its pending reversals follow it to the new
-- name. NULL for reversals queued before V71.
ALTER TABLE reversals ADD COLUMN link_addr TEXT;
