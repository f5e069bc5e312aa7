-- An outcome notice for a dedicated terminal that was offline is held (its row `queued`, its
-- `error` saying so) and sent when the terminal authenticates again (src/channels/terminal/
-- held_outcomes.rs). Each authentication looks for its terminal's held notices of the last day;
-- without an index that read scanned a day of every customer's messages, on every connection.
--
-- The predicate names only columns a row never changes (`kind`, `channel`), and so does the key
-- (`destination`, `created_at`): status updates stay HOT (see V68). Only terminal outcomes, a
-- small share of the messages, are written to it.
CREATE INDEX customer_messages_terminal_outcomes ON customer_messages (destination, created_at)
    WHERE kind = 'outcome' AND channel = 'terminal';
