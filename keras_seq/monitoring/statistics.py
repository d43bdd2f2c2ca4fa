"""The monitored step's in-graph statistics: from the weight gradients and
the probes' gradients of one recorded step, the norms the monitor records
(global, applied after clipping, per variable), the per-time-step
||dL/dh_t||, ||dL/dc_t|| and contributions of every recurrent sublayer, all
from the gradient summed over replicas with loss scaling undone."""

import typing

import keras
from keras import ops

from keras_seq.monitoring import guard

# The logs key under which the recording step hands its statistics out.
STATISTICS_KEY = "_keras_seq_gradient_statistics"


class SublayerInfo(typing.NamedTuple):
    """Static description of one recurrent sublayer seen by the step."""

    name: str
    reverse: bool  # processing order is the reverse of input order


def end_aligned(dh, mask):
    """Per-step squared norms of dL/dh over the valid steps only, each
    sequence's valid steps packed against the end (its last valid step at
    index T-1, the one before at T-2, ...), summed over the batch.

    Padded steps carry no gradient in the lower sublayers (nothing above
    reads them) but do in the top one, and a batch padded to T counts
    "steps back" from the wrong place; this makes the padded batch look
    exactly like its unpadded twin.

    Args:
        dh: `(T, B, U)` float32, processing order.
        mask: `(T, B, 1)` bool, processing order, or None (all valid).

    Returns:
        `(aligned_sq, aligned_count, valid_count)`, each `(T,)` float32:
        the summed squares, how many sequences reach each aligned position,
        and how many are valid at each (unaligned) step.
    """
    sq = ops.sum(ops.square(dh), axis=2)  # (T, B)
    steps, batch = ops.shape(sq)[0], ops.shape(sq)[1]
    if mask is None:
        count = ops.full((steps,), ops.cast(batch, "float32"))
        return ops.sum(sq, axis=1), count, count
    valid = ops.cast(mask[:, :, 0], "int32")
    rank = ops.cumsum(valid, axis=0)  # 1..n_b at valid steps
    position = steps - rank[-1:] + rank - 1
    position = ops.where(valid > 0, position, steps)  # padding -> dropped slot
    segments = ops.reshape(position, [-1])
    valid = ops.cast(valid, "float32")
    aligned_sq = ops.segment_sum(
        ops.reshape(sq * valid, [-1]), segments, num_segments=steps + 1
    )[:steps]
    aligned_count = ops.segment_sum(
        ops.reshape(valid, [-1]), segments, num_segments=steps + 1
    )[:steps]
    return aligned_sq, aligned_count, ops.sum(valid, axis=1)


def _dense(grad, variable):
    if grad is None:
        return ops.zeros(variable.shape, variable.dtype)
    if guard.is_sparse(grad):
        return ops.convert_to_tensor(grad)
    return grad


def _loss_scale(optimizer):
    """The factor `optimizer.scale_loss` multiplied the loss by (on JAX,
    read inside a `keras.StatelessScope` mapping the optimizer's state)."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        return ops.cast(optimizer.dynamic_scale, "float32")
    return ops.convert_to_tensor(float(optimizer.loss_scale_factor or 1.0))


def _norm(x):
    return ops.sqrt(ops.sum(ops.square(x)))


def norms(grads):
    """The norm of each gradient, `(len(grads),)` (empty for no weights)."""
    if not grads:
        return ops.zeros([0])
    return ops.stack([_norm(g) for g in grads])


def _nans(like):
    """NaN for each step of a time-major `like`, `(T,)` float32."""
    return ops.full(ops.shape(like)[:1], float("nan"))


def _clip_scales(optimizer, grads):
    """What the optimizer's clipping does to `grads` (one replica's: Keras
    clips before summing replicas): per-variable factors for clipnorm and
    global_clipnorm, "value" for clipvalue (not a scaling), None for none."""
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    if optimizer.clipnorm and optimizer.clipnorm > 0:
        clip = optimizer.clipnorm
        return [clip / ops.maximum(_norm(g), clip) for g in grads]
    if optimizer.global_clipnorm and optimizer.global_clipnorm > 0:
        clip = optimizer.global_clipnorm
        norm = _norm(norms(grads))
        return [clip / ops.maximum(norm, clip)] * len(grads)
    if optimizer.clipvalue and optimizer.clipvalue > 0:
        return "value"
    return None


def compute(model, settings, loss, weight_grads, probe_grads, sublayer_probes):
    variables = model.trainable_variables
    optimizer = model.optimizer
    unscale = 1.0 / _loss_scale(optimizer)

    def local(gradient):
        return ops.cast(gradient, "float32") * unscale

    weight_local = [local(_dense(g, v)) for g, v in zip(weight_grads, variables)]
    per_probe, start = [], 0
    for probe in sublayer_probes:
        count = len(probe.sources)
        per_probe.append([local(g) for g in probe_grads[start : start + count]])
        start += count
    dh = [grads[0] for grads in per_probe]
    scales = _clip_scales(optimizer, weight_local)
    if scales == "value":
        clip = optimizer.clipvalue
        applied_local = [ops.clip(g, -clip, clip) for g in weight_local]
    elif scales is not None:
        applied_local = [g * s for g, s in zip(weight_local, scales)]
    # Per-step sums: a non-finite element makes its step's sum non-finite.
    summed = guard.sum_replicas(
        {
            "loss": ops.cast(loss, "float32"),
            "grads": weight_local,
            "applied": applied_local if scales is not None else [],
            "dh_sq": [ops.sum(ops.square(g), axis=[1, 2]) for g in dh],
            # dL/dc_t of an LSTM's carry; NaN for cells without one.
            "dc_sq": [
                _nans(g[0])
                if p.cell_index is None
                else ops.sum(ops.square(g[p.cell_index]), axis=[1, 2])
                for g, p in zip(per_probe, sublayer_probes)
            ],
            # Per-sample norms aligned at each sequence's last valid step.
            "aligned": [end_aligned(g, p.mask) for g, p in zip(dh, sublayer_probes)],
            "sequences": [ops.cast(ops.shape(g)[1], "float32") for g in dh],
            "h_sum": [
                ops.sum(ops.cast(p.outputs, "float32"), axis=[1, 2])
                for p in sublayer_probes
            ],
        }
    )
    grads = summed["grads"]
    variable_norms = norms(grads)
    global_norm = _norm(variable_norms)
    finite = guard.all_finite(guard.squared_sums(grads))
    applied = summed["applied"] or grads
    applied_norm = _norm(norms(applied)) if scales is not None else global_norm

    projections = []
    if settings.contributions and sublayer_probes:
        # Each step's contribution to the applied recurrent-kernel gradient G,
        # projected on G's direction: over steps (and over the sublayers that
        # share the kernel) they add up to ||G||. clipvalue is no scaling:
        # there they add up to the unclipped gradient's norm.
        target = grads if scales == "value" else applied
        factors = scales if isinstance(scales, list) else [1.0] * len(grads)
        index = {id(v): i for i, v in enumerate(variables)}
        for probe, grads in zip(sublayer_probes, per_probe):
            k = index.get(id(probe.recurrent_kernel))
            if k is None:  # frozen kernel, or none to probe
                projections.append(_nans(grads[0]))
                continue
            direction = target[k] / ops.maximum(_norm(target[k]), 1e-30)
            projections.append(factors[k] * probe.contribution(grads, direction))
        projections = guard.sum_replicas(projections)

    sublayers = {}
    for i, probe in enumerate(sublayer_probes):
        grad_norm = ops.sqrt(summed["dh_sq"][i])
        values = {
            "grad_norm": grad_norm,
            "cell_grad_norm": ops.sqrt(summed["dc_sq"][i]),
            "contribution": projections[i] if projections else _nans(grad_norm),
            "grad_finite": ops.cast(ops.isfinite(grad_norm), "float32"),
            "forward_finite": ops.cast(ops.isfinite(summed["h_sum"][i]), "float32"),
        }
        aligned_sq, aligned_count, valid_count = summed["aligned"][i]
        values["valid_fraction"] = valid_count / summed["sequences"][i]
        if probe.layer.go_backwards:  # report in input order
            values = {k: ops.flip(v, 0) for k, v in values.items()}
        # Processing order, index -1 = every sequence's own last valid step.
        values["aligned_norm"] = ops.sqrt(aligned_sq)
        values["aligned_count"] = aligned_count
        sublayers[probe.name] = values
    statistics = {
        "loss": summed["loss"],
        "finite": ops.cast(finite, "float32"),
        "global_norm": global_norm,
        "applied_norm": applied_norm,
        "variable_norms": variable_norms,
        "sublayers": sublayers,
    }
    if settings.histograms:
        # A dict, not a list: Keras would try to stack a list into one tensor.
        statistics["gradients"] = {f"{i:05d}": g for i, g in enumerate(applied)}
    return statistics
