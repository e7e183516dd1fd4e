"""The zoom-unzoom dense model: outputs in the source frame, saliency sources, gradients."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from saliency_jax import models
from saliency_jax.models import dense, resnet, saliency_network

SIZE, TASK, STRIDE, CLASSES, GRID = 128, 64, 8, 3, 11


def _model(*, saliency=False, prior=None, head="segmentation", antialias=True, seed=0,
           axis_aligned=False, detail_prior=False, warp_gradient=True, head_init="torch",
           segmentation_auxiliary=False, magnification_input=False, warped_box_sizes=False):
  rngs = nnx.Rngs(seed)
  backbone = resnet.build_resnet("resnet_tiny", num_classes=None, rngs=rngs)
  net = (saliency_network.SaliencyNetwork(backbone="resnet_tiny", depth=6, grid_size=GRID,
                                          rngs=rngs) if saliency else None)
  model = dense.ZoomUnzoom(backbone, net, prior=prior, num_classes=CLASSES, head=head,
                           task_size=TASK, low_res_size=32, out_stride=STRIDE, head_width=16,
                           antialias=antialias, axis_aligned=axis_aligned,
                           detail_prior=detail_prior, grid_size=GRID,
                           warp_gradient=warp_gradient, head_init=head_init,
                           segmentation_auxiliary=segmentation_auxiliary,
                           magnification_input=magnification_input,
                           warped_box_sizes=warped_box_sizes, rngs=rngs)
  model.eval()
  return model


@pytest.fixture(scope="module")
def images():
  return jax.random.randint(jax.random.key(0), (2, SIZE, SIZE, 3), 0, 256).astype(jnp.uint8)


def _peaked_prior():
  # All of the prior's mass near the top-left corner of the grid.
  prior = np.full((GRID, GRID), 1e-3, np.float32)
  prior[1:3, 1:3] = 1.0
  return prior


def test_the_uniform_model_samples_the_identity_and_covers_the_source(images):
  model = _model()
  assert model.uniform
  outputs, extras = model(images)
  assert outputs.shape == (2, SIZE // STRIDE, SIZE // STRIDE, CLASSES + 1)
  assert "saliency" not in extras
  # Reference: the align_corners=True lattice written out.
  line = np.linspace(-1, 1, TASK)
  np.testing.assert_allclose(extras["grid"][1, 5, :, 0], line, atol=1e-6)
  np.testing.assert_allclose(extras["grid"][1, :, 7, 1], line, atol=1e-6)
  assert bool(extras["covered"].all())
  assert np.isfinite(np.asarray(outputs)).all()


def test_detection_gives_a_heatmap_per_class_and_four_box_channels(images):
  model = _model(head="detection")
  outputs, _ = model(images)
  assert outputs.shape == (2, SIZE // STRIDE, SIZE // STRIDE, CLASSES + 4)
  # CenterNet's start: the centre logits' bias at log(0.1 / 0.9), the box channels' at 0.
  np.testing.assert_allclose(model.out.bias.value, [-2.19] * CLASSES + [0.0] * 4)


def test_the_auxiliary_segmentation_reads_the_detection_heads_fused_map(images):
  plain, model = _model(head="detection"), _model(head="detection", segmentation_auxiliary=True)
  outputs, extras = model(images)
  # The extra head leaves the detection outputs as they were (same seed, same parameters).
  np.testing.assert_allclose(outputs, plain(images)[0], rtol=1e-6, atol=1e-6)
  assert "segmentation_outputs" not in plain(images)[1]
  assert extras["segmentation_outputs"].shape == (2, SIZE // STRIDE, SIZE // STRIDE, CLASSES + 1)
  # Reference: with the detection head's first K + 1 columns as its weights, the auxiliary
  # output is those channels of the detection outputs, so both read one map.
  model.segmentation_out.kernel.set_value(model.out.kernel[..., :CLASSES + 1])
  model.segmentation_out.bias.set_value(model.out.bias[:CLASSES + 1])
  outputs, extras = model(images)
  np.testing.assert_allclose(extras["segmentation_outputs"], outputs[..., :CLASSES + 1],
                             rtol=1e-5, atol=1e-5)


def _read_magnification(model):
  """Sets the head to output, in channel 0, its magnification input alone (weight 1)."""
  kernel = np.zeros(model.out.kernel.shape, np.float32)
  kernel[..., -1, 0] = 1.0
  model.out.kernel.set_value(jnp.asarray(kernel))
  model.out.bias.set_value(jnp.zeros(model.out.bias.shape))


def test_the_head_reads_the_warps_log_magnification_in_the_source_frame(images):
  from saliency_jax import ops  # pylint: disable=import-outside-toplevel
  plain = _model(prior=_peaked_prior(), head="detection")
  model = _model(prior=_peaked_prior(), head="detection", magnification_input=True)
  assert model.out.kernel.shape[-2] == plain.out.kernel.shape[-2] + 1
  _read_magnification(model)
  outputs, extras = model(images)
  # Reference: the grid's local magnification (1 = uniform), clipped, logged and unwarped into
  # the outputs' frame by the ops directly.
  local = np.clip(np.asarray(ops.magnification(extras["grid"], None)), 1 / 16, 16)
  want, _ = ops.unwarp(jnp.log(jnp.asarray(local))[..., None], extras["grid"],
                       (SIZE // STRIDE,) * 2, source_shape=(SIZE, SIZE))
  np.testing.assert_allclose(outputs[..., 0], want[..., 0], rtol=1e-4, atol=1e-4)
  # The prior's mass is near the top-left corner: the warp zooms into it (the rest of the
  # source is not covered, where the input is 0), most at the peak.
  covered, read = np.asarray(extras["covered"][0]), np.asarray(outputs[0, ..., 0])
  assert covered[2, 2] and read[2, 2] > 1.0 and read[2, 2] > read[6, 6] > 0.0
  assert np.all(read[~covered] == 0.0)
  # On the identity grid (the uniform baseline) the input is log 1 = 0 everywhere.
  uniform = _model(head="detection", magnification_input=True)
  _read_magnification(uniform)
  np.testing.assert_allclose(uniform(images)[0][..., 0], 0.0, atol=1e-5)


def test_source_box_sizes_follow_the_axis_profiles():
  # An axis-aligned grid from two monotone 1-D profiles: its warp is piecewise linear along each
  # axis, so np.interp of the profiles (and of their inverses) is an independent reference.
  t, source, stride = 16, 64, 8
  lattice = np.linspace(-1, 1, t)
  profile_x = np.sinh(2 * lattice) / np.sinh(2)  # Magnifies the centre 2.8x, compresses the sides.
  profile_y = np.clip(lattice * 0.6 - 0.2, -1, 1)  # Zooms 1.67x into a band above the middle.
  grid = np.stack(np.broadcast_arrays(profile_x[None, :], profile_y[:, None]), -1)[None]
  cells = source // stride
  centres = -1 + 2 * ((np.arange(cells) + 0.5) * stride - 0.5) / (source - 1)
  u = np.interp(centres, profile_x, lattice)  # Every cell's warped position.
  v = np.interp(centres, profile_y, lattice)
  position = np.stack(np.broadcast_arrays(u[None, :], v[:, None]), -1)[None].astype(np.float32)
  log_sizes = np.random.default_rng(0).uniform(-1, 1.5, (1, cells, cells, 2)).astype(np.float32)
  covered = np.ones((1, cells, cells), bool)
  covered[0, 0, 0] = False
  got = dense.source_box_sizes(jnp.asarray(log_sizes), jnp.asarray(position),
                               jnp.asarray(covered), jnp.asarray(grid, jnp.float32),
                               (source, source), stride=stride)
  half = np.exp(log_sizes) * stride / (source - 1)  # Normalised half-sides (identity units).
  width = np.interp(u[None, :] + half[0, ..., 0], lattice, profile_x) - np.interp(
      u[None, :] - half[0, ..., 0], lattice, profile_x)
  height = np.interp(v[:, None] + half[0, ..., 1], lattice, profile_y) - np.interp(
      v[:, None] - half[0, ..., 1], lattice, profile_y)
  want = np.log(np.maximum(np.stack([width, height], -1) * (source - 1) / 2 / stride, 1e-4))
  want[0, 0] = log_sizes[0, 0, 0]  # Not covered: left as predicted.
  np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-4)
  # The centre columns are magnified, so the same warped size spans less of the source there.
  assert got[0, 4, 4, 0] < log_sizes[0, 4, 4, 0] < got[0, 4, 0, 0] + 1.0


def _constant_sizes(model, log_size):
  """Sets the head's size channels to `log_size` at every cell (kernel 0, bias `log_size`)."""
  kernel = np.asarray(model.out.kernel.value).copy()
  kernel[..., CLASSES:CLASSES + 2] = 0.0
  model.out.kernel.set_value(jnp.asarray(kernel))
  model.out.bias.set_value(model.out.bias.value.at[CLASSES:CLASSES + 2].set(log_size))


def test_warped_box_sizes_are_the_warped_windows_extent_in_the_source(images):
  from saliency_jax import ops  # pylint: disable=import-outside-toplevel
  model = _model(prior=_peaked_prior(), head="detection", axis_aligned=True,
                 warped_box_sizes=True)
  log_size = np.log(1.5)
  _constant_sizes(model, log_size)
  outputs, extras = model(images)
  grid, covered = extras["grid"], np.asarray(extras["covered"])
  # Reference: each cell's centre sent into the warped image by the point inverse, the warped
  # box of side 1.5 strides around it brought back by the exact box unwarp.
  cells = SIZE // STRIDE
  centres = -1 + 2 * ((np.arange(cells) + 0.5) * STRIDE - 0.5) / (SIZE - 1)
  points = np.stack(np.meshgrid(centres, centres), -1).reshape(1, -1, 2)
  points = jnp.asarray(np.repeat(points, 2, axis=0), jnp.float32)
  warped, _ = ops.warp_points(points, grid, axis_aligned=True)
  half = 1.5 * STRIDE / (SIZE - 1)
  boxes = ops.unwarp_boxes(jnp.concatenate([warped - half, warped + half], -1), grid)
  sides = np.asarray(boxes[..., 2:] - boxes[..., :2]).reshape(2, cells, cells, 2)
  want = np.log(sides * (SIZE - 1) / 2 / STRIDE)
  got = np.asarray(outputs[..., CLASSES:CLASSES + 2])
  np.testing.assert_allclose(got[covered], want[covered], rtol=1e-3, atol=1e-3)
  # The prior zooms into the top-left: a box there spans less of the source than elsewhere.
  assert got[0, 2, 2, 0] < log_size - 0.3 and got[0, 2, 2, 0] < got[0, 12, 12, 0]
  # Classes and offsets are the head's own.
  plain = _model(prior=_peaked_prior(), head="detection", axis_aligned=True)
  _constant_sizes(plain, log_size)
  reference = np.asarray(plain(images)[0])
  np.testing.assert_allclose(outputs[..., :CLASSES], reference[..., :CLASSES], atol=1e-5)
  np.testing.assert_allclose(outputs[..., CLASSES + 2:], reference[..., CLASSES + 2:], atol=1e-5)


def test_warped_box_sizes_change_nothing_on_the_identity_grid_and_pass_gradients(images):
  got = np.asarray(_model(head="detection", warped_box_sizes=True)(images)[0])
  plain = np.asarray(_model(head="detection")(images)[0])
  # The same outputs wherever the box lies inside the image; a box beyond its border is cut
  # there, as the source's boxes are.
  centres = (np.arange(SIZE // STRIDE) + 0.5) * STRIDE - 0.5  # Pixel indices, 0..SIZE - 1.
  half = np.exp(plain[..., CLASSES:CLASSES + 2]) * STRIDE / 2
  inside = ((centres[None, None, :] - half[..., 0] >= 0)
            & (centres[None, None, :] + half[..., 0] <= SIZE - 1)
            & (centres[None, :, None] - half[..., 1] >= 0)
            & (centres[None, :, None] + half[..., 1] <= SIZE - 1))
  assert inside.mean() > 0.25
  np.testing.assert_allclose(got[inside], plain[inside], rtol=1e-3, atol=1e-3)
  np.testing.assert_array_equal(got[..., :CLASSES], plain[..., :CLASSES])
  assert np.all(got[..., CLASSES:CLASSES + 2][~inside] <= plain[..., CLASSES:CLASSES + 2][~inside]
                + 1e-2)
  zoomed = _model(prior=_peaked_prior(), head="detection", warped_box_sizes=True)

  grads = nnx.grad(lambda m: jnp.sum(m(images)[0][..., CLASSES:CLASSES + 2]))(zoomed)
  kernel = np.asarray(grads["out"]["kernel"].value)
  assert np.isfinite(kernel).all() and np.abs(kernel[..., CLASSES:CLASSES + 2]).sum() > 0
  with pytest.raises(ValueError, match="warped_box_sizes needs the detection head"):
    _model(warped_box_sizes=True)


def test_stages_coarser_than_the_outputs_are_unwarped_at_their_resolution_and_upsampled(images):
  # layer4 of the 64 px warped image is 2x2 (stride 32), i.e. stride 64 on the 128 px source:
  # unwarped to 2x2 of the source, then upsampled to the 32x32 outputs (stride 4); coverage is
  # then the outputs' own, from the inverse of the grid.
  from saliency_jax import ops  # pylint: disable=import-outside-toplevel
  rngs = nnx.Rngs(0)
  backbone = resnet.build_resnet("resnet_tiny", num_classes=None, rngs=rngs)
  model = dense.ZoomUnzoom(backbone, None, prior=_peaked_prior(), num_classes=CLASSES,
                           stages=("layer4",), task_size=TASK, out_stride=4, head_width=8,
                           rngs=rngs)
  model.eval()
  outputs, extras = model(images)
  assert outputs.shape == (2, SIZE // 4, SIZE // 4, CLASSES + 1)
  expected = ops.unwarp(np.ones((2, 4, 4, 1), np.float32), extras["grid"], (SIZE // 4,) * 2,
                        source_shape=(SIZE, SIZE))[1]
  np.testing.assert_array_equal(extras["covered"], expected)
  assert not bool(expected.all())  # The peaked prior's warp leaves part of the source out.


def test_a_prior_alone_is_the_saliency_of_every_image_and_zooms_where_it_is_high(images):
  prior = _peaked_prior()
  _, extras = _model(prior=prior)(images)
  expected = prior / prior.sum()  # the prior, renormalised (the softmax of its log)
  for b in range(2):
    np.testing.assert_allclose(extras["saliency"][b], expected, rtol=1e-5, atol=1e-8)
  # More of the warped image's pixels read the top-left quarter than uniform sampling's quarter.
  grid = np.asarray(extras["grid"][0])
  assert np.mean((grid[..., 0] < 0) & (grid[..., 1] < 0)) > 0.4


def test_network_and_prior_multiply(images):
  prior = _peaked_prior()
  model = _model(saliency=True, prior=prior)
  _, extras = model(images)
  # Reference: the network's own softmax times the prior, renormalised, computed in NumPy.
  view = dense.task.area_view(images, 32)
  logits = np.asarray(model.saliency_net(dense.task.imagenet_normalize(view))[..., 0],
                      np.float64)
  network = np.exp(logits - logits.max(axis=(1, 2), keepdims=True))
  product = network * prior
  expected = product / product.sum(axis=(1, 2), keepdims=True)
  np.testing.assert_allclose(extras["saliency"], expected, rtol=1e-4, atol=1e-7)


def _fine_detail_in_the_top_left():
  """Grey images with a 1-pixel checkerboard in their top-left 32x32 corner: detail that
  downsampling 128 -> 64 averages away, there and nowhere else."""
  images = np.full((2, SIZE, SIZE, 3), 128, np.uint8)
  checker = (np.indices((32, 32)).sum(axis=0) % 2 * 255).astype(np.uint8)
  images[:, 8:40, 8:40, :] = checker[..., None]
  return jnp.asarray(images)


def test_the_detail_prior_alone_zooms_on_the_detail_downsampling_would_lose():
  images = _fine_detail_in_the_top_left()
  model = _model(detail_prior=True)
  assert not model.uniform
  _, extras = model(images)
  saliency = np.asarray(extras["saliency"])
  np.testing.assert_allclose(saliency.sum(axis=(1, 2)), 1.0, rtol=1e-5)
  # The checkerboard covers source pixels 8..39 of 128, i.e. cells 0..3 of the 11x11 map (11.6
  # pixels each): its cells hold the detail prior's excess mass (its mixture's other half is
  # uniform), every other cell the uniform share alone.
  inside = saliency[:, 1:3, 1:3]
  outside = saliency[:, 5:, 5:]
  np.testing.assert_allclose(outside, np.broadcast_to(outside[:, :1, :1], outside.shape),
                             rtol=1e-5)
  assert float(inside.min()) > 5 * float(outside.max())
  # The warp gives the checkerboard's region more of the warped image than its share of the
  # source (0.0625, what the identity grid gives it; the default fwhm on an 11x11 map gives
  # 0.094).
  grid = np.asarray(extras["grid"])
  region = (grid[..., 0] > -0.875) & (grid[..., 0] < -0.375) & (grid[..., 1] > -0.875) & (
      grid[..., 1] < -0.375)
  assert region.mean() > 1.3 * 0.0625


def test_a_zero_headed_network_times_the_detail_prior_is_the_detail_prior():
  images = _fine_detail_in_the_top_left()
  alone = _model(detail_prior=True)
  both = _model(saliency=True, detail_prior=True)
  head = both.saliency_net.head
  head.kernel.set_value(jnp.zeros_like(head.kernel.get_value()))
  head.bias.set_value(jnp.zeros_like(head.bias.get_value()))
  np.testing.assert_allclose(both(images)[1]["saliency"], alone(images)[1]["saliency"],
                             rtol=1e-5, atol=1e-8)


def test_gradients_reach_the_saliency_network_through_the_unwarp(images):
  model = _model(saliency=True)
  model.train()
  labels = jax.random.randint(jax.random.key(1), (2, SIZE // STRIDE, SIZE // STRIDE), 0,
                              CLASSES + 1)

  def loss(model):
    outputs, _ = model(images)
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(outputs), labels[..., None], -1))

  grads = nnx.jit(nnx.grad(loss))(model)
  head_kernel = grads.saliency_net.head.kernel.value
  backbone_kernel = grads.task_net.conv1.kernel.value
  assert np.isfinite(np.asarray(head_kernel)).all()
  assert float(jnp.abs(head_kernel).max()) > 0
  assert float(jnp.abs(backbone_kernel).max()) > 0


def test_without_the_warps_gradient_the_map_learns_from_a_loss_on_it_alone(images):
  """`warp_gradient=False`: the same outputs and map as the paper's path (same parameters); the
  task's loss gives the saliency network no gradient and the backbone the same one, while a loss
  on the map (as the trainer's box supervision) gives the saliency network the paper's path's."""
  paper, cut = _model(saliency=True), _model(saliency=True, warp_gradient=False)
  for model in (paper, cut):
    # A map that is not uniform, so that the warp is not the identity.
    head = model.saliency_net.head
    head.kernel.value = jax.random.normal(jax.random.key(3), head.kernel.value.shape)
    model.train()
  labels = jax.random.randint(jax.random.key(1), (2, SIZE // STRIDE, SIZE // STRIDE), 0,
                              CLASSES + 1)
  target = jax.nn.softmax(jax.random.normal(jax.random.key(2), (2, GRID * GRID))).reshape(
      2, GRID, GRID)

  def grads(model, part):
    def loss(m):
      outputs, extras = m(images)
      if part == "task":
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(outputs), labels[..., None], -1))
      return jnp.sum(target * jnp.log(target / extras["saliency"]))
    return nnx.state(nnx.grad(loss)(model), nnx.Param)

  (out_p, ext_p), (out_c, ext_c) = paper(images), cut(images)
  np.testing.assert_allclose(out_c, out_p, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(ext_c["saliency"], ext_p["saliency"], rtol=1e-6)
  task_p, task_c = grads(paper, "task"), grads(cut, "task")
  norm = lambda tree: float(sum(jnp.sum(x**2) for x in jax.tree.leaves(tree)))
  assert norm(task_p["saliency_net"]) > 0
  assert norm(task_c["saliency_net"]) == 0
  # Tolerances: float32 rounding of differently fused programs.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5),
               task_c["task_net"], task_p["task_net"])
  map_p, map_c = grads(paper, "map"), grads(cut, "map")
  assert norm(map_c["saliency_net"]) > 0
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6),
               map_c["saliency_net"], map_p["saliency_net"])
  with pytest.raises(ValueError, match="warp_gradient=False needs a saliency network"):
    _model(warp_gradient=False)


def test_an_axis_aligned_warp_is_unwarped_by_the_fast_path_as_by_the_general_one(images,
                                                                                monkeypatch):
  model = _model(saliency=True, axis_aligned=True)
  # A saliency head that is not uniform, so that the warp is not the identity.
  head = model.saliency_net.head
  head.kernel.value = jax.random.normal(jax.random.key(3), head.kernel.value.shape)
  fast, extras = model(images)
  grid = np.asarray(extras["grid"])
  # Axis-aligned: x depends on the column only, y on the row only; and not the identity.
  np.testing.assert_allclose(grid[..., 0], grid[:, :1, :, 0].repeat(TASK, 1), atol=1e-6)
  np.testing.assert_allclose(grid[..., 1], grid[:, :, :1, 1].repeat(TASK, 2), atol=1e-6)
  assert np.abs(grid[0, 0, :, 0] - np.linspace(-1, 1, TASK)).max() > 0.02

  general_unwarp = dense.ops.unwarp
  monkeypatch.setattr(dense.ops, "unwarp", lambda *args, axis_aligned, **kwargs: general_unwarp(
      *args, axis_aligned=False, **kwargs))
  general, _ = model(images)
  # The general inverse is a Newton solve to float32 rounding: the same outputs.
  np.testing.assert_allclose(general, fast, rtol=1e-3, atol=1e-3)


def test_jit_gives_what_eager_gives(images):
  model = _model(saliency=True)
  eager, _ = model(images)
  jitted, _ = nnx.jit(lambda m, x: m(x))(model, images)
  # Outputs of order 1 after some 20 layers: XLA's fusions round differently from op-by-op runs.
  np.testing.assert_allclose(jitted, eager, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("head", dense.HEADS)
def test_a_zero_head_starts_every_pixel_at_its_bias_and_changes_only_the_last_convolution(
    images, head):
  torch_model, zero_model = (_model(head=head, head_init=init) for init in ("torch", "zero"))
  torch_params, zero_params = (nnx.to_flat_state(nnx.state(m, nnx.Param))
                               for m in (torch_model, zero_model))
  differing = {path[:-1] for (path, a), (_, b) in zip(torch_params, zero_params)
               if not np.array_equal(a[...], b[...])}
  assert differing == {("out",)}
  outputs, _ = zero_model(images)
  # Reference: a zero kernel leaves the bias alone: 0 for segmentation (every class at chance),
  # CenterNet's log(0.1 / 0.9) on the heatmap's channels for detection.
  bias = [0.0] * (CLASSES + 1) if head == "segmentation" else [-2.19] * CLASSES + [0.0] * 4
  np.testing.assert_allclose(outputs, np.broadcast_to(bias, outputs.shape), atol=1e-6)
  assert np.abs(np.asarray(torch_model(images)[0])).max() > 0.1
  # build_model passes the task network's `task_head_init` to the dense head.
  built = models.build_model({"name": "zoom_unzoom", "task_net": "resnet_tiny", "task_size": TASK,
                              "saliency": "none", "task_head_init": "zero"},
                             num_outputs=CLASSES, rngs=nnx.Rngs(0))
  assert not np.any(built.out.kernel[...]) and not np.any(built.out.bias[...])


@pytest.mark.parametrize("fields,message", [
    ({"head": "panoptic"}, "head must be one of ('segmentation', 'detection'); got 'panoptic'."),
    ({"stages": ("layer5",)}, "stages must be a non-empty tuple of the backbone's stages "
                              "('stem', 'layer1', 'layer2', 'layer3', 'layer4'); got "
                              "('layer5',)."),
    ({"num_classes": 0}, "num_classes must be at least 1; got 0."),
    ({"prior": np.ones((5,))}, "prior must be a [g, g] saliency map; got shape (5,)."),
    ({"head_init": "ones"}, "head_init must be one of ('torch', 'zero'); got 'ones'."),
    ({"segmentation_auxiliary": True}, "segmentation_auxiliary needs the detection head, whose "
                                       "extra output it is; got head 'segmentation'."),
])
def test_bad_options_are_refused(fields, message):
  rngs = nnx.Rngs(0)
  backbone = resnet.build_resnet("resnet_tiny", num_classes=None, rngs=rngs)
  options = {"num_classes": CLASSES, **fields}
  with pytest.raises(ValueError) as error:
    dense.ZoomUnzoom(backbone, None, rngs=rngs, **options)
  assert str(error.value) == message


def test_images_whose_sides_the_stride_does_not_divide_are_refused():
  images = jnp.zeros((1, 100, 100, 3), jnp.uint8)
  with pytest.raises(ValueError, match="multiples of out_stride 8; got 100x100"):
    _model()(images)
