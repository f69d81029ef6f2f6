"""Moiré lattice and periodic supercell geometry.

All lengths are in moiré units (a_M = 1), wave vectors in 1/a_M.

Conventions (DESIGN.md §1):
  * moiré lattice a1 = (1, 0), a2 = (1/2, √3/2), stored as the rows of a (2, 2) array;
  * reciprocal vectors b_i with a_i·b_j = 2π δ_ij;
  * a supercell is given by an integer matrix S: L_i = Σ_j S_ij a_j;
  * the supercell k-points are the supercell reciprocal lattice points folded into the
    moiré Brillouin zone: the crystal momenta allowed by periodic boundary conditions.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

SQRT3 = np.sqrt(3.0)

#: Moiré lattice vectors a1, a2 (rows), in a_M.
MOIRE_LATTICE = np.array([[1.0, 0.0], [0.5, SQRT3 / 2.0]])


def reciprocal_basis(lattice: np.ndarray) -> np.ndarray:
    """Rows b_i with a_i·b_j = 2π δ_ij for the rows a_i of `lattice` (2, 2)."""
    return 2.0 * np.pi * np.linalg.inv(np.asarray(lattice, dtype=float)).T


#: Moiré reciprocal vectors b1, b2 (rows), in 1/a_M.
MOIRE_RECIPROCAL = reciprocal_basis(MOIRE_LATTICE)


def _rotate(v: np.ndarray, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def first_shell_vectors() -> np.ndarray:
    """The three first-shell vectors g1, g2, g3 (rows, shape (3, 2)) of the moiré potential.

    g1 = (4π/√3)(0, 1), g2 = g1 rotated by +120°, g3 = -(g1 + g2). Each is a moiré
    reciprocal lattice vector of length 4π/√3.
    """
    g1 = (4.0 * np.pi / SQRT3) * np.array([0.0, 1.0])
    g2 = _rotate(g1, 2.0 * np.pi / 3.0)
    g3 = -(g1 + g2)
    return np.stack([g1, g2, g3])


def lattice_points(basis: np.ndarray, cutoff: float, include_origin: bool = True) -> np.ndarray:
    """All points n1 v1 + n2 v2 of the lattice with rows v_i of `basis` and |point| <= cutoff.

    Returns shape (M, 2), sorted by length (ties broken deterministically).
    """
    basis = np.asarray(basis, dtype=float)
    dual = reciprocal_basis(basis) / (2.0 * np.pi)  # n_i = point · dual_i
    nmax = [int(np.ceil(cutoff * np.linalg.norm(dual[i]))) + 1 for i in range(2)]
    n1, n2 = np.meshgrid(np.arange(-nmax[0], nmax[0] + 1), np.arange(-nmax[1], nmax[1] + 1), indexing="ij")
    ints = np.stack([n1.ravel(), n2.ravel()], axis=-1)
    points = ints @ basis
    norms = np.linalg.norm(points, axis=-1)
    keep = norms <= cutoff * (1.0 + 1e-12)
    if not include_origin:
        keep &= np.any(ints != 0, axis=-1)
    points, norms, ints = points[keep], norms[keep], ints[keep]
    order = np.lexsort((ints[:, 1], ints[:, 0], np.round(norms, 10)))
    return points[order]


@dataclasses.dataclass(frozen=True)
class Supercell:
    """A periodic supercell of the moiré lattice, L_i = Σ_j S_ij a_j.

    `matrix` is the integer matrix S as a tuple of tuples (hashable, so a Supercell can be
    a static argument of jitted functions). Raises ValueError unless S is a non-singular 2×2
    integer matrix.
    """

    matrix: tuple[tuple[int, int], tuple[int, int]] = ((1, 0), (0, 1))

    def __post_init__(self):
        s = np.asarray(self.matrix)
        if s.shape != (2, 2) or not np.all(np.equal(np.mod(s, 1), 0)):
            raise ValueError(f"supercell matrix must be a 2x2 integer matrix, got {self.matrix!r}")
        if round(abs(np.linalg.det(s))) == 0:
            raise ValueError(f"supercell matrix {self.matrix!r} is singular")
        object.__setattr__(self, "matrix", tuple(tuple(int(v) for v in row) for row in s))

    @classmethod
    def diagonal(cls, n: int, m: int | None = None) -> "Supercell":
        """The n × m supercell S = diag(n, m) (m defaults to n)."""
        return cls(((n, 0), (0, n if m is None else m)))

    @functools.cached_property
    def s(self) -> np.ndarray:
        """S as an integer array (2, 2)."""
        return np.asarray(self.matrix, dtype=int)

    @functools.cached_property
    def n_cells(self) -> int:
        """Number of moiré cells in the supercell, |det S|."""
        return int(round(abs(np.linalg.det(self.s))))

    @functools.cached_property
    def lattice(self) -> np.ndarray:
        """Supercell lattice vectors L1, L2 (rows), in a_M; shape (2, 2)."""
        return self.s @ MOIRE_LATTICE

    @functools.cached_property
    def reciprocal(self) -> np.ndarray:
        """Supercell reciprocal vectors B1, B2 (rows) with L_i·B_j = 2π δ_ij; shape (2, 2)."""
        return reciprocal_basis(self.lattice)

    @functools.cached_property
    def area(self) -> float:
        """Supercell area in a_M²."""
        return float(abs(np.linalg.det(self.lattice)))

    @functools.cached_property
    def moire_translations(self) -> np.ndarray:
        """The n_cells moiré lattice vectors T inside the supercell (fractional coords in [0, 1)); (n_cells, 2).

        Raises AssertionError if the enumeration does not find exactly n_cells of them (a bug).
        """
        n = self.n_cells
        span = int(np.abs(self.s).sum()) + 1
        found = {}
        for i in range(-span, span + 1):
            for j in range(-span, span + 1):
                t = i * MOIRE_LATTICE[0] + j * MOIRE_LATTICE[1]
                f = self.to_frac(t)
                f = f - np.floor(f + 1e-9)
                key = tuple(np.round(f, 8))
                if key not in found:
                    found[key] = self.to_cart(f)
        if len(found) != n:
            raise AssertionError(f"found {len(found)} moiré translations, expected {n}")
        keys = sorted(found)
        return np.stack([found[k] for k in keys])

    @functools.cached_property
    def kpoints(self) -> np.ndarray:
        """The n_cells supercell k-points folded into the first moiré Brillouin zone; (n_cells, 2).

        These are the supercell reciprocal lattice points modulo the moiré reciprocal lattice,
        each represented by its shortest image (Γ first; ties broken deterministically).
        Raises AssertionError if the enumeration does not find exactly n_cells classes (a bug).
        """
        # k = m1 B1 + m2 B2; its coordinates in the moiré reciprocal basis are m @ inv(S)ᵀ-like
        # fractions with denominator n_cells. Enumerate m in a box that covers every class.
        span = int(np.abs(self.s).sum()) + 1
        classes = {}
        for m1 in range(-span, span + 1):
            for m2 in range(-span, span + 1):
                k = m1 * self.reciprocal[0] + m2 * self.reciprocal[1]
                f = k @ MOIRE_LATTICE.T / (2.0 * np.pi)  # coordinates in the b basis
                f = f - np.floor(f + 1e-9)
                key = tuple(np.round(f, 8))
                if key not in classes:
                    classes[key] = f @ MOIRE_RECIPROCAL
        if len(classes) != self.n_cells:
            raise AssertionError(f"found {len(classes)} k-points, expected {self.n_cells}")
        shifts = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)]) @ MOIRE_RECIPROCAL
        folded = []
        for k in classes.values():
            images = k + shifts
            norms = np.round(np.linalg.norm(images, axis=-1), 9)
            best = np.flatnonzero(norms == norms.min())
            # deterministic tie break: largest angle-ordered representative
            cand = images[best]
            folded.append(cand[np.lexsort((cand[:, 0], cand[:, 1]))[-1]])
        folded = np.array(folded)
        order = np.lexsort((np.round(folded[:, 1], 9), np.round(folded[:, 0], 9), np.round(np.linalg.norm(folded, axis=-1), 9)))
        return folded[order]

    def to_frac(self, r):
        """Cartesian positions (..., 2) in a_M → fractional supercell coordinates (..., 2)."""
        return np.asarray(r) @ self.reciprocal.T / (2.0 * np.pi)

    def to_cart(self, f):
        """Fractional supercell coordinates (..., 2) → Cartesian positions (..., 2) in a_M."""
        return np.asarray(f) @ self.lattice

    def wrap(self, r):
        """Map positions (..., 2) into the supercell (fractional coordinates in [0, 1)).

        Works on numpy and jax arrays (uses the array's own namespace for floor).
        """
        xp = _namespace(r)
        f = r @ xp.asarray(self.reciprocal.T / (2.0 * np.pi), dtype=r.dtype)
        f = f - xp.floor(f)
        return f @ xp.asarray(self.lattice, dtype=r.dtype)

    def reciprocal_vectors(self, cutoff: float, include_origin: bool = False) -> np.ndarray:
        """Supercell reciprocal lattice vectors G with |G| <= cutoff; (M, 2)."""
        return lattice_points(self.reciprocal, cutoff, include_origin=include_origin)

    def lattice_vectors(self, cutoff: float, include_origin: bool = True) -> np.ndarray:
        """Supercell lattice vectors L with |L| <= cutoff; (M, 2)."""
        return lattice_points(self.lattice, cutoff, include_origin=include_origin)


def _namespace(x):
    if isinstance(x, np.ndarray):
        return np
    import jax.numpy as jnp

    return jnp
