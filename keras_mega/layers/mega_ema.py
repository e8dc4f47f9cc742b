"""Mega's multi-dimensional damped exponential moving average (paper eq. 2-3)."""

import math

import keras
from keras import ops

from keras_mega.layers.ema_convolution import decay_powers
from keras_mega.layers.ema_convolution import document_ema
from keras_mega.layers.ema_convolution import fft_convolution
from keras_mega.layers.ema_initializers import EMA_INITS
from keras_mega.layers.ema_initializers import timescale_logits
from keras_mega.layers.functional import check_choice
from keras_mega.layers.functional import check_positive_or_none
from keras_mega.layers.layer_options import LayerOptions
from keras_mega.layers.mega_documents import document_boundaries
from keras_mega.layers.mega_documents import document_runs
from keras_mega.layers.static_remat import StaticRemat


def _static_int(value):
    return value if isinstance(value, int) else None


def _alternating_signs(n):
    return [1.0 if i % 2 == 0 else -1.0 for i in range(n)]


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaEMA(StaticRemat, LayerOptions, keras.layers.Layer):
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

    OPTIONS = dict(
        ema_dim=16,
        bidirectional=False,
        truncation=None,
        ema_delta_alpha_range=0.2,
        ema_beta_range=0.02,
        ema_gamma_omega_range=1.0,
        ema_init="paper",
        ema_max_timescale=1024.0,
    )

    def __init__(self, hidden_dim, **kwargs):
        options = self.pop_options(kwargs)
        super().__init__(**kwargs)
        self.set_options(options)
        check_choice("ema_init", self.ema_init, EMA_INITS)
        self.ema_max_timescale = float(self.ema_max_timescale)
        self.hidden_dim = int(hidden_dim)
        self.ema_dim = int(self.ema_dim)
        self.bidirectional = bool(self.bidirectional)
        self.truncation = check_positive_or_none("truncation", self.truncation)
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
        initializers = {
            "damping_factor": damping_init,
            "decay_factor": decay_init,
            "ema_expansion_matrix": beta_init,
            "kernel_projection_matrix": normal(
                stddev=self.ema_gamma_omega_range
            ),
        }
        for name, initializer in initializers.items():
            weight = self.add_weight(
                name=name, shape=shape, initializer=initializer, autocast=False
            )
            setattr(self, name, weight)
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
        ema, _ = self._ema(u, document_ids)
        return self._output(x, ops.transpose(ema, (1, 2, 0)))

    def _ema(self, u, document_ids=None):
        """The EMA of `u` `[D, B, L]` and the state after its last step
        (`[B, D, N]`, or None where the algorithm does not give it): the
        one place the algorithm is chosen.

        - `document_ids`: `block_ema` restarting at document boundaries (a
          convolution over the whole row would mix documents; see
          `document_ema` for truncation);
        - an unknown length or `truncation`: one FFT convolution;
        - else `block_ema`, exact and without FFT.

        The backward EMA of a bidirectional one is the forward one on the
        reversed sequence (whose documents are the same runs, reversed).
        """
        length = _static_int(ops.shape(u)[-1])
        if document_ids is None and (
            length is None or self.truncation is not None
        ):
            kernel = self.kernel(ops.shape(u)[-1])
            if self.bidirectional:
                return fft_convolution(u, *ops.split(kernel, 2, axis=0)), None
            return fft_convolution(u, kernel), None
        coefficients = self.coefficients()
        segments = None
        if document_ids is not None:
            segments = document_runs(document_ids)
        if not self.bidirectional:
            return document_ema(u, segments, *coefficients, self.truncation)
        if segments is None:  # Both directions in one call.
            both = ops.concatenate([u, ops.flip(u, axis=-1)], axis=0)
            ema, _ = document_ema(both, None, *coefficients)
            forward, backward = ops.split(ema, 2, axis=0)
        else:
            coefficients = [ops.split(c, 2, axis=0) for c in coefficients]
            forward, backward = zip(*coefficients)
            forward, _ = document_ema(u, segments, *forward, self.truncation)
            backward, _ = document_ema(
                ops.flip(u, axis=-1),
                ops.flip(segments, axis=1),
                *backward,
                self.truncation,
            )
        return forward + ops.flip(backward, axis=-1), None

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
        return self._state_at(u, position)

    def _state_at(self, u, position):
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
        length = ops.shape(x)[1]
        carried = None  # [B, T]: 1 before the block's first boundary.
        if state is not None and document_ids is not None:
            if previous_document_ids is None:
                raise ValueError(
                    "MegaEMA.step with `document_ids` and a `state` needs "
                    "`previous_document_ids`, the document of the token "
                    "before the block."
                )
            new = document_boundaries(document_ids, previous_document_ids)
            carried = ops.cast(
                ops.cumsum(ops.cast(new, "int32"), axis=1) == 0, "float32"
            )
        if _static_int(length) == 1:  # One token (decoding): the recurrence.
            return self._one_step(x, state, padding_mask, carried)
        u = self._masked_channels_first(x, padding_mask)  # [D, B, T]
        ema, new_state = self._ema(u, document_ids)
        if new_state is None:
            new_state = self._state_at(u, length)
        if state is not None:
            state = ops.cast(state, "float32")
            _, q, gamma = self.coefficients()
            # The old state decays into every position t: q**(t+1) h_prev.
            powers = decay_powers(q, ops.arange(1, length + 1, dtype="float32"))
            incoming = ops.einsum(
                "bdn,dnl->dbl", state, gamma[:, :, None] * powers
            )
            kept = powers[..., -1][None]
            if carried is not None:
                # Positions before the first boundary continue the state.
                incoming = incoming * carried[None]
                kept = kept * carried[:, -1:, None]
            ema = ema + incoming
            new_state = new_state + state * kept
        return self._output(x, ops.transpose(ema, (1, 2, 0))), new_state

    def _one_step(self, x, state, padding_mask, carried):
        """`step` for one token `[B, 1, hidden_dim]`: `h = q * h_prev + p *
        beta * x` (`h_prev` where `carried`), `y = sum_n gamma * h`; a few
        ops, not the block algorithm's dozens (eager torch pays per op)."""
        p_beta, q, gamma = self.coefficients()  # [D, N]
        u = ops.cast(x[:, 0], "float32")  # [B, D]
        if padding_mask is not None:
            u = u * ops.cast(padding_mask, "float32")
        new_state = p_beta[None] * u[:, :, None]  # [B, D, N]
        if state is not None:
            state = q[None] * ops.cast(state, "float32")
            if carried is not None:
                state = state * carried[:, :, None]
            new_state = new_state + state
        ema = ops.sum(gamma[None] * new_state, axis=-1)[:, None]  # [B, 1, D]
        return self._output(x, ema), new_state

    def compute_output_shape(self, input_shape):
        return input_shape
