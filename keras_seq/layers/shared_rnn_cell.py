import keras

from keras_seq import _validation as validation


@keras.saving.register_keras_serializable(package="keras_seq")
class SharedRNNCell(keras.layers.Layer):
    """Elman cell whose weights are shared by every time step and, optionally,
    by every stacked sublayer after the first.

    Each sublayer computes `h_t = activation(x_t @ W + h_{t-1} @ U + b)`.
    With `depth=1` the cell holds exactly the weights of
    `keras.layers.SimpleRNNCell` in the same `get_weights()` order
    (`kernel`, `recurrent_kernel`, `bias`), so trained SimpleRNN weights load
    into it and give the same outputs and gradients. With `depth > 1` the
    sublayers run in sequence within one time step, like
    `keras.layers.StackedRNNCells`, but the cell owns all the weights, so
    `share_depth=True` sharing survives `get_config`, `.keras` files and
    `keras.layers.Bidirectional`.

    The cell follows the Keras cell protocol and works inside
    `keras.layers.RNN`; `keras_seq.layers.SharedRNN` uses the same weights
    with a much faster loop and an explicit BPTT backward pass.

    Args:
        units: Positive integer, size of each sublayer's state.
        depth: Integer >= 1 (default 1), number of stacked sublayers.
        share_depth: Boolean (default False). If True, sublayers 2..depth
            reuse one weight set (`shared_kernel`, `shared_recurrent_kernel`,
            `shared_bias`), so the parameter count does not grow with depth.
            Requires `depth >= 2`.
        activation: Activation (default `"tanh"`); `None` means linear.
        use_bias: Boolean (default True).
        kernel_initializer: Default `"glorot_uniform"`.
        recurrent_initializer: Default `"orthogonal"`; `"identity"` with
            `activation="relu"` gives the IRNN of Le, Jaitly & Hinton (2015).
            Use `keras.initializers.Orthogonal(gain=...)` or
            `keras.initializers.Identity(gain=...)` for a gain.
        bias_initializer: Default `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: Default
            None.
        kernel_constraint, recurrent_constraint, bias_constraint: Default
            None. `keras_seq.constraints.SpectralNorm()` bounds the spectral
            norm of the recurrent kernel.
        dropout: Float in [0, 1) (default 0), dropout on each sublayer's input.
        recurrent_dropout: Float in [0, 1) (default 0), dropout on h_{t-1}.
        seed: Optional integer seed for dropout.

    Call arguments:
        inputs: `(batch, features)` tensor, one time step.
        states: list of `depth` tensors of shape `(batch, units)`.
        training: Boolean, whether dropout applies.

    Returns:
        `(output, new_states)`: the top sublayer's new state and the list of
        all sublayers' new states.

    Note:
        Inside `keras.layers.RNN` the cell draws fresh dropout masks at every
        step (Keras's own mask caching is private API); `SharedRNN` draws
        one mask per sequence, as `keras.layers.SimpleRNN` does.

    Example:

    >>> import numpy as np, keras, keras_seq
    >>> cell = keras_seq.layers.SharedRNNCell(8, depth=3, share_depth=True)
    >>> layer = keras.layers.RNN(cell, return_sequences=True)
    >>> layer(np.zeros((2, 5, 4), "float32")).shape
    (2, 5, 8)
    """

    def __init__(
        self,
        units,
        depth=1,
        share_depth=False,
        activation="tanh",
        use_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        kernel_regularizer=None,
        recurrent_regularizer=None,
        bias_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        seed=None,
        **kwargs,
    ):
        units = validation.check_positive_int("units", units)
        depth = validation.check_positive_int("depth", depth)
        if not isinstance(share_depth, bool):
            raise TypeError(
                "Argument `share_depth` must be a boolean. "
                f"Received: share_depth={share_depth!r}"
            )
        if share_depth and depth < 2:
            raise ValueError(
                "Argument `share_depth=True` shares weights between stacked "
                "sublayers and needs `depth >= 2`. "
                f"Received: depth={depth}, share_depth={share_depth}"
            )
        validation.check_rate("dropout", dropout)
        validation.check_rate("recurrent_dropout", recurrent_dropout)
        activation = validation.get_activation("activation", activation)
        initializers = {
            name: validation.get_initializer(name, value)
            for name, value in (
                ("kernel_initializer", kernel_initializer),
                ("recurrent_initializer", recurrent_initializer),
                ("bias_initializer", bias_initializer),
            )
        }
        regularizers = {
            name: validation.get_regularizer(name, value)
            for name, value in (
                ("kernel_regularizer", kernel_regularizer),
                ("recurrent_regularizer", recurrent_regularizer),
                ("bias_regularizer", bias_regularizer),
            )
        }
        constraints = {
            name: validation.get_constraint(name, value)
            for name, value in (
                ("kernel_constraint", kernel_constraint),
                ("recurrent_constraint", recurrent_constraint),
                ("bias_constraint", bias_constraint),
            )
        }
        super().__init__(**kwargs)
        self.units = units
        self.depth = depth
        self.share_depth = share_depth
        self.activation = activation
        self.use_bias = use_bias
        self.kernel_initializer = initializers["kernel_initializer"]
        self.recurrent_initializer = initializers["recurrent_initializer"]
        self.bias_initializer = initializers["bias_initializer"]
        self.kernel_regularizer = regularizers["kernel_regularizer"]
        self.recurrent_regularizer = regularizers["recurrent_regularizer"]
        self.bias_regularizer = regularizers["bias_regularizer"]
        self.kernel_constraint = constraints["kernel_constraint"]
        self.recurrent_constraint = constraints["recurrent_constraint"]
        self.bias_constraint = constraints["bias_constraint"]
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed=seed)
        self.state_size = units if depth == 1 else [units] * depth
        self.output_size = units

    def build(self, input_shape):
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError(
                "The last dimension of the inputs to `SharedRNNCell` must be "
                f"defined. Received: input_shape={tuple(input_shape)}"
            )
        self.input_dim = input_dim
        self._level_weights = [self._add_level("", input_dim, first=True)]
        if self.share_depth:
            shared = self._add_level("shared_", self.units)
            self._level_weights += [shared] * (self.depth - 1)
        else:
            self._level_weights += [
                self._add_level("", self.units, suffix=f"_{level}")
                for level in range(1, self.depth)
            ]

    def _add_level(self, prefix, input_dim, suffix="", first=False):
        # Keras 3 returns the same values each time one unseeded initializer
        # instance is called, so every level after the first gets a fresh
        # copy; otherwise all levels would start from identical weights.
        fresh = (lambda i: i) if first else _fresh
        kernel = self.add_weight(
            shape=(input_dim, self.units),
            name=f"{prefix}kernel{suffix}",
            initializer=fresh(self.kernel_initializer),
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        recurrent_kernel = self.add_weight(
            shape=(self.units, self.units),
            name=f"{prefix}recurrent_kernel{suffix}",
            initializer=fresh(self.recurrent_initializer),
            regularizer=self.recurrent_regularizer,
            constraint=self.recurrent_constraint,
        )
        bias = None
        if self.use_bias:
            bias = self.add_weight(
                shape=(self.units,),
                name=f"{prefix}bias{suffix}",
                initializer=fresh(self.bias_initializer),
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        return kernel, recurrent_kernel, bias

    def level_weights(self, level):
        """`(kernel, recurrent_kernel, bias)` of sublayer `level` (bias may be
        None). Sublayers 1..depth-1 return the same variables when
        `share_depth=True`."""
        return self._level_weights[level]

    @property
    def kernel(self):
        return self._level_weights[0][0]

    @property
    def recurrent_kernel(self):
        return self._level_weights[0][1]

    @property
    def bias(self):
        return self._level_weights[0][2]

    def dropout_masks(self, batch_size, training):
        """One input and one recurrent dropout mask per sublayer (or Nones),
        drawn once per sequence as `keras.layers.SimpleRNNCell` does."""
        inputs, recurrent = [None] * self.depth, [None] * self.depth
        if not training:
            return inputs, recurrent
        for level in range(self.depth):
            width = self.input_dim if level == 0 else self.units
            if self.dropout > 0:
                inputs[level] = self._dropout_mask((batch_size, width), self.dropout)
            if self.recurrent_dropout > 0:
                recurrent[level] = self._dropout_mask(
                    (batch_size, self.units), self.recurrent_dropout
                )
        return inputs, recurrent

    def _dropout_mask(self, shape, rate):
        ones = keras.ops.ones(shape, dtype=self.compute_dtype)
        return keras.random.dropout(ones, rate=rate, seed=self.seed_generator)

    def call(self, inputs, states, training=False):
        single = not isinstance(states, (list, tuple))
        states = [states] if single else list(states)
        batch_size = keras.ops.shape(inputs)[0]
        input_masks, recurrent_masks = self.dropout_masks(batch_size, training)
        x = inputs
        new_states = []
        for level in range(self.depth):
            kernel, recurrent_kernel, bias = self._level_weights[level]
            h = states[level]
            if input_masks[level] is not None:
                x = x * input_masks[level]
            if recurrent_masks[level] is not None:
                h = h * recurrent_masks[level]
            a = keras.ops.matmul(x, kernel) + keras.ops.matmul(h, recurrent_kernel)
            if bias is not None:
                a = a + bias
            x = self.activation(a)
            new_states.append(x)
        return x, (new_states[0] if single else new_states)

    def get_initial_state(self, batch_size=None):
        return [
            keras.ops.zeros((batch_size, self.units), dtype=self.compute_dtype)
            for _ in range(self.depth)
        ]

    def get_config(self):
        config = {
            "units": self.units,
            "depth": self.depth,
            "share_depth": self.share_depth,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "recurrent_initializer": keras.initializers.serialize(
                self.recurrent_initializer
            ),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "recurrent_regularizer": keras.regularizers.serialize(
                self.recurrent_regularizer
            ),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "recurrent_constraint": keras.constraints.serialize(
                self.recurrent_constraint
            ),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "dropout": self.dropout,
            "recurrent_dropout": self.recurrent_dropout,
            "seed": self.seed,
        }
        return {**super().get_config(), **config}


def _fresh(initializer):
    """A new instance with the same config (a new default seed if unseeded)."""
    return type(initializer).from_config(initializer.get_config())
