-- Write amplification on the hot path.
--
-- `attempts_in_flight` duplicated what `attempts_by_command (command_id, id)`
-- already answers (a command's in-flight rows are among its few attempts),
-- and because its predicate reads `status`, completing an attempt had to
-- write a new entry into every index of the table.
DROP INDEX attempts_in_flight;

-- Leave room in each page, so that an update that changes no indexed column
-- (the recovery point: phase, attempt count, before-snapshot; a duplicate's
-- counter; a completed attempt) can stay on its page as a HOT update instead
-- of adding an entry to every index. Applies to pages written from now on.
ALTER TABLE commands SET (fillfactor = 80);
ALTER TABLE attempts SET (fillfactor = 70);
