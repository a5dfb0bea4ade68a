-- Schema version 5: a full run stores its fitted model. Its arrays live beside the database, in
-- <db>.models/<model_id>/ (tasks/models.py); this table says what each one is and how to check it.
-- model_id        the model's id (a full run's commit inserts it with the run's rows)
-- run_id          the run that fitted it
-- fitted_at       when that run committed
-- n_items         the catalog's items when it was fitted
-- params          the fit's parameters (JSON: the classifier's, the refinement's, calibration, review route)
-- modalities      the modalities it labels, in order
-- dims            per modality its dimension (JSON object)
-- n_classes       the classes it labels
-- class_hash      sha256 of the class names and the class embeddings: a catalog's classes fit it when equal
-- schema_version  the layout of its files (tasks/models.py FORMAT)
-- content_hash    sha256 of its manifest model.json, which lists every other file's sha256
-- path            its folder, relative to the database's folder
CREATE TABLE models (
    model_id       VARCHAR PRIMARY KEY,
    run_id         VARCHAR NOT NULL,
    fitted_at      TIMESTAMPTZ NOT NULL,
    n_items        BIGINT NOT NULL,
    params         JSON NOT NULL,
    modalities     VARCHAR[] NOT NULL,
    dims           JSON NOT NULL,
    n_classes      INTEGER NOT NULL,
    class_hash     VARCHAR NOT NULL,
    schema_version INTEGER NOT NULL,
    content_hash   VARCHAR NOT NULL,
    path           VARCHAR NOT NULL
);

-- the model a run labelled with (NULL for runs before this version)
ALTER TABLE runs ADD COLUMN model_id VARCHAR;
