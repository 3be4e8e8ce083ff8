"""FLOPs as XLA's cost analysis counts them, with every iteration of every scan counted.

XLA's cost analysis counts a loop's body once, whatever its trip count, so on its own it
undercounts a model whose blocks are scanned (model.scan_layers: by the depth), a recurrent net
(nn.RNN scans over time: by the length), and a step with gradient accumulation or K updates per
call (lax.scan over micro-batches or steps). Here the program's jaxpr is walked and each scan's
count is replaced by its length times its body's count (bodies counted the same way, so nested
scans multiply). A scanned model then counts what the same model unscanned counts, up to the
loop's own bookkeeping (an index per iteration). Loops of unknown length (while_loop) and the
branches of a cond stay as XLA counts them.
"""

from collections.abc import Callable
from typing import Any

import jax
from jax.extend import core as jax_core


def count(fn: Callable[..., Any], *args: Any) -> float | None:
  """FLOPs of fn(*args) (arrays or ShapeDtypeStructs) with every scan iteration counted; None
  where XLA gives no figure."""
  traced = jax.jit(fn).trace(*args)
  counted = _flops(traced.lower().cost_analysis())
  return None if counted is None else counted + _extra(traced.jaxpr.jaxpr)


def per_example(model: Any, variables: Any, example_1: Any) -> float | None:
  """Forward FLOPs of a flax model for one example (a batch axis of 1), in eval mode."""
  return count(lambda v, x: model.apply(v, x, train=False), variables, example_1)


def per_device(traced: Any, compiled: Any) -> float | None:
  """FLOPs per device of `compiled`, a program traced (jit(...).trace) and compiled over all
  devices: XLA's cost analysis of the compiled program, which counts a loop's body once, plus
  the iterations it left out, spread evenly over the devices as batch-parallel loop bodies are."""
  counted = _flops(compiled.cost_analysis())
  return None if counted is None else counted + _extra(traced.jaxpr.jaxpr) / jax.device_count()


def _flops(analysis: Any) -> float | None:
  analysis = analysis[0] if isinstance(analysis, (list, tuple)) else analysis
  return float(analysis["flops"]) if analysis and "flops" in analysis else None


def _lowered(fn: Callable[..., Any], avals: list[Any]) -> float | None:
  structs = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in avals]
  return _flops(jax.jit(fn).lower(*structs).cost_analysis())


def _xla(closed: jax_core.ClosedJaxpr) -> float | None:
  return _lowered(jax_core.jaxpr_as_fun(closed), list(closed.in_avals))


def _alone(eqn: Any) -> float:
  """XLA's count of one equation (a scan: its body once, as inside the whole program)."""
  inputs = [v for v in eqn.invars if not isinstance(v, jax_core.Literal)]

  def run(*xs: Any) -> Any:
    given = iter(xs)
    return eqn.primitive.bind(*[v.val if isinstance(v, jax_core.Literal) else next(given)
                                for v in eqn.invars], **eqn.params)

  return _lowered(run, [v.aval for v in inputs]) or 0.0


def _every_iteration(closed: jax_core.ClosedJaxpr) -> float:
  return (_xla(closed) or 0.0) + _extra(closed.jaxpr)


def _extra(jaxpr: jax_core.Jaxpr) -> float:
  """What the scans in jaxpr (at any depth of calls) add over XLA's count of them."""
  extra = 0.0
  for eqn in jaxpr.eqns:
    name = eqn.primitive.name
    if name == "scan":
      extra += eqn.params["length"] * _every_iteration(eqn.params["jaxpr"]) - _alone(eqn)
    elif name not in ("cond", "while"):  # calls: jit, remat, custom_jvp / custom_vjp, ...
      extra += sum(_extra(sub) for sub in jax_core.jaxprs_in_params(eqn.params))
  return extra
