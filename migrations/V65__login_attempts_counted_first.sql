-- "Five failures for one identity within 15 minutes lock that identity for 15 minutes, whatever the
-- payment." Each payment has its own actor, and the lockout was checked before the slow password
-- hash with the failure written after it: sign-ins on many payments at once all passed the check
-- before any failure was counted, so an attacker with N payment pages had N + 4 guesses a window.
--
-- An attempt is now counted before the hash, as a failure, by one statement that first takes a
-- per-identity lock: concurrent attempts see each other. A right password then removes its own
-- row only; the identity's earlier failures still count (a sign-in in between used to forget
-- them, so five failures within the window did not always lock).
ALTER TABLE login_failures ADD COLUMN id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY;

-- The sweep forgets failures too old to matter to any lockout decision.
CREATE INDEX login_failures_age ON login_failures (failed_at);

-- The lockout rule, in one place (the gateway also asks it after a failure): the identity is
-- locked when its last `p_max` failures fell within one window and the newest is less than a
-- window old; until the newest plus a window. NULL when it is not locked.
CREATE FUNCTION login_locked_until(p_identity TEXT, p_at TIMESTAMPTZ, p_window_s BIGINT, p_max INT)
RETURNS TIMESTAMPTZ
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_max > 0 AND count(*) >= p_max
                     AND max(failed_at) - min(failed_at) <= p_window_s * INTERVAL '1 second'
                     AND p_at < max(failed_at) + p_window_s * INTERVAL '1 second'
                THEN max(failed_at) + p_window_s * INTERVAL '1 second' END
      FROM (SELECT failed_at FROM login_failures
             WHERE identity = p_identity
               AND failed_at > p_at - 2 * p_window_s * INTERVAL '1 second'
             ORDER BY failed_at DESC LIMIT greatest(p_max, 0)) recent
$$;

-- Returns the attempt's row, or (when the identity is locked) no row and the end of the lock.
CREATE FUNCTION login_attempt_begin(p_identity TEXT, p_at TIMESTAMPTZ, p_window_s BIGINT, p_max INT)
RETURNS TABLE (attempt_id BIGINT, locked_until TIMESTAMPTZ)
LANGUAGE plpgsql AS $$
DECLARE
    until TIMESTAMPTZ;
BEGIN
    -- Class 3035: one decision at a time per identity, held until this statement commits.
    PERFORM pg_advisory_xact_lock(3035, hashtext(p_identity));
    until := login_locked_until(p_identity, p_at, p_window_s, p_max);
    IF until IS NOT NULL THEN
        RETURN QUERY SELECT NULL::BIGINT, until;
        RETURN;
    END IF;
    RETURN QUERY
        INSERT INTO login_failures (identity, failed_at) VALUES (p_identity, p_at)
        RETURNING id, NULL::TIMESTAMPTZ;
END
$$;
