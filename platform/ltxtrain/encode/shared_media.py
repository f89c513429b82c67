"""Source media for tasks on any node of the cluster.

The training archive is extracted (and validation media fetched) on the driver's node only, and cluster nodes need
not share a disk. A task reads a file by its path when it runs on the driver's node (nothing is copied: the
single-node case costs nothing); elsewhere it asks a small actor pinned to the driver's node for the bytes, which
Ray moves over, and decodes a node-local temp copy. Files are served on request rather than all put into the object
store up front: a dataset can be tens of GB, and each file lives in the object store only while a task fetches it.

This module imports only numpy so that the server actor's process starts quickly.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from typing import Iterable, Iterator

import numpy as np


class _MediaServer:
    """Actor on the driver's node: serves the shared files (and only those) as uint8 arrays."""

    def __init__(self, files: dict[str, str]):
        self.files = files  # path as the rows name it -> absolute path on the driver

    def read(self, path: str) -> np.ndarray:
        return np.fromfile(self.files[path], dtype=np.uint8)


class SharedMedia:
    """Handle to the driver's source files, passed to tasks (picklable); a context manager on the driver that ends
    the server when the work is done."""

    def __init__(self, paths: Iterable[str]):
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        self.node_id = ray.get_runtime_context().get_node_id()  # only here is a file at the path the driver's file
        # resolved now: the server's working dir is not the driver's
        files = {p: os.path.abspath(p) for p in paths if p}
        self.server = ray.remote(_MediaServer).options(
            num_cpus=0, max_concurrency=4,  # a few reads at a time: decode tasks on several nodes wait on it
            scheduling_strategy=NodeAffinitySchedulingStrategy(self.node_id, soft=False)).remote(files)

    def __enter__(self) -> "SharedMedia":
        return self

    def __exit__(self, *exc) -> None:
        import ray

        ray.kill(self.server)  # now, rather than whenever Ray drops the last handle held by a dataset


@contextmanager
def local_media(shared: SharedMedia | None, *paths: str) -> Iterator[list[str]]:
    """Paths readable on this node for `paths` ("" stays ""): the paths themselves on the driver's node when the
    files are there (or without `shared`: a call on the driver), else temp copies fetched from the driver, removed
    on exit."""
    import ray

    if shared is None or (ray.get_runtime_context().get_node_id() == shared.node_id
                          and all(os.path.isfile(p) for p in paths if p)):
        yield list(paths)
        return
    with tempfile.TemporaryDirectory(prefix="ltxtrain-media-") as tmp:
        local = []
        for p in paths:
            if p:
                # the copy keeps the whole original path under the temp dir: the extension the decoders go by and
                # the name that error messages (and the driver's naming of failed samples) show stay as they were
                copy = tmp + os.path.abspath(p)
                os.makedirs(os.path.dirname(copy), exist_ok=True)
                ray.get(shared.server.read.remote(p)).tofile(copy)  # read-only view of the object, straight to disk
                p = copy
            local.append(p)
        yield local
