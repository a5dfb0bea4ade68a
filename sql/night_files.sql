-- An incremental night's plan: the source files whose items' fingerprints are recorded, as they were then.
SELECT path, size, mtime_ns FROM catalog_files
