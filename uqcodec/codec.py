"""The codec pipeline: pixels -> latents -> symbols -> bytes, and back (no TensorFlow).

``Codec`` wraps one loaded model: its family's inference model (looked up in
``families.py`` by the card's ``arch``: transforms on the float32 inference engine
and a latent codec), its weights' fingerprint and card. Images are coded in
independent tiles, each with its own dither and streams:

1. pad the tile to the family's multiple (edge replication), analysis;
2. quantize and entropy-code the latents (the family's latent codec,
   ``latent_codecs.py``); every coding table is computed exactly, so the decoder
   rebuilds the encoder's tables on any machine;
3. synthesis, crop, clip, round to 8 bits.

With several tiles, one tile's transform overlaps the next tile's exact entropy coding
(``_ahead``: the analysis of tile i + 1 runs while tile i is coded; tile i + 1 is
decoded while tile i is synthesized); the bytes and pixels are the same.

Which model and rate parameter code an image (qualities, rate sets, the target
search) is ``rateset.py``'s business.

Version-1/2 files (written before the exact entropy path) are decoded by
``training/legacy.py``, which imports TensorFlow: they decode where they were written.
"""
import atexit
import contextlib
import functools
import hashlib
import io
import json
import math
import os
import threading
import time
import zipfile

import numpy as np

from . import container, entropy, families, quantization as Q, zoo
from .errors import CodecError
from .rates import lambda_position

_cache = {}
_lock = threading.Lock()


@atexit.register
def _release():
    _cache.clear()


def load(path):
    """Load (and cache) the model in directory ``path``."""
    path = os.path.abspath(path)
    with _lock:
        if path not in _cache:
            _cache[path] = Codec(path)
        return _cache[path]


def _ahead(items, count):
    """Iterate ``items`` (``count`` of them) with their work done one item ahead in another
    thread, so that it overlaps the caller's work on the item before (a tile's exact
    entropy coding, mostly one core of NumPy, against another tile's transform on the
    inference engine). Items and exceptions arrive in order; closed early (``close``), the
    producer stops after its current item. Fewer than two items: no thread."""
    if count < 2:
        yield from items
        return
    import queue
    q, stop = queue.Queue(maxsize=1), threading.Event()

    def put(entry):
        while not stop.is_set():
            try:
                q.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in items:
                if not put((True, item)):
                    return
            put((True, _END))
        except BaseException as e:  # noqa: B902 (handed to the caller, raised there)
            put((False, e))

    worker = threading.Thread(target=produce, name="uqcodec-tiles", daemon=True)
    worker.start()
    try:
        while True:
            ok, item = q.get()
            if not ok:
                raise item
            if item is _END:
                return
            yield item
    finally:
        stop.set()
        worker.join()


_END = object()


def fingerprint(weights_bytes):
    """Versions 1-3: the first 8 bytes of the SHA-256 of the weights file, as hex."""
    return hashlib.sha256(weights_bytes).hexdigest()[:16]


def _canonical(v):
    """A card value as the fingerprint sees it: numbers as floats (6 and 6.0 are the
    same alpha), lists element by element."""
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return v
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, (list, tuple)):
        return [_canonical(x) for x in v]
    raise TypeError(f"card value {v!r} cannot be fingerprinted")


def coding_card(card):
    """The card's fields that decide decoding: its family's ``coding_keys``."""
    keys = families.get(card.get("arch")).inference_class().coding_keys
    return {k: card[k] for k in keys if card.get(k) is not None}


def model_fingerprint(weights, tables, coding):
    """Version 4 (docs/format.md, "Fingerprint"): the first 8 bytes of the SHA-256 of
    everything that decides decoding: every array of ``weights.npz`` and ``tables.npz``
    (in name order: name, dtype, shape and little-endian bytes) and the card's coding
    fields (canonical JSON). The arrays, not the files: a re-export that writes the same
    values (zip timestamps, compression) keeps it; one table entry changed does not."""
    h = hashlib.sha256(b"uqcodec model v4\n")
    for kind, arrays in (("weights", weights), ("tables", tables)):
        for name in sorted(arrays):
            a = np.asarray(arrays[name])
            dt = a.dtype.newbyteorder("<") if a.dtype.byteorder not in "|" else a.dtype
            h.update(f"{kind}/{name} {dt.str} {list(a.shape)}\n".encode())
            h.update(np.ascontiguousarray(a, dt).tobytes())
    card = {k: _canonical(v) for k, v in coding.items() if v is not None}
    h.update(json.dumps(card, sort_keys=True, separators=(",", ":")).encode())
    return h.hexdigest()[:16]


def _npz_views(data):
    """The arrays of an .npz archive (bytes) as read-only views into ``data`` where its
    members are stored uncompressed (how ``export`` writes weights): no copies, so a
    12 MB model loads in about 2 ms instead of 20. Anything else (a compressed member, an
    object array) is read by ``np.load``, with the same values."""
    from numpy.lib import format as npy
    try:
        out = {}
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            for info in z.infolist():
                name = info.filename[:-4] if info.filename.endswith(".npy") else None
                at = info.header_offset
                if (name is None or info.compress_type != zipfile.ZIP_STORED
                        or data[at:at + 4] != b"PK\x03\x04"):
                    raise ValueError
                # the local header's own name and extra field lengths give the data's start
                start = at + 30 + int.from_bytes(data[at + 26:at + 28], "little") \
                    + int.from_bytes(data[at + 28:at + 30], "little")
                f = io.BytesIO(data[start:start + min(info.file_size, 1 << 16)])
                version = npy.read_magic(f)
                if version not in ((1, 0), (2, 0)):
                    raise ValueError
                read = npy.read_array_header_1_0 if version == (1, 0) else \
                    npy.read_array_header_2_0
                shape, fortran, dtype = read(f)
                if dtype.hasobject:
                    raise ValueError
                count = int(np.prod(shape, dtype=np.int64))
                if f.tell() + count * dtype.itemsize != info.file_size:
                    raise ValueError
                a = np.frombuffer(data, dtype, count, start + f.tell())
                out[name] = a.reshape(shape[::-1]).T if fortran else a.reshape(shape)
        return out
    except (ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return dict(np.load(io.BytesIO(data)))


class Codec:
    def __init__(self, path):
        self.path = path
        self.card = zoo.read_card(path)
        self.name = self.card["name"]
        try:
            self.spec = families.get(self.card.get("arch"))
        except CodecError as e:
            raise CodecError(f"{path}: {e}") from None
        self.arch = self.spec.name
        # the model sees only the card fields the fingerprint covers
        self.coding = coding_card(self.card)
        self.rounding = Q.Rounding.of(self.coding)
        self.transform_seconds = 0.0  # time in the inference engine (for benchmarks)
        self._legacy = self._refiner = None

    @functools.cached_property
    def _files(self):
        """(the weights file's bytes, weights, tables), read when the model is first used:
        a rate set chooses among its models from their cards and rate knots and reads
        only the one that codes."""
        with self._reading():
            with open(os.path.join(self.path, "weights.npz"), "rb") as f:
                wbytes = f.read()
            weights = _npz_views(wbytes)
            tables = dict(np.load(os.path.join(self.path, "tables.npz")))
        return wbytes, weights, tables

    @contextlib.contextmanager
    def _reading(self):
        """Errors reading the model's files -> one CodecError naming the model."""
        try:
            yield
        except (OSError, ValueError, zipfile.BadZipFile) as e:
            raise CodecError(f"{self.path}: cannot read model files ({e})") from None

    @functools.cached_property
    def family(self):
        """The family's inference model (``model.InferenceModel``)."""
        _, weights, tables = self._files
        return self.spec.inference_class()(weights, tables, self.coding, self.rounding)

    @property
    def multiple(self):
        return self.family.multiple

    # --- helpers ---------------------------------------------------------------
    @functools.cached_property
    def fingerprint(self):
        """Version 4: a hash of the weights, the tables and the card's coding fields
        (computed on first use: a rate set loads models it does not use)."""
        _, weights, tables = self._files
        return model_fingerprint(weights, tables, self.coding)

    @functools.cached_property
    def fingerprint_v3(self):
        """Versions 1-3: the weights file only."""
        return fingerprint(self._files[0])

    @property
    def legacy(self):
        """The TensorFlow decoder of version-1/2 files (loaded on first use)."""
        if self._legacy is None:
            from .training.legacy import LegacyCodec
            self._legacy = LegacyCodec(self.path)
        return self._legacy

    @property
    def refiner(self):
        """Encoder-side latent refinement for this model (built on first use)."""
        if self._refiner is None:
            if not self.spec.refine:
                can = [f.name for f in families.all_families() if f.refine]
                raise CodecError(f"model {self.name} is {self.arch}: refinement is implemented "
                                 f"for {' and '.join(can)} models only")
            if not self.card.get("lambda") and not self.variable:
                raise CodecError(f"model {self.name} has no lambda in its card: cannot refine")
            self._refiner = self.spec.refiner_class()(self.family, self.card.get("lambda"),
                                                      self.rounding.alpha,
                                                      self.rounding.alpha_r)
        return self._refiner

    def _timed(self, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.transform_seconds += time.perf_counter() - t
        return out

    def pad(self, rgb):
        """HxWx3 uint8 -> padded float32 image in [0, 1]."""
        h, w = rgb.shape[:2]
        m = self.multiple
        x = np.pad(rgb, ((0, -h % m), (0, -w % m), (0, 0)), mode="edge")
        return x.astype(np.float32) / np.float32(255.0)

    def analyze(self, rgb):
        """HxWx3 uint8 -> the family's latents (float64)."""
        return self._timed(self.family.analyze, self.pad(rgb))

    def synthesize(self, y_dec, height, width):
        """Decoder input of y -> HxWx3 uint8."""
        x = self._timed(self.family.synthesis, y_dec)[:height, :width]
        # garbage in, no warnings out: clipped before the scaling, which huge values would
        # overflow (the same bytes as clipping after it)
        x = np.clip(np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
        return np.rint(x * 255.0).astype(np.uint8)

    # --- rate of a variable-rate model ---------------------------------------------
    @functools.cached_property
    def variable(self):
        """True for a variable-rate model (one model, every rate in its lambda range):
        from the weights file's list of arrays when the model is not loaded (a rate set
        checks all its models, and codes with one)."""
        if "family" in self.__dict__:
            return self.family.variable
        with self._reading(), np.load(os.path.join(self.path, "weights.npz")) as w:
            return "rate/log_gain" in w.files

    def rate_at_lambda(self, lmbda):
        """The rate parameter (an integer) of lambda ``lmbda`` in this model's range."""
        t = lambda_position(lmbda, *self.card["lambda_range"])
        return self.family.rate_at(min(1.0, max(0.0, t)))

    # --- encode ----------------------------------------------------------------
    def encode(self, rgb, seed, quantizer="uq", mode="RGB", reconstruct=False,
               tile=container.DEFAULT_TILE, refine=0, progress=None, rate=None, latents=None,
               lmbda=None):
        """HxWx3 uint8 -> (file bytes, info). info has the rate of the coded symbols
        in bits and, when asked, the reconstruction (what every decoder gives back, up
        to float32 differences of the synthesis between machines).

        ``refine``: steps of encoder-side latent optimization per tile (see
        ``refine.py``; 0 = the analysis transform's latents as they are);
        ``progress(n)`` is called after each of them. Tiles of ``tile`` x ``tile``
        pixels (row-major) are coded independently, each with its own dither
        ``Dither(seed, index)`` and streams, so memory is bounded by the tile size.
        ``rate``, ``lmbda``: the rate parameter of a variable-rate model and the lambda
        that refinement optimizes for (default: the middle of the model's lambda range,
        and its rate parameter); ``latents``: the tiles' latents from ``tile_latents`` (a
        search over rates analyzes once)."""
        h, w = rgb.shape[:2]
        if self.variable:
            if lmbda is None:  # the middle of its lambda range
                lmbda = math.sqrt(math.prod(self.card["lambda_range"]))
            if rate is None:
                rate = self.rate_at_lambda(lmbda)
        elif rate:
            raise CodecError(f"model {self.name} has a fixed rate")
        else:
            rate = 0
        if refine:
            self.refiner  # noqa: B018  (a linear model fails here, before any work)
        container.check_tile(tile)
        if tile % self.multiple:
            raise CodecError(f"tile size must be a multiple of {self.multiple} for "
                             f"model {self.name}")
        container.check_size(h, w)
        streams, bits_total = [], 0.0
        recon = np.empty((h, w, 3), np.uint8) if reconstruct else None
        grid = list(container.tile_grid(h, w, tile))
        analyzed = (lat for lat in latents) if latents is not None else _ahead(
            (self.analyze(rgb[t:t + th, l:l + tw]) for t, l, th, tw in grid), len(grid))
        with contextlib.closing(analyzed):
            for i, (t, l, th, tw) in enumerate(grid):
                streams_i, bits, recon_i = self._encode_tile(
                    rgb[t:t + th, l:l + tw], next(analyzed), seed, i, quantizer, refine,
                    progress, rate, lmbda, reconstruct)
                streams += streams_i
                bits_total += bits
                if reconstruct:
                    recon[t:t + th, l:l + tw] = recon_i
        header = container.Header(self.name, self.fingerprint, quantizer, h, w, mode,
                                  int(seed), [len(s) for s in streams], tile, rate=int(rate))
        info = {"rate_bits": bits_total, "tiles": container.tile_count(h, w, tile),
                "rate": int(rate)}
        if reconstruct:
            info["reconstruction"] = recon
        return container.pack(header, streams), info

    def _encode_tile(self, part, lat, seed, i, quantizer, refine, progress, rate, lmbda,
                     reconstruct):
        """Tile ``i`` (its pixels and latents) -> (its streams, bits, reconstruction)."""
        if refine:
            lat = self._refine(part, lat, quantizer, (refine, seed, i, progress), rate, lmbda)
        esc = entropy.EscapeWriter()
        s, bits, y_dec = self.family.encode(lat, Q.Dither(seed, i, container.VERSION),
                                            quantizer, esc, rate)
        th, tw = part.shape[:2]
        recon = self.synthesize(y_dec, th, tw) if reconstruct else None
        return s + [bytes(esc.buf)], bits, recon

    def tile_latents(self, rgb, tile=container.DEFAULT_TILE):
        """The latents of every tile (what ``encode`` would compute), for ``latents=``."""
        h, w = rgb.shape[:2]
        return [self.analyze(rgb[t:t + th, l:l + tw])
                for t, l, th, tw in container.tile_grid(h, w, tile)]

    def _refine(self, rgb, latents, quantizer, refine, rate=0, lmbda=None):
        steps, seed, index, progress = refine
        # the dither this tile will use (the latent codec's draws, in its order; None:
        # rounding)
        noise = self.family.noise([t.shape for t in latents],
                                  Q.Dither(seed, index, container.VERSION), quantizer)
        t = time.perf_counter()
        gain = {"lam": lmbda, "log_gain": math.log(entropy.rate_gain(rate))} if self.variable \
            else {}
        *latents, _ = self.refiner(self.pad(rgb), *latents, *noise, steps,
                                   seed=(int(seed), index), valid=rgb.shape[:2],
                                   progress=progress, **gain)
        self.transform_seconds += time.perf_counter() - t
        return tuple(latents)

    # --- decode ----------------------------------------------------------------
    def decode(self, header, streams):
        """Header + streams -> HxWx3 uint8, tile by tile."""
        want = self.fingerprint if header.version >= 4 else self.fingerprint_v3
        if header.fingerprint != want:
            raise CodecError(f"file was made with a different version of model {self.name!r} "
                             f"(fingerprint {header.fingerprint}, installed {want}): its "
                             "weights, tables or coding settings differ")
        if header.version < 3:
            if not self.spec.legacy:
                raise CodecError(f"corrupted file (format version {header.version} does not "
                                 f"exist for {self.arch} models)")
            return self.legacy.decode(header, streams)
        if header.rate and not self.variable:
            raise CodecError(f"file has rate parameter {header.rate}, but model {self.name} "
                             "has a fixed rate")
        out = np.empty((header.height, header.width, 3), np.uint8)
        with contextlib.closing(_ahead(self.decode_latents(header, streams),
                                       len(header.tiles))) as tiles:
            for (t, l, th, tw), y_dec in tiles:
                out[t:t + th, l:l + tw] = self.synthesize(y_dec, th, tw)
        return out

    def decode_latents(self, header, streams):
        """Versions 3 and 4: yield ((top, left, height, width), decoder input of y) per tile.
        These values are exact: the same bits on every machine."""
        tiles = header.tiles
        per_tile = self.family.streams
        if len(streams) != per_tile * len(tiles):
            raise CodecError("corrupted file (wrong number of streams)")
        if header.tile % self.multiple:
            raise CodecError(f"corrupted file (tile size {header.tile} is not a multiple of "
                             f"{self.multiple})")
        for i, (t, l, th, tw) in enumerate(tiles):
            s = streams[per_tile * i:per_tile * (i + 1)]
            esc = entropy.EscapeReader(s[-1])
            try:
                y_dec = self.family.decode(s, self.family.latent_shapes(th, tw),
                                           Q.Dither(header.seed, i, header.version),
                                           header.quantizer, esc,
                                           header.rate)
            except (ValueError, KeyError, RuntimeError, OverflowError, AssertionError,
                    IndexError) as e:
                raise CodecError(f"corrupted file (entropy decoding failed: {e})") from None
            yield (t, l, th, tw), y_dec
