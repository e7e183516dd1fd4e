"""Test session setup.

Eight host CPU devices are forced before JAX is imported so that sharding tests run on a real
8-device mesh; single-device tests simply use the first device.
"""
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# TensorFlow (used by tfds when preparing data) must not print or grab accelerators in tests.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
