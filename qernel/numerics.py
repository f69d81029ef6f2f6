"""The numerical choices that run options pick from, without importing JAX.

DTYPES: the working precisions of the engine ("float32", "float64"); LAPLACIAN_METHODS: how
local energies take the Laplacian of log ψ (qernel.hamiltonian: "folx" forward Laplacian, or
"jvp" the nested-derivative reference). Config resolution (qernel.config, before any job
starts) checks the options against these; the modules that use them re-export them.
"""

DTYPES = ("float32", "float64")
LAPLACIAN_METHODS = ("folx", "jvp")
