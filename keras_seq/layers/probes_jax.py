"""The probes on JAX: gradients of a loss with respect to every recurrent
sublayer's total dL/dh_t (and dL/da_t), beside the weight gradients.

JAX has no tape to watch a tensor created inside the forward pass, so the
zero probes are arguments of the differentiated function: a first, abstract
pass (`jax.eval_shape`, no computation) finds how many sublayers the
forward pass calls and the shape of each one's probes; the loss is then
differentiated with respect to the weights and to zeros of those shapes,
handed to the sublayers in call order through `probes.recording(values=)`.
Everything here is traceable: a jitted training step calls it as is.
"""

import jax
import jax.numpy as jnp

from keras_seq.layers import probes


def value_and_grad(loss_fn, contributions=True):
    """Like `jax.value_and_grad(loss_fn, has_aux=True)`, with the probes.

    Args:
        loss_fn: `loss_fn(params) -> (loss, aux)`; the recurrent layers it
            calls add probes.
        contributions: passed to the recorder (see `ProbeRecorder`).

    Returns:
        A function of `params` giving `((loss, aux, records), (grads,
        probe_grads))`: `records` are the `SublayerProbe`s of the pass, in
        call order, with their `outputs`, `initial_state`, `mask` and
        recurrent dropout mask as values of this pass; `probe_grads` holds
        per record `[dL/dh, dL/dxw]` (the order of `SublayerProbe.sources`),
        time-major `(T, B, U)` in processing order.
    """

    def find_shapes(params):
        with probes.recording(contributions=contributions) as rec:
            loss_fn(params)
        return [(p.xw_probe, p.h_probe) for p in rec.probes]

    def run(params):
        shapes = jax.eval_shape(find_shapes, params)
        zeros = [tuple(jnp.zeros(s.shape, s.dtype) for s in pair) for pair in shapes]
        found = {}

        def differentiated(params, values):
            with probes.recording(contributions=contributions, values=values) as rec:
                loss, aux = loss_fn(params)
            found["records"] = rec.probes  # only static attributes are read
            carried = [
                (p.outputs, p.initial_state, p.mask, p.recurrent_dropout_mask)
                for p in rec.probes
            ]
            return loss, (aux, carried)

        (loss, (aux, carried)), (grads, probe_grads) = jax.value_and_grad(
            differentiated, argnums=(0, 1), has_aux=True
        )(params, zeros)
        records = []
        for record, values in zip(found["records"], carried):
            outputs, initial_state, mask, rmask = values
            records.append(
                probes.SublayerProbe(
                    layer=record.layer,
                    level=record.level,
                    call=record.call,
                    xw_probe=None,
                    h_probe=None,
                    initial_state=initial_state,
                    recurrent_dropout_mask=rmask,
                    mask=mask,
                    outputs=outputs,
                )
            )
        # `sources` order: [h, xw].
        probe_grads = [[h, xw] for xw, h in probe_grads]
        return (loss, aux, records), (grads, probe_grads)

    return run
