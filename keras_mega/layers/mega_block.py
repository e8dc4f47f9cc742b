"""One Mega layer: gated attention, optional cross attention, optional FFN."""

import keras

from keras_mega.layers.layer_options import LayerOptions
from keras_mega.layers.layer_options import renamed
from keras_mega.layers.mega_cross_attention import MegaCrossAttention
from keras_mega.layers.mega_gated_attention import MegaGatedAttention
from keras_mega.layers.normalized_ffn import NormalizedFFN
from keras_mega.layers.static_remat import StaticRemat

# Where a block's option names differ from its sublayers' (sublayer's
# name -> block's).
ATTENTION_NAMES = {"normalize_before": "normalize_before_attention"}
FFN_NAMES = {
    "normalize_before": "normalize_before_ffn",
    "activation_dropout": "ffn_activation_dropout",
}

# The sublayers that `MegaBackbone(remat=True)` rematerializes inside each
# block on JAX (nested remat: the gated attention, its EMA, the cross
# attention, the FFN; the gated attention's own parts follow it). A block's
# backward pass then keeps one unit's activations at a time: on JAX, 0.51x
# the temporary memory per token of remat over the blocks alone (XLA's
# buffer analysis at 64K tokens; benchmarks/remat_memory.py). On TensorFlow
# and torch it saved 2% (`backend.nested_remat_saves_memory`).
REMAT_LAYERS = ("mega_layer", "ema_gate", "cross_attn", "nffn")


@keras.saving.register_keras_serializable(package="keras_mega")
class MegaBlock(StaticRemat, LayerOptions, keras.layers.Layer):
    """A Mega layer (HF `MegaBlock`).

    `MegaGatedAttention`, then `MegaCrossAttention` over an encoder output
    when `cross_attention=True`, then `NormalizedFFN` when
    `use_normalized_ffn=True`. Each sublayer has its own residual and norm.

    Args:
        hidden_dim, intermediate_dim, shared_dim, ema_dim, bidirectional,
        causal, chunk_size, truncation, attention_activation,
        relative_position_bias, max_sequence_length, normalization_type,
        norm_affine, activation, dropout, hidden_dropout, attention_dropout,
        feature_dropout, initializer_range, ema_*_range, ema_init,
        ema_max_timescale: see `MegaGatedAttention`.
        normalize_before_attention: bool. Pre-norm of the attention (and
            cross attention) sublayer (HF `normalize_before_mega`).
        use_normalized_ffn: bool. Add the FFN.
        ffn_dim: int. FFN hidden width (HF `nffn_hidden_size`).
        normalize_before_ffn: bool. Pre-norm of the FFN.
        ffn_activation_dropout: float. HF `nffn_activation_dropout_prob`.
        cross_attention: bool. Add cross attention (HF `add_cross_attention`).

    Example:
    >>> block = MegaBlock(hidden_dim=16, intermediate_dim=32, shared_dim=8,
    ...     ema_dim=4, ffn_dim=32)
    >>> block(keras.random.normal((2, 5, 16))).shape
    (2, 5, 16)
    """

    OPTIONS = {
        **renamed(MegaGatedAttention.OPTIONS, ATTENTION_NAMES),
        # The FFN's own options; those it shares with the attention (norm,
        # activation, dropout, ...) have the same value in both.
        **renamed(NormalizedFFN.OPTIONS, FFN_NAMES),
        "use_normalized_ffn": True,
        "ffn_dim": None,
        "cross_attention": False,
    }

    def __init__(self, hidden_dim, intermediate_dim, **kwargs):
        options = self.pop_options(kwargs)
        super().__init__(**kwargs)
        self.set_options(options)
        self.hidden_dim = hidden_dim
        self.intermediate_dim = intermediate_dim
        self.ffn_dim = self.ffn_dim or intermediate_dim

        # === Layers ===
        self.mega_layer = MegaGatedAttention(
            hidden_dim,
            intermediate_dim,
            **self.options_for(MegaGatedAttention, ATTENTION_NAMES),
            name="mega_layer",
            dtype=self.dtype_policy,
        )
        self.cross_attn = None
        if self.cross_attention:
            self.cross_attn = MegaCrossAttention(
                hidden_dim,
                **self.options_for(MegaCrossAttention, ATTENTION_NAMES),
                name="cross_attn",
                dtype=self.dtype_policy,
            )
        self.nffn = None
        if self.use_normalized_ffn:
            self.nffn = NormalizedFFN(
                hidden_dim,
                self.ffn_dim,
                **self.options_for(NormalizedFFN, FFN_NAMES),
                name="nffn",
                dtype=self.dtype_policy,
            )

    def build(self, input_shape):
        shape = (None, None, self.hidden_dim)
        for layer in (self.mega_layer, self.cross_attn, self.nffn):
            if layer is not None:
                layer.build(shape)
        self.built = True

    def call(
        self,
        x,
        padding_mask=None,
        encoder_sequence_output=None,
        encoder_padding_mask=None,
        training=None,
        return_attention_scores=False,
        document_ids=None,
    ):
        """`return_attention_scores=True` also returns the attention weights
        (see `MegaGatedAttention`) and, with cross attention, the cross
        attention weights: `(x, weights)` or `(x, weights, cross_weights)`.
        `document_ids` (int `[B, L]`): packed documents, see
        `MegaGatedAttention.call` (the FFN is per token)."""
        x, weights = self.mega_layer(
            x,
            padding_mask=padding_mask,
            training=training,
            return_attention_scores=True,
            document_ids=document_ids,
        )
        x, cross_weights = self._after_attention(
            x, encoder_sequence_output, encoder_padding_mask, 0, training
        )
        if not return_attention_scores:
            return x
        if cross_weights is None:
            return x, weights
        return x, weights, cross_weights

    def _after_attention(
        self,
        x,
        encoder_sequence_output,
        encoder_padding_mask,
        position,
        training,
    ):
        """Cross attention and FFN, if any: `(x, cross weights or None)`."""
        cross_weights = None
        if self.cross_attn is not None:
            if encoder_sequence_output is None:
                raise ValueError(
                    "This MegaBlock has cross_attention=True: pass "
                    "`encoder_sequence_output`."
                )
            x, cross_weights = self.cross_attn(
                x,
                encoder_sequence_output,
                encoder_padding_mask=encoder_padding_mask,
                query_offset=position,
                training=training,
                return_attention_scores=True,
            )
        if self.nffn is not None:
            x = self.nffn(x, training=training)
        return x, cross_weights

    def prefill(
        self,
        x,
        padding_mask=None,
        position=0,
        max_length=None,
        encoder_sequence_output=None,
        encoder_padding_mask=None,
        document_ids=None,
    ):
        """The full forward and the cache, see `MegaGatedAttention.prefill`."""
        x, cache = self.mega_layer.prefill(
            x, padding_mask, position, max_length, document_ids=document_ids
        )
        x, _ = self._after_attention(
            x, encoder_sequence_output, encoder_padding_mask, 0, False
        )
        return x, cache

    def call_with_cache(
        self,
        x,
        cache,
        position,
        encoder_sequence_output=None,
        encoder_padding_mask=None,
        document_ids=None,
    ):
        """Feeds `x` at `position`, see `MegaGatedAttention.call_with_cache`
        (`document_ids`: the new tokens' documents, for a packed cache).

        Cross attention, if any, recomputes its keys and values from the
        encoder output: they do not grow with the decoded length.
        """
        x, cache = self.mega_layer.call_with_cache(
            x, cache, position, document_ids=document_ids
        )
        x, _ = self._after_attention(
            x, encoder_sequence_output, encoder_padding_mask, position, False
        )
        return x, cache

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(
        self,
        x,
        encoder_sequence_output=None,
        return_attention_scores=False,
        document_ids=None,
        **kwargs,
    ):
        output = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if not return_attention_scores:
            return output
        _, weights = self.mega_layer.compute_output_spec(
            x, return_attention_scores=True, document_ids=document_ids
        )
        if self.cross_attn is None:
            return output, weights
        _, cross = self.cross_attn.compute_output_spec(
            x, encoder_sequence_output, return_attention_scores=True
        )
        return output, weights, cross
