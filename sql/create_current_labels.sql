-- The labels of the latest succeeded run, and nothing else: readers never see half a run.
-- Re-created by every write connection (tasks/store.py), after the migrations.
CREATE OR REPLACE VIEW current_labels AS
SELECT l.*
FROM item_labels AS l
WHERE l.run_id = (
    SELECT run_id FROM runs WHERE status = 'succeeded' ORDER BY finished_at DESC, run_id DESC LIMIT 1
)
