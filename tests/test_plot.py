"""dlcourse.plot: each figure has the expected panels, images and lines, and bad shapes raise.
(conftest.py selects the Agg backend and closes every figure after each test.)"""

from __future__ import annotations

import warnings

import matplotlib
import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from matplotlib.collections import PathCollection
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from dlcourse.plot import decision_boundary, feature_maps, image_grid, kernels, show_matrix, training_curves
from dlcourse.train import History


def test_backend_is_headless():
    assert matplotlib.get_backend().lower() == "agg"


def images_per_axes(fig: Figure) -> list[int]:
    return [len(ax.images) for ax in fig.axes]


# --------------------------------------------------------------------------------------------
# image_grid
# --------------------------------------------------------------------------------------------

def runs(filled: np.ndarray) -> list[slice]:
    """The maximal runs of True in a 1-D mask, as slices."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], filled.astype(int), [0]])))
    return [slice(a, b) for a, b in zip(edges[::2], edges[1::2])]


def grid_tiles(fig: Figure) -> list[np.ndarray]:
    """The images drawn in image_grid's single picture, found between its blank (NaN or
    transparent) gaps, left to right then top to bottom."""
    (ax,) = fig.axes
    (picture,) = ax.images
    mosaic = np.asarray(picture.get_array())
    blank = np.isnan(mosaic) if mosaic.ndim == 2 else mosaic[..., 3] == 0
    rows, cols = runs(~blank.all(axis=1)), runs(~blank.all(axis=0))
    tiles = [mosaic[r, c] for r in rows for c in cols]
    return [t for t in tiles if not (np.isnan(t).all() if t.ndim == 2 else (t[..., 3] == 0).all())]


@pytest.mark.parametrize(
    ("shape", "image_shape"),
    [((10, 8, 8), (8, 8)), ((10, 1, 28, 28), (28, 28)), ((10, 3, 6, 5), (6, 5, 3))],
    ids=["(N,H,W)", "(N,1,H,W)", "(N,3,H,W)"],
)
def test_image_grid_shows_every_image_once(shape, image_shape):
    images = torch.rand(shape) * 5 - 2  # grey images are shown over their own range; colour clipped to [0, 1]
    fig = image_grid(images, labels=list(range(10)), ncols=4)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 1 and not fig.axes[0].axison  # one picture: fast to lay out
    texts = fig.axes[0].texts
    assert [t.get_text() for t in texts] == [str(i) for i in range(10)]
    # Labels sit above their image, left to right then top to bottom (3 rows of 4).
    positions = [t.get_position() for t in texts]
    assert positions[0][0] < positions[1][0] < positions[3][0] and positions[0][1] < positions[4][1]
    tiles = grid_tiles(fig)
    assert len(tiles) == 10 and all(t.shape == image_shape[:2] + (4,) * (len(image_shape) == 3) for t in tiles)
    for image, tile in zip(images, tiles):
        shown = image.permute(1, 2, 0).squeeze(-1) if len(shape) == 4 else image  # channels last
        if shown.dim() == 2:
            expected = (shown - shown.min()) / (shown.max() - shown.min())
            np.testing.assert_allclose(tile, expected.numpy(), rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_allclose(tile[..., :3], shown.clamp(0, 1).numpy(), rtol=1e-6)
            assert (tile[..., 3] == 1).all()  # opaque, where the gaps are transparent


def test_image_grid_scales_each_grey_image_to_its_own_range():
    images = torch.stack([torch.zeros(4, 4), torch.full((4, 4), 7.0), torch.arange(16.0).view(4, 4)])
    images[0, 0, 0] = -1.0  # one dark pixel in a flat image
    tiles = grid_tiles(image_grid(images, ncols=3))
    assert tiles[0][0, 0] == 0 and (tiles[0].ravel()[1:] == 1).all()
    assert (tiles[1] == 0).all()  # a flat image: no range to show
    np.testing.assert_allclose(tiles[2], (torch.arange(16.0).view(4, 4) / 15).numpy(), rtol=1e-6)


def test_image_grid_accepts_numpy_gpu_style_and_grad_tensors():
    image_grid(np.random.rand(3, 5, 5))
    image_grid(torch.rand(3, 5, 5, requires_grad=True))
    image_grid(torch.rand(3, 5, 5, dtype=torch.float16))
    fig = image_grid(np.random.randint(0, 256, size=(2, 4, 4, 3), dtype=np.uint8))  # 0-255 colour
    assert np.asarray(fig.axes[0].images[0].get_array()).max() <= 1.0


def test_image_grid_columns_and_title():
    fig = image_grid(torch.rand(3, 4, 4), ncols=8, title="digits")
    assert fig._suptitle is not None and fig._suptitle.get_text() == "digits"
    assert len(fig.axes[0].texts) == 0  # no labels given
    assert len(grid_tiles(fig)) == 3  # one row: never more columns than images


@pytest.mark.parametrize("shape", [(8, 8), (2, 2, 1, 8, 8), (4,), (4, 2, 8, 8)], ids=str)
def test_image_grid_bad_shapes(shape):
    with pytest.raises(ValueError, match="image_grid: expected images"):
        image_grid(torch.rand(shape))


def test_image_grid_no_images():
    with pytest.raises(ValueError, match="no images"):
        image_grid(torch.rand(0, 8, 8))
    with pytest.raises(ValueError, match="at least 1x1 pixels"):
        image_grid(torch.rand(3, 0, 8))


def test_image_grid_labels_must_match():
    with pytest.raises(ValueError, match="3 labels for 4 images"):
        image_grid(torch.rand(4, 8, 8), labels=[0, 1, 2])


# --------------------------------------------------------------------------------------------
# training_curves
# --------------------------------------------------------------------------------------------

def line_labels(ax: Axes) -> list[str]:
    return [line.get_label() for line in ax.get_lines()]


def test_training_curves_one_panel_per_quantity_train_and_val_together():
    history = {"train_loss": [1.0, 0.6, 0.4], "val_loss": [1.1, 0.8, 0.7],
               "train_accuracy": [0.5, 0.7, 0.8], "val_accuracy": [0.4, 0.6, 0.7]}
    fig = training_curves(history, title="run 1")
    assert isinstance(fig, Figure)
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "accuracy"]
    for ax, name in zip(fig.axes, ["loss", "accuracy"]):
        assert line_labels(ax) == ["train", "val"]
        assert ax.get_xlabel() == "epoch"
        train, val = ax.get_lines()
        assert list(train.get_xdata()) == [1, 2, 3]  # epochs count from 1
        assert list(train.get_ydata()) == history[f"train_{name}"]
        assert list(val.get_ydata()) == history[f"val_{name}"]


def test_training_curves_train_only_and_extra_keys():
    history = History(train_loss=[1.0, 0.5], lr=[0.1, 0.05])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. matplotlib's "No artists with labels found to put in legend"
        fig = history.plot()
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "lr"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [1, 1]
    assert line_labels(fig.axes[1]) == ["lr"]


def test_training_curves_empty_history():
    with pytest.raises(ValueError, match="empty"):
        training_curves({})
    with pytest.raises(ValueError, match="empty"):
        History().plot()


# --------------------------------------------------------------------------------------------
# decision_boundary
# --------------------------------------------------------------------------------------------

def two_blobs(n=40):
    g = torch.Generator().manual_seed(0)
    X = torch.cat([torch.randn(n // 2, 2, generator=g) - 2, torch.randn(n // 2, 2, generator=g) + 2])
    y = torch.cat([torch.zeros(n // 2), torch.ones(n // 2)]).long()
    return X, y


def contour_levels(ax: Axes) -> int:
    """How many classes the coloured plane shows (its filled contour has one band per class)."""
    (cs,) = [c for c in ax.collections if isinstance(c, ContourSet)]
    return len(cs.levels) - 1


def scatter_points(ax: Axes) -> int:
    (pc,) = [c for c in ax.collections if isinstance(c, PathCollection) and not isinstance(c, ContourSet)]
    return len(pc.get_offsets())


@pytest.mark.parametrize(
    "predict",
    [
        lambda g: torch.sigmoid(g.sum(1)),                 # (M,) probabilities
        lambda g: torch.sigmoid(g.sum(1, keepdim=True)),   # (M, 1): what nn.Linear(2, 1) gives
        lambda g: torch.stack([-g.sum(1), g.sum(1)], 1),   # (M, 2) scores
    ],
    ids=["(M,)", "(M,1)", "(M,C)"],
)
def test_decision_boundary_binary(predict):
    X, y = two_blobs()
    ax = decision_boundary(predict, X, y, title="blobs")
    assert isinstance(ax, Axes)
    assert contour_levels(ax) == 2, "both classes appear on the plane"
    assert scatter_points(ax) == 40
    assert ax.get_title() == "blobs"
    # The view covers the data with a margin.
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    assert x0 < float(X[:, 0].min()) and x1 > float(X[:, 0].max())
    assert y0 < float(X[:, 1].min()) and y1 > float(X[:, 1].max())


def test_decision_boundary_three_classes_on_given_axes():
    X = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    centres = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

    def predict(g):  # nearest centre
        return -torch.cdist(g, centres)

    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    assert decision_boundary(predict, X, torch.tensor([0, 1, 2, 0]), ax=ax, resolution=50) is ax
    assert contour_levels(ax) == 3


def test_decision_boundary_passes_float32_grid_points():
    seen = {}

    def predict(g):
        seen["shape"], seen["dtype"] = tuple(g.shape), g.dtype
        return torch.zeros(len(g))

    decision_boundary(predict, np.random.rand(10, 2), np.zeros(10), resolution=30)
    assert seen == {"shape": (900, 2), "dtype": torch.float32}


@pytest.mark.parametrize("shape", [(10, 3), (10,), (2, 10, 2)], ids=str)
def test_decision_boundary_bad_X(shape):
    with pytest.raises(ValueError, match=r"expected X of shape \(N, 2\)"):
        decision_boundary(lambda g: g[:, 0], torch.rand(shape), torch.zeros(10))


def test_decision_boundary_labels_must_match_points():
    with pytest.raises(ValueError, match="10 points but 9 labels"):
        decision_boundary(lambda g: g[:, 0], torch.rand(10, 2), torch.zeros(9))


def test_decision_boundary_bad_predictions():
    with pytest.raises(ValueError, match="predict"):
        decision_boundary(lambda g: g[:5, 0], torch.rand(10, 2), torch.zeros(10), resolution=20)


# --------------------------------------------------------------------------------------------
# feature_maps and kernels
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("shape", [(6, 12, 12), (1, 6, 12, 12)], ids=str)
def test_feature_maps_one_image_per_channel(shape):
    torch.manual_seed(0)
    fig = feature_maps(torch.randn(shape), ncols=4, title="conv1")
    torch.manual_seed(0)
    assert isinstance(fig, Figure)
    maps = torch.randn(shape).reshape(6, 12, 12)
    tiles = grid_tiles(fig)
    assert len(tiles) == 6
    for m, tile in zip(maps, tiles):  # each channel over its own range
        np.testing.assert_allclose(tile, ((m - m.min()) / (m.max() - m.min())).numpy(), rtol=1e-5, atol=1e-6)
    assert [t.get_text() for t in fig.axes[0].texts] == [f"ch {i}" for i in range(6)]


@pytest.mark.parametrize("shape", [(2, 6, 12, 12), (12, 12), (1, 1, 6, 12, 12)], ids=str)
def test_feature_maps_bad_shapes(shape):
    with pytest.raises(ValueError, match="feature_maps: expected"):
        feature_maps(torch.randn(shape))


@pytest.mark.parametrize("shape", [(5, 3, 3, 3), (5, 3, 3)], ids=["(C_out,C_in,kH,kW)", "(C_out,kH,kW)"])
def test_kernels_one_image_per_output_channel_with_a_symmetric_colour_scale(shape):
    w = torch.randn(shape)
    fig = kernels(w, ncols=3)
    assert isinstance(fig, Figure)
    assert images_per_axes(fig) == [1] * 5 + [0]
    vmax = float(w[:, 0].abs().max()) if len(shape) == 4 else float(w.abs().max())
    for ax in fig.axes[:5]:
        lo, hi = ax.images[0].get_clim()
        assert lo == pytest.approx(-vmax) and hi == pytest.approx(vmax)
    shown = np.asarray(fig.axes[1].images[0].get_array())
    np.testing.assert_allclose(shown, (w[1, 0] if len(shape) == 4 else w[1]).numpy(), rtol=1e-6)


def test_kernels_all_zero_weights_still_draw():
    fig = kernels(torch.zeros(2, 1, 3, 3))
    assert images_per_axes(fig) == [1, 1]


@pytest.mark.parametrize("shape", [(5,), (2, 2, 2, 3, 3)], ids=str)
def test_kernels_bad_shapes(shape):
    with pytest.raises(ValueError, match="kernels: expected"):
        kernels(torch.randn(shape))


def test_kernels_none():
    with pytest.raises(ValueError, match="no kernels"):
        kernels(torch.randn(0, 1, 3, 3))



# --------------------------------------------------------------------------------------------
# show_matrix
# --------------------------------------------------------------------------------------------

def test_show_matrix_writes_every_number_in_its_cell():
    m = torch.tensor([[1.0, 14.0, 0.0], [0.5, 2.0, 80.0]], requires_grad=True)
    ax = show_matrix(m, title="a map")
    assert isinstance(ax, Axes) and ax.get_title() == "a map"
    np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), m.detach().numpy())
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells == {(0, 0): "1", (0, 1): "14", (0, 2): "0", (1, 0): "0.5", (1, 1): "2", (1, 2): "80"}
    assert ax.texts[5].get_color() == "white" and ax.texts[0].get_color() == "black"  # 80 is dark
    assert ax.images[0].get_clim() == (0.0, 80.0)


def test_show_matrix_centres_the_scale_on_zero_with_negatives_and_formats():
    ax = show_matrix(torch.tensor([[-2.0, 0.25], [0.5, 0.0]]), fmt="{:.2f}")
    assert ax.images[0].get_clim() == (-2.0, 2.0)
    assert [t.get_text() for t in ax.texts] == ["-2.00", "0.25", "0.50", "0.00"]
    assert show_matrix(torch.full((2, 2), 0.1)).images[0].get_clim() == (0.0, 1.0)  # top at least 1


def test_show_matrix_outlines_marked_cells_and_a_window():
    import matplotlib.pyplot as plt

    _, ax = plt.subplots()
    mark = torch.tensor([[True, False, False], [False, False, True], [False, False, False]])
    assert show_matrix(torch.arange(9.0).reshape(3, 3), ax=ax, mark=mark, window=(1, 0, 2)) is ax
    boxes = [(p.get_xy(), p.get_width()) for p in ax.patches]
    assert boxes == [((-0.5, -0.5), 1), ((1.5, 0.5), 1), ((-0.5, 0.5), 2)]


@pytest.mark.parametrize("bad, match", [(torch.zeros(3), "2-D"), (torch.zeros(0, 2), "empty")])
def test_show_matrix_bad_shapes(bad, match):
    with pytest.raises(ValueError, match=match):
        show_matrix(bad)
    with pytest.raises(ValueError, match="mark has shape"):
        show_matrix(torch.zeros(2, 2), mark=torch.zeros(3, 3, dtype=torch.bool))


def test_figures_are_closed_between_tests():
    import matplotlib.pyplot as plt

    assert plt.get_fignums() == []  # conftest closed those of the tests above
