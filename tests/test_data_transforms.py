"""Image decoding/conversion and the authors' augmentations (saliency_jax.data.transforms).

References: PIL's own resize (torchvision's PIL backend, which the authors used, calls exactly
`Image.resize(..., BILINEAR)`), torchvision's documented `Resize`/`CenterCrop` arithmetic
(shorter side to `resize`, longer `int(resize * long / short)`; crop offset
`round((h - size) / 2)`), and hand-derived pixel values for the format conversions.
"""

import io
import math

import numpy as np
from PIL import Image
import pytest

from saliency_jax.data import transforms


def _encode(image: Image.Image, fmt: str, **kwargs) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format=fmt, **kwargs)
  return buffer.getvalue()


def _smooth_image(height: int, width: int, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  y = np.linspace(0, 1, height)[:, None, None]
  x = np.linspace(0, 1, width)[None, :, None]
  base = 255 * (0.5 * y + 0.3 * x + 0.2 * np.sin(6 * x + 3 * y + rng.uniform(0, 6, (1, 1, 3))))
  return np.clip(base, 0, 255).astype(np.uint8)


class TestDecode:

  def test_rgb_png_is_lossless(self):
    array = _smooth_image(17, 23)
    np.testing.assert_array_equal(transforms.decode_image(_encode(Image.fromarray(array), "PNG")),
                                  array)

  def test_grayscale_becomes_three_equal_channels(self):
    gray = _smooth_image(10, 12)[..., 0]
    out = transforms.decode_image(_encode(Image.fromarray(gray, "L"), "PNG"))
    assert out.shape == (10, 12, 3) and out.dtype == np.uint8
    for c in range(3):
      np.testing.assert_array_equal(out[..., c], gray)

  def test_rgba_is_composited_on_white(self):
    rgba = np.zeros((1, 3, 4), np.uint8)
    rgba[0, 0] = (200, 10, 30, 255)  # Opaque: kept.
    rgba[0, 1] = (200, 10, 30, 0)  # Transparent: white.
    rgba[0, 2] = (0, 0, 0, 128)  # Half black over white: 255 * (1 - 128/255) = 127.
    out = transforms.decode_image(_encode(Image.fromarray(rgba, "RGBA"), "PNG"))
    np.testing.assert_array_equal(out[0, 0], (200, 10, 30))
    np.testing.assert_array_equal(out[0, 1], (255, 255, 255))
    np.testing.assert_allclose(out[0, 2], (127, 127, 127), atol=1)

  def test_16_bit_grayscale_keeps_the_top_byte(self):
    values = np.array([[0, 256, 32768, 65535]], np.uint16)
    png = _encode(Image.fromarray(values), "PNG")
    assert Image.open(io.BytesIO(png)).mode.startswith("I")
    out = transforms.decode_image(png)
    np.testing.assert_array_equal(out[0, :, 0], (0, 1, 128, 255))

  def test_cmyk_converts_to_rgb(self):
    cmyk = np.zeros((1, 3, 4), np.uint8)
    cmyk[0, 0] = (255, 0, 0, 0)  # Cyan ink only: red absorbed.
    cmyk[0, 1] = (0, 0, 0, 255)  # Black ink: black.
    cmyk[0, 2] = (0, 0, 0, 0)  # No ink: white.
    tiff = _encode(Image.fromarray(cmyk, "CMYK"), "TIFF")
    out = transforms.decode_image(tiff)
    np.testing.assert_array_equal(out[0], [(0, 255, 255), (0, 0, 0), (255, 255, 255)])

  def test_cmyk_jpeg_decodes(self):
    cmyk = Image.fromarray(np.full((16, 16, 4), (0, 255, 255, 0), np.uint8), "CMYK")
    out = transforms.decode_image(_encode(cmyk, "JPEG", quality=95))
    # C=0, M=Y=255: red.
    np.testing.assert_allclose(out.mean((0, 1)), (255, 0, 0), atol=8)

  def test_palette_with_transparency(self):
    image = Image.new("P", (2, 1))
    image.putpalette([10, 20, 30, 40, 50, 60] + [0] * 762)
    image.putdata([0, 1])
    image.info["transparency"] = 1
    out = transforms.decode_image(_encode(image, "PNG", transparency=1))
    np.testing.assert_array_equal(out[0], [(10, 20, 30), (255, 255, 255)])

  @pytest.mark.parametrize("data", [b"", b"not an image at all", b"\xff\xd8\xff\xe0" + b"\0" * 20])
  def test_garbage_raises_bad_image(self, data):
    with pytest.raises(transforms.BadImageError):
      transforms.decode_image(data)

  def test_truncated_jpeg_raises_bad_image(self):
    jpeg = _encode(Image.fromarray(_smooth_image(64, 64)), "JPEG")
    with pytest.raises(transforms.BadImageError):
      transforms.decode_image(jpeg[: len(jpeg) // 2])

  def test_missing_file_raises_bad_image(self, tmp_path):
    with pytest.raises(transforms.BadImageError):
      transforms.decode_image(str(tmp_path / "nope.jpg"))

  @pytest.mark.parametrize("array, expected", [
      (np.array([[0.0, 0.5, 1.0]], np.float32), (0, 128, 255)),
      (np.array([[False, True, True]]), (0, 255, 255)),
      (np.array([[0, 512, 65535]], np.uint16), (0, 2, 255)),
      (np.array([[[3], [4], [5]]], np.uint8), (3, 4, 5)),
  ])
  def test_arrays_convert(self, array, expected):
    out = transforms.array_to_rgb(array)
    assert out.shape == (1, 3, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0, :, 1], expected)

  def test_bad_array_shape_raises(self):
    with pytest.raises(transforms.BadImageError, match="shape"):
      transforms.array_to_rgb(np.zeros((4, 4, 2), np.uint8))


class TestCropBoxes:

  def test_random_crop_box_statistics(self):
    rng = np.random.default_rng(0)
    width, height = 400, 400
    areas, aspects = [], []
    for _ in range(2000):
      left, top, w, h = transforms.random_crop_box(width, height, rng)
      assert 0 <= left and 0 <= top and left + w <= width and top + h <= height and w > 0 and h > 0
      areas.append(w * h / (width * height))
      aspects.append(w / h)
    areas, aspects = np.array(areas), np.array(aspects)
    # Rounding the sides to whole pixels moves area and aspect a little past the bounds.
    assert areas.min() >= 0.08 * 0.97 and areas.max() <= 1.0
    assert aspects.min() >= 0.75 * 0.97 and aspects.max() <= 4 / 3 * 1.03
    # Area is drawn uniformly in [0.08, 1]; large non-square draws do not fit and are redrawn,
    # which pulls the mean a little below (0.08 + 1) / 2.
    assert 0.42 < areas.mean() < 0.54
    # On a square image the log-aspect is symmetric about log(1) = 0 (standard error ~0.004).
    assert abs(np.log(aspects).mean()) < 0.015

  @pytest.mark.parametrize("width, height, expected", [
      # Too wide for 4:3: full height 10, width round(10 * 4/3) = 13, centred: (1000-13)//2.
      (1000, 10, (493, 0, 13, 10)),
      # Too tall: full width 9, height round(9 / (3/4)) = 12, centred: (700-12)//2.
      (9, 700, (0, 344, 9, 12)),
  ])
  def test_random_crop_box_fallback_is_clamped_centre_crop(self, width, height, expected):
    # Any 10 draws fail for such extreme images, so torchvision's fallback applies.
    box = transforms.random_crop_box(width, height, np.random.default_rng(1))
    assert box == expected

  @pytest.mark.parametrize("width, height, resize, size", [
      (500, 375, 256, 224), (375, 500, 800, 700), (640, 640, 288, 288), (300, 200, 457, 400)])
  def test_eval_matches_resize_then_centre_crop(self, width, height, resize, size):
    array = _smooth_image(height, width)
    # torchvision Resize(resize): shorter side -> resize, longer -> int(resize * long / short).
    if width <= height:
      new_w, new_h = resize, int(resize * height / width)
    else:
      new_w, new_h = int(resize * width / height), resize
    resized = np.asarray(Image.fromarray(array).resize((new_w, new_h), Image.BILINEAR))
    top, left = round((new_h - size) / 2), round((new_w - size) / 2)
    expected = resized[top:top + size, left:left + size]
    out = transforms.eval_transform(_encode(Image.fromarray(array), "PNG"), size=size,
                                    resize=resize)
    assert out.shape == (size, size, 3) and out.dtype == np.uint8
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.3

  def test_centre_crop_larger_than_resize_is_rejected(self):
    with pytest.raises(ValueError, match="size must be <= resize"):
      transforms.center_crop_box(100, 100, resize=64, size=80)


class TestTrainTransform:

  def test_crop_and_flip_follow_the_generator(self):
    array = _smooth_image(120, 160)
    png = _encode(Image.fromarray(array), "PNG")
    flipped = unflipped = 0
    for seed in range(12):
      out = transforms.train_transform(png, np.random.default_rng(seed), size=48)
      # Reference: the same draws, done by hand with PIL.
      rng = np.random.default_rng(seed)
      left, top, w, h = transforms.random_crop_box(160, 120, rng)
      expected = np.asarray(Image.fromarray(array).resize(
          (48, 48), Image.BILINEAR, box=(left, top, left + w, top + h)))
      if rng.random() < 0.5:
        expected = expected[:, ::-1]
        flipped += 1
      else:
        unflipped += 1
      np.testing.assert_array_equal(out, expected)
    assert flipped and unflipped

  def test_no_flip_when_disabled(self):
    png = _encode(Image.fromarray(_smooth_image(50, 50)), "PNG")
    for seed in range(6):
      a = transforms.train_transform(png, np.random.default_rng(seed), size=32, flip=False)
      rng = np.random.default_rng(seed)
      left, top, w, h = transforms.random_crop_box(50, 50, rng)
      b = np.asarray(Image.open(io.BytesIO(png)).convert("RGB").resize(
          (32, 32), Image.BILINEAR, box=(left, top, left + w, top + h)))
      np.testing.assert_array_equal(a, b)

  def test_image_smaller_than_the_crop_is_upsampled(self):
    png = _encode(Image.fromarray(_smooth_image(5, 3)), "PNG")
    out = transforms.train_transform(png, np.random.default_rng(0), size=64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    out = transforms.eval_transform(png, size=64, resize=72)
    assert out.shape == (64, 64, 3)

  def test_reduced_jpeg_decode_stays_close_to_full_decode(self):
    big = _smooth_image(1600, 2000)
    jpeg = _encode(Image.fromarray(big), "JPEG", quality=92)
    out = transforms.eval_transform(jpeg, size=224, resize=256)
    full = Image.open(io.BytesIO(jpeg)).convert("RGB")  # Full-resolution decode.
    box = transforms.center_crop_box(2000, 1600, resize=256, size=224)
    expected = np.asarray(full.resize((224, 224), Image.BILINEAR, box=box))
    diff = np.abs(out.astype(int) - expected.astype(int))
    assert diff.mean() < 2.0, diff.mean()

  def test_resize_transform(self):
    array = _smooth_image(30, 40)
    out = transforms.resize_transform(array, size=20)
    expected = np.asarray(Image.fromarray(array).resize((20, 20), Image.BILINEAR))
    np.testing.assert_array_equal(out, expected)
    same = _smooth_image(20, 20)
    assert transforms.resize_transform(same, size=20) is same
    assert math.isclose(out.mean(), expected.mean())


@pytest.mark.filterwarnings("ignore:Tag data larger than file")  # PIL, on damaged TIFFs.
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "TIFF", "BMP", "WEBP"])
def test_damaged_files_either_decode_or_raise_bad_image(fmt):
  """Random byte damage anywhere in a file: a usable image or BadImageError, nothing else."""
  original = _encode(Image.fromarray(_smooth_image(40, 56)), fmt)
  rng = np.random.default_rng(0)
  outcomes = set()
  for _ in range(25):
    damaged = bytearray(original)
    if rng.random() < 0.5:
      damaged = damaged[: int(rng.integers(1, len(damaged)))]
    else:
      for position in rng.integers(0, len(damaged), int(rng.integers(1, 8))):
        damaged[position] = int(rng.integers(0, 256))
    try:
      out = transforms.eval_transform(bytes(damaged), size=24, resize=32)
    except transforms.BadImageError:
      outcomes.add("skipped")
    else:
      assert out.shape == (24, 24, 3) and out.dtype == np.uint8
      outcomes.add("decoded")
  assert "skipped" in outcomes
