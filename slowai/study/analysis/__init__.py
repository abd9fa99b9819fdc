"""From finished runs to an answer: results, the formulas, the decision rules, and applying them to a study. Pure
functions of a `StudyResult`; nothing here reads a storage."""
