"""`ArrayFile`: the named arrays of one .npz file or of a directory of .npy files.

The reader of `robult_jax.data.arrays` (bring your own data) and of
`robult_jax.predict` (new samples to predict): files are read with
`allow_pickle=False`, and every way a file can fail to read ends in one
ValueError that names the file (or the array in it) and says how to write it.
"""

from __future__ import annotations

import os
import zipfile
import zlib

import numpy as np

_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error)


class ArrayFile:
    """The arrays of a .npz file or of a directory of .npy files; use as a context manager."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self._npz = None
        if not os.path.exists(self.path):
            raise FileNotFoundError(
                f"{self.path} not found; give a .npz file or a directory of .npy files."
            )
        if os.path.isdir(self.path):
            files = sorted(f for f in os.listdir(self.path) if f.endswith(".npy"))
            self.names = tuple(f[: -len(".npy")] for f in files)
            return
        try:
            loaded = np.load(self.path, allow_pickle=False)
        except _READ_ERRORS as e:
            raise ValueError(
                f"{self.path} is not a readable .npz file ({type(e).__name__}: {e}); "
                "write it with np.savez(path, name=array, ...)."
            ) from None
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError(
                f"{self.path} holds a single array, not a .npz archive of named arrays; "
                "write it with np.savez(path, name=array, ...) or use a directory of .npy files."
            )
        self._npz = loaded
        self.names = tuple(loaded.files)

    def __enter__(self) -> ArrayFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if self._npz is not None:
            self._npz.close()

    def __contains__(self, key: str) -> bool:
        return key in self.names

    def where(self, key: str) -> str:
        """How to name array `key` in a message: the .npy file, or file['key']."""
        if self._npz is None:
            return os.path.join(self.path, f"{key}.npy")
        return f"{self.path}[{key!r}]"

    def get(self, key: str, role: str) -> np.ndarray:
        """Array `key`; `role` says why it is needed (for the message when it is absent)."""
        if key not in self.names:
            what = ".npy files" if self._npz is None else "arrays"
            present = ", ".join(self.names) or "none"
            raise ValueError(
                f"{self.where(key)} not found ({role}); {what} present in {self.path}: {present}."
            )
        try:
            if self._npz is not None:
                return np.asarray(self._npz[key])
            return np.load(self.where(key), allow_pickle=False)
        except _READ_ERRORS as e:
            hint = ""
            if "allow_pickle" in str(e):
                hint = " It holds Python objects: save numbers or np.asarray(x, dtype=str)."
            raise ValueError(
                f"{self.where(key)} could not be read ({type(e).__name__}: {e}).{hint}"
            ) from None
