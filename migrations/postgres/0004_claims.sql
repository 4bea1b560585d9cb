-- Jobs claimed one by one: each node takes the open jobs no live node holds (`owner` and
-- `lease_until`, in the table since version 1), oldest first, with FOR UPDATE SKIP LOCKED.
CREATE INDEX jobs_open ON jobs (accepted_at)
    WHERE state IN ('accepted', 'validated', 'scanned', 'sealed');
