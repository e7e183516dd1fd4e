"""Grain pipelines, global sharded batches and resumable state (saliency_jax.data.loader).

The expected batch contents are derived by hand from the documented order: training position p
of epoch e reads record perm_e[p mod N], host h of H takes positions h, h + H, ...; evaluation
reads records 0..N-1 in order and pads with mask False.
"""

import json

import jax
import numpy as np
import pytest

from saliency_jax import data
from saliency_jax.data import loader as loader_lib


def _mesh(n=8):
  return jax.make_mesh((n,), ("data",))


def _config(**overrides):
  cfg = data.default_data_config()
  cfg.image_size = 32
  cfg.synthetic.update(train_size=24, eval_size=20, object_size=8, frame_width=2,
                       detail_period=2, num_distractors=1, num_clutter=1)
  cfg.update(overrides)
  return cfg


class IndexSource:
  """Record i is an 8x8 image filled with i (records in `bad` are unreadable bytes)."""

  def __init__(self, count, bad=()):
    self.count, self.bad = count, set(bad)

  def __len__(self):
    return self.count

  def __getitem__(self, index):
    if index in self.bad:
      return {"image": b"corrupt", "label": index}
    return {"image": np.full((8, 8, 3), index, np.uint8), "label": index}


class GradientSource(IndexSource):
  """Record i is an 8x8 gradient offset by i, so that crops and flips show."""

  def __getitem__(self, index):
    gradient = np.arange(64, dtype=np.uint8).reshape(8, 8) + index
    return {"image": np.stack([gradient] * 3, -1), "label": index}


class GazeLikeSource(IndexSource):
  """Record i has the 2-D target (i, -i)."""

  def __getitem__(self, index):
    return {"image": np.full((8, 8, 3), index, np.uint8),
            "label": np.array([index, -index], np.float64), "tablet": index % 3 == 0}


def _examples(source, task="classification"):
  return loader_lib.Examples(source=source, kind="resize", size=8, resize=8, min_crop_area=0.08,
                             hflip=False, task=task)


def _records(batch):
  """Record index of every example of a host batch (the image's fill value)."""
  return batch["image"][:, 0, 0, 0].astype(int).tolist()


def test_global_batch_is_sharded_over_eight_devices():
  assert jax.device_count() == 8
  loader = data.make_loader(_config(), split="train", global_batch_size=16, mesh=_mesh(),
                            seed=0)
  batch = next(iter(loader))
  assert set(batch) == {"image", "label", "mask"}
  assert batch["image"].shape == (16, 32, 32, 3) and batch["image"].dtype == np.uint8
  assert batch["label"].shape == (16,) and batch["label"].dtype == np.int32
  assert batch["mask"].dtype == np.bool_ and bool(batch["mask"].all())
  for value in batch.values():
    assert value.sharding.spec == jax.sharding.PartitionSpec("data")
    shards = value.addressable_shards
    assert len(shards) == 8 and {s.data.shape[0] for s in shards} == {2}
    assert len({s.device for s in shards}) == 8
  # The shards are the host batch, in order: the loader's own images, placed on device.
  host = next(iter(loader._batches[0:1]))
  np.testing.assert_array_equal(np.asarray(batch["image"]), host["image"])
  loader.close()


def test_training_order_is_a_fresh_permutation_each_epoch():
  batches = loader_lib.host_batches(_examples(IndexSource(12)), split="train",
                                    global_batch_size=4, seed=5, process_index=0,
                                    process_count=1)
  epochs = [sum((_records(batches[k]) for k in range(3 * e, 3 * e + 3)), []) for e in range(3)]
  for epoch in epochs:
    assert sorted(epoch) == list(range(12))
  assert epochs[0] != epochs[1] != epochs[2]
  assert epochs[0] != list(range(12))
  again = loader_lib.host_batches(_examples(IndexSource(12)), split="train",
                                  global_batch_size=4, seed=5, process_index=0, process_count=1)
  assert _records(again[4]) == _records(batches[4])
  other = loader_lib.host_batches(_examples(IndexSource(12)), split="train",
                                  global_batch_size=4, seed=6, process_index=0, process_count=1)
  assert [_records(other[k]) for k in range(3)] != [_records(batches[k]) for k in range(3)]


def test_hosts_split_each_global_batch():
  source = IndexSource(20)
  for split in ("train", "eval"):
    single = loader_lib.host_batches(_examples(source), split=split, global_batch_size=8,
                                     seed=1, process_index=0, process_count=1)
    hosts = [loader_lib.host_batches(_examples(source), split=split, global_batch_size=8,
                                     seed=1, process_index=h, process_count=2) for h in (0, 1)]
    for k in range(4):
      parts = [_records(hosts[h][k]) for h in (0, 1)]
      assert all(len(p) == 4 for p in parts)
      # Host h holds rows h * 4 .. h * 4 + 3 of the global batch: the rows that
      # make_array_from_process_local_data puts on its devices, which are the same rows (and
      # devices) as in a one-process run of the same mesh. Same records, same augmentation.
      assert parts[0] + parts[1] == _records(single[k])
      np.testing.assert_array_equal(
          np.concatenate([hosts[0][k]["image"], hosts[1][k]["image"]]), single[k]["image"])


def test_augmentation_differs_between_epochs_and_is_reproducible():
  examples = loader_lib.Examples(source=GradientSource(4), kind="crop", size=6, resize=8,
                                 min_crop_area=0.08, hflip=True, task="classification")
  batches = loader_lib.host_batches(examples, split="train", global_batch_size=4, seed=0,
                                    process_index=0, process_count=1)
  by_record = lambda b: {int(l): img for l, img in zip(b["label"], b["image"])}
  first, second = by_record(batches[0]), by_record(batches[1])  # Epochs 0 and 1.
  assert sorted(first) == sorted(second) == [0, 1, 2, 3]
  assert any(not np.array_equal(first[r], second[r]) for r in first)  # New crops.
  again = loader_lib.host_batches(examples, split="train", global_batch_size=4, seed=0,
                                  process_index=0, process_count=1)
  np.testing.assert_array_equal(again[1]["image"], batches[1]["image"])


def test_eval_is_one_padded_pass_per_iteration():
  loader = data.make_loader(_config(), split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
  assert len(loader) == 3  # ceil(20 / 8)
  passes = [[{k: np.asarray(v) for k, v in b.items()} for b in loader] for _ in range(2)]
  for batches in passes:
    assert [int(b["mask"].sum()) for b in batches] == [8, 8, 4]
    last = batches[-1]
    assert not last["image"][4:].any() and not last["label"][4:].any()
  for a, b in zip(*passes):
    np.testing.assert_array_equal(a["image"], b["image"])
  # Records in order: the synthetic eval source's examples 0..19.
  source = data.make_source(data.parse_data_config(_config()), "eval")
  labels = np.concatenate([b["label"] for b in passes[0]])[:20]
  np.testing.assert_array_equal(labels, [source[i]["label"] for i in range(20)])
  np.testing.assert_array_equal(passes[0][0]["image"][3], source[3]["image"])

  # An abandoned pass restarts from the beginning.
  for batch in loader:
    break
  again = [np.asarray(b["image"]) for b in loader]
  assert len(again) == 3
  np.testing.assert_array_equal(again[0], passes[0][0]["image"])
  loader.close()


def test_state_restores_the_exact_next_batches(tmp_path):
  cfg = _config()
  loader = data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(), seed=3)
  stream = iter(loader)
  for _ in range(5):  # Past the end of the first epoch (24 / 8 = 3 batches).
    next(stream)
  state = loader.get_state()
  (tmp_path / "state.json").write_text(json.dumps(state))
  expected = [{k: np.asarray(v) for k, v in next(stream).items()} for _ in range(3)]
  loader.close()

  # A resumed run may use other worker settings: the batches do not depend on them.
  cfg.num_workers, cfg.prefetch = 1, 3
  resumed = data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(), seed=3)
  resumed.set_state(json.loads((tmp_path / "state.json").read_text()))
  assert resumed.get_state() == state
  got = [next(iter(resumed)) for _ in range(3)]
  for a, b in zip(expected, got):
    for key in a:
      np.testing.assert_array_equal(a[key], np.asarray(b[key]))
  resumed.close()


def test_state_of_another_loader_is_rejected():
  loader = data.make_loader(_config(), split="train", global_batch_size=8, mesh=_mesh(), seed=3)
  state = loader.get_state()
  with pytest.raises(ValueError, match="another loader"):
    loader.set_state({**state, "seed": 4})
  with pytest.raises(ValueError, match="get_state"):
    loader.set_state({"step": 1})


def test_unreadable_training_records_are_replaced_and_counted(caplog):
  batches = loader_lib.host_batches(_examples(IndexSource(10, bad={3, 4})), split="train",
                                    global_batch_size=10, seed=0, process_index=0,
                                    process_count=1)
  with caplog.at_level("WARNING", logger="saliency_jax.data"):
    batch = batches[0]
  records = _records(batch)
  assert 3 not in records and 4 not in records and batch["mask"].all()
  assert records.count(5) == 3  # 3 -> 4 -> 5 and 4 -> 5 substitute the next readable record.
  assert int(batch["skipped"].sum()) == 3
  assert "record 3" in caplog.text and "record 4" in caplog.text


def test_unreadable_eval_records_are_masked_and_counted():
  batches = loader_lib.host_batches(_examples(IndexSource(6, bad={2})), split="eval",
                                    global_batch_size=8, seed=0, process_index=0,
                                    process_count=1)
  batch = batches[0]
  assert batch["mask"].tolist() == [True, True, False, True, True, True, False, False]
  assert batch["skipped"].tolist() == [0, 0, 1, 0, 0, 0, 0, 0]


def test_broken_dataset_stops_with_a_clear_error():
  examples = _examples(IndexSource(40, bad=set(range(40))))
  with pytest.raises(RuntimeError, match="consecutive records"):
    examples.train(0, np.random.default_rng(0))


def test_regression_labels():
  batch = loader_lib.host_batches(_examples(GazeLikeSource(4), "regression"), split="eval",
                                  global_batch_size=6, seed=0, process_index=0,
                                  process_count=1)[0]
  assert batch["label"].dtype == np.float32 and batch["label"].shape == (6, 2)
  np.testing.assert_array_equal(batch["label"][:4], [[0, 0], [1, -1], [2, -2], [3, -3]])
  assert batch["mask"].tolist() == [True] * 4 + [False] * 2
  # Which device each gaze example comes from (padding: False), for per-device errors.
  assert batch["tablet"].tolist() == [True, False, False, True, False, False]


@pytest.mark.parametrize("kwargs, error, message", [
    ({"global_batch_size": 12}, ValueError, "divisible by the mesh's devices"),
    ({"global_batch_size": 0}, ValueError, "positive"),
    ({"split": "test"}, ValueError, "split"),
    ({"seed": -1}, ValueError, "seed"),
])
def test_bad_arguments(kwargs, error, message):
  args = {"split": "train", "global_batch_size": 8, "mesh": _mesh(), "seed": 0, **kwargs}
  with pytest.raises(error, match=message):
    data.make_loader(_config(), **args)


@pytest.mark.parametrize("overrides, message", [
    ({"nmae": "cub"}, "data.nmae: unknown field"),
    ({"name": "imagenet"}, "data.name"),
    ({"image_size": "512"}, "data.image_size: expected int"),
    ({"eval_resize": 100}, "data.eval_resize"),
    ({"eval_image_size": 64, "eval_resize": 48}, r"data.eval_resize: expected 0 or >= "
                                                 r"eval_image_size \(64\)"),
    ({"eval_image_size": -1}, "data.eval_image_size"),
    ({"synthetic": {"num_clases": 3}}, "data.synthetic.num_clases: unknown field"),
    ({"synthetic": {"object_size": 0}}, "data.synthetic.object_size"),
    ({"prefetch": 0}, "data.prefetch"),
    ({"gaze_input": "eyes"}, "data.gaze_input"),
])
def test_bad_config(overrides, message):
  with pytest.raises(ValueError, match=message):
    data.parse_data_config(overrides)


def test_partial_dict_config_takes_defaults():
  cfg = data.parse_data_config({"name": "synthetic", "image_size": 256})
  assert cfg["eval_resize"] == 256 and cfg["synthetic"]["image_size"] == 256
  assert cfg["eval_image_size"] == 256
  cfg = data.parse_data_config({"name": "cub", "image_size": 800, "eval_image_size": 700})
  assert (cfg["eval_image_size"], cfg["eval_resize"]) == (700, 700)
  assert cfg["num_workers"] == 0
  info = data.dataset_info({"synthetic": {"num_classes": 4, "train_size": 7, "eval_size": 3}})
  assert info == data.DatasetInfo(task="classification", num_outputs=4, train_size=7,
                                  eval_size=3)


def test_missing_tfds_data_says_how_to_prepare(tmp_path):
  with pytest.raises(FileNotFoundError, match="saliency_jax.data.prepare --dataset=cub"):
    data.make_loader({"name": "cub", "data_dir": str(tmp_path)}, split="train",
                     global_batch_size=8, mesh=_mesh(), seed=0)


def test_worker_processes_deliver_the_same_batches():
  cfg = _config()
  in_process = data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(), seed=9)
  expected = [np.asarray(b["image"]) for b, _ in zip(in_process, range(2))]
  cfg.num_workers = 2
  with data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(),
                        seed=9) as workers:
    got = [np.asarray(b["image"]) for b, _ in zip(workers, range(2))]
  for a, b in zip(expected, got):
    np.testing.assert_array_equal(a, b)


def test_evaluation_images_have_their_own_size():
  # The authors train on 800 crops and evaluate on 700 centre crops: two sizes, one config.
  cfg = _config(eval_image_size=24)
  train = data.make_loader(cfg, split="train", global_batch_size=8, mesh=_mesh(), seed=0)
  evaluation = data.make_loader(cfg, split="eval", global_batch_size=8, mesh=_mesh(), seed=0)
  assert next(iter(train))["image"].shape == (8, 32, 32, 3)
  assert next(iter(evaluation))["image"].shape == (8, 24, 24, 3)
