"""A fake remote file system for tests: epath and Orbax see `fake://` URIs, bytes stay local.

`install(monkeypatch, root)` registers the scheme with `etils.epath` (a backend
that maps `fake://x` to `<root>/x` and, like an object store, refuses to
append) and points Orbax's TensorStore file driver at the same folder. Any code
that bypasses epath (builtin `open`, `os.*`) on a `fake://` path touches a
relative local path "fake:/..." instead, which the tests look for.
"""

from __future__ import annotations

import os

from etils.epath import backend as backend_lib
from etils.epath import gpath, register

SCHEME = "fake://"


class FakeRemoteBackend(backend_lib.Backend):
    """epath's local backend behind `fake://` URIs, without appends (as on GCS)."""

    def __init__(self, root: str):
        self.root = root
        self._os = backend_lib.os_backend
        self.appends = 0  # refused appends

    def local(self, path) -> str:
        path = os.fspath(path)
        if not path.startswith(SCHEME):
            raise ValueError(f"not a {SCHEME} path: {path}")
        return os.path.join(self.root, path[len(SCHEME) :])

    def remote(self, path) -> str:
        return SCHEME + os.path.relpath(os.fspath(path), self.root)

    def open(self, path, mode):
        if "a" in mode:
            self.appends += 1
            raise OSError(f"{path}: objects of {SCHEME} cannot be appended to")
        if "w" in mode:  # an object store has no directories to create first
            os.makedirs(os.path.dirname(self.local(path)), exist_ok=True)
        return self._os.open(self.local(path), mode)

    def exists(self, path):
        return self._os.exists(self.local(path))

    def isdir(self, path):
        return self._os.isdir(self.local(path))

    def listdir(self, path):
        return self._os.listdir(self.local(path))

    def glob(self, path):
        return [self.remote(p) for p in self._os.glob(self.local(path))]

    def walk(self, top, *, top_down=True, on_error=None):
        for root, dirs, names in self._os.walk(
            self.local(top), top_down=top_down, on_error=on_error
        ):
            yield self.remote(root), dirs, names

    def makedirs(self, path, *, exist_ok=False, mode=None):
        return self._os.makedirs(self.local(path), exist_ok=exist_ok, mode=mode)

    def mkdir(self, path, *, exist_ok=False, mode=None):
        return self._os.mkdir(self.local(path), exist_ok=exist_ok, mode=mode)

    def rmtree(self, path):
        return self._os.rmtree(self.local(path))

    def remove(self, path):
        return self._os.remove(self.local(path))

    def rename(self, path, dst):
        return self._os.rename(self.local(path), self.local(dst))

    def replace(self, path, dst):
        return self._os.replace(self.local(path), self.local(dst))

    def copy(self, path, dst, overwrite):
        return self._os.copy(self.local(path), self.local(dst), overwrite)

    def stat(self, path):
        return self._os.stat(self.local(path))


def install(monkeypatch, root: str) -> FakeRemoteBackend:
    """Registers `fake://` (undone by `monkeypatch` at the end of the test)."""
    from orbax.checkpoint._src.serialization import tensorstore_utils

    backend = FakeRemoteBackend(root)
    monkeypatch.setattr(gpath, "_URI_PREFIXES", (*gpath._URI_PREFIXES, SCHEME))
    monkeypatch.setattr(gpath, "_URI_SCHEMES", gpath._URI_SCHEMES | {"fake"})
    monkeypatch.setitem(gpath._URI_MAP_ROOT, SCHEME, "/fake/")
    monkeypatch.setitem(gpath._PREFIX_TO_BACKEND, "fake", backend)
    monkeypatch.setattr(gpath, "_is_tf_installed", lambda: False)  # else gfile gets URIs
    monkeypatch.setitem(register._URI_PREFIXES_TO_CLS, SCHEME, gpath.PosixGPath)

    # Orbax hands TensorStore a path string; TensorStore's file driver gets the folder.
    normalize = tensorstore_utils._normalize_path

    def to_local(path: str) -> str:
        path = normalize(path)
        return backend.local(SCHEME + path[len("fake:/") :]) if path.startswith("fake:/") else path

    monkeypatch.setattr(tensorstore_utils, "_normalize_path", to_local)
    return backend
