"""Independent reference for Keras's own SimpleRNN, GRU and LSTM: the cell
equations written out in float64 TensorFlow ops, run eagerly one step at a
time on a tape that watches every h_t, c_t and every step's own copy of the
recurrent kernel. Shares no code with keras_seq (or with Keras's cells).

Supports `Input -> [Masking] -> rnn layers -> Dense -> mse` with each rnn a
SimpleRNN/GRU (reset_after=True)/LSTM or a Bidirectional of one (merge
"concat"), masks and go_backwards.
"""

import keras
import numpy as np

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf


def _sigmoid(a):
    return tf.sigmoid(a)


def _cell(kind, weights, x_t, state, kernel):
    """One step. weights: the layer's numpy weights; kernel: this step's
    recurrent kernel (a watched tensor). Returns (h, [h] or [h, c])."""
    w = tf.constant(weights[0], tf.float64)
    b = tf.constant(weights[2], tf.float64)
    if kind == "SimpleRNN":
        h = tf.tanh(x_t @ w + state[0] @ kernel + b)
        return h, [h]
    if kind == "LSTM":
        h_prev, c_prev = state
        i, f, g, o = tf.split(x_t @ w + h_prev @ kernel + b, 4, axis=1)
        c = _sigmoid(f) * c_prev + _sigmoid(i) * tf.tanh(g)
        h = _sigmoid(o) * tf.tanh(c)
        return h, [h, c]
    # GRU, reset_after=True: bias rows = (input, recurrent); gates z, r, h.
    h_prev = state[0]
    x_z, x_r, x_h = tf.split(x_t @ w + b[0], 3, axis=1)
    r_z, r_r, r_h = tf.split(h_prev @ kernel + b[1], 3, axis=1)
    z = _sigmoid(x_z + r_z)
    r = _sigmoid(x_r + r_r)
    hh = tf.tanh(x_h + r * r_h)
    h = z * h_prev + (1 - z) * hh
    return h, [h]


def _direction(tape, layer, x, mask, record):
    kind = type(layer).__name__
    weights = layer.get_weights()
    kernel = tf.constant(weights[1], tf.float64)
    units = layer.cell.units
    batch, steps = x.shape[0], x.shape[1]
    order = list(range(steps))[:: -1 if layer.go_backwards else 1]
    state = [tf.zeros((batch, units), tf.float64)]
    if kind == "LSTM":
        state.append(tf.zeros((batch, units), tf.float64))
    previous = tf.zeros((batch, units), tf.float64)
    outputs, hs, cs, kernels = [], [], [], []
    for t in order:
        step_kernel = tf.identity(kernel)
        tape.watch(step_kernel)
        h, new = _cell(kind, weights, x[:, t], state, step_kernel)
        tape.watch(h)
        new = [h] + new[1:]
        c = new[1] if kind == "LSTM" else None
        if c is not None:
            tape.watch(c)
        if mask is not None:
            valid = tf.constant(mask[:, t : t + 1])
            shown = tf.where(valid, h, 0.0 if layer.zero_output_for_mask else previous)
            new = [tf.where(valid, n, s) for n, s in zip(new, state)]
        else:
            shown = h
        hs.append(h)
        cs.append(c)
        kernels.append(step_kernel)
        outputs.append(shown)
        previous, state = shown, new
    record[layer.name] = (order, hs, cs, kernels)
    if layer.return_sequences:
        return tf.stack(outputs, axis=1)  # processing order, as Keras
    return outputs[-1]


def timestep_gradients(model, x, y, mask=None):
    """Per-time-step ||dL/dh_t||, ||dL/dc_t|| (LSTM) and the contributions
    to the recurrent kernel for every recurrent layer (direction) of `model`.

    Returns:
        `(norms, cell_norms, contributions, loss)`: dicts keyed by the
        layer (direction) name, arrays in input order; contributions are
        projected on the direction of the layer's full recurrent-kernel
        gradient (SGD, no clipping: the applied gradient).
    """
    x = tf.constant(x, tf.float64)
    record = {}
    with tf.GradientTape(persistent=True) as tape:
        h = x
        for layer in model.layers:
            if isinstance(layer, keras.layers.Masking):
                continue
            if isinstance(layer, keras.layers.Bidirectional):
                forward = _direction(tape, layer.forward_layer, h, mask, record)
                backward = _direction(tape, layer.backward_layer, h, mask, record)
                if layer.return_sequences:
                    backward = tf.reverse(backward, [1])
                h = tf.concat([forward, backward], axis=-1)
            elif isinstance(layer, keras.layers.RNN):
                h = _direction(tape, layer, h, mask, record)
            else:  # the Dense head
                kernel, bias = layer.get_weights()
                h = h @ tf.constant(kernel, tf.float64) + bias
        loss = tf.reduce_mean(tf.square(h - tf.constant(y, tf.float64)))
    norms, cell_norms, contributions = {}, {}, {}
    for name, (order, hs, cs, kernels) in record.items():
        back = np.argsort(order)  # processing -> input order
        dh = tape.gradient(loss, hs)
        norms[name] = np.array([np.linalg.norm(g) for g in dh])[back]
        if cs[0] is not None:
            dc = tape.gradient(loss, cs)
            cell_norms[name] = np.array([np.linalg.norm(g) for g in dc])[back]
        per_step = [g.numpy() for g in tape.gradient(loss, kernels)]
        total = np.sum(per_step, axis=0)
        direction = total / np.linalg.norm(total)
        contributions[name] = np.array([np.sum(g * direction) for g in per_step])[back]
    return norms, cell_norms, contributions, float(loss)


def unrolled_gradients(model, x, y, mask=None):
    """What `timestep_gradients` gives, on either backend: the same cell
    equations in float32 `keras.ops`, one Python step at a time, with a zero
    added to every h_t, c_t and every step's copy of the recurrent kernel,
    differentiated by the backend's own autodiff (`jax.grad` or a tape)."""
    ops = keras.ops
    directions = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.Bidirectional):
            directions += [layer.forward_layer, layer.backward_layer]
        elif isinstance(layer, keras.layers.RNN):
            directions.append(layer)
    batch, steps = x.shape[0], x.shape[1]
    zeros = {}
    for layer in directions:
        units, kernel = layer.cell.units, layer.get_weights()[1]
        zeros[layer.name] = [
            np.zeros((steps, batch, units), "float32"),
            np.zeros((steps, batch, units), "float32"),
            np.zeros((steps,) + kernel.shape, "float32"),
        ]

    def sigmoid(a):
        return 1.0 / (1.0 + ops.exp(-a))

    def cell(kind, weights, x_t, state, kernel, eps_h, eps_c):
        w, b = weights[0], weights[2]
        if kind == "SimpleRNN":
            h = ops.tanh(ops.matmul(x_t, w) + ops.matmul(state[0], kernel) + b)
            return [h + eps_h]
        if kind == "LSTM":
            z = ops.matmul(x_t, w) + ops.matmul(state[0], kernel) + b
            i, f, g, o = ops.split(z, 4, axis=1)
            c = sigmoid(f) * state[1] + sigmoid(i) * ops.tanh(g) + eps_c
            return [sigmoid(o) * ops.tanh(c) + eps_h, c]
        x_z, x_r, x_h = ops.split(ops.matmul(x_t, w) + b[0], 3, axis=1)
        r_z, r_r, r_h = ops.split(ops.matmul(state[0], kernel) + b[1], 3, axis=1)
        z, r = sigmoid(x_z + r_z), sigmoid(x_r + r_r)
        h = z * state[0] + (1 - z) * ops.tanh(x_h + r * r_h)
        return [h + eps_h]

    def direction(layer, inputs, probes):
        kind = type(layer).__name__
        weights = layer.get_weights()
        eps_h, eps_c, eps_k = probes
        units = layer.cell.units
        state = [ops.zeros((batch, units))] * (2 if kind == "LSTM" else 1)
        previous = ops.zeros((batch, units))
        outputs = []
        order = list(range(steps))[:: -1 if layer.go_backwards else 1]
        for k, t in enumerate(order):
            kernel = weights[1] + eps_k[k]
            new = cell(kind, weights, inputs[:, t], state, kernel, eps_h[k], eps_c[k])
            shown = new[0]
            if mask is not None:
                valid = mask[:, t : t + 1]
                hidden = (
                    ops.zeros_like(shown) if layer.zero_output_for_mask else previous
                )
                shown = ops.where(valid, shown, hidden)
                new = [ops.where(valid, n, s) for n, s in zip(new, state)]
            outputs.append(shown)
            previous, state = shown, new
        if layer.return_sequences:
            return ops.stack(outputs, axis=1)  # processing order, as Keras
        return outputs[-1]

    names = list(zeros)

    def loss(*flat):
        probes = {n: flat[3 * i : 3 * i + 3] for i, n in enumerate(names)}
        h = ops.convert_to_tensor(x)
        for layer in model.layers:
            if isinstance(layer, keras.layers.Masking):
                continue
            if isinstance(layer, keras.layers.Bidirectional):
                forward = direction(
                    layer.forward_layer, h, probes[layer.forward_layer.name]
                )
                backward = direction(
                    layer.backward_layer, h, probes[layer.backward_layer.name]
                )
                if layer.return_sequences:
                    backward = ops.flip(backward, 1)
                h = ops.concatenate([forward, backward], axis=-1)
            elif isinstance(layer, keras.layers.RNN):
                h = direction(layer, h, probes[layer.name])
            else:  # the Dense head
                kernel, bias = layer.get_weights()
                h = ops.matmul(h, kernel) + bias
        return ops.mean(ops.square(h - y))

    flat = [z for n in names for z in zeros[n]]
    if keras.backend.backend() == "jax":
        import jax

        value = float(loss(*flat))
        grads = jax.grad(loss, argnums=tuple(range(len(flat))))(*flat)
    else:
        flat = [tf.convert_to_tensor(z) for z in flat]
        with tf.GradientTape() as tape:
            tape.watch(flat)
            result = loss(*flat)
        value = float(result)
        grads = tape.gradient(result, flat)
    norms, cell_norms, contributions = {}, {}, {}
    for i, layer in enumerate(directions):
        dh, dc, dk = (np.asarray(g) for g in grads[3 * i : 3 * i + 3])
        back = slice(None, None, -1) if layer.go_backwards else slice(None)
        norms[layer.name] = np.sqrt(np.sum(dh**2, axis=(1, 2)))[back]
        if type(layer).__name__ == "LSTM":
            cell_norms[layer.name] = np.sqrt(np.sum(dc**2, axis=(1, 2)))[back]
        total = dk.sum(axis=0)
        per_step = np.sum(dk * (total / np.linalg.norm(total)), axis=(1, 2))
        contributions[layer.name] = per_step[back]
    return norms, cell_norms, contributions, value


def assert_frame_matches(monitor, reference, mask=None, atol=1e-9):
    """The monitor's first recorded step against a reference's `(norms,
    cell_norms, contributions, loss)`: per-step ||dL/dh_t||, contributions
    and ||dL/dc_t|| (NaN without a carry) at rtol 1e-4 (`atol` for the
    norms, 10x it for the contributions), the valid fraction under `mask`,
    and the loss."""
    norms, cell_norms, contributions, loss = reference
    frame = monitor.timestep_frame()
    assert sorted(frame.layer.unique()) == sorted(f"{n}/level_0" for n in norms)
    for name in norms:
        rows = frame[frame.layer == f"{name}/level_0"].sort_values("timestep")
        np.testing.assert_allclose(rows.grad_norm, norms[name], rtol=1e-4, atol=atol)
        np.testing.assert_allclose(
            rows.contribution, contributions[name], rtol=1e-4, atol=10 * atol
        )
        if name in cell_norms:
            np.testing.assert_allclose(
                rows.cell_grad_norm, cell_norms[name], rtol=1e-4, atol=atol
            )
        else:
            assert rows.cell_grad_norm.isna().all()
        if mask is not None:
            np.testing.assert_allclose(rows.valid_fraction, mask.mean(axis=0))
    recorded = monitor.to_frame().loss.iloc[0]
    assert abs(recorded - loss) <= 1e-5 * abs(loss), (recorded, loss)
