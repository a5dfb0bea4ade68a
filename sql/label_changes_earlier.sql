-- In the commit transaction, before the run's label_changes are written: the rows an earlier attempt of the
-- same run id committed (it succeeded; this is a re-run), which label_changes_compose composes with this
-- attempt's. None for a first attempt. (No other run can have committed since that attempt: start_run refuses
-- to run such a run id again, sql/run_succeeded_since.sql.)
CREATE OR REPLACE TEMP TABLE earlier AS
SELECT * FROM label_changes
WHERE run_id = $run_id
