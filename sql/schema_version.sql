-- The file's schema version: the last migration of sql/migrations/ applied to it.
SELECT max(version) FROM schema_migrations
