-- Schema version 8: the review at the parent level (issue 22). p_given_parent is the probability that the given
-- label's parent is right: the sum, over the given class and its siblings, of the posterior that gives p_given.
-- NULL for runs whose classes have no parents, and for runs made before this version.
ALTER TABLE annotation_issues ADD COLUMN p_given_parent DOUBLE;
