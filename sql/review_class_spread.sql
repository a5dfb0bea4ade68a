-- Mean and spread of the raw evidence among all reviewed items given each label (a relation `review_items`).
SELECT given_label, avg(raw_score) AS mean_raw, stddev_pop(raw_score) AS sd_raw
FROM review_items
GROUP BY given_label
