"""Mega's multi-dimensional damped exponential moving average (paper eq. 2-3)."""

import math

import keras
from keras import ops

from keras_mega.layers.ema_initializers import EMA_INITS
from keras_mega.layers.ema_initializers import timescale_logits
from keras_mega.layers.functional import check_choice
from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.mega_documents import document_boundaries
from keras_mega.layers.mega_documents import document_runs


def fft_convolution(x, forward_kernel, backward_kernel=None):
    """Linear (not circular) convolution along the last axis, in float32.

    `y[t] = sum_a kf[a] x[t - a] + sum_b kb[b] x[t + b]`.

    Args:
        x: `[D, B, L]` float32.
        forward_kernel: `[D, L]`, lags `0..L-1` into the past.
        backward_kernel: optional `[D, L]`, lags into the future.
    """
    length = ops.shape(x)[-1]
    n = 2 * length  # no wrap-around for lags up to L - 1 in either direction
    xr, xi = ops.rfft(x, fft_length=n)
    kr, ki = ops.rfft(forward_kernel, fft_length=n)
    if backward_kernel is not None:
        # A correlation with kb is a product with its conjugate spectrum.
        br, bi = ops.rfft(backward_kernel, fft_length=n)
        kr, ki = kr + br, ki - bi
    kr, ki = kr[:, None], ki[:, None]
    yr = xr * kr - xi * ki
    yi = xr * ki + xi * kr
    return ops.irfft((yr, yi), fft_length=n)[..., :length]


# Block length of the FFT-free EMA: a Toeplitz matmul within each block, the
# state carried across blocks. Measured on CPU (benchmarks/compare_hf.py).
EMA_BLOCK = 64
# With document boundaries the Toeplitz matmul is masked per block (a
# product and a sum, memory-bound): shorter blocks are faster there.
DOCUMENT_EMA_BLOCK = 16


def decay_powers(q, lags):
    """`q ** lags` as `exp(lags * log q)` (as HF computes it): `q` `[K, N]`,
    float32 `lags` `[T]` -> `[K, N, T]`."""
    return ops.exp(lags[None, None, :] * ops.log(q)[:, :, None])


def _static_int(value):
    return value if isinstance(value, int) else None


def _lower_toeplitz(kernel):
    """`T[k, t, s] = kernel[k, t - s]` for `t >= s`, else 0, from `[K, C]`.

    Built by tiling and reshaping (no gather: its gradient, a scatter, is
    slow on CPU): row `t` of a period-`2C` tiling read with stride `2C - 1`
    starts `t` places further back.
    """
    channels, size = ops.shape(kernel)
    zeros = ops.zeros_like(kernel)
    rolled = ops.roll(
        ops.concatenate([ops.flip(kernel, axis=-1), zeros], axis=-1),
        -(size - 1),
        axis=-1,
    )
    flat = ops.tile(rolled, (1, size))[:, : size * (2 * size - 1)]
    return ops.reshape(flat, (channels, size, 2 * size - 1))[:, :, :size]


def block_ema(u, p_beta, q, gamma, block=EMA_BLOCK, segments=None):
    """Causal EMA of `u` without FFT: exact, in float32, O(L) memory.

    Each channel `k` runs `h_t = q * h_{t-1} + p_beta * u_t` (per EMA
    dimension) and emits `y_t = sum_n gamma * h_t`. Within a block of
    `block` steps that is a Toeplitz matmul with the kernel
    `sum_n p_beta * gamma * q**lag`; across blocks the state at each block
    end is carried by a log-depth prefix scan with the constant factor
    `q**block`, and decays into the next block as `q**(t + 1)`.

    With `segments` (packed documents) the state restarts where a segment
    starts: `h_t = p_beta * u_t` there. The Toeplitz matmul is masked to
    pairs in the same segment, a block's end state counts only its last
    segment, and the scan and the carry into a block stop at a boundary.
    Every term is a sum of in-segment products (nothing is subtracted),
    so the result is as exact as without segments.

    Args:
        u: float32 `[K, B, L]` (channels first: the per-channel matmuls
            are fastest so) with a static `L`.
        p_beta, q, gamma: float32 `[K, N]`.
        block: int. Block length.
        segments: optional int `[B, L]`: a label per position, distinct
            for each maximal run (see `mega_documents.document_runs`).

    Returns:
        `(y [K, B, L], state [B, K, N])`, the state after the last step.
    """
    length = ops.shape(u)[-1]
    if isinstance(length, int):
        block = min(block, length)
    pad = (-length) % block
    # Zeros in front leave a zero state at zero: outputs and state are exact.
    u = ops.pad(u, [[0, 0], [0, 0], [pad, 0]])
    blocks = (length + pad) // block  # a tensor when the length is unknown
    powers = decay_powers(q, ops.arange(block + 1, dtype="float32"))
    kernel = ops.einsum("kn,knt->kt", p_beta * gamma, powers[..., :-1])
    toeplitz = _lower_toeplitz(kernel)  # [K, t, s]
    if isinstance(blocks, int):
        u = ops.reshape(u, (ops.shape(u)[0], ops.shape(u)[1], blocks, block))
    else:
        u = ops.reshape(u, (ops.shape(u)[0], ops.shape(u)[1], -1, block))
    to_end = p_beta[:, :, None] * ops.flip(powers[..., :-1], axis=-1)
    decay = powers[..., -1][:, None, None, :]  # q**block, [K, 1, 1, N]
    if segments is None:
        y = ops.einsum("kbjs,kts->kbjt", u, toeplitz)
        # State at the end of each block from its own inputs, then the scan.
        state = ops.einsum("kbjs,kns->kbjn", u, to_end)
        carried = None
    else:
        # The padding in front is a segment of its own (-1; its inputs
        # are zero anyway).
        segments = ops.pad(
            ops.cast(segments, "int32"), [[0, 0], [pad, 0]], constant_values=-1
        )
        segments = ops.reshape(
            segments, (ops.shape(segments)[0], -1, block)
        )  # [B, J, C]
        same = ops.cast(
            segments[:, :, :, None] == segments[:, :, None, :], "float32"
        )  # [B, J, t, s]
        # The masked Toeplitz differs per block: a product and a sum (a
        # three-operand einsum is many times slower on CPU).
        y = ops.sum(
            toeplitz[:, None, None] * same[None] * u[:, :, :, None, :], -1
        )
        last = ops.cast(segments == segments[:, :, -1:], "float32")
        state = ops.einsum("kbjs,kns->kbjn", u * last[None], to_end)
        # The segment each block ends in, and the one before it ended in.
        ends = segments[:, :, -1]
        before_end = ops.concatenate([segments[:, :1, 0], ends[:, :-1]], 1)
        # A block keeps the state carried into it iff it has no boundary.
        kept = ops.cast(ends == before_end, "float32")  # [B, J]
        decay = decay * kept[None, :, :, None]
        # Positions of a block still in the segment the last block ended in.
        carried = ops.cast(segments == before_end[:, :, None], "float32")

    def scan_step(shift, state, decay):
        widths = [[0, 0], [0, 0], [shift, 0], [0, 0]]
        earlier = ops.pad(state[:, :, :-shift], widths)
        state = state + decay * earlier
        if segments is not None:
            earlier = ops.pad(decay[:, :, :-shift], widths, constant_values=1)
            decay = decay * earlier
        else:
            decay = decay * decay
        return shift * 2, state, decay

    if isinstance(blocks, int):
        shift = 1
        while shift < blocks:
            shift, state, decay = scan_step(shift, state, decay)
    else:  # An unknown length (TF graphs): the same scan as a loop.
        _, state, decay = ops.while_loop(
            lambda shift, state, decay: shift < blocks,
            scan_step,
            (ops.convert_to_tensor(1, "int32"), state, decay),
        )
    if not isinstance(blocks, int) or blocks > 1:
        before = ops.pad(state[:, :, :-1], [[0, 0], [0, 0], [1, 0], [0, 0]])
        incoming = ops.einsum(
            "kbjn,knt->kbjt", before, gamma[:, :, None] * powers[..., 1:]
        )
        if carried is not None:
            incoming = incoming * carried[None]
        y = y + incoming
    y = ops.reshape(y, (ops.shape(y)[0], ops.shape(y)[1], -1))
    return y[..., pad:], ops.transpose(state[:, :, -1], (1, 0, 2))


def _alternating_signs(n):
    return [1.0 if i % 2 == 0 else -1.0 for i in range(n)]


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaEMA(keras.layers.Layer):
    """Multi-dimensional damped EMA, Mega's moving-average sublayer.

    Each of the `hidden_dim` channels is expanded into `ema_dim` damped EMAs
    (`h_t = p * beta * x_t + q * h_{t-1}` with `q = 1 - p * delta`), projected
    back with `gamma` and added to `omega * x`, then SiLU:

        y = silu(conv(x, k) + omega * x),
        k[d, t] = sum_n gamma[d, n] / sqrt(N) * p[d, n] * beta[d, n] * q[d, n]**t

    The convolution runs in float32, whatever the compute dtype: by blocks
    (`block_ema`: a Toeplitz matmul per block, the state carried across
    blocks; no FFT, exact) when the length is static, else, and with
    `truncation`, as one FFT. With `bidirectional=True` a second kernel
    looks into the future.
    `step()` advances the same computation as a recurrence with an explicit
    state `[B, hidden_dim, ema_dim]` (causal only), one token or a block at
    a time; it equals `call()` on the concatenated sequence.

    Weight names follow HF's `MegaMultiDimensionDampedEma` (`damping_factor`
    is the paper's alpha, `decay_factor` its delta, `ema_expansion_matrix`
    beta, `kernel_projection_matrix` gamma, `residual_weight` omega).

    Args:
        hidden_dim: int. Channels `D`.
        ema_dim: int. EMA dimensions per channel `N` (HF
            `ema_projection_size`).
        bidirectional: bool. Add a backward EMA (encoders).
        truncation: int or None. Cut the kernel after this many lags.
        ema_delta_alpha_range: float. Init std of the damping/decay logits.
        ema_beta_range: float. Init std of beta around `[1, -1, 1, ...]`.
        ema_gamma_omega_range: float. Init std of gamma and omega.
        ema_init: "paper" (Mega's init, the default) or "timescales" (decay
            rates spread over timescales up to `ema_max_timescale`, see
            `keras_mega.layers.ema_initializers`).
        ema_max_timescale: float. Slowest timescale of "timescales".

    Example:
    >>> ema = MegaEMA(hidden_dim=8, ema_dim=4, bidirectional=False)
    >>> x = keras.random.normal((2, 10, 8))
    >>> y = ema(x)
    >>> y1, state = ema.step(x[:, :6])
    >>> y2, state = ema.step(x[:, 6:], state)  # together equal `y`
    """

    def __init__(
        self,
        hidden_dim,
        ema_dim=16,
        bidirectional=False,
        truncation=None,
        ema_delta_alpha_range=0.2,
        ema_beta_range=0.02,
        ema_gamma_omega_range=1.0,
        ema_init="paper",
        ema_max_timescale=1024.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.ema_init = check_choice("ema_init", ema_init, EMA_INITS)
        self.ema_max_timescale = float(ema_max_timescale)
        self.hidden_dim = int(hidden_dim)
        self.ema_dim = int(ema_dim)
        self.bidirectional = bool(bidirectional)
        self.truncation = check_positive_or_none("truncation", truncation)
        self.ema_delta_alpha_range = ema_delta_alpha_range
        self.ema_beta_range = ema_beta_range
        self.ema_gamma_omega_range = ema_gamma_omega_range
        self.scale = math.sqrt(1.0 / self.ema_dim)

    def build(self, input_shape=None):
        kernel_dim = self.hidden_dim * (2 if self.bidirectional else 1)
        shape = (kernel_dim, self.ema_dim)
        normal = keras.initializers.RandomNormal

        def beta_init(shape, dtype=None):
            signs = ops.convert_to_tensor(_alternating_signs(shape[-1]), dtype)
            noise = normal(stddev=self.ema_beta_range)(shape, dtype)
            return noise + signs

        # One initializer instance per weight: an unseeded Keras initializer
        # draws the same values on every call, and HF draws them apart.
        damping_init = normal(stddev=self.ema_delta_alpha_range)
        decay_init = normal(stddev=self.ema_delta_alpha_range)
        if self.ema_init == "timescales":
            damping, decay = timescale_logits(
                kernel_dim,
                self.ema_dim,
                self.ema_max_timescale,
                noise=self.ema_delta_alpha_range,
            )
            damping_init = keras.initializers.Constant(damping)
            decay_init = keras.initializers.Constant(decay)
        self.damping_factor = self.add_weight(
            name="damping_factor",
            shape=shape,
            initializer=damping_init,
            autocast=False,
        )
        self.decay_factor = self.add_weight(
            name="decay_factor",
            shape=shape,
            initializer=decay_init,
            autocast=False,
        )
        self.ema_expansion_matrix = self.add_weight(
            name="ema_expansion_matrix",
            shape=shape,
            initializer=beta_init,
            autocast=False,
        )
        self.kernel_projection_matrix = self.add_weight(
            name="kernel_projection_matrix",
            shape=shape,
            initializer=normal(stddev=self.ema_gamma_omega_range),
            autocast=False,
        )
        self.residual_weight = self.add_weight(
            name="residual_weight",
            shape=(self.hidden_dim,),
            initializer=normal(stddev=self.ema_gamma_omega_range),
        )
        self.built = True

    def coefficients(self):
        """Returns float32 `(p * beta, q, gamma / sqrt(N))`, each `[kd, N]`."""
        p = ops.sigmoid(ops.cast(self.damping_factor, "float32"))
        q = 1.0 - p * ops.sigmoid(ops.cast(self.decay_factor, "float32"))
        beta = ops.cast(self.ema_expansion_matrix, "float32")
        gamma = ops.cast(self.kernel_projection_matrix, "float32")
        return p * beta, q, gamma * self.scale

    def kernel(self, length):
        """Returns the float32 kernel `[kernel_dim, length]`."""
        p_beta, q, gamma = self.coefficients()
        lags = ops.arange(length, dtype="float32")
        powers = decay_powers(q, lags)
        kernel = ops.einsum("dn,dnl->dl", p_beta * gamma, powers)
        if self.truncation is not None:
            kernel = kernel * ops.cast(lags < self.truncation, "float32")
        return kernel

    def _output(self, x, ema):
        """`silu(ema + omega * x)`, back in the compute dtype."""
        x32 = ops.cast(x, "float32")
        omega = ops.cast(self.residual_weight, "float32")
        return ops.cast(ops.silu(ema + x32 * omega), self.compute_dtype)

    def _masked_channels_first(self, x, padding_mask):
        """float32 `[D, B, L]` from `x` `[B, L, D]`, padding zeroed."""
        x = ops.cast(x, "float32")
        if padding_mask is not None:
            x = x * ops.cast(padding_mask, "float32")[:, :, None]
        return ops.transpose(x, (2, 0, 1))

    def call(self, x, padding_mask=None, document_ids=None):
        """`x`: `[B, L, hidden_dim]`; `padding_mask`: `[B, L]`, 1 = keep;
        `document_ids`: optional int `[B, L]` (packed documents, see
        `keras_mega.layers.mega_documents`).

        Padded positions are zeroed before the convolution. With
        `document_ids` the EMA restarts at every document boundary (in
        both directions when bidirectional): each token's output is that of
        its document run alone.
        """
        u = self._masked_channels_first(x, padding_mask)
        length = _static_int(ops.shape(x)[1])
        if document_ids is not None:
            ema = self._document_ema(u, length, document_ids)
        elif length is None or self.truncation is not None:
            ema = self._fft_ema(u)
        elif self.bidirectional:
            # The backward EMA is the forward one on the reversed sequence.
            both = ops.concatenate([u, ops.flip(u, axis=-1)], axis=0)
            ema, _ = block_ema(both, *self.coefficients())
            forward, backward = ops.split(ema, 2, axis=0)
            ema = forward + ops.flip(backward, axis=-1)
        else:
            ema, _ = block_ema(u, *self.coefficients())
        return self._output(x, ops.transpose(ema, (1, 2, 0)))

    def _document_ema(self, u, length, document_ids):
        """The EMA restarting at document boundaries, `[D, B, L]`.

        Always the block path (`block_ema` with segments): a convolution
        over the whole row (the FFT path) would mix documents, and masking
        its output cannot undo that. A truncated kernel is the full one
        minus its tail beyond `truncation` lags, and that tail is the EMA
        state `truncation` steps back, decayed: a second set of channels
        of the same `block_ema` (with `gamma * q**truncation`), shifted by
        `truncation` and kept where that state is in the same document.
        """
        segments = document_runs(document_ids)
        p_beta, q, gamma = self.coefficients()
        if not self.bidirectional:
            return self._segment_ema(u, segments, p_beta, q, gamma)
        # The backward EMA is the forward one on the reversed row (whose
        # documents are the same runs, reversed).
        p_beta, q, gamma = [ops.split(c, 2, axis=0) for c in (p_beta, q, gamma)]
        forward = self._segment_ema(u, segments, p_beta[0], q[0], gamma[0])
        backward = self._segment_ema(
            ops.flip(u, axis=-1),
            ops.flip(segments, axis=1),
            p_beta[1],
            q[1],
            gamma[1],
        )
        return forward + ops.flip(backward, axis=-1)

    def _segment_ema(self, u, segments, p_beta, q, gamma):
        """One direction of `_document_ema`: `[K, B, L]`."""
        if self.truncation is None:
            return block_ema(u, p_beta, q, gamma, DOCUMENT_EMA_BLOCK, segments)[
                0
            ]
        lag = self.truncation
        channels = ops.shape(u)[0]
        tail_gamma = gamma * ops.exp(lag * ops.log(q))
        both, _ = block_ema(
            ops.concatenate([u, u], axis=0),
            ops.concatenate([p_beta, p_beta], axis=0),
            ops.concatenate([q, q], axis=0),
            ops.concatenate([gamma, tail_gamma], axis=0),
            DOCUMENT_EMA_BLOCK,
            segments,
        )
        full, tail = both[:channels], both[channels:]
        length = ops.shape(u)[-1]
        # The state `lag` steps back, where it is in the same document.
        tail = ops.pad(tail, [[0, 0], [0, 0], [lag, 0]])[..., :length]
        back = ops.pad(segments, [[0, 0], [lag, 0]], constant_values=-1)
        back = back[:, :length]
        same = ops.cast(back == segments, "float32")
        return full - tail * same[None]

    def _fft_ema(self, u):
        """The EMA as one FFT convolution: any length, and truncation."""
        kernel = self.kernel(ops.shape(u)[-1])
        if self.bidirectional:
            forward, backward = ops.split(kernel, 2, axis=0)
            return fft_convolution(u, forward, backward)
        return fft_convolution(u, kernel)

    def state_at(self, x, position, padding_mask=None, document_ids=None):
        """The recurrent state after the tokens before `position`.

        `h[d, n] = sum_{s < position} q**(position - 1 - s) * p * beta * x_s`,
        computed in parallel from a whole sequence `x` `[B, L, hidden_dim]`
        (later tokens are ignored, not zeroed: zeroed inputs would still
        decay the state). `position` may be a scalar tensor. With
        `document_ids` `[B, L]` only the document of token `position - 1`
        counts (the state restarted where it began).
        """
        u = self._masked_channels_first(x, padding_mask)  # [D, B, L]
        if document_ids is not None:
            runs = document_runs(document_ids)
            last = ops.maximum(ops.convert_to_tensor(position, "int32") - 1, 0)
            current = ops.take(runs, ops.reshape(last, (1,)), axis=1)
            u = u * ops.cast(runs == current, "float32")[None]
        p_beta, q, _ = self.coefficients()
        steps = ops.arange(ops.shape(u)[-1], dtype="float32")
        lag = ops.cast(position, "float32") - 1.0 - steps  # [L]
        seen = ops.cast(lag >= 0, "float32")
        lag = ops.maximum(lag, 0.0)
        weights = decay_powers(q, lag) * seen
        return ops.einsum("dbl,dnl->bdn", u, p_beta[:, :, None] * weights)

    def initial_state(self, batch_size):
        return ops.zeros((batch_size, self.hidden_dim, self.ema_dim), "float32")

    def step(
        self,
        x,
        state=None,
        padding_mask=None,
        document_ids=None,
        previous_document_ids=None,
    ):
        """Advances the EMA over a block of tokens as a recurrence.

        Args:
            x: `[B, T, hidden_dim]`, the next `T >= 1` tokens.
            state: float32 `[B, hidden_dim, ema_dim]`, the EMA state after the
                previous tokens (`None`: start of the sequence).
            padding_mask: optional `[B, T]`; masked inputs count as zero.
            document_ids: optional int `[B, T]`, the tokens' documents
                (packed documents): the state restarts at each boundary.
            previous_document_ids: int `[B]`, the document of the token
                before `x` (needed with `document_ids` and a `state`): a
                first token of another document does not see `state`.

        Returns:
            `(y, new_state)`: the output `[B, T, hidden_dim]`, equal to
            `call()` over the whole sequence at these positions, and the
            state after the block.
        """
        if self.bidirectional:
            raise ValueError(
                "A bidirectional EMA looks at future tokens and has no "
                "recurrent form. Use bidirectional=False for decoding."
            )
        if self.truncation is not None:
            raise ValueError(
                f"A truncated EMA kernel (truncation={self.truncation}) is not "
                "a recurrence; step() needs truncation=None."
            )
        u = self._masked_channels_first(x, padding_mask)  # [D, B, T]
        p_beta, q, gamma = self.coefficients()
        length = ops.shape(x)[1]
        segments = None
        if document_ids is not None:
            segments = document_runs(document_ids)
        if segments is not None or _static_int(length) is not None:
            block = EMA_BLOCK if segments is None else DOCUMENT_EMA_BLOCK
            ema, new_state = block_ema(u, p_beta, q, gamma, block, segments)
        else:
            ema = fft_convolution(u, self.kernel(length))
            new_state = self.state_at(x, length, padding_mask)
        if state is not None:
            state = ops.cast(state, "float32")
            # The old state decays into every position t: q**(t+1) h_prev.
            powers = decay_powers(q, ops.arange(1, length + 1, dtype="float32"))
            incoming = ops.einsum(
                "bdn,dnl->dbl", state, gamma[:, :, None] * powers
            )
            kept = powers[..., -1][None]
            if document_ids is not None:
                if previous_document_ids is None:
                    raise ValueError(
                        "MegaEMA.step with `document_ids` and a `state` needs "
                        "`previous_document_ids`, the document of the token "
                        "before the block."
                    )
                # Positions before the first boundary continue the state.
                new = document_boundaries(document_ids, previous_document_ids)
                carried = ops.cast(
                    ops.cumsum(ops.cast(new, "int32"), axis=1) == 0, "float32"
                )
                incoming = incoming * carried[None]
                kept = kept * carried[:, -1:, None]
            ema = ema + incoming
            new_state = new_state + state * kept
        return self._output(x, ops.transpose(ema, (1, 2, 0))), new_state

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "hidden_dim": self.hidden_dim,
                "ema_dim": self.ema_dim,
                "bidirectional": self.bidirectional,
                "truncation": self.truncation,
                "ema_delta_alpha_range": self.ema_delta_alpha_range,
                "ema_beta_range": self.ema_beta_range,
                "ema_gamma_omega_range": self.ema_gamma_omega_range,
                "ema_init": self.ema_init,
                "ema_max_timescale": self.ema_max_timescale,
            }
        )
        return config
