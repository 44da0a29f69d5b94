"""The metric engine against torchmetrics, against mmseg's formulas, and against hand-computed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torchmetrics.classification import MulticlassConfusionMatrix, MulticlassJaccardIndex

from rsdg_bench.base.errors import DataError
from rsdg_bench.scoring.metrics import confusion_matrix, headline_metrics, scores_from_confusion

IGNORE = 255


def random_maps(seed: int, k: int, shape=(3, 97, 131), absent=(), ignore_fraction=0.1):
    """Label/prediction pairs with ignore pixels; classes in `absent` appear in neither."""
    rng = np.random.default_rng(seed)
    present = [c for c in range(k) if c not in absent]
    label = rng.choice(present, size=shape).astype(np.uint8)
    pred = np.where(rng.random(shape) < 0.6, label, rng.choice(present, size=shape)).astype(np.uint8)
    label[rng.random(shape) < ignore_fraction] = IGNORE
    return label, pred


def mmseg_reference(labels, preds, k):
    """mmseg's IoUMetric, re-derived from its formulas: per-image histc areas, summed, then nanmean."""
    area_i = torch.zeros(k, dtype=torch.float64)
    area_p = torch.zeros(k, dtype=torch.float64)
    area_l = torch.zeros(k, dtype=torch.float64)
    for label, pred in zip(labels, preds, strict=True):
        label, pred = torch.as_tensor(label).long(), torch.as_tensor(pred).long()
        mask = label != IGNORE
        label, pred = label[mask], pred[mask]
        hit = pred[pred == label]
        area_i += torch.histc(hit.double(), bins=k, min=0, max=k - 1)
        area_p += torch.histc(pred.double(), bins=k, min=0, max=k - 1)
        area_l += torch.histc(label.double(), bins=k, min=0, max=k - 1)
    area_u = area_p + area_l - area_i
    iou = (area_i / area_u).numpy()
    acc = (area_i / area_l).numpy()
    dice = (2 * area_i / (area_p + area_l)).numpy()
    precision, recall = area_i / area_p, area_i / area_l  # tensors: 0/0 is NaN
    fscore = (2 * precision * recall / (precision + recall)).numpy()  # f_score with beta = 1
    return {"aAcc": float(area_i.sum() / area_l.sum()), "IoU": iou, "mIoU": np.nanmean(iou),
            "mAcc": np.nanmean(acc), "mDice": np.nanmean(dice), "mFscore": np.nanmean(fscore)}


@pytest.mark.parametrize("seed,k,absent", [(0, 6, ()), (1, 6, (2,)), (2, 7, (0, 5)), (3, 2, ())])
def test_confusion_matrix_is_bit_identical_to_torchmetrics(seed, k, absent):
    label, pred = random_maps(seed, k, absent=absent)
    ours = confusion_matrix(label, pred, k)
    reference = MulticlassConfusionMatrix(num_classes=k, ignore_index=IGNORE)(
        torch.from_numpy(pred).long(), torch.from_numpy(label).long())
    assert ours.dtype == np.int64
    np.testing.assert_array_equal(ours, reference.numpy())


@pytest.mark.parametrize("seed,k,absent", [(4, 6, ()), (5, 6, (1, 3)), (6, 19, (4, 7, 11))])
def test_miou_equals_torchmetrics_macro_jaccard(seed, k, absent):
    label, pred = random_maps(seed, k, absent=absent)
    scores = scores_from_confusion(confusion_matrix(label, pred, k))
    reference = MulticlassJaccardIndex(num_classes=k, average="macro", ignore_index=IGNORE)(
        torch.from_numpy(pred).long(), torch.from_numpy(label).long())
    assert scores.miou == pytest.approx(reference.item(), abs=1e-6)


@pytest.mark.parametrize("seed,k,absent", [(7, 6, ()), (8, 6, (2,)), (9, 5, (0, 4))])
def test_metrics_match_mmseg_formulas_over_several_images(seed, k, absent):
    pairs = [random_maps(seed * 10 + i, k, shape=(61, 83), absent=absent) for i in range(4)]
    matrix = sum(confusion_matrix(label, pred, k) for label, pred in pairs)
    scores = scores_from_confusion(matrix)
    reference = mmseg_reference([p[0] for p in pairs], [p[1] for p in pairs], k)
    np.testing.assert_allclose(scores.iou, reference["IoU"], rtol=1e-12, equal_nan=True)
    assert scores.miou == pytest.approx(reference["mIoU"], rel=1e-12)
    assert scores.oa == pytest.approx(reference["aAcc"], rel=1e-12)
    assert scores.aa == pytest.approx(reference["mAcc"], rel=1e-12)
    assert scores.mf1 == pytest.approx(reference["mDice"], rel=1e-12)
    assert scores.mfscore == pytest.approx(reference["mFscore"], rel=1e-12)


def test_hand_computed_example():
    # rows = ground truth, columns = prediction
    cm = torch.tensor([[3, 1, 0], [1, 2, 0], [0, 0, 0]])
    s = scores_from_confusion(cm)
    assert s.iou[0] == pytest.approx(3 / 5) and s.iou[1] == pytest.approx(2 / 4)
    assert math.isnan(s.iou[2])                       # absent from ground truth and prediction
    assert s.miou == pytest.approx((3 / 5 + 2 / 4) / 2)
    assert s.oa == pytest.approx(5 / 7)
    assert s.aa == pytest.approx((3 / 4 + 2 / 3) / 2)
    assert s.mf1 == pytest.approx((6 / 8 + 4 / 6) / 2)


# Rows = ground truth. Class 2 is in the ground truth and predicted, never on the same pixel (TP = 0, FP = FN = 1);
# class 3 is predicted once but absent from the ground truth; class 4 is absent from both.
NEVER_HIT = np.array([[3, 1, 1, 0, 0], [1, 2, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]])


def maps_of(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Label and prediction pixels (1-D uint8) whose confusion matrix is `matrix`."""
    pairs = [(i, j) for (i, j), n in np.ndenumerate(matrix) for _ in range(n)]
    label, pred = np.array(pairs, dtype=np.uint8).T
    return label, pred


def test_mf1_is_mmseg_mdice_and_mfscore_is_mmseg_mfscore_when_a_class_is_never_hit():
    """mmseg's mDice counts a class with TP = 0 as 0; its mFscore leaves it out (precision·recall is 0/0)."""
    s = scores_from_confusion(NEVER_HIT)
    assert s.mf1 == pytest.approx((6 / 10 + 4 / 7 + 0 + 0) / 4)  # 0.2929: class 4 (NaN) alone left out
    assert s.mfscore == pytest.approx((6 / 10 + 4 / 7) / 2)      # 0.5857: classes 2 and 3 left out too
    assert list(s.f1[2:4]) == [0.0, 0.0] and np.isnan(s.fscore[2:]).all() and np.isnan(s.f1[4])
    label, pred = maps_of(NEVER_HIT)
    reference = mmseg_reference([label], [pred], 5)
    assert s.mf1 == pytest.approx(reference["mDice"], rel=1e-12)
    assert s.mfscore == pytest.approx(reference["mFscore"], rel=1e-12)
    stacked = headline_metrics(np.stack([NEVER_HIT, np.eye(5, dtype=np.int64)]))  # the bootstrap's path
    np.testing.assert_allclose(stacked["mfscore"], [s.mfscore, 1.0], rtol=1e-12)
    np.testing.assert_allclose(stacked["mf1"], [s.mf1, 1.0], rtol=1e-12)
    # No ratio is NaN under smp and codex: the F-score of a never-hit class is 0, the same number as F1
    smp = scores_from_confusion(NEVER_HIT, convention="smp")
    assert smp.mfscore == smp.mf1 == pytest.approx((6 / 10 + 4 / 7 + 0 + 0 + 1) / 5)
    assert smp.mfscore == pytest.approx(cromss_reference(label, pred, 5, mask_ignored=True)["mf1"], abs=1e-6)
    codex = scores_from_confusion(NEVER_HIT, convention="codex")
    assert codex.mfscore == codex.mf1 == pytest.approx((6 / 10 + 4 / 7) / 5)


def test_a_record_written_before_mfscore_still_verifies_and_a_wrong_mfscore_is_caught():
    from rsdg_bench.base.errors import ResultsError
    from rsdg_bench.records.results import ResultRecord, check_metrics, metrics_block

    names, slug = ["a", "b", "c", "d", "e"], "d/x/test"
    block = metrics_block(NEVER_HIT, names, list(range(5)))
    assert block["mfscore"] == pytest.approx(0.5857142857) and block["mf1"] == pytest.approx(0.2928571429)
    block.pop("mfscore")  # the block as records were written before mfscore existed
    for values in (*block["other_conventions"].values(), *block["per_class"].values()):
        values.pop("mfscore", None), values.pop("fscore", None)
    record = ResultRecord(
        schema_version=1, key="k", task={"id": "t/x", "class_names": names, "headline_classes": list(range(5))},
        model={}, evaluated={"role": "target", "dataset": "d", "domain": "x", "split": "test", "num_samples": 1},
        metrics={slug: block}, confusion_matrices={slug: NEVER_HIT.tolist()}, inference={}, normalization={},
        smoke=None, provenance={})
    check_metrics(record, "r.json")
    record.metrics[slug]["mfscore"] = block["mf1"]  # the mDice stored as the mFscore
    with pytest.raises(ResultsError, match="stored mfscore"):
        check_metrics(record, "r.json")


def test_class_predicted_but_absent_from_ground_truth_scores_zero_not_nan():
    cm = torch.tensor([[4, 1], [0, 0]])
    s = scores_from_confusion(cm)
    assert s.iou[1] == 0.0 and s.miou == pytest.approx((4 / 5 + 0) / 2)
    assert math.isnan(s.recall[1])                    # nothing to recall: left out of AA
    assert s.aa == pytest.approx(4 / 5)               # recall of class 0 alone


def test_ignore_pixels_are_dropped_whatever_the_prediction():
    label = np.array([[0, 1, IGNORE, IGNORE]], dtype=np.uint8)
    pred = np.array([[0, 1, 1, 0]], dtype=np.uint8)
    assert confusion_matrix(label, pred, 2).tolist() == [[1, 0], [0, 1]]


def test_headline_classes_select_the_foreground_iou():
    cm = torch.tensor([[90, 5], [5, 10]])             # background, building
    s = scores_from_confusion(cm, headline_classes=[1])
    assert s.miou == pytest.approx(10 / 20)
    assert s.oa == pytest.approx(100 / 110)           # OA still counts every pixel


def test_label_values_outside_the_schema_are_an_error_not_dropped():
    label = np.array([[0, 1, 7]], dtype=np.uint8)
    pred = np.zeros_like(label)
    with pytest.raises(DataError, match=r"\[7\]"):
        confusion_matrix(label, pred, 3)


def test_predictions_out_of_range_are_rejected():
    with pytest.raises(ValueError, match="predictions"):
        confusion_matrix(np.zeros((2, 2), np.uint8), np.full((2, 2), 3, np.uint8), 3)


def test_many_classes_use_the_wide_path_and_stay_exact():
    k = 150
    label, pred = random_maps(11, k, shape=(2, 64, 64))
    reference = MulticlassConfusionMatrix(num_classes=k, ignore_index=IGNORE)(
        torch.from_numpy(pred).long(), torch.from_numpy(label).long())
    np.testing.assert_array_equal(confusion_matrix(label, pred, k), reference.numpy())


def test_int64_labels_are_accepted_and_range_checked():
    label = torch.tensor([[0, 1, IGNORE]])
    assert confusion_matrix(label, torch.tensor([[0, 0, 1]]), 2).tolist() == [[1, 0], [1, 0]]
    with pytest.raises(DataError):
        confusion_matrix(torch.tensor([[300]]), torch.tensor([[0]]), 2)


def test_empty_confusion_matrix_gives_nan_everywhere():
    s = scores_from_confusion(torch.zeros(3, 3, dtype=torch.int64))
    assert all(math.isnan(v) for v in s.headline().values())


# ----------------------------------------------------------------------------- conventions

def cromss_reference(label: np.ndarray, pred: np.ndarray, k: int, mask_ignored: bool) -> dict[str, float]:
    """CromSS's test metrics, as its utils/evaluates.py makes them with segmentation_models_pytorch: stats of
    all pixels at once (`batchwise`), per-class scores with smp's default zero_division=1, each mean the sum
    over classes / K, OA = TP / all pixels. Without the mask (its DFC2020 run) the unknown pixels stay in, as
    a label value (K) that is no class."""
    import segmentation_models_pytorch as smp

    label, pred = torch.as_tensor(label.astype(np.int64)), torch.as_tensor(pred.astype(np.int64))
    if mask_ignored:
        keep = label != IGNORE
        label, pred = label[keep], pred[keep]
    label = torch.where(label == IGNORE, k, label)
    tp, fp, fn, tn = smp.metrics.get_stats(pred.reshape(1, -1), label.reshape(1, -1), mode="multiclass",
                                           num_classes=k)
    per_class = {name: getattr(smp.metrics, name)(tp, fp, fn, tn, reduction="none", zero_division=1).squeeze()
                 for name in ("iou_score", "f1_score", "recall")}
    return {"miou": float(per_class["iou_score"].sum() / k), "mf1": float(per_class["f1_score"].sum() / k),
            "aa": float(per_class["recall"].sum() / k),
            "oa": float(tp.sum() / (tp[0, 0] + fp[0, 0] + fn[0, 0] + tn[0, 0]))}


@pytest.mark.parametrize("mask_ignored", [True, False], ids=["masked (DW, OSM)", "unknown counted (DFC2020)"])
def test_smp_convention_equals_smp_functions_on_the_same_predictions(mask_ignored: bool):
    from rsdg_bench.scoring.metrics import confusion_counts

    label, pred = random_maps(seed=21, k=8, absent=(5,), ignore_fraction=0.15)
    pred[pred == 6] = 7  # class 6 is in the ground truth but never predicted
    matrix, ignored = confusion_counts(label, pred, 8)
    ours = scores_from_confusion(matrix, list(range(8)), "smp", None if mask_ignored else ignored)
    expected = cromss_reference(label, pred, 8, mask_ignored)
    for name in ("miou", "oa", "aa", "mf1"):
        assert getattr(ours, name) == pytest.approx(expected[name], abs=1e-6), name
    assert ours.mfscore == pytest.approx(expected["mf1"], abs=1e-6)  # smp's f1_score is the F-score too
    assert ours.iou[5] == 1.0 and ours.iou[6] == 0.0  # absent from both: 1 (zero_division), not NaN
    mmseg = scores_from_confusion(matrix, list(range(8)))
    assert math.isnan(mmseg.iou[5]) and ours.miou > mmseg.miou  # the two conventions give other numbers


def codex_reference(matrix: np.ndarray) -> dict[str, float]:
    """CoDEX's SCDMetric as its metrics/scd_metrics.py computes it from a confusion matrix (rows = ground truth):
    a ratio with a zero denominator is 0, then the mean over every class."""
    cm = np.asarray(matrix, dtype=np.float64)
    tp, gt, pred = np.diag(cm), cm.sum(axis=1), cm.sum(axis=0)
    union = gt + pred - tp
    iou = np.divide(tp, union, out=np.zeros_like(union), where=union != 0)
    recall = np.divide(tp, gt, out=np.zeros_like(gt), where=gt != 0)
    return {"miou": float(np.nanmean(iou)), "aa": float(np.nanmean(recall)), "oa": float(tp.sum() / cm.sum())}


def test_codex_convention_equals_codex_metric_on_the_same_predictions():
    from rsdg_bench.scoring.metrics import confusion_counts

    label, pred = random_maps(seed=5, k=6, absent=(4,), ignore_fraction=0.1)
    pred[pred == 2] = 3  # class 2 is in the ground truth but never predicted
    pred[pred == 5] = 0
    label[label == 5] = 0  # class 5: absent from ground truth and prediction
    matrix, _ = confusion_counts(label, pred, 6)
    ours = scores_from_confusion(matrix, list(range(6)), "codex")
    expected = codex_reference(matrix)
    for name in ("miou", "oa", "aa"):
        assert getattr(ours, name) == pytest.approx(expected[name], abs=1e-12), name
    assert ours.iou[5] == 0.0 and ours.recall[5] == 0.0 and ours.iou[2] == 0.0  # empty union: 0, kept in the mean
    mmseg = scores_from_confusion(matrix, list(range(6)))
    assert math.isnan(mmseg.iou[5]) and ours.miou < mmseg.miou  # CoDEX's mean is lower: the empty class counts


def test_a_record_of_an_smp_task_keeps_both_conventions_and_an_edit_of_either_is_caught():
    from rsdg_bench.base.errors import ResultsError
    from rsdg_bench.records.results import ResultRecord, check_consistency, metrics_block

    matrix, ignored = [[5, 1, 0], [0, 4, 0], [0, 0, 0]], [2, 1, 0]
    names = ["a", "b", "c"]
    block = metrics_block(matrix, names, [0, 1, 2], convention="smp", ignored=ignored)
    assert block["convention"] == "smp" and block["oa"] == pytest.approx(9 / 13)
    assert block["miou"] == pytest.approx((5 / 8 + 4 / 6 + 1) / 3)
    assert block["other_conventions"]["mmseg"]["miou"] == pytest.approx((5 / 6 + 4 / 5) / 2)
    slug = "d/x/test"
    record = ResultRecord(
        schema_version=1, key="k", task={"id": "t/x", "class_names": names, "headline_classes": [0, 1, 2],
                                         "resolved": {"metrics": {"convention": "smp"}}},
        model={}, evaluated={"role": "target", "dataset": "d", "domain": "x", "split": "test", "num_samples": 1},
        metrics={slug: block}, confusion_matrices={slug: matrix}, ignored_predictions={slug: ignored},
        inference={}, normalization={}, smoke=None, provenance={})
    check_consistency(record, "r.json")
    record.metrics[slug]["other_conventions"]["mmseg"]["miou"] = 0.99
    with pytest.raises(ResultsError, match="other_conventions.mmseg.miou"):
        check_consistency(record, "r.json")
    record.metrics[slug] = metrics_block(matrix, names, [0, 1, 2], convention="smp", ignored=ignored)
    record.ignored_predictions[slug] = [0, 0, 0]  # dropping the counted unknown pixels moves OA
    with pytest.raises(ResultsError, match="stored miou"):
        check_consistency(record, "r.json")
