"""scikit-learn's estimator checks, with the ones that cannot pass listed and why."""

import pytest
from conftest import tiny_network
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from otrain import CutoutClassifier, CutoutLoader

# Checks that cannot pass, and why. Their contracts (stratified CV, roc_auc, clone,
# pickle, one-class and continuous-target errors...) are tested on stamps in
# test_classifier.py instead.
_TABLES = (
    "feeds a 2-D table of numbers (n_samples, n_features); a CNN takes stamps "
    "(n, H, W, C) and rejects tables with a ValueError pointing at CutoutLoader"
)
EXPECTED_FAILED = {
    "check_all_zero_sample_weights_error": _TABLES,
    "check_class_weight_classifiers": _TABLES,
    "check_classifier_data_not_an_array": _TABLES,
    "check_classifiers_classes": _TABLES,
    "check_classifiers_one_label": _TABLES,
    "check_classifiers_one_label_sample_weights": _TABLES,
    "check_classifiers_regression_target": _TABLES,
    "check_classifiers_train": _TABLES,
    "check_dict_unchanged": _TABLES,
    "check_dont_overwrite_parameters": _TABLES,
    "check_dtype_object": _TABLES,
    "check_estimators_dtypes": _TABLES,
    "check_estimators_empty_data_messages": _TABLES,
    "check_estimators_fit_returns_self": _TABLES,
    "check_estimators_overwrite_params": _TABLES,
    "check_estimators_partial_fit_n_features": _TABLES,
    "check_estimators_pickle": _TABLES,
    "check_f_contiguous_array_estimator": _TABLES,
    "check_fit2d_1feature": _TABLES,
    "check_fit2d_1sample": _TABLES,
    "check_fit2d_predict1d": _TABLES,
    "check_fit_check_is_fitted": _TABLES,
    "check_fit_idempotent": _TABLES,
    "check_fit_score_takes_y": _TABLES,
    "check_methods_sample_order_invariance": _TABLES,
    "check_methods_subset_invariance": _TABLES,
    "check_n_features_in": _TABLES,
    "check_n_features_in_after_fitting": _TABLES,
    "check_pipeline_consistency": _TABLES,
    "check_positive_only_tag_during_fit": _TABLES,
    "check_readonly_memmap_input": _TABLES,
    "check_sample_weight_equivalence_on_dense_data": _TABLES,
    "check_sample_weights_list": _TABLES,
    "check_sample_weights_not_an_array": _TABLES,
    "check_sample_weights_not_overwritten": _TABLES,
    "check_sample_weights_shape": _TABLES,
    "check_supervised_y_2d": _TABLES,
    "check_mixin_order": (
        "scikeras' KerasClassifier lists ClassifierMixin after BaseEstimator; a subclass "
        "cannot reorder them (MRO conflict), so the tags are declared explicitly"
    ),
    "check_estimator_tags_renamed": (
        "scikeras 0.13 still defines the legacy _more_tags; __sklearn_tags__ is what "
        "scikit-learn >= 1.7 reads, and it is overridden"
    ),
}


@parametrize_with_checks(
    [CutoutClassifier(network=tiny_network, epochs=1, random_state=0)],
    expected_failed_checks=lambda estimator: EXPECTED_FAILED,
)
def test_classifier_passes_sklearn_checks(estimator, check):
    check(estimator)


# CutoutLoader reads file paths (input tag `string`), which sklearn's data-feeding
# checks cannot generate (it skips such estimators); the API checks that feed no
# data run here.
@pytest.mark.parametrize(
    "check",
    [
        "check_parameters_default_constructible",
        "check_no_attributes_set_in_init",
        "check_get_params_invariance",
        "check_set_params",
        "check_estimator_repr",
        "check_estimator_cloneable",
        "check_estimator_tags_renamed",
        "check_valid_tag_types",
    ],
)
def test_loader_api_checks(check):
    getattr(estimator_checks, check)("CutoutLoader", CutoutLoader())
