-- payhub core schema. Everything that must survive a crash lives here.
-- Later parts add their own migrations (V2, V3, …); never edit an applied one.

CREATE TABLE merchants (
    id                   TEXT PRIMARY KEY,                 -- mer_…
    name                 TEXT NOT NULL,
    cert_fingerprint     TEXT NOT NULL UNIQUE,             -- SHA-256 of the DER, lower-case hex
    cert_serial          TEXT NOT NULL,
    webhook_secret       TEXT NOT NULL,
    bank_id              TEXT NOT NULL,                    -- settlement bank (field 100 of the payee)
    account              TEXT NOT NULL,                    -- settlement account (field 103)
    terminal_id          TEXT NOT NULL,                    -- field 41, 8 characters
    card_acceptor_id     TEXT NOT NULL,                    -- field 42, 15 characters
    location             TEXT NOT NULL DEFAULT '',         -- field 43 city/country part
    status               TEXT NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE customers (
    id                   TEXT PRIMARY KEY,                 -- cus_…
    real_name            TEXT NOT NULL,                    -- actual identity
    national_id          TEXT,                             -- actual identity document, if given
    online_id            TEXT NOT NULL UNIQUE,             -- identity for online transactions
    bank_id              TEXT NOT NULL,                    -- payer's bank (field 100)
    account              TEXT NOT NULL,                    -- payer's account (field 102)
    password_hash        TEXT NOT NULL,                    -- argon2id PHC string
    status               TEXT NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE terminals (
    id                   TEXT PRIMARY KEY,                 -- trm_…
    customer_id          TEXT NOT NULL REFERENCES customers (id),
    kind                 TEXT NOT NULL CHECK (kind IN ('mobile', 'telephone', 'pager', 'pda', 'dedicated')),
    label                TEXT NOT NULL DEFAULT '',
    msisdn               TEXT,                             -- mobile, telephone, pager, pda
    serial               TEXT,                             -- device serial number
    shared_key           BYTEA,                            -- dedicated: key for the HMAC proof
    public_key           TEXT,                             -- dedicated: PEM public key, if used
    status               TEXT NOT NULL DEFAULT 'enabled' CHECK (status IN ('enabled', 'disabled')),
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (msisdn IS NOT NULL OR serial IS NOT NULL OR shared_key IS NOT NULL OR public_key IS NOT NULL)
);
CREATE INDEX terminals_customer ON terminals (customer_id);
-- A mobile number identifies one customer on the login page.
CREATE UNIQUE INDEX terminals_mobile_msisdn ON terminals (msisdn) WHERE kind = 'mobile';

CREATE TABLE payments (
    id                   TEXT PRIMARY KEY,                 -- pay_…
    merchant_id          TEXT NOT NULL REFERENCES merchants (id),
    order_id             TEXT NOT NULL,
    amount_minor         BIGINT NOT NULL CHECK (amount_minor BETWEEN 1 AND 999999999999),
    currency             TEXT NOT NULL,
    description          TEXT NOT NULL DEFAULT '',
    return_url           TEXT NOT NULL,
    notify_url           TEXT NOT NULL,
    status               TEXT NOT NULL DEFAULT 'awaiting_customer' CHECK (status IN
                         ('awaiting_customer', 'awaiting_code', 'processing', 'succeeded', 'failed', 'expired')),
    failure_code         TEXT,
    bank_response_code   TEXT,
    approval_code        TEXT,
    -- customer authentication
    customer_id          TEXT REFERENCES customers (id),
    password_failures    INT NOT NULL DEFAULT 0,
    session_hash         BYTEA,                            -- keyed hash of the session that passed the password
    channel              TEXT CHECK (channel IN ('sms', 'terminal')),
    terminal_id          TEXT REFERENCES terminals (id),
    receiver_msisdn      TEXT,                             -- where the code went (unregistered receiver policy)
    code_hash            BYTEA,                            -- keyed hash of the current authorization code
    code_expires_at      TIMESTAMPTZ,
    code_failures        INT NOT NULL DEFAULT 0,
    code_sends           INT NOT NULL DEFAULT 0,
    code_sent_at         TIMESTAMPTZ,
    -- the debit
    rrn                  TEXT UNIQUE,                      -- field 37, recorded before the debit is sent
    bank_link            TEXT,
    debit_sent_at        TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL,
    expires_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL,
    finished_at          TIMESTAMPTZ,
    UNIQUE (merchant_id, order_id)
);
CREATE INDEX payments_in_flight ON payments (expires_at)
    WHERE status IN ('awaiting_customer', 'awaiting_code', 'processing');
CREATE INDEX payments_recent ON payments (created_at DESC);

CREATE TABLE idempotency_keys (
    merchant_id          TEXT NOT NULL REFERENCES merchants (id),
    key                  TEXT NOT NULL,
    request_hash         BYTEA NOT NULL,                   -- SHA-256 of method, path and body
    response_status      SMALLINT NOT NULL,
    response_body        TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (merchant_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);

-- Failed password checks by identity, for the 5-in-15-minutes lockout.
CREATE TABLE login_failures (
    identity             TEXT NOT NULL,
    failed_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX login_failures_identity ON login_failures (identity, failed_at);

-- Messages to customers over non-Internet channels. The text is never stored (it holds the code).
CREATE TABLE customer_messages (
    id                   BIGSERIAL PRIMARY KEY,
    payment_id           TEXT NOT NULL REFERENCES payments (id),
    kind                 TEXT NOT NULL CHECK (kind IN ('code', 'outcome')),
    channel              TEXT NOT NULL,                    -- sms | terminal | telephone | pager …
    destination          TEXT NOT NULL,                    -- masked msisdn or terminal id
    status               TEXT NOT NULL DEFAULT 'queued' CHECK (status IN ('queued', 'sent', 'failed', 'delivered', 'undeliverable')),
    message_ref          TEXT,                             -- SMSC message id / terminal frame id
    receipt_status       TEXT,                             -- delivery receipt stat (DELIVRD, UNDELIV …)
    error                TEXT,
    created_at           TIMESTAMPTZ NOT NULL,
    updated_at           TIMESTAMPTZ NOT NULL
);
CREATE INDEX customer_messages_payment ON customer_messages (payment_id);
CREATE INDEX customer_messages_ref ON customer_messages (message_ref) WHERE message_ref IS NOT NULL;

-- Webhook outbox: written in the same transaction as the final status.
CREATE TABLE webhook_events (
    id                   TEXT PRIMARY KEY,                 -- evt_…
    payment_id           TEXT NOT NULL REFERENCES payments (id),
    merchant_id          TEXT NOT NULL REFERENCES merchants (id),
    event_type           TEXT NOT NULL,
    body                 TEXT NOT NULL,                    -- the exact JSON that is signed and sent
    notify_url           TEXT NOT NULL,
    created_at           TIMESTAMPTZ NOT NULL,
    next_attempt_at      TIMESTAMPTZ NOT NULL,
    attempts             INT NOT NULL DEFAULT 0,
    delivered_at         TIMESTAMPTZ,
    given_up_at          TIMESTAMPTZ,
    UNIQUE (payment_id, event_type)
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at)
    WHERE delivered_at IS NULL AND given_up_at IS NULL;

CREATE TABLE webhook_attempts (
    id                   BIGSERIAL PRIMARY KEY,
    event_id             TEXT NOT NULL REFERENCES webhook_events (id),
    attempted_at         TIMESTAMPTZ NOT NULL,
    status_code          INT,
    error                TEXT,
    duration_ms          INT NOT NULL
);
CREATE INDEX webhook_attempts_event ON webhook_attempts (event_id);

-- Reversal queue (store-and-forward): a 0420 is written here before it is first sent and repeated
-- as 0421 until a 0430 arrives.
CREATE TABLE reversals (
    id                   BIGSERIAL PRIMARY KEY,
    payment_id           TEXT REFERENCES payments (id),
    link_name            TEXT NOT NULL,
    rrn                  TEXT NOT NULL UNIQUE,             -- field 37 of the original
    amount_minor         BIGINT NOT NULL,
    currency_numeric     TEXT NOT NULL,                    -- field 49
    original_mti         TEXT NOT NULL,
    original_stan        TEXT NOT NULL,
    original_f7          TEXT NOT NULL,                    -- MMDDhhmmss of the original
    acquirer_id          TEXT NOT NULL,                    -- field 32
    reason               TEXT NOT NULL,                    -- timeout | response_91 | …
    attempts             INT NOT NULL DEFAULT 0,
    created_at           TIMESTAMPTZ NOT NULL,
    last_sent_at         TIMESTAMPTZ,
    next_attempt_at      TIMESTAMPTZ NOT NULL,
    completed_at         TIMESTAMPTZ,
    response_code        TEXT
);
CREATE INDEX reversals_pending ON reversals (link_name, next_attempt_at) WHERE completed_at IS NULL;

-- What happened, for operators and auditors. Never secrets, never full account numbers.
CREATE TABLE audit_log (
    id                   BIGSERIAL PRIMARY KEY,
    at                   TIMESTAMPTZ NOT NULL,
    payment_id           TEXT,
    event                TEXT NOT NULL,
    detail               JSONB NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_payment ON audit_log (payment_id);
