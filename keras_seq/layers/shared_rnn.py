import numbers
import warnings

import keras

from keras_seq import _validation as validation
from keras_seq.layers import probes, recurrence
from keras_seq.layers.shared_rnn_cell import SharedRNNCell


@keras.saving.register_keras_serializable(package="keras_seq")
class SharedRNN(keras.layers.RNN):
    """Fast Elman RNN with weights shared across time steps (and optionally
    across stacked sublayers), trained with an explicit BPTT backward pass.

    A drop-in for `keras.layers.SimpleRNN`: same arguments, same outputs and,
    with `depth=1`, the same weights in the same `get_weights()` order. It
    also stacks `depth` recurrent sublayers inside one layer; with
    `share_depth=True` sublayers 2..depth reuse one weight set, and the
    sharing survives `get_config`, `.keras` files and
    `keras.layers.Bidirectional` because one cell (`SharedRNNCell`) owns all
    the weights.

    The forward pass is one loop per sublayer (`tf.while_loop` on
    TensorFlow, `jax.lax.scan` on JAX) doing a single
    `(batch, units) x (units, units)` matmul per step (the input projection
    `x @ W + b` is one large matmul before the loop). The backward pass is a
    hand-written reverse loop (`tf.custom_gradient`, `jax.custom_vjp`) that
    carries the total dL/dh_t back through time and forms dL/dU as one
    contraction after the loop, so training time stays linear in the
    sequence length. Gradients equal the backend's automatic gradient. The
    explicit pass covers the element-wise Keras activations, masks, dropout,
    recurrent dropout, `go_backwards`, `initial_state`, `stateful` and mixed
    precision. With a custom activation callable (not a registered Keras
    activation) the layer falls back to the backend's automatic gradient of
    the same loop.

    By default the backward pass reads every hidden state the forward pass
    kept: training memory grows by several `(batch, timesteps, units)`
    tensors per sublayer. `recompute=k` keeps only every k-th state and
    recomputes the rest in the backward pass, segment by segment, for about
    one more forward pass of time (see `recompute` below).

    It runs under `jit_compile=True` (XLA) when the time dimension is static,
    and without XLA with a dynamic one. Second-order gradients (a gradient of
    a gradient) through the explicit pass are not supported; a custom
    activation callable uses autodiff and supports them.

    Args:
        units: Positive integer, size of each sublayer's state.
        depth: Integer >= 1 (default 1), number of stacked sublayers.
        share_depth: Boolean (default False), see `SharedRNNCell`.
        activation: Default `"tanh"`; `None` means linear.
        use_bias: Default True.
        kernel_initializer: Default `"glorot_uniform"`.
        recurrent_initializer: Default `"orthogonal"`; `"identity"` with relu
            gives the IRNN (Le, Jaitly & Hinton 2015). Gains via
            `keras.initializers.Orthogonal(gain=...)`/`Identity(gain=...)`.
        bias_initializer: Default `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer,
            activity_regularizer: Default None.
        kernel_constraint, recurrent_constraint, bias_constraint: Default
            None; `keras_seq.constraints.SpectralNorm()` for the recurrent
            kernel.
        dropout: Float in [0, 1) (default 0), on each sublayer's input.
        recurrent_dropout: Float in [0, 1) (default 0), on h_{t-1}.
        return_sequences: Default False: return the top sublayer's last
            output; True returns the whole sequence.
        return_state: Default False. If True, also return the last state of
            every sublayer (`depth` tensors).
        go_backwards: Default False. Process the sequence in reverse and
            return the reversed sequence (as `keras.layers.SimpleRNN`).
        stateful: Default False. Carry the last states into the next batch;
            needs a static batch size (`keras.Input(batch_size=...)`).
        zero_output_for_mask: Default False: masked steps output the previous
            output; True outputs zeros (set by `Bidirectional` when returning
            sequences).
        seed: Optional integer seed for dropout.
        unroll: Accepted for `SimpleRNN` compatibility; the loop is never
            unrolled (a warning says so if True).
        recompute: Default None (or 0, False): keep every hidden state for
            the backward pass. An integer k >= 1 (gradient checkpointing):
            the forward pass keeps only every sublayer's state at the start
            of each segment of k steps; the backward pass walks the segments
            from the last, recomputes each segment's states from its
            checkpoint and runs the reverse loop over it. Outputs and
            gradients (and the `GradientMonitor` statistics) are those of
            the default, summed in another order (equal to float rounding);
            training costs one more forward pass. Segments are evened out to
            `ceil(T / ceil(T / k))` steps, at most T. True picks
            k = ceil(sqrt(T)). Memory then grows with T only through the
            input, its gradient and, with `return_sequences`, the output: at
            T=5000, batch 32, 128 units, depth 2 (benchmarks/rnn_speed.py)
            k=100 took the training-memory increase from +607 to +133 MB
            at 1.2x the step time.
            While a `GradientMonitor` records a step, every sublayer's
            states and per-step gradients are built anyway for its
            statistics. Needs a Keras activation by name: with a custom
            activation callable (TensorFlow's automatic gradient) it raises
            `ValueError`.

    Call arguments:
        sequences: `(batch, timesteps, features)` floating-point tensor.
        initial_state: optional list of `depth` tensors `(batch, units)`.
        mask: optional boolean `(batch, timesteps)`; False steps are skipped.
        training: Boolean, whether dropout applies.

    Returns:
        `(batch, units)` or, with `return_sequences`, `(batch, timesteps,
        units)`; with `return_state`, followed by the `depth` last states.

    Raises:
        ValueError: invalid arguments, or inputs/masks/initial states of the
            wrong shape.
        TypeError: arguments of the wrong type, or non-floating inputs.

    Example:

    >>> import numpy as np, keras_seq
    >>> layer = keras_seq.layers.SharedRNN(16, depth=3, share_depth=True)
    >>> layer(np.ones((4, 10, 8), "float32")).shape
    (4, 16)
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
        activity_regularizer=None,
        kernel_constraint=None,
        recurrent_constraint=None,
        bias_constraint=None,
        dropout=0.0,
        recurrent_dropout=0.0,
        return_sequences=False,
        return_state=False,
        go_backwards=False,
        stateful=False,
        zero_output_for_mask=False,
        seed=None,
        unroll=False,
        recompute=None,
        **kwargs,
    ):
        recompute = _check_recompute(recompute)
        for name, value in (
            ("return_sequences", return_sequences),
            ("return_state", return_state),
            ("go_backwards", go_backwards),
            ("stateful", stateful),
            ("zero_output_for_mask", zero_output_for_mask),
            ("use_bias", use_bias),
            ("unroll", unroll),
        ):
            validation.check_bool(name, value)
        if unroll:
            warnings.warn(
                "`SharedRNN(unroll=True)` is accepted for SimpleRNN "
                "compatibility but ignored: the explicit BPTT loop is not "
                "unrolled.",
                stacklevel=2,
            )
        cell = SharedRNNCell(
            units,
            depth=depth,
            share_depth=share_depth,
            activation=activation,
            use_bias=use_bias,
            kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer,
            kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint,
            dropout=dropout,
            recurrent_dropout=recurrent_dropout,
            seed=seed,
            dtype=kwargs.get("dtype", None),
            trainable=kwargs.get("trainable", True),
            name="shared_rnn_cell",
        )
        explicit_bptt = recurrence.supports_explicit_bptt(cell.activation)
        if recompute and not explicit_bptt:
            raise ValueError(
                "Argument `recompute` needs the explicit BPTT pass, which covers "
                'the element-wise Keras activations by name (such as "tanh", '
                '"relu" or "gelu"); the custom activation '
                f"{cell.activation!r} is differentiated by TensorFlow, which "
                "keeps every state. Pass recompute=None or a Keras activation. "
                f"Received: recompute={recompute!r}"
            )
        super().__init__(
            cell,
            return_sequences=return_sequences,
            return_state=return_state,
            go_backwards=go_backwards,
            stateful=stateful,
            zero_output_for_mask=zero_output_for_mask,
            activity_regularizer=activity_regularizer,
            **kwargs,
        )
        self.input_spec = keras.layers.InputSpec(ndim=3)
        self.explicit_bptt = explicit_bptt
        self.recompute = recompute

    # Cell arguments, exposed as on keras.layers.SimpleRNN.
    units = property(lambda self: self.cell.units)
    depth = property(lambda self: self.cell.depth)
    share_depth = property(lambda self: self.cell.share_depth)
    activation = property(lambda self: self.cell.activation)
    use_bias = property(lambda self: self.cell.use_bias)
    kernel_initializer = property(lambda self: self.cell.kernel_initializer)
    recurrent_initializer = property(lambda self: self.cell.recurrent_initializer)
    bias_initializer = property(lambda self: self.cell.bias_initializer)
    kernel_regularizer = property(lambda self: self.cell.kernel_regularizer)
    recurrent_regularizer = property(lambda self: self.cell.recurrent_regularizer)
    bias_regularizer = property(lambda self: self.cell.bias_regularizer)
    kernel_constraint = property(lambda self: self.cell.kernel_constraint)
    recurrent_constraint = property(lambda self: self.cell.recurrent_constraint)
    bias_constraint = property(lambda self: self.cell.bias_constraint)
    dropout = property(lambda self: self.cell.dropout)
    recurrent_dropout = property(lambda self: self.cell.recurrent_dropout)
    seed = property(lambda self: self.cell.seed)

    @property
    def variables(self):
        """Keras's `variables` plus a stateful layer's states.

        Keras 3.15's `RNN` creates a stateful layer's states untracked
        (`_create_state_variables` under `no_automatic_dependency_tracking`),
        so they are not among a model's `non_trainable_variables`. The JAX
        trainer's step is functional over exactly those, so it reads the
        states as constants and drops their updates: no state is carried
        from batch to batch inside `fit`. Listing them here (like a
        `SeedGenerator`'s state: a variable, not a weight) puts them in the
        trainer's state on every backend, and leaves `weights`,
        `get_weights()` and saved files as they are. Keras's own stateful
        RNNs keep the gap (`callbacks.ResetStates` says so on JAX);
        `tests/data/test_truncated_bptt.py` notices when Keras
        tracks them itself.
        """
        variables = super().variables
        if self.stateful and self.states is not None:
            seen = {id(v) for v in variables}
            variables += [
                v for v in keras.tree.flatten(self.states) if id(v) not in seen
            ]
        return variables

    def build(self, sequences_shape, initial_state_shape=None):
        super().build(sequences_shape, initial_state_shape)
        states = self.states
        if self.stateful and states is not None and len(states) > 1:
            # Keras names every state `rnn_state`; listed in `variables`,
            # one path per level keeps `Model.get_state_tree()` working.
            # Set past Keras's attribute tracking, as `RNN` keeps them: not
            # weights, not saved.
            with keras.name_scope(self.name, caller=self):
                named = [
                    keras.Variable(
                        v.value, trainable=False, dtype=v.dtype, name=f"rnn_state_{i}"
                    )
                    for i, v in enumerate(states)
                ]
            object.__setattr__(self, "states", named)
        self.input_spec = keras.layers.InputSpec(ndim=3, axes={-1: self.cell.input_dim})

    def call(self, sequences, initial_state=None, mask=None, training=False):
        initial_state, mask = validation.check_rnn_call(
            self.name, sequences, initial_state, mask, self.depth, self.units
        )
        return super().call(
            sequences, initial_state=initial_state, mask=mask, training=training
        )

    def inner_loop(self, sequences, initial_state, mask, training=False):
        ops = keras.ops
        dtype = self.compute_dtype
        x = ops.transpose(ops.cast(sequences, dtype), [1, 0, 2])  # time-major
        time_mask = None
        if mask is not None:
            time_mask = ops.transpose(ops.cast(mask, "bool"))[:, :, None]
        if self.go_backwards:
            x = ops.flip(x, axis=0)
            if time_mask is not None:
                time_mask = ops.flip(time_mask, axis=0)
        input_masks, recurrent_masks = self.cell.dropout_masks(
            ops.shape(x)[1], training
        )
        run = self._run_recomputing if self.recompute else self._run_levels
        outputs, states = run(
            x, initial_state, time_mask, input_masks, recurrent_masks, dtype
        )
        if outputs is None:
            # Recomputing without return_sequences: the top sublayer's whole
            # sequence was never built; its last output is its last state,
            # shown as below.
            last_output = states[-1]
            if time_mask is not None:
                shown = (
                    time_mask[-1]
                    if self.zero_output_for_mask
                    else ops.any(time_mask, axis=0)
                )
                last_output = ops.where(shown, last_output, ops.zeros_like(last_output))
            return last_output, last_output[:, None], states
        if time_mask is not None:
            # As keras' rnn(): a masked step outputs zeros, or the previous
            # output, which is zero until the first valid step.
            shown = time_mask
            if not self.zero_output_for_mask:
                shown = ops.cast(
                    ops.cumsum(ops.cast(time_mask, "int32"), axis=0), "bool"
                )
            outputs = ops.where(shown, outputs, ops.zeros_like(outputs))
        last_output = outputs[-1]
        if self.return_sequences:
            outputs = ops.transpose(outputs, [1, 0, 2])
        else:
            outputs = last_output[:, None]
        return last_output, outputs, states

    def _weights(self, level, dtype):
        return tuple(
            None if w is None else keras.ops.cast(w, dtype)
            for w in self.cell.level_weights(level)
        )

    def _run_levels(
        self, x, initial_state, time_mask, input_masks, recurrent_masks, dtype
    ):
        """One `recurrence` kernel per sublayer: (top outputs, last states)."""
        kernels = recurrence.kernels()
        recorder = probes.active_recorder()
        # In the compute dtype: a stateful layer's states arrive as float32
        # under mixed precision, and the probes concatenate them with h_t.
        initial_states = [keras.ops.cast(state, dtype) for state in initial_state]
        states = []
        for level in range(self.depth):
            kernel, recurrent_kernel, bias = self._weights(level, dtype)
            if input_masks[level] is not None:
                x = x * input_masks[level]
            xw = kernels.project(x, kernel)
            if bias is not None:
                xw = xw + bias
            probe, record = None, None
            if recorder is not None:
                record = recorder.add(
                    self,
                    level,
                    xw,
                    initial_states[level],
                    recurrent_masks[level],
                    mask=time_mask,
                )
                xw, probe = xw + record.xw_probe, record.h_probe
            x = kernels.recurrence(
                xw,
                initial_states[level],
                recurrent_kernel,
                self.activation,
                mask=time_mask,
                rmask=recurrent_masks[level],
                probe=probe,
                explicit=self.explicit_bptt,
            )
            if record is not None:
                record.outputs = x
            states.append(x[-1])
        return x, states

    def _run_recomputing(
        self, x, initial_state, time_mask, input_masks, recurrent_masks, dtype
    ):
        """All sublayers in one `checkpointed_recurrence` kernel: (top outputs
        or None when only the last one is needed, last states)."""
        kernels = recurrence.kernels()
        recorder = probes.active_recorder()
        initial_states = [keras.ops.cast(state, dtype) for state in initial_state]
        records = []
        if recorder is not None:
            # The probes only take their shape from this (T, B, units) zero.
            like = keras.ops.zeros_like(x[:, :, :1]) + keras.ops.zeros(
                [self.units], dtype
            )
            records = [
                recorder.add(
                    self,
                    level,
                    like,
                    initial_states[level],
                    recurrent_masks[level],
                    mask=time_mask,
                )
                for level in range(self.depth)
            ]
        sequences = "all" if records else ("top" if self.return_sequences else None)
        outputs, states = kernels.checkpointed_recurrence(
            x,
            initial_states,
            [self._weights(level, dtype) for level in range(self.depth)],
            self.activation,
            self.recompute,
            mask=time_mask,
            input_masks=input_masks,
            rmasks=recurrent_masks,
            xw_probes=[r.xw_probe for r in records] if records else None,
            h_probes=[r.h_probe for r in records] if records else None,
            sequences=sequences,
        )
        for record, level_outputs in zip(records, outputs):
            record.outputs = level_outputs
        return (outputs[-1] if outputs else None), states

    def get_config(self):
        config = {
            k: v
            for k, v in self.cell.get_config().items()
            if k not in ("name", "dtype", "trainable")
        }
        config["activity_regularizer"] = keras.regularizers.serialize(
            self.activity_regularizer
        )
        config["recompute"] = self.recompute
        base_config = super().get_config()
        del base_config["cell"]
        del base_config["unroll"]
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    @classmethod
    def from_simple_rnn(cls, layer):
        """A `SharedRNN` with the configuration and (if built) the weights
        of a `keras.layers.SimpleRNN`; outputs and gradients are the same.

        Example:

        >>> import numpy as np, keras, keras_seq
        >>> simple = keras.layers.SimpleRNN(4)
        >>> _ = simple(np.zeros((1, 3, 2), "float32"))
        >>> shared = keras_seq.layers.SharedRNN.from_simple_rnn(simple)
        """
        if not isinstance(layer, keras.layers.SimpleRNN):
            raise TypeError(
                "`SharedRNN.from_simple_rnn()` takes a keras.layers.SimpleRNN. "
                f"Received: layer={layer!r} (of type {type(layer).__name__})"
            )
        config = layer.get_config()
        config["unroll"] = False
        shared = cls.from_config(config)
        if layer.built:
            kernel = layer.cell.kernel
            shared.build((None, None, kernel.shape[0]))
            shared.set_weights(layer.get_weights())
        return shared


def _check_recompute(recompute):
    """`recompute` as given (None, a boolean or an int >= 0), else raises."""
    allowed = (
        "None or 0 (keep every state), True (segments of about sqrt(timesteps) "
        "steps) or an integer k >= 1 (keep every k-th state)"
    )
    if recompute is None or isinstance(recompute, bool):
        return recompute
    if not isinstance(recompute, numbers.Integral):
        raise TypeError(
            f"Argument `recompute` must be {allowed}. "
            f"Received: recompute={recompute!r} (of type {type(recompute).__name__})"
        )
    if recompute < 0:
        raise ValueError(
            f"Argument `recompute` must be {allowed}. Received: recompute={recompute}"
        )
    return int(recompute)
