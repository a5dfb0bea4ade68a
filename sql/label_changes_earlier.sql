-- In the commit transaction, before the run's label_changes are written: the rows an earlier attempt of the
-- same run id committed (it succeeded; this is a re-run), which label_changes_compose composes with this
-- attempt's. None for a first attempt, and none once another run has committed since that attempt: the
-- catalog this attempt compares with is then no longer the one that attempt left, and the later runs' rows
-- say what they changed (composed, its 'deleted' rows outlived items a later run labelled again).
CREATE OR REPLACE TEMP TABLE earlier AS
SELECT * FROM label_changes
WHERE run_id = $run_id
  AND NOT EXISTS (SELECT 1 FROM runs AS later JOIN runs AS this ON this.run_id = $run_id
                  WHERE later.run_id <> $run_id AND later.status = 'succeeded' AND later.finished_at > this.finished_at)
