-- Login-throttle counters are compare-and-set counters now: `until_ms` holds the end of a
-- back-off or of a window (the policy decides which), no longer the time of the latest failure.
-- Old rows read as a back-off that has already ended, which is harmless.
ALTER TABLE login_failures RENAME COLUMN last_failure_ms TO until_ms;
