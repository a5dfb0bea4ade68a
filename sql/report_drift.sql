-- The run's drift tests against its model's fit sample (tasks/drift.py), one row per modality and metric:
-- the embedding tests by modality, then the class shares of the consensus labels.
SELECT modality, metric, value, threshold, drifted, n_reference, n_current
FROM drift_metrics
WHERE run_id = $run_id
ORDER BY modality = 'consensus', modality, metric
