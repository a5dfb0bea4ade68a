-- Under the run lock, before a run id that had succeeded is run again: the runs that succeeded after it, first
-- first. Its label_changes said what it changed in the catalog as it found it, and theirs build on its; a re-run
-- would replace its rows with what it changed in the catalog they left, and lose what it had changed.
SELECT later.run_id
FROM runs AS later
JOIN runs AS this ON this.run_id = $run_id
WHERE this.status = 'succeeded' AND later.run_id <> $run_id AND later.status = 'succeeded'
  AND later.finished_at > this.finished_at
ORDER BY later.finished_at, later.run_id
