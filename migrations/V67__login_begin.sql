-- The password step's reads and its counted attempt in one statement. Before, a sign-in was three
-- transactions before the hash: the customer by identity, the attempt (V65), and after it the
-- customer's terminals for the code's route. Each is a round trip and a transaction on a step
-- where the gateway's own cost should be small beside the password hash (issue 5).
--
-- One row: the customer (NULL columns when the identity is unknown), the key its failures count
-- under, the attempt or the end of the lock (as `login_attempt_begin`), and the customer's enabled
-- terminals as parallel arrays (the first 32, oldest first), read only for a known customer.
-- `p_msisdn` and `p_msisdn_plus` are the identity read as a mobile number, without and with its
-- '+', or NULL when it is not one. `p_unknown_key` is the key of an unknown identity.
CREATE FUNCTION login_begin(p_identity TEXT, p_msisdn TEXT, p_msisdn_plus TEXT, p_unknown_key TEXT,
                            p_at TIMESTAMPTZ, p_window_s BIGINT, p_max INT)
RETURNS TABLE (customer_id TEXT, password_hash TEXT, typed_msisdn TEXT, bank_id TEXT,
               account TEXT, lockout_key TEXT, attempt_id BIGINT, locked_until TIMESTAMPTZ,
               terminal_ids TEXT[], terminal_kinds TEXT[], terminal_labels TEXT[],
               terminal_msisdns TEXT[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    who RECORD;
    key TEXT;
    attempt RECORD;
    owned RECORD;
BEGIN
    SELECT c.id, c.password_hash, NULL::TEXT AS msisdn, c.bank_id, c.account INTO who
      FROM customers c WHERE c.online_id = p_identity AND c.status = 'enabled';
    IF who.id IS NULL AND p_msisdn IS NOT NULL THEN
        SELECT c.id, c.password_hash, t.msisdn, c.bank_id, c.account INTO who
          FROM terminals t JOIN customers c ON c.id = t.customer_id
         WHERE t.kind = 'mobile' AND t.status = 'enabled' AND c.status = 'enabled'
           AND t.msisdn IN (p_msisdn, p_msisdn_plus)
         ORDER BY t.created_at, t.id LIMIT 1;
    END IF;
    key := CASE WHEN who.id IS NULL THEN p_unknown_key ELSE 'customer:' || who.id END;
    SELECT * INTO attempt FROM login_attempt_begin(key, p_at, p_window_s, p_max);
    SELECT array_agg(t.id ORDER BY t.created_at, t.id) AS ids,
           array_agg(t.kind ORDER BY t.created_at, t.id) AS kinds,
           array_agg(t.label ORDER BY t.created_at, t.id) AS labels,
           array_agg(t.msisdn ORDER BY t.created_at, t.id) AS msisdns INTO owned
      FROM (SELECT id, kind, label, msisdn, created_at FROM terminals
             WHERE customer_id = who.id AND status = 'enabled'
             ORDER BY created_at, id LIMIT 32) t;
    RETURN QUERY SELECT who.id, who.password_hash, who.msisdn, who.bank_id, who.account, key,
                        attempt.attempt_id, attempt.locked_until, owned.ids, owned.kinds,
                        owned.labels, owned.msisdns;
END
$$;

-- V65's lockout rule, unchanged, as PL/pgSQL: a SQL function that is not inlined (it is called
-- from PL/pgSQL) is parsed and planned again on every call. `pg_stat_statements` put that at
-- about 0.5 ms of the 0.9 ms each `login_attempt_begin` took.
--
-- And without V65's index on `failed_at` alone. The rule's query (one identity's latest failures)
-- is served by `login_failures_identity`, but the planner was offered the age index too, and to
-- weigh it, read that index's newest end, where each sign-in leaves a dead entry (a right
-- password deletes its attempt): planning took about 0.85 ms on a table of 30,000 dead rows, and
-- the plan it chose read every identity's recent failures. The sweep that forgets old failures
-- now reads the table from its start, where the oldest rows are; the table holds about two
-- lockout windows of failures.
DROP INDEX login_failures_age;
CREATE OR REPLACE FUNCTION login_locked_until(p_identity TEXT, p_at TIMESTAMPTZ, p_window_s BIGINT,
                                              p_max INT)
RETURNS TIMESTAMPTZ
LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (
        SELECT CASE WHEN p_max > 0 AND count(*) >= p_max
                         AND max(failed_at) - min(failed_at) <= p_window_s * INTERVAL '1 second'
                         AND p_at < max(failed_at) + p_window_s * INTERVAL '1 second'
                    THEN max(failed_at) + p_window_s * INTERVAL '1 second' END
          FROM (SELECT failed_at FROM login_failures
                 WHERE identity = p_identity
                   AND failed_at > p_at - 2 * p_window_s * INTERVAL '1 second'
                 ORDER BY failed_at DESC LIMIT greatest(p_max, 0)) recent);
END
$$;
