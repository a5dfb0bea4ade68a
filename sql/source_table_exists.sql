-- Whether a `table:` source's name is a table or view of the file, asked once reading it failed: to tell a name
-- that is not there from a table or view that is there and fails (a view over a table since dropped). The name
-- is matched as DuckDB resolves an unquoted one, case aside: alone in the current schema, or after its schema
-- (and database).
SELECT count(*) > 0 FROM (
    SELECT database_name, schema_name, table_name AS name FROM duckdb_tables()
    UNION ALL
    SELECT database_name, schema_name, view_name FROM duckdb_views() WHERE NOT internal
) WHERE lower(replace($name, '"', '')) IN (CASE WHEN schema_name = current_schema() THEN lower(name) END,
                                           lower(schema_name || '.' || name),
                                           lower(database_name || '.' || schema_name || '.' || name))
