-- A persistent mark that a job's end (and a generation's images) was posted to Discord, so a
-- restart never posts it a second time. Jobs that ended before this version were announced then.
ALTER TABLE jobs ADD COLUMN announced INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET announced = 1 WHERE state IN ('done', 'failed', 'cancelled');
CREATE INDEX jobs_unannounced ON jobs (id) WHERE announced = 0 AND state IN ('done', 'failed', 'cancelled');
