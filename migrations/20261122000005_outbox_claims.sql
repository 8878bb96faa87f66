-- The instance that commits an event publishes it straight from memory, at
-- once, and claims the row meanwhile: relays (its own poll, other instances)
-- leave a claimed row alone until the claim expires. A crash before the row
-- is marked published leaves the claim to expire, and the row is then
-- published by whoever polls: at least once, as before.
ALTER TABLE outbox ADD COLUMN claimed_until timestamptz;
