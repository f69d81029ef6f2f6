"""The VMC energy loss: local energies, clipping, the unbiased gradient per depth group.

The training batch is a concatenation of depth groups (walker w belongs to group[w]); every
statistic below is taken per group, with the group's own mean:

    ∂E/∂θ = Σ_g (n_g/W) · 2 Re⟨(E_L − ⟨E_L⟩_g)^* ∂_θ log ψ⟩_g

For complex ψ the local energy E_L = Hψ/ψ is complex: its real part is the energy, its
imaginary part (zero on average) enters the gradient through Im E_L · Im ∂log ψ. Dropping it
would bias the gradient of every parameter that moves the phase θ of ψ (the kinetic energy
contains ½|∇θ|²), so the training uses `qernel.hamiltonian.make_complex_local_energy`, which
returns both parts (a `qernel.hamiltonian.LocalEnergy`).

Local energies are clipped before they enter the gradient (not the reported energy): per group,
to median ± clip_mad · (mean absolute deviation from the median), real and imaginary parts
separately (ferminet's rule).

Energies in E_M, totals over electrons (not per electron).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qernel.groups import centre as centre_by_group, group_median, group_stats
from qernel.hamiltonian import LogPsi


# -- statistics per depth group --------------------------------------------------------------

def clip_values(values, group, n_groups: int, clip_mad: float):
    """Clip real values (W,) to median_g ± clip_mad · MAD_g per group (MAD: mean absolute deviation).

    clip_mad <= 0 disables clipping.
    """
    if clip_mad <= 0:
        return values
    med = group_median(values, group, n_groups)
    dev = jnp.abs(values - med[group])
    mad = group_stats(dev, group, n_groups)[0]
    lo, hi = med - clip_mad * mad, med + clip_mad * mad
    return jnp.clip(values, lo[group], hi[group])


def centred_local_energies(e_loc, group, n_groups: int, clip_mad: float):
    """ε_w = clip(E_L,w) − ⟨clip(E_L)⟩_{group(w)}; (W,), real or complex like e_loc."""
    def centre(v):
        v = clip_values(v, group, n_groups, clip_mad)
        return centre_by_group(v, group, n_groups)

    if jnp.iscomplexobj(e_loc):
        return jax.lax.complex(centre(e_loc.real), centre(e_loc.imag))
    return centre(e_loc)


# -- the loss with the unbiased gradient ------------------------------------------------------

def make_energy_loss(log_psi: LogPsi, n_groups: int, clip_mad: float = 5.0):
    """loss(params, x (W,N,2), cond (W,n_cond), group (W,), e_loc (W,)) -> scalar.

    The value is the walker mean of Re E_L (unclipped); e_loc (real or complex) is data, computed
    beforehand for the same params. The derivative with respect to params is the unbiased VMC
    gradient (1/W) Σ_w 2 Re[ε_w^* ∂ log ψ_w] with ε the clipped energies centred per group
    (a `jax.custom_jvp`, as in ferminet), i.e. Σ_g (n_g/W) ∂E_g.
    """
    batch_log_psi = jax.vmap(log_psi, in_axes=(None, 0, 0))

    @jax.custom_jvp
    def loss(params, x, cond, group, e_loc):
        return jnp.mean(e_loc.real)

    @loss.defjvp
    def loss_jvp(primals, tangents):
        params, x, cond, group, e_loc = primals
        value = loss(params, x, cond, group, e_loc)
        eps = jax.lax.stop_gradient(centred_local_energies(e_loc, group, n_groups, clip_mad))
        _, dlog = jax.jvp(lambda p: batch_log_psi(p, x, cond), (params,), (tangents[0],))
        if jnp.iscomplexobj(dlog):
            eps_c = eps if jnp.iscomplexobj(eps) else eps.astype(dlog.dtype)
            tangent = 2.0 * jnp.mean(jnp.real(jnp.conj(eps_c) * dlog))
        else:
            tangent = 2.0 * jnp.mean(jnp.real(eps) * dlog)
        return value, tangent.astype(value.dtype)

    return loss
