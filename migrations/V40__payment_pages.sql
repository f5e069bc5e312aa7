-- V40 (PAY): what the customer pages and the TransactionActor keep beyond the core schema.

-- Why the last authorization code could not be delivered (shown to the customer, with the other
-- channels), and how many deliveries failed for this payment (bounded).
ALTER TABLE payments ADD COLUMN code_delivery_error TEXT;
ALTER TABLE payments ADD COLUMN code_delivery_failures INT NOT NULL DEFAULT 0;

-- Payments whose actor must be rebuilt after a restart.
CREATE INDEX payments_resume ON payments (id) WHERE status IN ('awaiting_code', 'processing');
