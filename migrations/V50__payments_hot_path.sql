-- The payment insert is the merchant API's hot path (issue 2: 5,000 creates/s). Its foreign key to
-- `merchants` made every insert take a KEY SHARE lock on the merchant's row; with many
-- connections creating payments for one merchant at once, those locks became multixacts, a
-- known PostgreSQL contention point. `merchant_id` is always the authenticated merchant's id
-- (from its client certificate), and merchants are never deleted, only disabled: the key adds no
-- protection the code does not already give.
ALTER TABLE payments DROP CONSTRAINT payments_merchant_id_fkey;
