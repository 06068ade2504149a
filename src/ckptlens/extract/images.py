"""Image probes: ``probe: {images: folder or .npy, labels: .npy, ...}`` for vision models (ViT,
CLIP's vision tower), with the model's own preprocessing.

Images:

- an ``.npy`` array, ``[n, H, W]`` (one channel), ``[n, H, W, C]`` or ``[n, C, H, W]`` (C = 1, 3 or 4),
  uint8 (0–255) or float (0–1);
- a folder of image files (``.png``, ``.jpg``, ``.jpeg``, ``.bmp``, ``.gif``, ``.webp``), read with
  Pillow in sorted order; a folder of sub-folders is a labelled set (one class per sub-folder, in
  sorted order, or the model's ``label2id`` where every sub-folder name is one of its labels).

``labels``: an ``.npy`` int array [n] (for the loss of an image classifier; a labelled folder gives
its own). Preprocessing: ``preprocessor`` names a folder with a ``preprocessor_config.json`` (or the
file itself), loaded with ``transformers.AutoImageProcessor`` offline — resize, rescale, normalise as
the model was trained. Without one, the images must already have the model's size
(``image_size``): they are scaled to [0, 1] and normalised with ``image_mean``/``image_std`` (probe
keys; default 0.5/0.5, ViT's). Images whose channel count is not the model's (``num_channels``), or,
without a preprocessor, whose size is not its ``image_size``, are an error naming the key and the
file.

Which token rows the activations keep (``image_tokens``):

- ``all`` (default): every token of every image, [images × tokens, d] (the class token first, then
  the patches, per image): for the spectrum metrics (rankme, anisotropy, activation_pca_evr,
  intrinsic_dimension), which describe the token cloud;
- ``cls``: the class token only, one row per image: for the metrics that compare images across
  checkpoints or layers (cka_to_*, svcca_to_*, pwcca_to_*, mutual_knn_to_*, linearity_*), where a row
  must be one image and patch tokens would weigh each image by its patch count;
- ``patches``: the patch tokens only (the class token left out).

A run wanting both uses two runs with the same source. With ``cls``, the embedding layer's output
(``vit.embeddings``) is the same row for every image (class token + its position embedding): the
similarity metrics are undefined (NaN) there, so leave it out of the targets. Attention probabilities keep the same query
rows. Gradients are of the classifier's cross-entropy on the labels, computed on whole images (all
tokens), whatever ``image_tokens`` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .probed import ExtractionError, _indices

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")
IMAGE_TOKENS = ("all", "cls", "patches")
#: the adapters of vision models: a probe of ``images`` fits them, ``tokens``/``text`` do not
VISION_ADAPTERS = ("vit", "clip", "open_clip")
#: adapters of token models (and the models trained here, which make their own probes)
TOKEN_PROBE_KEYS = ("tokens", "text")
DEFAULT_MEAN = (0.5, 0.5, 0.5)
DEFAULT_STD = (0.5, 0.5, 0.5)


def probe_modality(probe: Mapping) -> str | None:
    """``images`` or ``tokens`` (tokens or text), or None for a probe without data (a model trained
    here makes its own)."""
    if probe.get("images"):
        return "images"
    if any(probe.get(k) for k in TOKEN_PROBE_KEYS):
        return "tokens"
    return None


def modality_error(probe: Mapping, adapter: str, prefix: str = "probe") -> str | None:
    """Why ``probe`` does not fit a model of architecture ``adapter`` (None: it fits, or the kind
    of model is not known: the generic adapter)."""
    kind = probe_modality(probe)
    if kind is None or adapter == "generic":
        return None
    if kind == "images" and adapter not in VISION_ADAPTERS:
        if any(probe.get(k) for k in TOKEN_PROBE_KEYS):
            return f"config key '{prefix}.images': give either images or tokens/text, not both"
        return (
            f"config key '{prefix}.images': an image probe ({probe['images']}) on a {adapter!r} model, which "
            "reads tokens: give probe.tokens (an .npy of ids) or probe.text with probe.tokenizer"
        )
    if kind == "tokens" and adapter in VISION_ADAPTERS:
        key = next(k for k in TOKEN_PROBE_KEYS if probe.get(k))
        return (
            f"config key '{prefix}.{key}': a token probe ({probe[key]}) on a {adapter!r} vision model, which "
            "reads images: give probe.images (a folder of images or an .npy [n, H, W, C])"
        )
    return None


# --------------------------------------------------------------------------------------------- read
def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def images_shape(path) -> tuple[int, ...]:
    """The shape of an ``.npy`` image array (header only), or (n, H, W, C) of a folder's first image."""
    path = Path(path)
    if path.is_dir():
        files = _folder_files(path)[0]
        if not files:
            raise ExtractionError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        a = _read_file(files[0])
        return (len(files), *a.shape)
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ExtractionError(f"{path}: cannot read the probe images ({exc})") from None
    return _channels_last_shape(arr.shape, path)


def _channels_last_shape(shape, path) -> tuple[int, ...]:
    if len(shape) == 3:
        return (*shape, 1)
    if len(shape) == 4:
        if shape[-1] in (1, 3, 4):
            return tuple(shape)
        if shape[1] in (1, 3, 4):
            return (shape[0], shape[2], shape[3], shape[1])
    raise ExtractionError(
        f"{path}: probe images must be [n, H, W], [n, H, W, C] or [n, C, H, W] with C in 1, 3, 4; got {tuple(shape)}"
    )


def _folder_files(folder: Path) -> tuple[list[Path], list[str] | None]:
    """(files, class name of each file or None)."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir())
    if subs:
        files, classes = [], []
        for s in subs:
            fs = _image_files(s)
            files += fs
            classes += [s.name] * len(fs)
        return files, classes
    return _image_files(folder), None


def _read_file(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB", "RGBA") else im)
    except OSError as exc:
        raise ExtractionError(f"{path}: cannot read the image ({exc})") from None


def read_images(path, label2id: Mapping | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """(images [n, H, W, C] as float32 in [0, 1], labels [n] or None) from an .npy or a folder."""
    path = Path(path)
    labels = None
    if path.is_dir():
        files, classes = _folder_files(path)
        if not files:
            raise ExtractionError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        arrays = [_read_file(f) for f in files]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ExtractionError(f"{path}: the images differ in size/channels ({sorted(shapes)[:3]})")
        arr = np.stack(arrays)
        if classes is not None:
            names = sorted(set(classes))
            ids = {n: i for i, n in enumerate(names)}
            if label2id and all(n in label2id for n in names):
                ids = {n: int(label2id[n]) for n in names}
            labels = np.array([ids[c] for c in classes], dtype=np.int64)
    else:
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ExtractionError(f"{path}: cannot read the probe images ({exc})") from None
    shape = _channels_last_shape(arr.shape, path)
    if arr.ndim == 3:
        arr = arr[..., None]
    elif arr.shape[-1] != shape[-1]:
        arr = np.moveaxis(arr, 1, -1)
    if np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / 255.0
    elif not np.issubdtype(arr.dtype, np.floating):
        raise ExtractionError(f"{path}: probe images must be integers (0-255) or floats (0-1), not {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=np.float32), labels


def read_labels(path, n: int, images) -> np.ndarray:
    path = Path(path)
    try:
        labels = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ExtractionError(f"{path}: cannot read the probe labels ({exc})") from None
    if not np.issubdtype(labels.dtype, np.integer):
        raise ExtractionError(f"{path}: probe labels must be integers, not {labels.dtype}")
    labels = labels.reshape(-1).astype(np.int64)
    if len(labels) != n:
        raise ExtractionError(f"{path}: {len(labels)} labels for {n} probe images in {images}")
    return labels


# --------------------------------------------------------------------------------------------- fit
def model_image_spec(hf_config: Mapping) -> dict:
    """``image_size``, ``num_channels`` of a transformers vision config (CLIP: its vision_config)."""
    cfg = dict(hf_config)
    if isinstance(cfg.get("vision_config"), Mapping):
        cfg = {**cfg, **cfg["vision_config"]}
    size = cfg.get("image_size", 224)
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    return {"image_size": size, "num_channels": int(cfg.get("num_channels", 3))}


def check_images(shape, spec: Mapping, has_preprocessor: bool, where: str) -> None:
    """Images of ``shape`` (n, H, W, C) fit the model (``spec``: :func:`model_image_spec`), else an
    error naming ``where`` (the key and the file)."""
    _, h, w, c = shape
    want_c = spec["num_channels"]
    if c != want_c and not (c == 4 and want_c == 3):  # RGBA: alpha dropped
        raise ExtractionError(
            f"{where}: images with {c} channel(s), the model takes {want_c} (e.g. grey digits: repeat them to RGB)"
        )
    if not has_preprocessor and (h, w) != tuple(spec["image_size"]):
        sh, sw = spec["image_size"]
        raise ExtractionError(
            f"{where}: {h}×{w} images, the model takes {sh}×{sw}; resize them or give probe.preprocessor "
            "(the model's preprocessor_config.json)"
        )


def load_preprocessor(path):
    """``AutoImageProcessor`` from a folder with ``preprocessor_config.json`` (or the file), offline."""
    from ..store.requires import require

    tf = require("transformers", "preprocessing the probe images")
    p = Path(path)
    folder = p.parent if p.is_file() else p
    if not (folder / "preprocessor_config.json").is_file():
        raise ExtractionError(f"probe.preprocessor {path}: no preprocessor_config.json there")
    try:
        return tf.AutoImageProcessor.from_pretrained(str(folder), local_files_only=True)
    except Exception as exc:  # name the folder, whatever transformers raised
        raise ExtractionError(
            f"probe.preprocessor {path}: cannot load an image processor ({type(exc).__name__}: {exc})"
        ) from None


def pixel_values(images: np.ndarray, probe: Mapping, spec: Mapping) -> np.ndarray:
    """[n, C, H, W] float32 model inputs from [n, H, W, C] images in [0, 1]."""
    if images.shape[-1] == 4 and spec["num_channels"] == 3:
        images = images[..., :3]
    if probe.get("preprocessor"):
        proc = load_preprocessor(probe["preprocessor"])
        u8 = np.clip(np.round(images * 255), 0, 255).astype(np.uint8)
        if u8.shape[-1] == 1:
            u8 = u8[..., 0]
        out = proc(list(u8), return_tensors="np")["pixel_values"]
        return np.asarray(out, dtype=np.float32)
    mean = np.asarray(probe.get("image_mean", DEFAULT_MEAN[: images.shape[-1]]), np.float32)
    std = np.asarray(probe.get("image_std", DEFAULT_STD[: images.shape[-1]]), np.float32)
    return np.ascontiguousarray(((images - mean) / std).transpose(0, 3, 1, 2), dtype=np.float32)


def image_batches(probe: Mapping, hf_config: Mapping, label2id: Mapping | None = None) -> list[dict]:
    """The probe batches of an image probe: ``pixel_values`` [batch, C, H, W] (and ``labels``)."""
    import torch

    path = Path(probe["images"])
    if not path.exists():
        raise ExtractionError(f"probe.images {path}: no such file or folder")
    spec = model_image_spec(hf_config)
    images, labels = read_images(path, label2id)
    check_images(images.shape, spec, bool(probe.get("preprocessor")), f"probe.images {path}")
    if probe.get("labels"):
        labels = read_labels(probe["labels"], len(images), path)
    pv = pixel_values(images, probe, spec)
    tokens = str(probe.get("image_tokens", "all"))
    if tokens not in IMAGE_TOKENS:
        raise ExtractionError(f"probe.image_tokens {tokens!r}: one of {', '.join(IMAGE_TOKENS)}")
    bs, nb, seed = int(probe.get("batch_size", 8)), int(probe.get("n_batches", 4)), int(probe.get("seed", 0))
    out = []
    for idx in _indices(len(pv), bs, nb, seed, str(path)):
        b = {"pixel_values": torch.from_numpy(pv[idx].copy())}
        if labels is not None:
            b["labels"] = torch.from_numpy(labels[idx].copy())
        out.append(b)
    return out


def token_mask(probe: Mapping):
    """batch, number of tokens -> the [batch, tokens] rows kept (:data:`IMAGE_TOKENS`), or None (all)."""
    import torch

    which = str(probe.get("image_tokens", "all"))

    def mask(batch, n_tokens: int):
        if which == "all":
            return None
        m = torch.zeros(len(batch["pixel_values"]), n_tokens, dtype=torch.bool)
        if which == "cls":
            m[:, 0] = True
        else:
            m[:, 1:] = True
        return m

    return mask
