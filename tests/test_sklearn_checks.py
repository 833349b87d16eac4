"""scikit-learn's estimator checks, with every expected failure and its reason."""

from sklearn.utils.estimator_checks import parametrize_with_checks

from kgestimator import KGEmbedder

_TRIPLES = ("the check fits on a random float matrix with a feature count other than 3; "
            "a KGEmbedder takes (n, 3) (head, relation, tail) label triples and refuses it "
            "with a ValueError naming the shape")

#: generic checks that feed inputs no knowledge-graph estimator can take
EXPECTED_FAILED = {
    "check_dtype_object": _TRIPLES,
    "check_estimators_dtypes": _TRIPLES,
    "check_estimators_fit_returns_self": _TRIPLES,
    "check_estimators_overwrite_params": _TRIPLES,
    "check_fit_idempotent": _TRIPLES,
    "check_fit_check_is_fitted": _TRIPLES,
    "check_n_features_in": _TRIPLES + "; there is no n_features_in_ (always 3 columns)",
    "check_n_features_in_after_fitting": _TRIPLES + "; there is no n_features_in_",
    "check_positive_only_tag_during_fit": _TRIPLES,
    "check_readonly_memmap_input": _TRIPLES,
}


@parametrize_with_checks(
    [KGEmbedder(dim=4, n_negatives=4, n_epochs=1, batch_size=64, neg_chunk_size=8, random_state=0)],
    expected_failed_checks=lambda est: EXPECTED_FAILED,
)
def test_sklearn_compatible_estimator(estimator, check):
    check(estimator)
