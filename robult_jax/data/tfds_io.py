"""Building and reading this project's tfds array_record datasets (no TensorFlow).

Every dataset (the packaged ones and the user-supplied benchmarks) converts
its source once into an array_record tfds dataset and then reads whole splits
into numpy arrays; these two steps are the same for all of them. watch, mfeat
and av_digits record a sha256 of their source, to detect a cache built from
another one.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import tensorflow_datasets as tfds

from robult_jax.data import stream


class ArrayRecordBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A builder writing array_record, in generation order, described by its module docstring.

    Subclasses give `_features()` and the HOMEPAGE, CITATION (and LICENSE) of the data.
    """

    HOMEPAGE = CITATION = ""
    LICENSE: str | None = None

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("file_format", "array_record")
        super().__init__(**kwargs)

    def _features(self) -> dict[str, tfds.features.FeatureConnector]:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        # `dataset_info_from_configs` expects package metadata files; we have none.
        return tfds.core.DatasetInfo(
            builder=self,
            description=sys.modules[type(self).__module__].__doc__,
            features=tfds.features.FeaturesDict(self._features()),
            # Generation order: loads are reproducible, and row-range splits stay valid.
            disable_shuffling=True,
            metadata=tfds.core.MetadataDict(),
            homepage=self.HOMEPAGE,
            citation=self.CITATION,
            license=self.LICENSE,
        )


class PackagedBuilder(ArrayRecordBuilder, skip_registration=True):
    """The builder of a dataset whose source (`source_path`, a file or folder) is installed.

    `find_source()` locates it when no `source_path` is given.
    """

    find_source: Callable[[], str]

    def __init__(self, *, source_path: str | None = None, **kwargs: Any):
        self._source_path = source_path
        super().__init__(**kwargs)

    @property
    def source_path(self) -> str:
        return self._source_path or self.find_source()


PackagedBuilderT = TypeVar("PackagedBuilderT", bound=PackagedBuilder)


def build_once(
    make_builder: Callable[[str | None], PackagedBuilderT],
    *,
    source: str | None,
    digest: Callable[[str], str | None],
    other_source: str,
    dataset: str,
) -> PackagedBuilderT:
    """The builder of a packaged dataset, built from its local source on first use.

    `make_builder(source)` makes the builder. An already built dataset loads
    without its source, which need not be installed any more; a source that
    is at hand must match the `digest` recorded at build time
    (`metadata["source_sha256"]`; a digest of None: unreadable, not checked),
    else the error says the cache was built from `other_source` (e.g. "a
    different source file than") that path. Before building, the source is
    resolved, so that a missing package fails with its own install hint
    rather than inside tfds.
    """
    builder = make_builder(source)
    if not builder.is_prepared():
        builder = make_builder(builder.source_path)
        prepare(builder, dataset=dataset)
        return builder
    try:
        path = builder.source_path
    except (ModuleNotFoundError, FileNotFoundError):
        return builder  # already built; the source is not needed to load it
    actual = digest(path)
    if actual is not None and builder.info.metadata.get("source_sha256") != actual:
        raise ValueError(
            f"The cached {dataset} dataset in {builder.data_dir} was built from {other_source} "
            f"{path}. Delete {builder.data_dir} to rebuild it."
        )
    return builder


def file_sha256(path: str) -> str:
    """sha256 of the file at `path`, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def prepare(
    builder: tfds.core.DatasetBuilder, *, dataset: str, manual_dir: str | None = None
) -> None:
    """Runs `download_and_prepare`: nothing is downloaded, sources are local files."""
    try:
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=manual_dir)
        )
    except Exception as e:
        # tfds writes into a temporary `incomplete.*` directory and renames it
        # only on success, so a failed build normally leaves nothing behind.
        e.add_note(
            f"Building the {dataset} dataset failed; if {builder.data_dir} exists, delete it "
            f"before retrying."
        )
        raise


def read_split(
    builder: tfds.core.DatasetBuilder,
    split: str,
    keys: Sequence[str],
    shapes: dict[str, tuple[int, ...]] | None = None,
) -> dict[str, np.ndarray]:
    """Every example of `split` as stacked numpy arrays, one per key.

    `shapes` {key: per-sample shape}: those keys' records are cut or zero-padded
    along their first axis to it (variable-length sequences; `stream.fit_steps`).
    """
    source = builder.as_data_source(split)  # > 0 records: tfds refuses to write an empty split
    return stream.read_records(
        lambda records: source.__getitems__(records.tolist()), len(source), keys, shapes
    )
