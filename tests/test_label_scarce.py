"""finetune.labels_per_class: the label-scarce regime (only the first N train videos of each class are labelled)."""
import json

import torch

from csvr.config import apply_overrides, tiny
from csvr.data.dataset import first_per_class
from csvr.data.loaders import finetune_batches, prepared
from csvr.evaluate_trial import labelled
from csvr.stages.table import IS_CLASSIFIER

torch.set_num_threads(1)


def test_first_per_class_by_hand():
    labels = [2, 0, 2, 1, 0, 2, 1, 0]
    assert first_per_class(labels, 1) == [0, 1, 3]
    assert first_per_class(labels, 2) == [0, 1, 2, 3, 4, 6]
    assert first_per_class(labels, 0) == list(range(8))  # 0 = every label
    assert first_per_class(labels, 5) == list(range(8))


def test_labelled_keeps_the_same_rows_as_the_finetuning_data():
    cfg = apply_overrides(tiny(), {"finetune.labels_per_class": 2, "data.batch_size": 4})
    cache = prepared(cfg.data.source, cfg)
    ds = finetune_batches(cache, cfg, 4)  # the dataset behind it
    classes = len(json.loads((cache / "classes.json").read_text()))
    batches = list(ds(0))
    seen = torch.cat([b["label"] for b in batches])
    assert len(seen) == 2 * classes - (2 * classes) % 4  # drop_last
    assert torch.bincount(seen, minlength=classes).max() <= 2
    features = torch.arange(10.0)[:, None]
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 0, 1, 2, 2])
    x, y = labelled((features, labels), 2)
    assert y.tolist() == [0, 0, 1, 1, 2, 2] and x[:, 0].tolist() == [0, 1, 3, 4, 5, 8]


def test_the_is_classifier_ignores_labels_per_class():
    """The IS classifier measures generated videos: it is trained on every label whatever the method may use."""
    base = tiny()
    scarce = apply_overrides(base, {"finetune.labels_per_class": 2})
    assert IS_CLASSIFIER.key_of(base, "synthetic") != IS_CLASSIFIER.key_of(scarce, "synthetic")  # the key sees it
    as_pretext_trains_it = apply_overrides(scarce, {"finetune.labels_per_class": 0})
    assert IS_CLASSIFIER.key_of(base, "synthetic") == IS_CLASSIFIER.key_of(as_pretext_trains_it, "synthetic")
