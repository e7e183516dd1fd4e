"""Connecting the processes of a multi-process run, with clear errors in bounded time.

`jax.distributed.initialize` ends the process from C++, with a message about a task that died,
when it cannot reach the coordinator or a process never shows up, and it has no notion of the
processes running different configs. So before it, the processes meet at the coordinator's
address in a rendezvous of their own (a few bytes over TCP, bounded by
`config.distributed_timeout_seconds`): process 0 listens, every other process connects and sends
its process id and config; process 0 checks that each id comes once and every config matches its
own (except the fields that differ per process), and answers each with "go" or with the error.
Only then do all of them call `jax.distributed.initialize`, which reuses the port, and nothing of
the workdir has been touched yet.

With `num_processes = 0` the launcher (SLURM, Open MPI, a TPU pod slice) tells JAX everything and
there is no address to meet at: the processes compare digests of their configs through JAX's
collectives after connecting instead, which is as bounded but can only say that (not where)
configs differ.

A process that dies later (killed, out of memory, its node lost) breaks the next collective of
the others: `lost_process` turns that error into a `ProcessLostError` of one sentence, which
train.py prints before it exits. Whichever notices first, JAX's coordination service may end
them instead (when the dead process's connection drops, or after
`config.heartbeat_timeout_seconds` without its heartbeats), with a C++ message that says another
task died: JAX offers no public hook for it (its client's callback for this takes a status that
this jaxlib cannot hand to Python). The newest complete checkpoint is where they all resume.
"""
from __future__ import annotations

import hashlib
import inspect
import json
import socket
import struct
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from saliency_jax.train import config as config_lib

# A failed computation (`XlaRuntimeError`, a RuntimeError, before JAX named it publicly).
_RUNTIME_ERROR = getattr(jax.errors, "JaxRuntimeError", RuntimeError)
# What JAX's runtime errors say when a collective's peer or the coordination service is gone.
# (Not any NCCL error: a misconfigured or out-of-memory NCCL says "NCCL" too.)
_LOST_PEER_SIGNS = ("Gloo", "Connection reset", "Connection closed", "Connection refused",
                    "heartbeat", "another task", "Socket closed")


class ProcessLostError(RuntimeError):
  """Another process of a multi-process run died, or this one lost contact with it."""


def lost_process(error: BaseException) -> ProcessLostError | None:
  """The `ProcessLostError` that a runtime error of a multi-process run stands for, or None.

  None for one process, and for errors that do not come from a lost peer (memory, say).
  """
  if jax.process_count() == 1 or not isinstance(error, _RUNTIME_ERROR):
    return None
  text = str(error)
  if not any(sign in text for sign in _LOST_PEER_SIGNS):
    return None
  first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
  return ProcessLostError(
      f"process {jax.process_index()} of {jax.process_count()} lost contact with another "
      f"process of this run, which died, was killed or lost its network ({first[:200]})")


# Fields that differ between the processes of one run by design.
PER_PROCESS_FIELDS = frozenset({"process_id"})
_RETRY_SECONDS = 0.2


def _comparable(config: ml_collections.ConfigDict) -> dict[str, Any]:
  flat = config_lib.flatten_config(json.loads(config.to_json_best_effort()))
  return {k: v for k, v in flat.items() if k not in PER_PROCESS_FIELDS}


def _address(config: ml_collections.ConfigDict) -> tuple[str, int]:
  # The config's checks made sure it is HOST:PORT.
  host, _, port = config.coordinator_address.rpartition(":")
  return host.strip("[]"), int(port)


def _send(connection: socket.socket, message: dict[str, Any]) -> None:
  data = json.dumps(message).encode()
  connection.sendall(struct.pack("!I", len(data)) + data)


def _receive(connection: socket.socket) -> dict[str, Any]:
  def exactly(count: int) -> bytes:
    data = b""
    while len(data) < count:
      chunk = connection.recv(count - len(data))
      if not chunk:
        raise ConnectionError("the other side closed the connection")
      data += chunk
    return data
  (length,) = struct.unpack("!I", exactly(4))
  return json.loads(exactly(length))


def _differences(mine: dict[str, Any], theirs: dict[str, Any]) -> str:
  names = sorted(n for n in set(mine) | set(theirs) if mine.get(n) != theirs.get(n))
  return "; ".join(f"{n}: {theirs.get(n)!r} there, {mine.get(n)!r} on process 0"
                   for n in names[:6])


def _check_peer(config: ml_collections.ConfigDict, hello: dict[str, Any],
                peers: dict[int, socket.socket]) -> str | None:
  process_id = hello["process_id"]
  if process_id in peers or process_id == 0:
    return f"two processes were started with --config.process_id={process_id}"
  if hello["num_processes"] != config.num_processes:
    return (f"process {process_id} was started with --config.num_processes="
            f"{hello['num_processes']}, process 0 with {config.num_processes}")
  mine = _comparable(config)
  if hello["config"] != mine:
    return (f"the config of process {process_id} differs from process 0's "
            f"({_differences(mine, hello['config'])}); start every process with the same config")
  return None


def _serve(config: ml_collections.ConfigDict, port: int, timeout: float) -> None:
  """Process 0's side: wait for every other process, check them, answer all of them."""
  count = config.num_processes
  deadline = time.monotonic() + timeout
  peers: dict[int, socket.socket] = {}
  problem = None
  try:
    server = socket.create_server(("", port), reuse_port=hasattr(socket, "SO_REUSEPORT"))
  except OSError as error:
    raise config_lib.ConfigError(
        f"Process 0: cannot listen on port {port} of config.coordinator_address "
        f"({error.strerror or error}): is another run using it, or were two processes started "
        f"with --config.process_id=0? Choose a free port.") from None
  with server:
    while len(peers) < count - 1 and problem is None:
      server.settimeout(max(deadline - time.monotonic(), 0.001))
      try:
        connection, _ = server.accept()
        connection.settimeout(max(deadline - time.monotonic(), 1.0))
        hello = _receive(connection)
      except (OSError, ConnectionError, ValueError, KeyError):
        missing = sorted(set(range(1, count)) - set(peers))
        problem = (f"process(es) {missing} of {count} did not connect to "
                   f"{config.coordinator_address} within {timeout:g} s: start every process "
                   f"with the same --config.coordinator_address and "
                   f"--config.num_processes={count}")
        break
      problem = _check_peer(config, hello, peers)
      # A duplicate id is answered on its own connection; the first of that id stays a peer.
      peers.setdefault(hello["process_id"], connection)
      if peers[hello["process_id"]] is not connection:
        _send(connection, {"error": problem})
        connection.close()
    answer = {"error": problem} if problem else {"go": True}
    for connection in peers.values():
      try:
        _send(connection, answer)
        # The peers close first, so that no server-side socket of this port lingers.
        connection.settimeout(5.0)
        connection.recv(1)
      except OSError:
        pass
      connection.close()
  if problem:
    raise config_lib.ConfigError(f"Process 0: {problem}.")


def _join(config: ml_collections.ConfigDict, host: str, port: int, timeout: float) -> None:
  """Another process's side: reach process 0 (retrying until it listens) and await its answer."""
  deadline = time.monotonic() + timeout
  while True:
    try:
      connection = socket.create_connection((host, port), timeout=5.0)
      break
    except OSError as error:
      if time.monotonic() > deadline:
        raise config_lib.ConfigError(
            f"Process {config.process_id}: no coordinator answered at "
            f"{config.coordinator_address} within {timeout:g} s ({error.strerror or error}): "
            f"start process 0 with the same --config.coordinator_address, or correct it."
        ) from None
      time.sleep(_RETRY_SECONDS)
  with connection:
    connection.settimeout(max(deadline - time.monotonic(), 1.0))
    _send(connection, {"process_id": config.process_id, "num_processes": config.num_processes,
                       "config": _comparable(config)})
    try:
      answer = _receive(connection)
    except (OSError, ConnectionError) as error:
      raise config_lib.ConfigError(
          f"Process {config.process_id}: the coordinator at {config.coordinator_address} did "
          f"not confirm the start within {timeout:g} s ({error}).") from None
  if "error" in answer:
    raise config_lib.ConfigError(f"Process {config.process_id}: {answer['error']}.")


def _check_same_config_everywhere(config: ml_collections.ConfigDict) -> None:
  """After connecting: every process's config digest equals process 0's."""
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  text = json.dumps(_comparable(config), sort_keys=True, default=str).encode()
  digest = np.frombuffer(hashlib.sha256(text).digest(), np.uint32)
  digests = np.asarray(multihost_utils.process_allgather(digest))
  differing = [i for i in range(len(digests)) if not np.array_equal(digests[i], digests[0])]
  if differing:
    raise config_lib.ConfigError(
        f"the config of process(es) {differing} differs from process 0's: start every process "
        f"with the same config.")


def initialize(config: ml_collections.ConfigDict) -> None:
  """Connects the processes of a multi-process run; nothing for one process.

  Must run before anything touches a device or the workdir, on a validated config
  (`config.validate_config`).

  Raises:
    ConfigError: the coordinator cannot be reached, a process did not start, two have the same
      id, or the processes' configs differ; within `config.distributed_timeout_seconds`.
  """
  if config.num_processes == 1 or jax.distributed.is_initialized():
    return
  timeout = config.distributed_timeout_seconds
  options = {"initialization_timeout": int(timeout)}
  if "heartbeat_timeout_seconds" in inspect.signature(jax.distributed.initialize).parameters:
    options["heartbeat_timeout_seconds"] = int(config.heartbeat_timeout_seconds)
  if config.num_processes == 0:
    jax.distributed.initialize(**options)  # The launcher tells JAX everything.
    _check_same_config_everywhere(config)
    return
  host, port = _address(config)
  if config.process_id == 0:
    _serve(config, port, timeout)
  else:
    _join(config, host, port, timeout)
  jax.distributed.initialize(coordinator_address=config.coordinator_address,
                             num_processes=config.num_processes,
                             process_id=config.process_id, **options)
