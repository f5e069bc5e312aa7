-- SMPP delivery receipts that arrived before payhub recorded the SMSC message id on its
-- customer_messages row (the SMSC may send the receipt right after submit_sm_resp). The row picks
-- the state up when the id is recorded, and the receipt is then removed here.
CREATE TABLE smpp_early_receipts (
    message_ref          TEXT PRIMARY KEY,                 -- SMSC message id
    stat                 TEXT NOT NULL,                    -- DELIVRD, UNDELIV …
    received_at          TIMESTAMPTZ NOT NULL
);
CREATE INDEX smpp_early_receipts_received ON smpp_early_receipts (received_at);
