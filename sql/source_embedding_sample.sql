-- The first non-null rows of an embedding column of a `table:` items source, whose commonest length validation
-- takes for the items' dimension: null rows first (rejected one by one later) must not hide a whole column of
-- another length. The table and the column come as parameters, as in source_column.sql.
SELECT COLUMNS([$column]) FROM query_table($name) WHERE COLUMNS([$column]) IS NOT NULL LIMIT $n
