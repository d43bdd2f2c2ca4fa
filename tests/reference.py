"""Independent reference for per-time-step gradients: an eager Python loop
over time that watches every hidden state and pre-activation on one tape.

It rebuilds `Input -> [Bidirectional](SharedRNN) -> Dense -> loss` from the
models' weights with plain TensorFlow ops (no while_loop, no custom
gradient), so it shares no code with keras_seq.
"""

import keras
import numpy as np
import tensorflow as tf


def _levels(weights, depth, share_depth):
    sets = [weights[0:3]]
    if share_depth:
        sets += [weights[3:6]] * (depth - 1)
    else:
        sets += [weights[3 * i : 3 * i + 3] for i in range(1, depth)]
    return [[tf.constant(w, tf.float64) for w in s] for s in sets]


def _direction(tape, x, mask, levels, go_backwards, activation=tf.tanh):
    """Run every level in processing order; return per level the lists of
    (h_prev, pre-activation, h) tensors and the top sequence."""
    steps = x.shape[1]
    order = list(range(steps - 1, -1, -1)) if go_backwards else list(range(steps))
    inputs = [x[:, t] for t in order]
    valid = None if mask is None else [mask[:, t : t + 1] for t in order]
    record = []
    for kernel, recurrent_kernel, bias in levels:
        h = tf.zeros((x.shape[0], kernel.shape[1]), tf.float64)
        level = []
        outputs = []
        for k, x_t in enumerate(inputs):
            a = x_t @ kernel + h @ recurrent_kernel + bias
            tape.watch(a)
            new = activation(a)
            if valid is not None:
                new = tf.where(valid[k], new, h)
            tape.watch(new)
            level.append((h, a, new))
            outputs.append(new)
            h = new
        record.append(level)
        inputs = outputs
    return order, record, inputs


def _layer_output(order, top, valid, return_sequences, zero_output_for_mask):
    outputs = top
    if valid is not None:
        seen = np.cumsum(valid[:, order], axis=1) > 0
        keep = valid[:, order] if zero_output_for_mask else seen
        outputs = [tf.where(keep[:, k : k + 1], o, 0.0) for k, o in enumerate(top)]
    if return_sequences:
        return tf.stack(outputs, axis=1)
    return outputs[-1]


def timestep_gradients(model, x, y, mask=None, loss="mse", activation=tf.tanh):
    """Per-time-step ||dL/dh_t|| and contributions for every sublayer.

    Args:
        model: `keras_seq.Sequential([Input, rnn, Dense])`, where rnn is a
            `SharedRNN` or a `Bidirectional(SharedRNN)` (merge "concat"),
            with the weights to evaluate.
        x, y: one batch. mask: optional boolean (batch, time).
        activation: the recurrent layer's activation, as a TF function.

    Returns:
        `({sublayer name: (T,) norms in input order},
          {sublayer name: (T,) contributions in input order},
          loss value)`. Contributions are projected on the direction of the
        full recurrent-kernel gradient (summed over sublayers sharing it).
    """
    rnn_layer, dense = model.layers[0], model.layers[-1]
    if isinstance(rnn_layer, keras.layers.Bidirectional):
        directions = [rnn_layer.forward_layer, rnn_layer.backward_layer]
    else:
        directions = [rnn_layer]
    x = tf.constant(x, tf.float64)
    valid = None if mask is None else np.asarray(mask, bool)
    tf_mask = None if valid is None else tf.constant(valid)
    kernel, bias = (tf.constant(w, tf.float64) for w in dense.get_weights())
    with tf.GradientTape(persistent=True) as tape:
        outputs, records = [], []
        for layer in directions:
            levels = _levels(layer.get_weights(), layer.depth, layer.share_depth)
            order, record, top = _direction(
                tape, x, tf_mask, levels, layer.go_backwards, activation
            )
            zero_out = layer.zero_output_for_mask
            out = _layer_output(order, top, valid, layer.return_sequences, zero_out)
            if layer.go_backwards and layer.return_sequences and len(directions) == 2:
                out = tf.reverse(out, [1])
            outputs.append(out)
            records.append((layer, order, record))
        features = tf.concat(outputs, axis=-1) if len(outputs) == 2 else outputs[0]
        prediction = tf.tensordot(features, kernel, axes=1) + bias
        per_element = keras.losses.get(loss)(tf.constant(y, tf.float64), prediction)
        if valid is not None and per_element.shape.rank == 2:
            # Keras passes the sequence mask on to the loss: padded steps
            # do not count, and the mean is over the valid ones.
            weights = tf.constant(valid, tf.float64)
            value = tf.reduce_sum(per_element * weights) / tf.reduce_sum(weights)
        else:
            value = tf.reduce_mean(per_element)

    norms, contributions = {}, {}
    for layer, order, record in records:
        # The full recurrent-kernel gradient of each distinct weight set.
        grad_u = {}
        for level, steps in enumerate(record):
            key = min(level, 1) if layer.share_depth else level
            for h_prev, a, _ in steps:
                da = tape.gradient(value, a)
                grad_u[key] = grad_u.get(key, 0.0) + tf.transpose(h_prev) @ da
        for level, steps in enumerate(record):
            key = min(level, 1) if layer.share_depth else level
            direction = grad_u[key] / tf.norm(grad_u[key])
            name = f"{layer.name}/level_{level}"
            norm_list, contrib_list = [], []
            for h_prev, a, h in steps:
                norm_list.append(float(tf.norm(tape.gradient(value, h))))
                da = tape.gradient(value, a)
                contrib_list.append(
                    float(tf.reduce_sum((tf.transpose(h_prev) @ da) * direction))
                )
            inverse = np.argsort(order)  # processing index -> input order
            norms[name] = np.asarray(norm_list)[inverse]
            contributions[name] = np.asarray(contrib_list)[inverse]
    del tape
    return norms, contributions, float(value)
