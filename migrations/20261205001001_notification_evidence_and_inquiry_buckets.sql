-- Notifications as evidence, and the shared inquiry rate limit
-- (shared/spec/notifications.md).
--
-- `evidence`: what a verified notification proves about its payment
-- (`capture`: it reads captured; `cancel`: it reads cancelled). A command of
-- ours still verifying an ambiguous attempt looks here before each inquiry:
-- a notification that arrived while its call was in flight settles it too.
ALTER TABLE notifications ADD COLUMN evidence text CHECK (evidence IN ('capture', 'cancel'));
-- How often an unverified notification's inquiry was put off by the rate limit.
ALTER TABLE notifications ADD COLUMN rate_limited integer NOT NULL DEFAULT 0;
CREATE INDEX notifications_evidence ON notifications (gateway, payment_id, evidence)
    WHERE evidence IS NOT NULL AND settled_command IS NULL;

-- One token bucket per gateway account for the inquiries that unverified
-- notifications trigger (`[notifications] inquiries_per_minute`), shared by
-- every worker instance on this database: taking a token is one UPDATE.
CREATE TABLE notification_inquiry_buckets (
    gateway     text NOT NULL,
    account     text NOT NULL,
    tokens      double precision NOT NULL,
    refilled_at timestamptz NOT NULL,
    PRIMARY KEY (gateway, account)
);
