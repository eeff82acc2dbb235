"""dlib's face landmark predictor (a cascade of regression-tree forests), in numpy, without dlib.

Loads the file dlib writes for ``dlib::shape_predictor`` (``dlib/image_processing/
shape_predictor.h``) and reproduces ``dlib.shape_predictor(image, rect)``, the same integer
landmarks for the same rectangle, by following dlib's arithmetic step by step:

* the rectangle maps the unit square onto pixels: (0, 0) -> (left, top) and (1, 1) ->
  (right, bottom), where dlib's right and bottom are inclusive (width - 1 past left and top);
* each cascade maps its feature pixels from the mean shape onto the current shape with the
  least-squares similarity transform between the two shapes (Umeyama), cast to float32; the
  point arithmetic is float32, the rectangle mapping float64;
* a feature is the intensity of the pixel nearest that point (coordinates rounded as
  ``floor(v + 0.5)``), (R + G + B) // 3 for colour images, and 0 outside the image;
* a tree goes left when ``feature[idx1] - feature[idx2] > thresh``; the leaf vectors of the
  forest are added to the shape one tree after another in float32;
* the final points are mapped to pixels and rounded to whole pixels as above.

Box convention: the library passes faces as float boxes ``[x1, y1, x2, y2]`` with ``x2, y2``
exclusive (width = x2 - x1). A box becomes dlib's ``rectangle(round(x1), round(y1),
round(x2) - 1, round(y2) - 1)``, rounding as ``floor(v + 0.5)``, so the box
``[l, t, r + 1, b + 1]`` of a dlib rectangle ``(l, t, r, b)`` gives that rectangle back
(:func:`boxes_from_dlib_rects`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from openlfr.models.dlib_serialization import DlibReader
from openlfr.models.exceptions import DlibFormatError

logger = logging.getLogger(__name__)

# Bounds on counts read from a file, so a corrupt count fails clearly instead of allocating.
_MAX_CASCADES = 1000
_MAX_TREES = 100_000
_MAX_DEPTH = 16
_MAX_COORDINATE = 2.0**31
#: Bumped whenever ``_Cascade``'s fields or their meaning change, so an older parse is not reused.
_CACHE_FORMAT = 1


@dataclass(frozen=True, slots=True)
class _Cascade:
    """One level of the cascade: its feature pixels and its forest, trees concatenated.

    Attributes:
        anchor_cols: (2, F) columns of the x and y of the part each feature pixel hangs on, in
            the interleaved (n, 2P) shape array.
        deltas: (2, F) float32 x and y offsets of the feature pixels from their parts, in
            mean-shape units.
        idx1: (T * B,) first feature of each split node, tree ``t`` at ``t * B``.
        idx2: (T * B,) second feature of each split node.
        thresh: (T * B,) float32 split thresholds.
        node_stride: B, slots per tree in ``idx1``, ``idx2`` and ``thresh``: S, or with a leaf
            table 8 or 16, the nodes past S never going left, so that the answers of a tree
            pack into whole bytes.
        leaves: (T * L, 2P) float32 shape increments, tree ``t`` at ``t * L``.
        leaf_base: (T,) first row of each tree in ``leaves``.
        leaf_table: for trees of at most 16 splits, the leaf (0..L-1) reached for each pattern of
            split answers (bit i = node i goes left); None for deeper trees.
        num_trees: T.
        num_splits: S, split nodes per tree, breadth first (L = S + 1 leaves).
        depth: levels of split nodes (S = 2**depth - 1).
    """

    anchor_cols: np.ndarray
    deltas: np.ndarray
    idx1: np.ndarray
    idx2: np.ndarray
    thresh: np.ndarray
    leaves: np.ndarray
    leaf_base: np.ndarray
    leaf_table: np.ndarray | None
    node_stride: int
    num_trees: int
    num_splits: int
    depth: int


def _leaf_table(depth: int) -> np.ndarray:
    """Leaf reached in a full tree of ``depth`` levels for every pattern of split answers."""
    num_splits = 2**depth - 1
    codes = np.arange(2**num_splits, dtype=np.int64)
    node = np.zeros_like(codes)
    for _ in range(depth):
        goes_left = (codes >> node) & 1
        node = 2 * node + 2 - goes_left
    return (node - num_splits).astype(np.uint8)


def dlib_rects_from_boxes(boxes: np.ndarray) -> np.ndarray:
    """dlib rectangles ``(left, top, right, bottom)``, inclusive, of float boxes ``[x1, y1, x2, y2]``.

    Args:
        boxes: (n, 4) boxes with exclusive right and bottom edges (width = x2 - x1).

    Returns:
        (n, 4) int64: ``round(x1), round(y1), round(x2) - 1, round(y2) - 1``, rounding half up
        (``floor(v + 0.5)``, as dlib turns a ``drectangle`` into a ``rectangle``).
    """
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (n, 4), got {boxes.shape}")
    rounded = np.floor(boxes + 0.5).astype(np.int64)
    rounded[:, 2:] -= 1
    return rounded


def boxes_from_dlib_rects(rects: np.ndarray) -> np.ndarray:
    """Float boxes ``[x1, y1, x2, y2]`` (exclusive x2, y2) of dlib rectangles ``(l, t, r, b)``.

    The inverse of :func:`dlib_rects_from_boxes` for integer rectangles.
    """
    rects = np.asarray(rects, dtype=np.float64)
    if rects.ndim != 2 or rects.shape[1] != 4:
        raise ValueError(f"rects: expected shape (n, 4), got {rects.shape}")
    boxes = rects.copy()
    boxes[:, 2:] += 1
    return boxes


def _similarity_weights(from_shape: np.ndarray) -> np.ndarray:
    """Weights giving dlib's ``find_similarity_transform`` from ``from_shape`` as a product.

    Umeyama's least-squares similarity (which dlib computes with an SVD) always has a proper
    rotation, and in 2-D its 2x2 part has the closed form ``[[a, -b], [b, a]]`` with
    ``a = sum(x_i fx_i + y_i fy_i) / s`` and ``b = sum(y_i fx_i - x_i fy_i) / s``, where
    ``(fx, fy)`` is ``from_shape`` centred and ``s`` the sum of its squared norms (the centring
    of the target cancels against the centred ``f``). This equals dlib's result up to the last
    bits of a double, which the float32 cast of the caller absorbs.

    Args:
        from_shape: (P, 2) float64.

    Returns:
        (2P, 2) float64 ``W`` with ``[a, b] = shape @ W`` for a shape interleaved as
        ``[x0, y0, x1, y1, ...]``.
    """
    centred = from_shape - from_shape.mean(axis=0)
    total = float(np.sum(centred * centred))
    if total == 0.0:
        raise ValueError("the mean shape is a single point; its similarity transform is undefined")
    fx, fy = centred[:, 0] / total, centred[:, 1] / total
    weights = np.empty((2 * from_shape.shape[0], 2), dtype=np.float64)
    weights[0::2, 0], weights[1::2, 0] = fx, fy
    weights[0::2, 1], weights[1::2, 1] = -fy, fx
    return weights


def _check_image(image: np.ndarray) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise ValueError(f"image: expected a numpy array, got {type(image).__name__}")
    if image.dtype != np.uint8:
        raise ValueError(f"image: expected dtype uint8, got {image.dtype}")
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"image: expected shape (H, W) or (H, W, 3), got {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"image: empty image of shape {image.shape}")
    return np.ascontiguousarray(image)


class ShapePredictor:
    """dlib's ``shape_predictor``: landmarks of a face given its box.

    Build with :meth:`load`. Thread-safe: prediction only reads the model.
    """

    def __init__(self, *, initial_shape: np.ndarray, cascades: list[_Cascade]) -> None:
        """Use :meth:`load`; this takes the parsed model as it is.

        Args:
            initial_shape: (P, 2) float32 mean shape in the unit square of the face box.
            cascades: the cascade levels in order.
        """
        initial_shape = np.asarray(initial_shape, dtype=np.float32)
        if initial_shape.ndim != 2 or initial_shape.shape[1] != 2 or initial_shape.shape[0] == 0:
            raise ValueError(f"initial_shape: expected shape (P, 2), got {initial_shape.shape}")
        self._initial = initial_shape.reshape(-1)
        self._num_parts = initial_shape.shape[0]
        self._similarity_weights = _similarity_weights(initial_shape.astype(np.float64))
        self._cascades = cascades

    @property
    def num_parts(self) -> int:
        """Number of landmarks the model predicts (5 for dlib's 5-point model)."""
        return self._num_parts

    @property
    def num_cascades(self) -> int:
        """Number of cascade levels."""
        return len(self._cascades)

    def __repr__(self) -> str:
        trees = sum(c.num_trees for c in self._cascades)
        return f"ShapePredictor(parts={self.num_parts}, cascades={self.num_cascades}, trees={trees})"

    # ------------------------------------------------------------------------------------
    # Loading

    @classmethod
    def load(cls, path: Path | str) -> ShapePredictor:
        """Parse a dlib ``shape_predictor`` file (such as ``shape_predictor_5_face_landmarks.dat``).

        Format (``serialize(const shape_predictor&)``): version 1, ``initial_shape`` (a float
        column matrix of 2P values, x then y per part), ``forests`` (per cascade a vector of
        trees; a tree is its split nodes ``(idx1, idx2, thresh)`` in breadth-first order, then
        its leaf vectors), ``anchor_idx`` (per cascade, per feature pixel) and ``deltas`` (per
        cascade, per feature pixel, an (x, y) float pair).

        Raises:
            DlibFormatError: the file is not such a model, or has trees of unequal depth.
        """
        reader = DlibReader.from_file(path)
        version = reader.read_int()
        if version != 1:
            raise DlibFormatError(f"{reader.name}: unsupported shape_predictor version {version}, expected 1")
        initial = reader.read_float_matrix()
        if initial.shape[1] != 1 or initial.shape[0] == 0 or initial.shape[0] % 2:
            raise DlibFormatError(f"{reader.name}: initial_shape of shape {initial.shape} is not a 2P x 1 column")
        dims = initial.shape[0]
        num_parts = dims // 2

        num_cascades = cls._read_count(reader, "cascades", _MAX_CASCADES)
        forests = [cls._read_forest(reader, dims) for _ in range(num_cascades)]

        if cls._read_count(reader, "anchor_idx lists", _MAX_CASCADES) != num_cascades:
            raise DlibFormatError(f"{reader.name}: anchor_idx does not have one list per cascade")
        anchors = [reader.read_ints(reader.read_int()) for _ in range(num_cascades)]
        if cls._read_count(reader, "deltas lists", _MAX_CASCADES) != num_cascades:
            raise DlibFormatError(f"{reader.name}: deltas do not have one list per cascade")
        deltas = [reader.read_floats(2 * reader.read_int()).reshape(-1, 2) for _ in range(num_cascades)]
        if reader.remaining:
            raise DlibFormatError(f"{reader.name}: {reader.remaining} bytes left after the model")

        cascades = [
            cls._stack_cascade(reader.name, forest, anchor, delta, num_parts)
            for forest, anchor, delta in zip(forests, anchors, deltas)
        ]
        model = cls(initial_shape=initial.reshape(num_parts, 2), cascades=cascades)
        logger.debug("loaded shape predictor path=%s %r", reader.name, model)
        return model

    @classmethod
    def load_cached(cls, path: Path | str, *, cache_dir: Path) -> ShapePredictor:
        """:meth:`load`, keeping the parsed arrays in ``cache_dir`` for the next process.

        Parsing dlib's variable-length integers (about 2 million in the 5-point model) is most
        of a process's model loading; the parsed arrays load in a few milliseconds. The cache
        file is named by the SHA-256 of the model file's bytes and the cache format, so a
        changed model or parser never reads a stale parse. A cache that cannot be read or
        written is logged and the file parsed as by :meth:`load`.
        """
        data = Path(path).read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:32]
        cached = cache_dir / f"shape_predictor-{digest}-v{_CACHE_FORMAT}.npz"
        if cached.is_file():
            try:
                return cls._from_npz(cached)
            except (OSError, ValueError, KeyError) as exc:
                logger.warning("shape predictor cache unreadable, parsing the model path=%s error=%r", cached, exc)
        model = cls.load(path)
        try:
            model._save_npz(cached)
        except OSError as exc:
            logger.info("shape predictor cache not written path=%s error=%r", cached, exc)
        return model

    def _save_npz(self, target: Path) -> None:
        arrays: dict[str, np.ndarray] = {"initial_shape": self._initial.reshape(self._num_parts, 2)}
        for i, cascade in enumerate(self._cascades):
            for field in dataclasses.fields(cascade):
                value = getattr(cascade, field.name)
                if value is not None:
                    arrays[f"{i}.{field.name}"] = np.asarray(value)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written aside and renamed, so a process reading the cache never sees half a file.
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=target.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def _from_npz(cls, path: Path) -> ShapePredictor:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
        cascades = []
        for i in range(_MAX_CASCADES):
            if f"{i}.idx1" not in arrays:
                break
            values = {}
            for field in dataclasses.fields(_Cascade):
                value = arrays.get(f"{i}.{field.name}")
                if value is not None and value.ndim == 0:
                    value = int(value)
                values[field.name] = value
            cascades.append(_Cascade(**values))
        if not cascades:
            raise ValueError(f"{path}: no cascades")
        return cls(initial_shape=arrays["initial_shape"], cascades=cascades)

    @staticmethod
    def _read_count(reader: DlibReader, what: str, limit: int) -> int:
        count = reader.read_int()
        if not 0 <= count <= limit:
            raise DlibFormatError(f"{reader.name}: implausible number of {what}: {count}")
        return count

    @staticmethod
    def _read_forest(reader: DlibReader, dims: int) -> tuple[np.ndarray, np.ndarray]:
        """The trees of one cascade: ((T, S, 4) raw split integers, (T, L, dims) float32 leaves).

        A tree is its splits (a count S, then idx1, idx2 and thresh, a float as mantissa and
        exponent: four integers each) and its leaves (a count L, then per leaf a float column
        matrix: rows and cols, negated by current dlib, then mantissa and exponent per value).
        All trees of a cascade have one depth, so after the first the rest are read in one go.
        """
        num_trees = reader.read_int()
        if not 0 <= num_trees <= _MAX_TREES:
            raise DlibFormatError(f"{reader.name}: implausible number of trees: {num_trees}")
        if num_trees == 0:
            return np.zeros((0, 0, 4), dtype=np.int64), np.zeros((0, 1, dims), dtype=np.float32)
        num_splits = reader.read_int()
        if not 0 <= num_splits < 2**_MAX_DEPTH:
            raise DlibFormatError(f"{reader.name}: implausible number of tree splits: {num_splits}")
        first = reader.read_ints(4 * num_splits + 1 + (num_splits + 1) * (2 + 2 * dims))
        rest = reader.read_ints((num_trees - 1) * (first.shape[0] + 1))
        trees = np.concatenate([np.concatenate([[num_splits], first]), rest]).reshape(num_trees, -1)
        leaves_at = 1 + 4 * num_splits
        if (trees[:, 0] != num_splits).any():
            raise DlibFormatError(f"{reader.name}: trees of unequal depth in one cascade")
        if (trees[:, leaves_at] != num_splits + 1).any() or num_splits & (num_splits + 1):
            raise DlibFormatError(
                f"{reader.name}: a tree of {num_splits} splits without {num_splits + 1} leaves; "
                "only full binary trees are supported"
            )
        splits = trees[:, 1:leaves_at].reshape(num_trees, num_splits, 4)
        leaf_ints = trees[:, leaves_at + 1 :].reshape(num_trees, num_splits + 1, 2 + 2 * dims)
        if not ((np.abs(leaf_ints[..., 0]) == dims).all() and (np.abs(leaf_ints[..., 1]) == 1).all()):
            raise DlibFormatError(f"{reader.name}: a leaf vector is not a {dims} x 1 matrix")
        leaves = DlibReader.decode_floats(leaf_ints[..., 2::2], leaf_ints[..., 3::2]).astype(np.float32)
        return splits, leaves

    @staticmethod
    def _stack_cascade(
        name: str,
        forest: tuple[np.ndarray, np.ndarray],
        anchor_idx: np.ndarray,
        deltas: np.ndarray,
        num_parts: int,
    ) -> _Cascade:
        splits, leaves = forest
        num_trees, num_splits = splits.shape[:2]
        num_features = anchor_idx.shape[0]
        if deltas.shape[0] != num_features:
            raise DlibFormatError(f"{name}: {num_features} anchors but {deltas.shape[0]} deltas in a cascade")
        if num_features and not ((anchor_idx >= 0).all() and (anchor_idx < num_parts).all()):
            raise DlibFormatError(f"{name}: an anchor index is outside the {num_parts} parts")
        idx1, idx2 = splits[..., 0].reshape(-1), splits[..., 1].reshape(-1)
        if idx1.size and not (
            (idx1 >= 0).all() and (idx2 >= 0).all() and (idx1 < num_features).all() and (idx2 < num_features).all()
        ):
            raise DlibFormatError(f"{name}: a split refers to a feature outside the {num_features} of its cascade")
        thresh = DlibReader.decode_floats(splits[..., 2], splits[..., 3]).reshape(-1).astype(np.float32)
        leaves = leaves.reshape(num_trees * (num_splits + 1), 2 * num_parts)
        depth = num_splits.bit_length()
        use_table = num_splits <= 16
        stride = (8 if num_splits <= 8 else 16) if use_table else num_splits
        if stride != num_splits:
            # Padding nodes compare feature 0 with itself against +inf: never "left".
            pad = ((0, 0), (0, stride - num_splits))
            shape = (num_trees, num_splits)
            idx1 = np.pad(idx1.reshape(shape), pad).reshape(-1)
            idx2 = np.pad(idx2.reshape(shape), pad).reshape(-1)
            thresh = np.pad(thresh.reshape(shape), pad, constant_values=np.inf).reshape(-1)
        return _Cascade(
            anchor_cols=np.stack([2 * anchor_idx, 2 * anchor_idx + 1]).astype(np.intp),
            deltas=np.ascontiguousarray(deltas.T, dtype=np.float32),
            idx1=idx1.astype(np.intp),
            idx2=idx2.astype(np.intp),
            thresh=thresh.astype(np.float32),
            leaves=np.ascontiguousarray(leaves),
            leaf_base=np.arange(num_trees, dtype=np.intp) * (num_splits + 1),
            leaf_table=_leaf_table(depth) if use_table else None,
            node_stride=stride,
            num_trees=num_trees,
            num_splits=num_splits,
            depth=depth,
        )

    # ------------------------------------------------------------------------------------
    # Prediction

    def predict(self, image: np.ndarray, box: np.ndarray, *, subpixel: bool = False) -> np.ndarray:
        """Landmarks of one face.

        Args:
            image: (H, W, 3) RGB or (H, W) grey uint8 image.
            box: ``[x1, y1, x2, y2]`` face box, x2 and y2 exclusive (see the module docstring).
            subpixel: return the positions before dlib's final rounding to whole pixels.

        Returns:
            (P, 2) float64 ``(x, y)`` pixel coordinates; whole numbers unless ``subpixel``.
        """
        box = np.asarray(box, dtype=np.float64)
        if box.shape != (4,):
            raise ValueError(f"box: expected shape (4,), got {box.shape}")
        return self.predict_many(image, box[None, :], subpixel=subpixel)[0]

    def predict_many(self, image: np.ndarray, boxes: np.ndarray, *, subpixel: bool = False) -> np.ndarray:
        """Landmarks of several faces of one image, computed together.

        Args:
            image: (H, W, 3) RGB or (H, W) grey uint8 image.
            boxes: (n, 4) face boxes ``[x1, y1, x2, y2]``, x2 and y2 exclusive.
            subpixel: return the positions before dlib's final rounding to whole pixels.

        Returns:
            (n, P, 2) float64 ``(x, y)`` pixel coordinates; whole numbers unless ``subpixel``.
        """
        image = _check_image(image)
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise ValueError(f"boxes: expected shape (n, 4), got {boxes.shape}")
        if not np.isfinite(boxes).all():
            raise ValueError("boxes: contain NaN or infinite values")
        if ((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])).any():
            raise ValueError("boxes: every box needs x2 > x1 and y2 > y1")
        if (np.abs(boxes) > _MAX_COORDINATE).any():
            # Pixel indices of such boxes would overflow int64 instead of failing clearly.
            raise ValueError(f"boxes: coordinates beyond +-{_MAX_COORDINATE:g} pixels")
        n = boxes.shape[0]
        num_parts = self.num_parts
        if n == 0:
            return np.zeros((0, num_parts, 2), dtype=np.float64)

        rects = dlib_rects_from_boxes(boxes).astype(np.float64)
        # (n, 2, 1): the rectangle maps unit-square (u, v) to (left + u * w, top + v * h), w and
        # h being right - left and bottom - top of dlib's inclusive rectangle.
        scale = (rects[:, 2:] - rects[:, :2])[:, :, None]
        # dlib rounds u * w + left as floor(v + 0.5). A float32 u times an integer w is exact in
        # float64, and so are the sums for any real box, so adding (left + 0.5) at once is the same.
        offset_half = rects[:, :2, None] + 0.5
        img_h, img_w = image.shape[:2]
        colour = image.ndim == 3
        raw = image.reshape(-1)

        current = np.tile(self._initial, (n, 1))  # (n, 2P) float32, x and y interleaved
        for cascade in self._cascades:
            # dlib casts the similarity from the mean shape to the current one to float32.
            ab = (current.astype(np.float64) @ self._similarity_weights).astype(np.float32)
            col0 = ab[:, :, None]  # (n, 2, 1): first column of [[a, -b], [b, a]]
            col1 = np.stack([-ab[:, 1], ab[:, 0]], axis=1)[:, :, None]
            # Feature pixels in the unit square, float32 as in dlib: tform * delta + anchor.
            unit = (col0 * cascade.deltas[0] + col1 * cascade.deltas[1]) + current[:, cascade.anchor_cols]
            pixel = np.floor(unit * scale + offset_half).astype(np.intp)  # (n, 2, F)
            px, py = pixel[:, 0], pixel[:, 1]
            # Negative coordinates wrap to huge unsigned values, so one comparison per axis.
            inside = (px.view(np.uintp) < img_w) & (py.view(np.uintp) < img_h)
            flat = np.where(inside, py * img_w + px, 0)
            if colour:
                flat *= 3
                # get_pixel_intensity(rgb_pixel): (R + G + B) / 3 in integers.
                values = (raw[flat].astype(np.uint16) + raw[flat + 1] + raw[flat + 2]) // 3
            else:
                values = raw[flat]
            features = np.where(inside, values, 0).astype(np.float32)

            leaf_rows = self._leaf_rows(cascade, features)
            # dlib adds the trees' outputs to the shape one after another in float32. numpy
            # reduces over the leading axis of a C-ordered array row after row (no pairwise
            # summation there), which is that same sequence of float32 additions.
            terms = np.empty((cascade.num_trees + 1, n, current.shape[1]), dtype=np.float32)
            terms[0] = current
            np.take(cascade.leaves, leaf_rows.T, axis=0, out=terms[1:])
            current = np.add.reduce(terms, axis=0)

        shape = current.reshape(n, num_parts, 2).astype(np.float64)
        out = shape * scale[:, None, :, 0] + rects[:, None, :2]
        return out if subpixel else np.floor(out + 0.5)

    @staticmethod
    def _leaf_rows(cascade: _Cascade, features: np.ndarray) -> np.ndarray:
        """Row in ``cascade.leaves`` of the leaf each face reaches in each tree, (n, T)."""
        n = features.shape[0]
        # A split sends a face left (child 2i+1) when feature[idx1] - feature[idx2] > thresh.
        diff = np.take(features, cascade.idx1, axis=1) - np.take(features, cascade.idx2, axis=1)
        goes_left = diff > cascade.thresh  # (n, T * B)
        if cascade.leaf_table is not None:
            # The answers of all split nodes of a tree, as bits, index the leaf they lead to.
            codes = np.packbits(goes_left.reshape(-1), bitorder="little")
            if cascade.node_stride == 16:
                codes = codes.view("<u2")
            leaf = cascade.leaf_table[codes.reshape(n, cascade.num_trees)]
        else:
            flat = goes_left.reshape(-1)
            base = (np.arange(n) * goes_left.shape[1])[:, None] + np.arange(cascade.num_trees) * cascade.node_stride
            node = np.zeros((n, cascade.num_trees), dtype=np.intp)
            for _ in range(cascade.depth):
                node = 2 * node + 2 - flat[base + node]
            leaf = node - cascade.num_splits
        return cascade.leaf_base + leaf
