"""Latent codecs: how a family's latents become symbols and streams, and back (exact).

A family is its transforms plus one latent codec (CompressAI's ``latent_codecs`` are
the model): the codec draws the dither of its latents in a fixed order, computes every
coding table exactly and writes a fixed number of streams per tile (the escape stream
that follows them is the tile pipeline's, ``codec.py``). docs/format.md, "Streams" and
"Dither", specifies each one.

* ``FactorizedLatentCodec``: one tensor, per-channel factorized tables (``tables.npz``,
  one row per dither level); dither: one grid level per element; 1 stream.
* ``GaussianConditionalLatentCodec``: a tensor coded with Gaussian tables whose snapped
  mean and scale index come from an exact integer network (``gaussian_parameters``);
  dither: one continuous value per element; variable rate: the latent is coded at the
  gain of the header's rate parameter; 1 stream.
* ``HyperpriorLatentCodec``: ``y`` given a hyper-latent ``z = h_a(y)``: ``z`` with a
  factorized codec, the parameters of ``y`` from the decoded ``z`` by the integer
  hyper-synthesis, ``y`` with a Gaussian conditional; dither: ``z``'s levels first, then
  ``y``'s continuous values; 2 streams ``[z, y]``.

``encode`` returns (streams, bits of the coded symbols under the tables, decoder input of
the latent the synthesis reads); ``decode`` returns that decoder input. ``noise`` gives
the dither a file will use for each latent (encoder-side refinement optimizes for it).
"""
import numpy as np

from . import constants as K, entropy, intnet


class FactorizedLatentCodec:
    streams = 1

    def __init__(self, tables, rounding):
        self.coder = entropy.FactorizedCoder(tables)
        self.rounding = rounding

    @property
    def support(self):
        """(lo, hi) per channel that every decoder input lies in (inputs of exact networks
        that read it are clamped there)."""
        return self.coder.lo - 1.0, self.coder.hi + 1.0

    def latents(self, y):
        return (y,)

    def noise(self, shapes, dither, quantizer):
        return (dither.levels(shapes[0])[1] if quantizer == "uq" else None,)

    def encode(self, latents, dither, quantizer, esc, rate=0):
        t_dec, k, rows, stream = entropy.encode_factorized(
            self.coder, latents[0], dither, quantizer, self.rounding, esc)
        return [stream], self.coder.bits(k, rows), t_dec

    def decode(self, streams, shapes, dither, quantizer, esc, rate=0):
        return entropy.decode_factorized(self.coder, streams[0], shapes[0], dither, quantizer,
                                         self.rounding, esc)


def _grid_fold(M, log_scale_origin, out_scale=1.0, mean_grid=K.MEAN_GRID):
    """The fold of an integer network's last layer whose 2M outputs are means (in units of
    1 / ``mean_grid``: MEAN_STEP by default) and log-scales (in scale index steps from
    ``log_scale_origin``), the float outputs first multiplied by ``out_scale`` (a power of
    two: exact)."""
    def fold(kernel, bias):
        kernel, bias = kernel * out_scale, bias * out_scale
        kernel[..., :M] *= mean_grid
        bias[:M] *= mean_grid
        kernel[..., M:] /= K.LOG_SCALE_STEP
        bias[M:] = (bias[M:] - log_scale_origin) / K.LOG_SCALE_STEP
        return kernel, bias
    return fold


def gaussian_parameters(layers, M, inputs):
    """An integer network whose 2M outputs are the mean of M latent channels in units of
    MEAN_STEP and their scale index: the grid is folded into the last layer's weights.
    Returns a function (input arrays) -> (mean index, scale index), both int64."""
    net = intnet.IntNet(inputs, layers, _grid_fold(M, K.LOG_SCALE_MIN))

    def params(*xs):
        out = net(*xs)
        return out[..., :M], np.clip(out[..., M:], 0, K.SCALE_LEVELS - 1)
    params.net = net
    return params


def correction_net(layers, M, inputs, mean_grid=K.MEAN_GRID):
    """An integer network whose 2M outputs correct the mean (in units of 1 / ``mean_grid``)
    and the scale index (in index steps) of M latent channels: CONTEXT_OUT_SCALE and the
    grid folded into its last layer. Returns the network: (input arrays) -> int64 (..., 2M)."""
    return intnet.IntNet(inputs, layers, _grid_fold(M, 0.0, K.CONTEXT_OUT_SCALE, mean_grid))


class GaussianConditionalLatentCodec:
    streams = 1

    def __init__(self, rounding):
        self.rounding = rounding
        self.gaussian = entropy.GaussianCoder(rounding.alpha)

    def _tables(self, mean_index, scale_index, shape, dither, quantizer, gain):
        """Coding parameters (flat, C order): snapped mean (times the gain of a variable-rate
        model: one correctly rounded product), scale index (both exact), offset c and dither
        u (``entropy.gaussian_offsets``)."""
        mean_q = mean_index.ravel() * K.MEAN_STEP
        if gain != 1.0:
            mean_q = mean_q * gain
        c, u = entropy.gaussian_offsets(mean_q, shape, dither, quantizer)
        return mean_q, scale_index.ravel(), c, u

    def encode(self, y, mean_index, scale_index, dither, quantizer, esc, rate=0):
        gain = entropy.rate_gain(rate) if rate else 1.0
        mean_q, idx, c, u = self._tables(mean_index, scale_index, y.shape, dither, quantizer,
                                         gain)
        d = np.rint(self.rounding.s(y.ravel() * gain) - c - u).astype(np.int64)
        enc = entropy.new_encoder()
        bits = self.gaussian.at_rate(rate).encode(enc, d, mean_q, idx, c, u, esc)
        y_dec = self.rounding.decoder_input(c + d + u).reshape(y.shape)
        return [entropy.finish(enc)], bits, (y_dec / gain if rate else y_dec)

    def decode(self, stream, shape, mean_index, scale_index, dither, quantizer, esc, rate=0):
        gain = entropy.rate_gain(rate) if rate else 1.0
        mean_q, idx, c, u = self._tables(mean_index, scale_index, shape, dither, quantizer, gain)
        d = self.gaussian.at_rate(rate).decode(entropy.new_decoder(stream), mean_q, idx, c, u,
                                               esc)
        y_dec = self.rounding.decoder_input(c + d + u).reshape(shape)
        return y_dec / gain if rate else y_dec


class HyperpriorLatentCodec:
    streams = 2

    def __init__(self, hyper_analysis, hyper_synthesis, z_codec, y_codec):
        """``hyper_analysis``: y -> z (float); ``hyper_synthesis``: decoded z -> (mean index,
        scale index) of y (exact, ``gaussian_parameters``)."""
        self.hyper_analysis = hyper_analysis
        self.hyper_synthesis = hyper_synthesis
        self.z_codec, self.y_codec = z_codec, y_codec

    def latents(self, y):
        return y, self.hyper_analysis(y)

    def noise(self, shapes, dither, quantizer):
        """(u of y, u of z) that a file with this dither uses (draw order: z, then y)."""
        if quantizer != "uq":
            return None, None
        u_z = self.z_codec.noise(shapes[1:], dither, quantizer)[0]
        return dither.continuous(shapes[0]), u_z

    def encode(self, latents, dither, quantizer, esc, rate=0):
        y, z = latents
        zstreams, bits_z, z_dec = self.z_codec.encode((z,), dither, quantizer, esc)
        mean_index, scale_index = self.hyper_synthesis(z_dec)
        ystreams, bits_y, y_dec = self.y_codec.encode(y, mean_index, scale_index, dither,
                                                      quantizer, esc, rate)
        return zstreams + ystreams, bits_y + bits_z, y_dec

    def decode(self, streams, shapes, dither, quantizer, esc, rate=0):
        yshape, zshape = shapes
        z_dec = self.z_codec.decode(streams[:1], (zshape,), dither, quantizer, esc)
        mean_index, scale_index = self.hyper_synthesis(z_dec)
        return self.y_codec.decode(streams[1], yshape, mean_index, scale_index, dither,
                                   quantizer, esc, rate)


anchors = intnet.anchors  # the checkerboard's anchors (IntNet.at gathers its halves)


class ContextLatentCodec:
    """``y`` given a hyper-latent and its own decoded parts (``context.py``): like the
    hyperprior codec, then channel group by channel group (and, with the checkerboard,
    the anchors of a group before its other positions) each part's parameters are the
    hyper-synthesis' corrected by the group's exact context network, which sees the
    parts decoded before it. Dither: ``z``'s levels, then ``y``'s continuous values
    (all of them, as the hyperprior codec draws them); streams ``[z, y]``, ``y``'s
    parts coded one after another in that order, each part's elements in C order."""
    streams = 2

    def __init__(self, hyper, nets, groups, checkerboard, residual=False):
        """``hyper``: a HyperpriorLatentCodec (z, the hyper-synthesis, the Gaussian coder);
        ``nets[g]``: group g's exact network -> (mean correction, log-scale correction in
        scale index steps). ``residual`` (``context_inputs: residual``): its inputs are the
        group's hyper log-scale, the earlier groups' normalized residuals, with the
        checkerboard the group's decoded anchors' residuals and the half flag; its mean
        correction is in units of the hyper scale / CONTEXT_RESIDUAL_GRID. Else (raw, 0.14):
        the group's hyper mean / CONTEXT_DIV and log-scale, the earlier groups' decoded
        y / CONTEXT_DIV, the group's decoded anchors / CONTEXT_DIV and the flag; its mean
        correction in MEAN_STEP units."""
        self.hyper, self.nets = hyper, nets
        self.groups, self.checkerboard = list(groups), bool(checkerboard)
        self.residual = bool(residual)
        self.rounding = hyper.y_codec.rounding
        self.gaussian = hyper.y_codec.gaussian

    def latents(self, y):
        return self.hyper.latents(y)

    def noise(self, shapes, dither, quantizer):
        return self.hyper.noise(shapes, dither, quantizer)

    def _parts(self, shape):
        """(group, channel slice, positions, second half?) in coding order."""
        a, anc = 0, anchors(shape[0], shape[1])
        for g, n in enumerate(self.groups):
            sl = slice(a, a + n)
            if self.checkerboard:
                yield g, sl, anc, False
                yield g, sl, ~anc, True
            else:
                yield g, sl, np.ones(shape[:2], bool), False
            a += n

    def _hyper_params(self, z_dec):
        """The hyper-synthesis' mean index and scale index, the scale index clipped below
        at 0 only: training adds the context's correction to the hyper log-scale bounded
        below, not above (``training/context.py``), and the sum is clipped to the grid."""
        out = self.hyper.hyper_synthesis.net(z_dec)
        M = out.shape[-1] // 2
        return out[..., :M], np.maximum(out[..., M:], 0)

    def _params(self, g, sl, pos, second, mean_index, scale_index, grid, shared):
        """Mean index and scale index of group ``g`` (channels ``sl``) for one half, at its
        positions ``pos`` only: (P, n) each, positions in C order (the network is evaluated
        there only: ``IntNet.at``). ``grid``: the decoded elements' context inputs on the
        networks' input grid (``_to_grid``), zeros elsewhere. ``shared``: the first layer's
        products of the inputs both halves of a group see, kept from its first half."""
        top = np.minimum(scale_index[..., sl], K.SCALE_LEVELS - 1)
        # the network sees the log-scale on the grid (training clips it to the same range)
        ins = [K.LOG_SCALE_MIN + top * K.LOG_SCALE_STEP]
        if not self.residual:
            ins.insert(0, mean_index[..., sl] * K.MEAN_STEP / K.CONTEXT_DIV)
        if sl.start:
            ins.append(intnet.OnGrid(grid[..., :sl.start]))
        net = self.nets[g]
        if not self.checkerboard:
            out = net.at(pos, *ins)
        else:
            # both halves see the inputs so far: their products over the whole map, once;
            # the first half sees zeros for the group's anchors and the flag (left out),
            # the second its anchors (the only decoded part of it so far) and the flag 1
            earlier = [None] * len(ins)
            if not second:
                shared[g] = net.first_layer(*ins, None, None)
                out = net.at(pos, *earlier, None, None, partial=shared[g])
            else:
                out = net.at(pos, *earlier, intnet.OnGrid(grid[..., sl]),
                             np.ones(grid.shape[:2] + (1,)), partial=shared.pop(g))
        n = sl.stop - sl.start
        d_mean = out[:, :n]
        if self.residual:  # scale x correction x MEAN_GRID: one rounding of exact values
            d_mean = np.rint(entropy.SCALES[top[pos]] * d_mean
                             * (K.MEAN_GRID / K.CONTEXT_RESIDUAL_GRID)).astype(np.int64)
        return (mean_index[..., sl][pos] + d_mean,
                np.clip(scale_index[..., sl][pos] + out[:, n:], 0, K.SCALE_LEVELS - 1))

    def _to_grid(self, grid, v, where, mean_index, scale_index):
        """Put the decoded values ``v`` (P, n) of one part (``where``: positions, channels)
        into ``grid`` as the later parts' networks see them: residual, (y - mean) / scale
        (IEEE operations on exact values: the same everywhere; the hyper-synthesis' mean
        and scale); raw, y / CONTEXT_DIV; clamped to [-CONTEXT_CLAMP, CONTEXT_CLAMP] (the
        range ``context.py`` declares for these inputs) and on the input grid."""
        pos, sl = where
        if self.residual:
            top = np.minimum(scale_index[..., sl][pos], K.SCALE_LEVELS - 1)
            ctx = (v - mean_index[..., sl][pos] * K.MEAN_STEP) / entropy.SCALES[top]
        else:
            ctx = v / K.CONTEXT_DIV
        grid[..., sl][pos] = intnet.to_grid(ctx, -K.CONTEXT_CLAMP, K.CONTEXT_CLAMP)

    def _code(self, y_shape, mean_index, scale_index, dither, quantizer, rate, step,
              encoding):
        """Walk the parts in coding order; ``step(sel, mean_q, idx, c, u)`` codes one part
        and returns its symbols d. Returns the decoder input of y. The work budget holds
        for the whole latent: each part is checked with the parts before it."""
        gain = entropy.rate_gain(rate) if rate else 1.0
        spent, elements = 0.0, int(np.prod(y_shape))
        u_all = dither.continuous(y_shape) if quantizer == "uq" else np.zeros(y_shape)
        y_dec, grid, shared = np.zeros(y_shape), np.zeros(y_shape), {}
        for g, sl, pos, second in self._parts(y_shape):
            mi, si = self._params(g, sl, pos, second, mean_index, scale_index, grid, shared)
            mean_q = mi.ravel() * K.MEAN_STEP
            if gain != 1.0:
                mean_q = mean_q * gain
            u = u_all[..., sl][pos].ravel()
            c = np.rint(mean_q) if quantizer == "uq" else mean_q
            idx = si.ravel()
            spent = self.gaussian.at_rate(rate).check_work(idx, encoding, elements, spent)
            d = step((pos, sl), mean_q, idx, c, u)
            v = self.rounding.decoder_input(c + d + u)
            v = (v / gain if rate else v).reshape(-1, sl.stop - sl.start)
            y_dec[..., sl][pos] = v
            self._to_grid(grid, v, (pos, sl), mean_index, scale_index)
        return y_dec

    def encode(self, latents, dither, quantizer, esc, rate=0):
        y, z = latents
        zstreams, bits_z, z_dec = self.hyper.z_codec.encode((z,), dither, quantizer, esc)
        mean_index, scale_index = self._hyper_params(z_dec)
        gain = entropy.rate_gain(rate) if rate else 1.0
        coder, enc, bits = self._unchecked(rate), entropy.new_encoder(), [0.0]

        def step(where, mean_q, idx, c, u):
            pos, sl = where
            d = np.rint(self.rounding.s(y[..., sl][pos].ravel() * gain) - c - u).astype(np.int64)
            bits[0] += coder.encode(enc, d, mean_q, idx, c, u, esc)
            return d
        y_dec = self._code(y.shape, mean_index, scale_index, dither, quantizer, rate, step,
                           True)
        return zstreams + [entropy.finish(enc)], bits[0] + bits_z, y_dec

    def decode(self, streams, shapes, dither, quantizer, esc, rate=0):
        yshape, zshape = shapes
        z_dec = self.hyper.z_codec.decode(streams[:1], (zshape,), dither, quantizer, esc)
        mean_index, scale_index = self._hyper_params(z_dec)
        coder, dec = self._unchecked(rate), entropy.new_decoder(streams[1])
        return self._code(yshape, mean_index, scale_index, dither, quantizer, rate,
                          lambda where, mean_q, idx, c, u: coder.decode(dec, mean_q, idx, c, u,
                                                                         esc), False)

    def _unchecked(self, rate):
        """The Gaussian coder at this rate without its per-call budget check (``_code``
        checks the whole latent)."""
        import copy
        coder = copy.copy(self.gaussian.at_rate(rate))
        coder.work_budget = None
        return coder
