-- One column of a `table:` items source, as text named `value`: what validation reads of item_id and of the
-- gold column (DuckDB scans that column alone, no embedding). The table and the column come as parameters,
-- never spliced: query_table takes any name DuckDB resolves (a view, a schema-qualified name), and
-- COLUMNS([$column]) names the column exactly (a dot in it is part of the name, not a table).
SELECT CAST(COLUMNS([$column]) AS VARCHAR) AS value FROM query_table($name)
