"""Initializations of the EMA decay (`MegaEMA(ema_init=...)`).

"paper": Mega's own init, damping and decay logits drawn from
`N(0, ema_delta_alpha_range)`: per-step decay `q = 1 - p * delta` around
0.75, so every EMA dimension forgets within a few tokens.

"timescales": the `ema_dim` dimensions of every channel get timescales `tau`
spread log-uniformly over `[2, ema_max_timescale]`, with both logits set so
that `p = delta = sqrt(1 / tau)`, i.e. `q = 1 - 1 / tau`. Slow dimensions
(`q` close to 1) carry information across attention chunks from the start
of training.
"""

import numpy as np

EMA_INITS = ("paper", "timescales")


def _logit(p):
    return np.log(p) - np.log1p(-p)


def timescales(ema_dim, max_timescale):
    """The `ema_dim` target timescales `tau` (tokens), `q = 1 - 1 / tau`."""
    return np.geomspace(2.0, max_timescale, ema_dim)


def timescale_logits(kernel_dim, ema_dim, max_timescale, noise=0.0):
    """Damping and decay logits `[kernel_dim, ema_dim]` for the timescales.

    `noise` (std, in logit space) comes from numpy's global generator, which
    `keras.utils.set_random_seed` seeds.
    """
    tau = timescales(ema_dim, max_timescale)
    logits = np.broadcast_to(_logit(np.sqrt(1.0 / tau)), (kernel_dim, ema_dim))
    jitter = noise * np.random.standard_normal((2, kernel_dim, ema_dim))
    return logits + jitter[0], logits + jitter[1]
