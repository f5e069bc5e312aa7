-- `payments_resume` (V40) indexed the ids of payments awaiting their code or processing, for the
-- reload after a restart. That query orders by `expires_at`, which `payments_in_flight` (V1)
-- already serves. The index also misled the planner on the debit path's hottest write: with
-- statistics a little stale, `WHERE id = $1 AND status = 'awaiting_code'` read every payment
-- awaiting its code through it (a bitmap AND with the primary key), and the batched form did
-- the same through a hash join. Each status change also wrote to it. The primary key finds one
-- payment; nothing else is needed.
DROP INDEX payments_resume;
