-- A dead letter's body is kept whole only up to `[amqp] max_command_bytes`:
-- a producer must not be able to fill the database through the dead-letter
-- path (the dead-letter queue keeps the message whole). `body_size` is the
-- size of the body as it arrived, so that `dead-letters` can say that only
-- its start was kept and refuse to requeue a cut body. NULL in rows written
-- before: their body is whole.
ALTER TABLE dead_letters ADD COLUMN body_size bigint;
