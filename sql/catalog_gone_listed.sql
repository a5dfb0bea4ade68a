-- In the commit transaction of an incremental night: the live items its plan found gone (tasks/night.py).
CREATE OR REPLACE TEMP TABLE gone AS
SELECT item_id FROM read_parquet($files)
