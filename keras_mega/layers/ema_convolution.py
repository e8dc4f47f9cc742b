"""The EMA's convolutions, in float32: one FFT, or blocks (`block_ema`)."""

from keras import ops


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


def document_ema(u, segments, p_beta, q, gamma, truncation=None):
    """`block_ema`, restarting at `segments` when given (packed documents):
    `(y [K, B, L], state [B, K, N] or None)`.

    A truncated kernel is the full one minus its tail beyond `truncation`
    lags, and that tail is the EMA state `truncation` steps back, decayed:
    a second set of channels of the same `block_ema` (with
    `gamma * q**truncation`), shifted by `truncation` and kept where that
    state is in the same document (no state then). Without segments the
    caller has no truncation (that is the FFT's).
    """
    if segments is None:
        return block_ema(u, p_beta, q, gamma)
    if truncation is None:
        return block_ema(u, p_beta, q, gamma, DOCUMENT_EMA_BLOCK, segments)
    channels = ops.shape(u)[0]
    tail_gamma = gamma * ops.exp(truncation * ops.log(q))
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
    # The state `truncation` steps back, where it is in the same document.
    tail = ops.pad(tail, [[0, 0], [0, 0], [truncation, 0]])[..., :length]
    back = ops.pad(segments, [[0, 0], [truncation, 0]], constant_values=-1)
    same = ops.cast(back[:, :length] == segments, "float32")
    return full - tail * same[None], None
