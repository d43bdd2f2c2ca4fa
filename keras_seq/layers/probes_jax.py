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

import dataclasses

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
        probe_grads))`: `records` are the probes of the pass in call order
        (`SublayerProbe` for `SharedRNN` sublayers, `KerasRNNProbe` for
        Keras's own layers under `keras_rnn.probing`), their `CARRIED`
        fields holding values of this pass; `probe_grads` holds per record
        the gradients of its `sources` (`[dL/dh, dL/dxw]` for a sublayer),
        time-major in processing order.
    """

    def find_shapes(params):
        with probes.recording(contributions=contributions) as rec:
            loss_fn(params)
        return [list(p.sources) for p in rec.probes]

    def run(params):
        shapes = jax.eval_shape(find_shapes, params)
        zeros = [[jnp.zeros(s.shape, s.dtype) for s in record] for record in shapes]
        found = {}

        def differentiated(params, values):
            with probes.recording(contributions=contributions, values=values) as rec:
                loss, aux = loss_fn(params)
            found["records"] = rec.probes  # only static attributes are read
            carried = [
                tuple(getattr(p, name) for name in p.CARRIED) for p in rec.probes
            ]
            return loss, (aux, carried)

        (loss, (aux, carried)), (grads, probe_grads) = jax.value_and_grad(
            differentiated, argnums=(0, 1), has_aux=True
        )(params, zeros)
        records = [
            dataclasses.replace(record, **dict(zip(record.CARRIED, values)))
            for record, values in zip(found["records"], carried)
        ]
        return (loss, aux, records), (grads, probe_grads)

    return run
