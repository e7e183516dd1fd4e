"""Read-only views of manually downloaded datasets: an extracted folder, a zip or a tar archive.

A `FileTree` lists the files under one root folder (inside the archive, or on disk) by their
paths relative to it, with "/" separators, and reads any of them as bytes. The project's tfds
builders over manual downloads (`cityscapes`, `voc`) use it so that the official archives and
their extracted folders are read by the same code, with Python's own `zipfile` and `tarfile`
(tfds's archive readers need TensorFlow).

Opening checks what can be checked without reading every byte, so that `prepare` stops before
anything is written: a zip whose central directory is missing (the end of the file, lost in an
interrupted download) and a tar whose members or end-of-archive blocks run past the end of the
file raise `ManualDirError`. Only uncompressed tars are read (the official VOC archive is one):
random access into a compressed one would reread it from the start for every file.
"""

from __future__ import annotations

import os
import tarfile
import zipfile

# A complete tar ends with two zero blocks of 512 bytes.
_TAR_END = 2 * tarfile.BLOCKSIZE


class ManualDirError(FileNotFoundError):
  """The manual download directory lacks files, or holds incomplete ones."""


class FileTree:
  """The files under `root` of a folder or an archive (see the module docstring).

  Attributes:
    path: the folder or the archive.
    names: the files' paths relative to the root ("/"-separated), folders excluded.
  """

  def __init__(self, path: str, names: frozenset[str]):
    self.path = path
    self.names = names

  def read(self, name: str) -> bytes:
    raise NotImplementedError

  def close(self) -> None:
    pass

  def __enter__(self) -> FileTree:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class _Folder(FileTree):

  def __init__(self, path: str):
    names = []
    for folder, _, files in os.walk(path):
      relative = os.path.relpath(folder, path)
      prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
      names.extend(prefix + name for name in files)
    super().__init__(path, frozenset(names))

  def read(self, name: str) -> bytes:
    with open(os.path.join(self.path, *name.split("/")), "rb") as f:
      return f.read()


class _Zip(FileTree):

  def __init__(self, path: str, root: str):
    try:
      self._archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as error:
      raise ManualDirError(
          f"{path}: expected a complete zip archive, found {os.path.getsize(path):,} bytes that "
          f"are not one ({error}): the download is truncated or corrupt, download it "
          f"again.") from error
    self._members = {m.filename[len(root):]: m for m in self._archive.infolist()
                     if m.filename.startswith(root) and not m.is_dir()}
    super().__init__(path, frozenset(self._members))

  def read(self, name: str) -> bytes:
    return self._archive.read(self._members[name])

  def close(self) -> None:
    self._archive.close()


class _Tar(FileTree):

  def __init__(self, path: str, root: str):
    size = os.path.getsize(path)
    try:
      self._archive = tarfile.open(path, mode="r:")
      members = self._archive.getmembers()
    except (tarfile.TarError, EOFError, OSError) as error:
      raise ManualDirError(
          f"{path}: expected an uncompressed tar archive, found {size:,} bytes that tarfile "
          f"cannot list ({error}): the download is truncated or corrupt, download it "
          f"again.") from error
    # tarfile takes a missing header for the end of the archive: a cut inside a member's data
    # or before the end blocks is only seen by where the listing stopped.
    if self._archive.offset + _TAR_END > size:
      self._archive.close()
      raise ManualDirError(
          f"{path}: expected a complete tar archive, found it cut off after {size:,} bytes "
          f"(its listing ends at byte {self._archive.offset:,}, plus {_TAR_END} end bytes): the "
          f"download is truncated, download it again.")
    self._members = {m.name[len(root):]: m for m in members
                     if m.name.startswith(root) and m.isfile()}
    super().__init__(path, frozenset(self._members))

  def read(self, name: str) -> bytes:
    with self._archive.extractfile(self._members[name]) as f:
      return f.read()

  def close(self) -> None:
    self._archive.close()


def open_tree(folder: str, archive: str, *, root: str, what: str) -> FileTree:
  """The folder if it exists, else the archive's files under `root` ("name/" or "a/b/").

  Args:
    folder: the extracted folder (preferred: no archive to list).
    archive: the official zip or tar, read if the folder does not exist.
    root: the folder's path inside the archive, with a trailing "/".
    what: what the files are, for the messages.

  Raises:
    ManualDirError: if neither exists, or the archive is incomplete (see the module docstring).
  """
  if os.path.isdir(folder):
    return _Folder(folder)
  if os.path.isfile(archive):
    opener = _Zip if archive.endswith(".zip") else _Tar
    return opener(archive, root)
  raise ManualDirError(f"{what}: expected {archive} or its extracted folder {folder}/ in the "
                       f"manual directory, found neither.")


def check_manual_dir(manual_dir: str, dataset: str) -> None:
  """Raises ManualDirError unless `manual_dir` is an existing folder."""
  if not manual_dir or not os.path.isdir(manual_dir):
    raise ManualDirError(f"{dataset}: expected the manual download directory, found no folder "
                         f"at {manual_dir!r} (--manual_dir, or <data_dir>/downloads/manual).")
