"""The Fig. 4 panels: grid coordinates checked against torch's `grid_sample`, and the layout."""
import numpy as np
import pytest
import torch
from PIL import Image

from saliency_jax.train import panels


@pytest.mark.parametrize("align_corners", [True, False])
def test_grid_to_pixels_is_where_torch_grid_sample_reads(align_corners):
  # Bilinear sampling of a ramp image I[r, c] = c returns the sampled column exactly, so
  # torch tells us which pixel position each grid point reads.
  size = 17
  ramp = torch.arange(size, dtype=torch.float64)
  image = torch.stack([ramp.expand(size, size), ramp[:, None].expand(size, size)])[None]
  grid = np.random.default_rng(0).uniform(-0.9, 0.9, size=(5, 6, 2))
  read = torch.nn.functional.grid_sample(image, torch.tensor(grid)[None], mode="bilinear",
                                         align_corners=align_corners)[0]
  expected = np.stack([read[0].numpy(), read[1].numpy()], axis=-1)
  np.testing.assert_allclose(panels.grid_to_pixels(grid, size, align_corners=align_corners),
                             expected, atol=1e-9)


def test_colorize_maps_maximum_to_brightest_and_zero_to_darkest():
  colors = panels.colorize(np.array([[0.0, 0.5], [2.0, 1.0]]))
  np.testing.assert_array_equal(colors[0, 0], panels._COLORMAP[0])
  np.testing.assert_array_equal(colors[1, 0], panels._COLORMAP[-1])
  assert colors.dtype == np.uint8
  np.testing.assert_array_equal(panels.colorize(np.zeros((2, 2)))[..., 0], 0)


def test_panel_layout_and_identity_grid_lines():
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
  t = 8
  line = np.linspace(-1, 1, t)  # The identity grid under align_corners=True.
  grid = np.stack(np.meshgrid(line, line), axis=-1)
  sampled = image[::8, ::8].astype(np.float32) / 255.0  # Float sampled images are in 0..1.
  tile = 112
  panel = panels.make_panel(image, sampled, saliency=rng.uniform(size=(5, 5)), grid=grid,
                            align_corners=True, tile=tile, grid_lines=t, caption="label 3")
  title = panels._TITLE_HEIGHT
  assert panel.shape == (tile + 2 * title, 4 * tile, 3)
  expected_input = np.asarray(Image.fromarray(image).resize((tile, tile), Image.Resampling.BILINEAR))
  np.testing.assert_array_equal(panel[title:title + tile, :tile], expected_input)
  expected_sampled = np.asarray(Image.fromarray(image[::8, ::8]).resize(
      (tile, tile), Image.Resampling.NEAREST))
  np.testing.assert_array_equal(panel[title:title + tile, 3 * tile:], expected_sampled)
  grid_tile = panel[title:title + tile, 2 * tile:3 * tile]
  for c in range(t):  # Vertical line c at column c * (tile - 1) / (t - 1).
    column = int(round(c * (tile - 1) / (t - 1)))
    np.testing.assert_array_equal(grid_tile[tile // 2 + 3, column], panels._GRID_COLOR)


def test_panel_without_saliency_or_grid_and_bad_shapes():
  image = np.zeros((32, 32, 3), np.uint8)
  panel = panels.make_panel(image, np.zeros((8, 8, 3), np.float32), tile=32)
  assert panel.shape == (32 + panels._TITLE_HEIGHT, 64, 3)
  with pytest.raises(ValueError, match="image"):
    panels.make_panel(np.zeros((32, 32)), np.zeros((8, 8, 3)))
  with pytest.raises(ValueError, match="grid"):
    panels.make_panel(image, np.zeros((8, 8, 3)), grid=np.zeros((8, 8, 3)))


def test_dense_tiles_bring_the_prediction_into_the_warped_frame():
  # A stride-4 class map of a 16 px source: class 1 on the left half, 2 on the right.
  prediction = np.ones((4, 4), np.int64)
  prediction[:, 2:] = 2
  # Identity grid (align_corners=True): each node reads the cell under it.
  line = np.linspace(-1, 1, 8)
  identity = np.stack(np.meshgrid(line, line), axis=-1)
  np.testing.assert_array_equal(panels.to_warped_frame(prediction, identity, 16),
                                np.repeat(np.repeat(prediction, 2, axis=0), 2, axis=1))
  # A grid that looks only at the source's top-left corner sees class 1 everywhere.
  corner = np.full((8, 8, 2), -0.9)
  assert set(panels.to_warped_frame(prediction, corner, 16).ravel()) == {1}
  colours = panels.label_colors(np.array([[0, 1], [2, 8]]))
  assert colours[0, 0].tolist() == [0, 0, 0]  # Background is black, classes differ
  # (eight colours, then they cycle: label 9 is drawn as label 1).
  assert panels.label_colors(np.array([9])).tolist() == colours[0, 1:2].tolist()
  assert len({tuple(c) for c in colours.reshape(-1, 3)}) == 4
  # Void (255) is grey, whatever the cycle would give.
  assert panels.label_colors(np.array([255])).tolist() == [[128, 128, 128]]
  tiles = panels.dense_tiles(prediction, prediction, identity, source_size=16, tile=32,
                             boxes={"target": np.array([[0, 0, 8, 16]])})
  assert [title for title, _ in tiles] == ["predicted, warped", "predicted", "target"]
  assert all(picture.dtype == np.uint8 and picture.shape[-1] == 3 for _, picture in tiles)
  # The target box's outline is drawn in green on the prediction tile.
  assert tiles[1][1][0, 0].tolist() == [0, 255, 0]
  assert [title for title, _ in panels.dense_tiles(prediction, prediction, None,
                                                   source_size=16)] == ["predicted", "target"]
