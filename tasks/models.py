"""A fitted model on disk: its parts as plain arrays, sealed by a manifest of their hashes; the model store.

A model's folder holds, per part (``pairwise_core.model``: classifiers,
refinement, review, drift_reference, graph), ``<part>.npz`` (its arrays, written by ``np.savez`` and
read with ``allow_pickle=False``, which refuses object arrays: nothing read
back can run code) and ``<part>.json`` (its state), and ``model.json``, the
manifest: the format and every other file's sha256. The model's content hash
is the sha256 of the manifest, so it covers every file. A part may also keep
one file in a library's own format (``OWN_FILES``: the graph's faiss index),
which cannot carry code either; it is written and read by that library,
streamed, where bytes inside the npz cost their size in memory at every copy.

The fits write their parts into the run's staging folder; ``seal``
writes the manifest; the label tasks load the model through ``load_model``,
checking every file against the hash, exactly as a stored model is loaded.
A run with the graph refinement then adds the ``neighbourhood`` part (what an
incremental night's inductive step needs, made from the labels pass 2 gave) and
seals the model again (``extend_seal``): the parts pass 2 read keep their hashes,
and the new content hash, the one the model's row records, covers them all.
When the run commits, the folder is renamed into the store,
``<db>.models/<model_id>/``, and its row inserted in the commit transaction.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

import numpy as np

from pairwise_core.graph import GraphProjection, Neighbourhood
from pairwise_core.model import Classifiers, DriftReference, Fitted, Refinement, Review
from tasks.folders import beside, check_private, clear, create_private, open_own, opened

# models.schema_version: the layout of a model's files. 2: the classifiers' pair masks packed 8 to a byte
# (`pair_mask_bits`; format 1's `pair_masks` booleans still load)
FORMAT = 2
MANIFEST = "model.json"
# review, drift_reference and graph are optional: a model fitted without given labels has no review, one
# stored before the drift tests no drift_reference, one fitted without --graph-k no graph
PARTS: dict[str, type[Fitted]] = {"classifiers": Classifiers, "refinement": Refinement, "review": Review,
                                  "drift_reference": DriftReference, "graph": GraphProjection}
# made after the labelling pass, and read only by the step that needs it (an index and F of every item:
# hundreds of MB at 1M items), not by every label task
LATE_PARTS: dict[str, type[Fitted]] = {"neighbourhood": Neighbourhood}
# a part's file in a library's own format, beside its npz and json: <part>.<suffix> (the faiss index: 500 MB
# at 1M items; as bytes in the npz, saving it took 4.6 s and loading it 3.6 s with three copies in memory)
OWN_FILES: dict[str, str] = {"neighbourhood": "faiss"}
_STORE = "the model store"


class ModelMismatch(ValueError):
    """A model's file is missing, truncated or changed since it was sealed: bad input, refit."""


# The parts a later fit reads (load_part) that this process wrote, while their files are unchanged: the fit
# takes the object saved instead of parsing the file back (K = 500: the classifiers, whose pair weights are
# rebuilt on load, 1.4 s of the refinement's fit). Dropped when the model is sealed: the label tasks load the
# sealed model, checked against its hashes.
_READ_BACK = ("classifiers", "refinement")
_WRITTEN: dict[tuple[Path, str], tuple[tuple[int, ...], Fitted]] = {}
_WRITTEN_LOCK = threading.Lock()


def _identity(folder: Path, name: str) -> tuple[int, ...]:
    """The part's two files as the file system has them (a replaced or rewritten file has another)."""
    stats = [os.stat(folder / f"{name}.{suffix}") for suffix in ("npz", "json")]
    return tuple(value for st in stats for value in (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def save_part(folder: Path, name: str, fitted: Fitted) -> str:
    """Write ``fitted`` as the part ``name`` of the model in ``folder``; return the folder."""
    arrays, state = fitted.to_arrays()
    objects = sorted(key for key, value in arrays.items() if value.dtype.hasobject)
    if objects:  # np.savez would pickle them, and np.load(allow_pickle=False) refuse them
        raise TypeError(f"model part {name}: object arrays cannot be stored: {', '.join(objects)}")
    with (folder / f"{name}.npz").open("wb") as handle:
        np.savez(handle, **arrays)
    (folder / f"{name}.json").write_text(json.dumps(state, sort_keys=True))
    if name in _READ_BACK:
        with _WRITTEN_LOCK:
            for key in [key for key in _WRITTEN if key[0] != folder]:  # one model's parts at a time
                del _WRITTEN[key]
            _WRITTEN[folder, name] = (_identity(folder, name), fitted)
    return str(folder)


def _parse(name: str, arrays: bytes, state: bytes) -> Fitted:
    with np.load(io.BytesIO(arrays), allow_pickle=False) as data:
        loaded = {key: data[key] for key in data.files}
    return {**PARTS, **LATE_PARTS}[name].from_arrays(loaded, json.loads(state))


def _read(path: Path) -> bytes:
    with open_own(path) as handle:
        return handle.read()


def load_part(folder: str, name: str) -> Any:
    """One part of a model that is still being fitted (no manifest yet): what the later fits build on. The
    object this process saved, if its files are still the ones it wrote."""
    with _WRITTEN_LOCK:
        written = _WRITTEN.get((Path(folder), name))
    if written is not None and written[0] == _identity(Path(folder), name):
        return written[1]
    return _parse(name, _read(Path(folder) / f"{name}.npz"), _read(Path(folder) / f"{name}.json"))


def seal(folder: str) -> str:
    """Write the manifest of the model's parts (each file's sha256); return the model's content hash."""
    with _WRITTEN_LOCK:
        for key in [key for key in _WRITTEN if key[0] == Path(folder)]:
            del _WRITTEN[key]
    files = {path.name: _digest(path) for path in sorted(Path(folder).iterdir()) if path.name != MANIFEST}
    text = json.dumps({"format": FORMAT, "files": files}, sort_keys=True, indent=1).encode()
    (Path(folder) / MANIFEST).write_bytes(text)
    return hashlib.sha256(text).hexdigest()


@dataclass(eq=False)
class Model:
    """Everything the labelling pass applies (a plain class: the cache below refers to it weakly)."""

    classifiers: Classifiers
    refinement: Refinement
    review: Review | None  # None: fitted without given labels
    drift_reference: DriftReference | None = None  # None: stored before the drift tests
    graph: GraphProjection | None = None  # None: fitted without the graph refinement


_loaded: weakref.WeakValueDictionary[tuple[str, str], Model] = weakref.WeakValueDictionary()
_loading = threading.Lock()


def load_model(folder: str | Path, content_hash: str, model_id: str) -> Model:
    """The model in ``folder``, every file checked against ``content_hash``; shared by the label tasks
    running in this process (read-only).

    A file that is missing or does not match is refused (``ModelMismatch``,
    naming it). Each file is read once, hashed and parsed from the same bytes,
    so a file swapped after its check is never used.

    With many classes a model holds hundreds of MB of pair weights, and each
    concurrent task loading its own copy multiplied the peak (K = 500,
    100k items: 7.9 GB). Held weakly: it goes when the last task using it
    ends. Keyed by the folder and the content hash, so other content reloads.
    """
    key = (str(Path(folder).resolve()), content_hash)
    with _loading:
        model = _loaded.get(key)
        if model is None:
            model = _loaded[key] = _load(Path(folder), content_hash, model_id)
        return model


def _digest(path: Path) -> str:
    """The file's sha256, read in chunks (a model's index is hundreds of MB)."""
    with open_own(path) as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


T = TypeVar("T")


def _verified(folder: Path, name: str, expected: str, model_id: str, read: Callable[[BinaryIO], T] | None = None
              ) -> T | None:
    """Check the file against ``expected`` in chunks, as ``_checked`` does whole; then ``read`` it, if given, from
    the same open file (a file renamed over it after the check is never read)."""
    try:
        with open_own(folder / name) as handle:
            if hashlib.file_digest(handle, "sha256").hexdigest() == expected:
                handle.seek(0)
                return None if read is None else read(handle)
    except FileNotFoundError:
        pass
    raise _mismatch(model_id, folder, name)


def _mismatch(model_id: str, folder: Path, name: str) -> ModelMismatch:
    """The one line a missing, truncated or changed file of a model is refused with."""
    if not folder.is_dir():
        what = f"its folder {folder} is missing"
    elif not (folder / name).exists():
        what = f"file {name} is missing"
    else:
        what = f"file {name} does not match its recorded hash"
    return ModelMismatch(f"model {model_id}: {what}; refit with a full run")


def damage(folder: Path, content_hash: str, model_id: str) -> str | None:
    """Why a run would refuse the stored model, or None: each of its files checked against its hash, as a run
    loading it does, in chunks and unparsed (`pairwise models` listed a truncated model as fine)."""
    try:
        for name, expected in _manifest(folder, content_hash, model_id).items():
            _verified(folder, name, expected, model_id)
    except ModelMismatch as mismatch:
        return str(mismatch).removeprefix(f"model {model_id}: ")
    except (OSError, ValueError) as error:  # unreadable (permissions), or a manifest that is no JSON
        return f"cannot read its files ({getattr(error, 'strerror', None) or error})"
    return None


def _checked(folder: Path, name: str, expected: str, model_id: str) -> bytes:
    """The file's bytes, if their sha256 is ``expected``; else ModelMismatch, one line naming the file."""
    try:
        data = _read(folder / name)
    except FileNotFoundError:
        data = None
    if data is None or hashlib.sha256(data).hexdigest() != expected:
        raise _mismatch(model_id, folder, name)
    return data


def _manifest(folder: Path, content_hash: str, model_id: str) -> dict[str, str]:
    """The files the manifest lists, with their hashes, the manifest checked against ``content_hash``."""
    manifest = json.loads(_checked(folder, MANIFEST, content_hash, model_id))
    if manifest.get("format", 1) > FORMAT:  # its arrays may be laid out as this code cannot read
        raise ModelMismatch(f"model {model_id}: stored by a newer pairwise (its files are format "
                            f"{manifest['format']}, this one reads up to {FORMAT}); upgrade pairwise, or refit with "
                            "a full run")
    files = manifest["files"]
    known = {f"{part}.{kind}" for part in [*PARTS, *LATE_PARTS] for kind in ("npz", "json")}
    known |= {f"{part}.{suffix}" for part, suffix in OWN_FILES.items()}
    if sorted(files.keys() - known) or "classifiers.npz" not in files or "refinement.npz" not in files:
        raise ModelMismatch(f"model {model_id}: its manifest does not list a model's files; refit with a full run")
    return files


def _checked_part(folder: Path, files: dict[str, str], name: str, model_id: str) -> Fitted:
    """The part ``name``, its two files checked against the manifest's hashes (``files``)."""
    return _parse(name, _checked(folder, f"{name}.npz", files[f"{name}.npz"], model_id),
                  _checked(folder, f"{name}.json", files.get(f"{name}.json", ""), model_id))


def _load(folder: Path, content_hash: str, model_id: str) -> Model:
    files = _manifest(folder, content_hash, model_id)
    parts = {name: _checked_part(folder, files, name, model_id) for name in PARTS if f"{name}.npz" in files}
    return Model(parts["classifiers"], parts["refinement"], parts.get("review"), parts.get("drift_reference"),
                 parts.get("graph"))


def class_names(folder: str | Path) -> tuple[str, ...]:
    """The class names of the model in ``folder``, in its order: that array alone of its classifiers part,
    read as every model file is (``open_own``), not checked against the seal (they only order a refit's
    classes: names from a changed file give another class hash, never another label)."""
    with open_own(Path(folder) / "classifiers.npz") as handle, np.load(handle, allow_pickle=False) as arrays:
        return tuple(str(name) for name in arrays["class_names"])


def has_late_part(folder: str | Path, content_hash: str, model_id: str, name: str) -> bool:
    """Whether the sealed model lists the part ``name`` (its manifest checked, the part not read)."""
    return f"{name}.npz" in _manifest(Path(folder), content_hash, model_id)


def late_state(folder: str | Path, content_hash: str, model_id: str, name: str) -> dict[str, Any] | None:
    """The scalars (``<name>.json``) of the part ``name`` of ``LATE_PARTS``, checked against the sealed manifest,
    its arrays not read; None if the model has no such part."""
    files = _manifest(Path(folder), content_hash, model_id)
    if f"{name}.json" not in files:
        return None
    return json.loads(_checked(Path(folder), f"{name}.json", files[f"{name}.json"], model_id))


def load_late_part(folder: str | Path, content_hash: str, model_id: str, name: str) -> Any:
    """A part of ``LATE_PARTS``, checked against the sealed manifest as ``load_model`` checks the others; None
    if the model has none."""
    files = _manifest(Path(folder), content_hash, model_id)
    if f"{name}.npz" not in files:
        return None
    return _checked_part(Path(folder), files, name, model_id)


def own_file(folder: str | Path, part: str) -> Path:
    """Where the part ``part`` keeps its file of ``OWN_FILES``, written by its library before the model is sealed."""
    return Path(folder) / f"{part}.{OWN_FILES[part]}"


class HeldFile:
    """A model's file checked against its manifest and held open (``check_late_part``): ``read_own_file`` reads it
    from here, as checked, instead of hashing it again. Closed when the last holder drops it."""

    def __init__(self, handle: BinaryIO) -> None:
        self._handle = handle
        self._lock = threading.Lock()

    def read(self, read: Callable[[BinaryIO], T]) -> T:
        with self._lock:
            self._handle.seek(0)
            return read(self._handle)

    def __del__(self) -> None:
        self._handle.close()


_held: weakref.WeakValueDictionary[tuple[str, str, str], HeldFile] = weakref.WeakValueDictionary()


def check_late_part(folder: str | Path, content_hash: str, model_id: str, part: str) -> HeldFile | None:
    """Check every file of the part ``part`` of ``LATE_PARTS`` against the sealed manifest now, in chunks, as
    ``damage`` does: a run that will read the part refuses a damaged one before it writes anything, as
    ``load_model`` refuses the other parts (the step that reads it comes after the labelling pass). Its file
    of ``OWN_FILES`` (the index: 500 MB at 1M items) stays open as checked, for ``read_own_file``, while the
    caller holds what is returned: hashed here, not again there. None if the model has no such file."""
    folder = Path(folder)
    files = _manifest(folder, content_hash, model_id)
    if f"{part}.npz" not in files:
        return None
    for name in (f"{part}.npz", f"{part}.json"):  # read again, whole, hashed and parsed from the same bytes
        _verified(folder, name, files.get(name, ""), model_id)
    own = own_file(folder, part).name
    if own not in files:  # a model stored before: the index is in the npz
        return None
    try:
        handle = open_own(folder / own)
    except FileNotFoundError:
        raise _mismatch(model_id, folder, own) from None
    held = HeldFile(handle)  # closes the file if the check fails
    if hashlib.file_digest(handle, "sha256").hexdigest() != files[own]:
        raise _mismatch(model_id, folder, own)
    _held[str(folder.resolve()), content_hash, own] = held
    return held


def read_own_file(folder: str | Path, content_hash: str, model_id: str, part: str, read: Callable[[BinaryIO], T]
                  ) -> T | None:
    """The part's file of ``OWN_FILES``, checked against the sealed manifest and then given to ``read`` open (the
    file ``check_late_part`` checked and holds, if held: not hashed twice); None if the model has no such file
    (a model stored before, which kept it inside the part's npz)."""
    name = own_file(folder, part).name
    files = _manifest(Path(folder), content_hash, model_id)
    if name not in files:
        return None
    held = _held.get((str(Path(folder).resolve()), content_hash, name))
    if held is not None:
        return held.read(read)
    return _verified(Path(folder), name, files[name], model_id, read)


def extend_seal(folder: str, content_hash: str, model_id: str) -> str:
    """Seal the model again after parts were added to it; return the new content hash. Every file the first
    seal (``content_hash``) listed must be unchanged, so what the labelling pass read is what is stored."""
    files = _manifest(Path(folder), content_hash, model_id)
    for name, expected in files.items():
        _verified(Path(folder), name, expected, model_id)
    return seal(folder)


def class_hash(class_names: tuple[str, ...], class_embeddings: Mapping[str, np.ndarray]) -> str:
    """sha256 of the class names and, per modality, the class embeddings (as float64): a stored model fits a
    catalog's classes exactly when their hashes are equal."""
    digest = hashlib.sha256(json.dumps(list(class_names)).encode())
    for modality in sorted(class_embeddings):
        matrix = np.ascontiguousarray(class_embeddings[modality], dtype=np.float64)
        digest.update(json.dumps([modality, list(matrix.shape)]).encode())
        digest.update(matrix.tobytes())
    return digest.hexdigest()


def models_folder(db: str | Path) -> Path:
    return beside(db, ".models")


def check_models(db: str | Path) -> None:
    """Refuse (ValueError, one line) a model store that is a symbolic link, not a folder, or another user's."""
    check_private(models_folder(db), _STORE)


def publish_model(db: str | Path, staged: str | Path, model_id: str) -> str:
    """Move a sealed model's folder into the store, ``<db>.models/<model_id>``, in one rename (the staging
    folder is beside it, on the same filesystem); return its path relative to the database's folder."""
    create_private(models_folder(db))
    with opened(models_folder(db), _STORE) as folder:
        os.rename(staged, model_id, dst_dir_fd=folder)
    return f"{models_folder(db).name}/{model_id}"


def unpublish_model(db: str | Path, model_id: str, staged: str | Path) -> None:
    """Move a model's folder back from the store to where it was staged: its commit failed after the rename
    (the row rolled back), and a retry of the commit must find the model where it left it."""
    with opened(models_folder(db), _STORE) as folder:
        os.rename(model_id, staged, src_dir_fd=folder)


def remove_models(db: str | Path, keep: set[str]) -> None:
    """Delete the store's folders but ``keep`` (the models with a row): what a commit that failed after its
    rename left. Called under the run lock."""
    clear(models_folder(db), _STORE, keep)
