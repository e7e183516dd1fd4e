"""Test session setup.

Eight host CPU devices are forced before JAX is imported so that sharding tests run on a real
8-device mesh; single-device tests simply use the first device.
"""
import os

# Appended to any XLA_FLAGS the caller set, which would otherwise leave the tests one device.
if "--xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TensorFlow (used by tfds when preparing data) must not print or grab accelerators in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
