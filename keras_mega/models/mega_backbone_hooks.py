"""keras-hub's hooks on `MegaBackbone`: LoRA, GPTQ/AWQ, the layout map."""

import keras

# `default_lora_layer_names()`, in order.
LORA_LAYER_NAMES = ("v_proj", "mx_proj", "h_proj", "fc1", "fc2")


class MegaBackboneHooks:
    """The keras-hub `Backbone` methods `MegaBackbone` gives its own
    meaning (a mixin placed before `Backbone`): strict `enable_lora`, the
    projections LoRA adapts by default, the blocks under the name GPTQ/AWQ
    look for, and a Megatron-style layout map."""

    @property
    def transformer_layers(self):
        """The blocks, under the name keras-hub's GPTQ/AWQ paths look for."""
        return self.mega_layers

    def default_lora_layer_names(self):
        """The projections `enable_lora` adapts by default (those present):
        each block's attention value `v_proj`, gate `mx_proj` (gates,
        queries/keys and the output candidate) and output `h_proj`
        projections (cross attention's `v_proj`/`h_proj` too), and the
        FFN's `fc1`/`fc2`."""
        present = {layer.name for layer in self._flatten_layers()}
        return [name for name in LORA_LAYER_NAMES if name in present]

    def enable_lora(self, rank, target_layer_names=None):
        """Freezes the backbone and adds rank-`rank` LoRA adapters.

        keras-hub's `Backbone.enable_lora`, strict: a target name that
        matches no layer with weights, or a layer that cannot take LoRA,
        is an error instead of a frozen, untrainable backbone. A task's
        head stays trainable. The adapters start at zero: the outputs do
        not change until they train.

        Args:
            rank: int. Rank of the adapters.
            target_layer_names: list of layer names; defaults to
                `default_lora_layer_names()`.

        Example:
        ```python
        classifier.backbone.enable_lora(4)
        classifier.fit(...)  # trains the adapters and the head
        classifier.backbone.save_lora_weights("adapters.lora.h5")
        ```
        """
        if target_layer_names is None:
            target_layer_names = self.default_lora_layer_names()
        target_layer_names = list(target_layer_names)
        layers = {
            layer.name: layer
            for layer in self._flatten_layers(include_self=False)
            if layer.weights
        }
        missing = [name for name in target_layer_names if name not in layers]
        unsupported = [
            name
            for name in target_layer_names
            if name in layers and not hasattr(layers[name], "enable_lora")
        ]
        if missing or unsupported or not target_layer_names:
            raise ValueError(
                "enable_lora: "
                + (f"no layer named {missing}. " if missing else "")
                + (f"{unsupported} cannot take LoRA. " if unsupported else "")
                + ("no target layers. " if not target_layer_names else "")
                + "Layers that can: "
                + ", ".join(
                    sorted(
                        name
                        for name, layer in layers.items()
                        if hasattr(layer, "enable_lora")
                    )
                )
                + "."
            )
        super().enable_lora(rank, target_layer_names=target_layer_names)

    @staticmethod
    def get_layout_map(
        device_mesh,
        model_parallel_dim_name="model",
        data_parallel_dim_name="batch",
    ):
        """A `keras.distribution.LayoutMap` for model parallelism.

        Megatron-style sharding, as keras-hub's backbones do it: the token
        embedding and the input projections of each sublayer (`v_proj`,
        `mx_proj`, `fc1`, cross attention's `q_proj`/`k_proj`) are split
        along their output units on the model axis, the output projections
        (`h_proj`, `fc2`) along their input units. The EMA parameters,
        norms and biases (small) are replicated.

        Args:
            device_mesh: `keras.distribution.DeviceMesh`.
            model_parallel_dim_name: mesh axis the weights are split on.
            data_parallel_dim_name: mesh axis the batch is split on.

        Example:
        ```python
        mesh = keras.distribution.DeviceMesh(
            (2, 4), ["batch", "model"], keras.distribution.list_devices()
        )
        distribution = keras.distribution.ModelParallel(
            layout_map=MegaBackbone.get_layout_map(mesh),
            batch_dim_name="batch",
        )
        with distribution.scope():
            backbone = MegaBackbone.from_preset("/path/to/preset")
        ```
        """
        if not isinstance(device_mesh, keras.distribution.DeviceMesh):
            raise ValueError(
                "Expected a keras.distribution.DeviceMesh; received "
                f"{type(device_mesh).__name__}."
            )
        for name in (model_parallel_dim_name, data_parallel_dim_name):
            if name not in device_mesh.axis_names:
                raise ValueError(
                    f"Axis {name!r} is not in the device mesh's axis names "
                    f"{tuple(device_mesh.axis_names)}."
                )
        model, data = model_parallel_dim_name, data_parallel_dim_name
        layout_map = keras.distribution.LayoutMap(device_mesh)
        layout_map["token_embedding/embeddings"] = (model, data)
        layout_map[
            "mega_layer_.*/(v_proj|mx_proj|fc1|q_proj|k_proj)/kernel"
        ] = (
            data,
            model,
        )
        layout_map["mega_layer_.*/(h_proj|fc2)/kernel"] = (model, data)
        return layout_map
