"""Helpers for the model tests (imported as `model_helpers`): compile without XLA's optimisation passes.

Test functions are run a handful of times on tiny inputs, so compile time dominates; XLA's
optimisation level only changes speed, not the computation (up to rounding).
"""

import jax


def fast_jit(fn):
    """Like jax.jit(fn) for positional array arguments, compiled at XLA optimisation level 0."""
    cache = {}

    def wrapped(*args):
        leaves, tree = jax.tree.flatten(args)
        key = (tree, tuple((jax.numpy.shape(a), jax.numpy.result_type(a)) for a in leaves))
        if key not in cache:
            lowered = jax.jit(fn).lower(*args)
            cache[key] = lowered.compile(compiler_options={"xla_backend_optimization_level": 0})
        return cache[key](*args)

    return wrapped
