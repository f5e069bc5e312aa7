-- The sign-in lockout counted a known customer's failures under the customer ("customer:<id>")
-- and an unknown identity's under the text typed. Which of the two a sign-in counted under could
-- be seen from outside, which undid "the same wording for an unknown identity and a wrong
-- password" (gateway-http.md): five failures with "+8613800138000", then one try with
-- "8613800138000", answered "locked" only when the number was nobody's (a registered number's
-- failures counted under its customer, the other spelling's too, so that one was not locked). The
-- same with letter case, since online ids are matched exactly, and between an online id and a
-- mobile number of one customer.
--
-- "Five failures for one identity ... lock that identity": the key is now made by the gateway
-- from what was typed alone, normalised (a mobile number's digits without '+'), whoever it
-- names. `login_begin` is otherwise V67's, with `p_key` in the place of `p_unknown_key`; a
-- gateway of the previous release passes its unknown-identity key there, which is also made
-- from what was typed.
DROP FUNCTION login_begin(TEXT, TEXT, TEXT, TEXT, TIMESTAMPTZ, BIGINT, INT);
CREATE FUNCTION login_begin(p_identity TEXT, p_msisdn TEXT, p_msisdn_plus TEXT, p_key TEXT,
                            p_at TIMESTAMPTZ, p_window_s BIGINT, p_max INT)
RETURNS TABLE (customer_id TEXT, password_hash TEXT, typed_msisdn TEXT, bank_id TEXT,
               account TEXT, lockout_key TEXT, attempt_id BIGINT, locked_until TIMESTAMPTZ,
               terminal_ids TEXT[], terminal_kinds TEXT[], terminal_labels TEXT[],
               terminal_msisdns TEXT[])
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    who RECORD;
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
    SELECT * INTO attempt FROM login_attempt_begin(p_key, p_at, p_window_s, p_max);
    SELECT array_agg(t.id ORDER BY t.created_at, t.id) AS ids,
           array_agg(t.kind ORDER BY t.created_at, t.id) AS kinds,
           array_agg(t.label ORDER BY t.created_at, t.id) AS labels,
           array_agg(t.msisdn ORDER BY t.created_at, t.id) AS msisdns INTO owned
      FROM (SELECT id, kind, label, msisdn, created_at FROM terminals
             WHERE customer_id = who.id AND status = 'enabled'
             ORDER BY created_at, id LIMIT 32) t;
    RETURN QUERY SELECT who.id, who.password_hash, who.msisdn, who.bank_id, who.account, p_key,
                        attempt.attempt_id, attempt.locked_until, owned.ids, owned.kinds,
                        owned.labels, owned.msisdns;
END
$$;
