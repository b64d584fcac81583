"""scikit-learn's estimator checks for every estimator of the package.

KerasMLPClassifier and KerasMLPRegressor take 2-D features and pass every check. ConvFeatureExtractor and
FineTuner take images, (n_images, height, width[, channels]) arrays or file paths,
never a 2-D table; the checks below feed them 2-D tables, so they cannot apply. Each is
listed with its reason and, where the property still matters for images, the test
that covers it.
"""

from sklearn.utils.estimator_checks import parametrize_with_checks

from sklearn_convfeat import (
    ConvFeatureExtractor,
    FineTuner,
    FineTunerRegressor,
    KerasMLPClassifier,
    KerasMLPRegressor,
)

TABLE = "feeds a 2-D table (n_samples, n_features), which is not a batch of images; the extractor rejects it with a ValueError naming the shapes it takes"

EXTRACTOR_CHECKS_ON_TABLES = {
    "check_dict_unchanged": f"{TABLE} (on images: test_extractor.py::test_transform_leaves_the_estimator_unchanged)",
    "check_dont_overwrite_parameters": f"{TABLE} (fit sets only private or trailing-underscore attributes: test_extractor.py::test_fitted_attributes)",
    "check_dtype_object": f"{TABLE} (object arrays of paths are accepted: test_images.py::test_paths_and_arrays_give_the_same_pixels)",
    "check_estimators_dtypes": f"{TABLE} (dtypes on images: test_images.py::test_any_image_batch_becomes_float32_rgb_at_the_requested_size)",
    "check_estimators_fit_returns_self": TABLE,
    "check_estimators_nan_inf": f"{TABLE}, before it adds NaN/inf (on images: test_extractor.py::test_bad_images_are_rejected_in_fit_and_transform)",
    "check_estimators_overwrite_params": TABLE,
    "check_estimators_pickle": f"{TABLE} (on images: test_extractor.py::test_round_trip_gives_bit_identical_features)",
    "check_estimators_pickle(readonly_memmap=True)": TABLE,
    "check_f_contiguous_array_estimator": TABLE,
    "check_fit2d_1feature": TABLE,
    "check_fit2d_1sample": TABLE,
    "check_fit2d_predict1d": TABLE,
    "check_fit_check_is_fitted": f"{TABLE} (on images: test_extractor.py::test_unfitted_transform_raises)",
    "check_fit_idempotent": f"{TABLE} (on images: test_extractor.py::test_fit_learns_nothing_from_the_data)",
    "check_fit_score_takes_y": TABLE,
    "check_methods_sample_order_invariance": f"{TABLE} (on images: test_extractor.py::test_row_order_and_subsets_do_not_change_features)",
    "check_methods_subset_invariance": f"{TABLE} (on images: test_extractor.py::test_row_order_and_subsets_do_not_change_features)",
    "check_n_features_in": "n_features_in_ is not defined: images of any size are resized, and paths have no feature count",
    "check_n_features_in_after_fitting": "n_features_in_ is not defined: images of any size are resized, and paths have no feature count",
    "check_pipeline_consistency": f"{TABLE} (Pipelines on images: test_extractor.py::test_pipeline_with_logistic_regression_learns_a_visible_difference)",
    "check_positive_only_tag_during_fit": TABLE,
    "check_readonly_memmap_input": TABLE,
    "check_transformer_data_not_an_array": TABLE,
    "check_transformer_general": TABLE,
    "check_transformer_general(readonly_memmap=True)": TABLE,
    "check_transformer_preserve_dtypes": f"{TABLE} (float32 out for any input dtype: test_extractor.py::test_output_shape_dtype_and_names)",
}


FT = "test_finetune.py::"
FINETUNER_CHECKS_ON_TABLES = {
    "check_class_weight_classifiers": f"{TABLE} (on images: {FT}test_multiclass_string_labels_and_class_weight)",
    "check_classifier_data_not_an_array": TABLE,
    "check_classifiers_classes": f"{TABLE} (string and multi-class labels on images: {FT}test_multiclass_string_labels_and_class_weight)",
    "check_classifiers_one_label": f"{TABLE}, before it sees the single class (on images: {FT}test_a_single_class_is_rejected)",
    "check_classifiers_regression_target": f"{TABLE}, before it sees the continuous target (y goes through check_classification_targets, as in KerasMLPClassifier)",
    "check_classifiers_train": f"{TABLE} (learning on images: {FT}test_fitted_attributes_and_outputs)",
    "check_classifiers_train(readonly_memmap=True)": TABLE,
    "check_classifiers_train(readonly_memmap=True,X_dtype=float32)": TABLE,
    "check_decision_proba_consistency": TABLE,
    "check_dict_unchanged": TABLE,
    "check_dont_overwrite_parameters": TABLE,
    "check_dtype_object": TABLE,
    "check_estimators_dtypes": TABLE,
    "check_estimators_fit_returns_self": TABLE,
    "check_estimators_nan_inf": f"{TABLE}, before it adds NaN/inf (on images: {FT}test_bad_images_and_lengths)",
    "check_estimators_overwrite_params": TABLE,
    "check_estimators_pickle": f"{TABLE} (on images: {FT}test_round_trip_gives_identical_predictions)",
    "check_estimators_pickle(readonly_memmap=True)": TABLE,
    "check_f_contiguous_array_estimator": TABLE,
    "check_fit2d_1feature": TABLE,
    "check_fit2d_1sample": TABLE,
    "check_fit2d_predict1d": TABLE,
    "check_fit_check_is_fitted": TABLE,
    "check_fit_idempotent": f"{TABLE} (seeded fits on images: {FT}test_same_seed_same_predictions_other_seed_other)",
    "check_fit_score_takes_y": TABLE,
    "check_methods_sample_order_invariance": TABLE,
    "check_methods_subset_invariance": TABLE,
    "check_n_features_in": "n_features_in_ is not defined: images of any size are resized, and paths have no feature count",
    "check_n_features_in_after_fitting": "n_features_in_ is not defined: images of any size are resized, and paths have no feature count",
    "check_pipeline_consistency": f"{TABLE} (Pipelines on images: {FT}test_inside_a_pipeline)",
    "check_positive_only_tag_during_fit": TABLE,
    "check_readonly_memmap_input": TABLE,
    "check_requires_y_none": f"{TABLE}, before it sees y=None",
    "check_supervised_y_2d": TABLE,
    "check_classifiers_multilabel_representation_invariance": f"{TABLE} (multi-label on images: test_targets.py::test_multilabel_finetuner)",
    "check_classifiers_multilabel_output_format_predict": f"{TABLE} (test_targets.py::test_multilabel_finetuner)",
    "check_classifiers_multilabel_output_format_predict_proba": f"{TABLE} (test_targets.py::test_multilabel_finetuner)",
    "check_classifiers_multilabel_output_format_decision_function": f"{TABLE} (test_targets.py::test_multilabel_finetuner)",
}

TG = "test_targets.py::"
FINETUNER_REGRESSOR_CHECKS_ON_TABLES = {
    **{
        name: reason
        for name, reason in FINETUNER_CHECKS_ON_TABLES.items()
        if not name.startswith(("check_class", "check_decision"))
    },
    "check_estimators_pickle": f"{TABLE} (on images: {TG}test_finetuner_regressor_pickle_and_clone)",
    "check_regressor_data_not_an_array": TABLE,
    "check_regressor_multioutput": f"{TABLE} (two targets on images: {TG}test_finetuner_regressor_two_targets_and_validation)",
    "check_regressors_int": TABLE,
    "check_regressors_train": f"{TABLE} (learning on images: {TG}test_finetuner_regressor_learns_brightness)",
    "check_regressors_train(readonly_memmap=True)": TABLE,
    "check_regressors_train(readonly_memmap=True,X_dtype=float32)": TABLE,
    "check_regressors_no_decision_function": TABLE,
}


def expected_failed_checks(estimator):
    if isinstance(estimator, ConvFeatureExtractor):
        return EXTRACTOR_CHECKS_ON_TABLES
    if isinstance(estimator, FineTuner):
        return FINETUNER_CHECKS_ON_TABLES
    if isinstance(estimator, FineTunerRegressor):
        return FINETUNER_REGRESSOR_CHECKS_ON_TABLES
    return {}


# The book's defaults (lr 2e-5, 30 epochs of 20-sample batches) are tuned for 8192
# VGG16 features; on the checks' tiny blobs a fast learner keeps them quick and above
# their accuracy thresholds.
FAST_MLP = KerasMLPClassifier(
    hidden_units=32, optimizer="adam", learning_rate=1e-2, epochs=10, batch_size=32,
    random_state=0,
)

FAST_MLP_REGRESSOR = KerasMLPRegressor(
    hidden_units=32, optimizer="adam", learning_rate=1e-2, epochs=10, batch_size=32,
    random_state=0,
)


# Random weights, 32x32 images, one epoch a phase: the checks that do run stay fast.
TINY_FINETUNER = FineTuner(
    weights=None, image_size=(32, 32), head_epochs=1, fine_tune_epochs=1, batch_size=16,
    random_state=0,
)
TINY_FINETUNER_REGRESSOR = FineTunerRegressor(
    weights=None, image_size=(32, 32), head_epochs=1, fine_tune_epochs=1, batch_size=16,
    random_state=0,
)


@parametrize_with_checks(
    [
        ConvFeatureExtractor(weights=None, image_size=(32, 32), random_state=0),
        FAST_MLP,
        FAST_MLP_REGRESSOR,
        TINY_FINETUNER,
        TINY_FINETUNER_REGRESSOR,
    ],
    expected_failed_checks=expected_failed_checks,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)
