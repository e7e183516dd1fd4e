"""kde_saliency against a NumPy evaluation of the Gaussian mixture, box by box."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import saliency_jax as sj


def _numpy_kde(boxes, valid, gh, gw, bandwidth=0.05, box_scale=0.25, uniform_weight=0.1):
  ys, xs = np.meshgrid(np.linspace(-1, 1, gh), np.linspace(-1, 1, gw), indexing="ij")
  out = []
  for image_boxes, image_valid in zip(boxes.astype(np.float64), valid):
    kept = image_boxes[image_valid]
    if len(kept) == 0:
      out.append(np.full((gh, gw), np.log(0.25)))
      continue
    density = np.zeros((gh, gw))
    for x0, y0, x1, y1 in kept:
      sx = np.hypot(box_scale * (x1 - x0), bandwidth)
      sy = np.hypot(box_scale * (y1 - y0), bandwidth)
      density += np.exp(-0.5 * ((xs - (x0 + x1) / 2) / sx) ** 2
                        - 0.5 * ((ys - (y0 + y1) / 2) / sy) ** 2) / (2 * np.pi * sx * sy)
    density = (1 - uniform_weight) * density / len(kept) + uniform_weight / 4
    out.append(np.log(density))
  return np.stack(out)


def _boxes(rng, b, n):
  corners = rng.uniform(-1, 1, (b, n, 2, 2))
  return np.concatenate([corners.min(2), corners.max(2)], -1).astype(np.float32)


def test_matches_numpy_mixture_with_padding_and_zero_area():
  rng = np.random.default_rng(0)
  boxes = _boxes(rng, 3, 5)
  boxes[0, 1, 2:] = boxes[0, 1, :2]  # A zero-area box (a point).
  valid = np.ones((3, 5), bool)
  valid[1, 3:] = False  # Padding.
  boxes[1, 3:] = np.nan  # Whatever padding holds does not matter.
  valid[2] = False  # An image without boxes: the uniform prior.
  logits = np.asarray(sj.kde_saliency(boxes, (9, 13), valid=valid))
  np.testing.assert_allclose(logits, _numpy_kde(boxes, valid, 9, 13), rtol=1e-5, atol=1e-5)
  # Softmax of the logits is the density normalised over the cells; no boxes -> uniform grid.
  grid = sj.attraction_grid(sj.softmax_saliency(logits[2:]), (9, 13))
  ys, xs = np.meshgrid(np.linspace(-1, 1, 9), np.linspace(-1, 1, 13), indexing="ij")
  np.testing.assert_allclose(np.asarray(grid)[0], np.stack([xs, ys], -1), atol=1e-5)


def test_dataset_prior_and_gradients():
  rng = np.random.default_rng(1)
  boxes = _boxes(rng, 1, 40)[0]
  logits = sj.kde_saliency(boxes, (7, 7), bandwidth=0.1, box_scale=0.5, uniform_weight=0.3)
  assert logits.shape == (1, 7, 7)
  np.testing.assert_allclose(np.asarray(logits),
                             _numpy_kde(boxes[None], np.ones((1, 40), bool), 7, 7, 0.1, 0.5, 0.3),
                             rtol=1e-5, atol=1e-5)
  valid = jnp.asarray(np.arange(6) < 4)[None].repeat(2, 0)
  f = lambda b: jnp.sum(jnp.sin(sj.kde_saliency(b, (5, 6), valid=valid)))
  padded = jnp.asarray(_boxes(rng, 2, 6)).at[:, 4:, :].set(jnp.nan)
  grads = np.asarray(jax.grad(f)(padded))
  assert np.all(np.isfinite(grads)) and np.all(grads[:, 4:] == 0)
  jitted = jax.jit(lambda b: sj.kde_saliency(b, (5, 6)))(padded[:, :4])
  np.testing.assert_array_equal(np.asarray(jitted),
                                np.asarray(sj.kde_saliency(padded[:, :4], (5, 6))))


def test_bad_input():
  boxes = np.zeros((2, 3, 4), np.float32)
  with pytest.raises(ValueError, match="boxes"):
    sj.kde_saliency(np.zeros((2, 3, 3), np.float32), (5, 5))
  with pytest.raises(ValueError, match="grid_shape"):
    sj.kde_saliency(boxes, (0, 5))
  with pytest.raises(ValueError, match="valid"):
    sj.kde_saliency(boxes, (5, 5), valid=np.ones((2, 2), bool))
  with pytest.raises(ValueError, match="bandwidth"):
    sj.kde_saliency(boxes, (5, 5), bandwidth=0.0)
  with pytest.raises(ValueError, match="uniform_weight"):
    sj.kde_saliency(boxes, (5, 5), uniform_weight=0.0)
  boxes[1, 0, 0] = np.nan
  with pytest.raises(ValueError, match="finite"):
    sj.kde_saliency(boxes, (5, 5))
  out = np.asarray(jax.jit(lambda b: sj.kde_saliency(b, (5, 5)))(boxes))
  assert np.all(np.isfinite(out[0])) and np.all(np.isnan(out[1]))
