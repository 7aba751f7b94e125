"""The four Kronecker-factored transforms side by side with plain fp64 NumPy references.

Each reference below is the published per-step pseudo-code written out with dense
``numpy.linalg.eigh`` / ``numpy.linalg.qr`` and explicit loops of ``numpy.tensordot`` over the
axes, keeping the momentum where the paper's code keeps it:

- SOAP (Vyas et al., arXiv 2409.11321, code nikhilvyas/SOAP): M in the parameter's space,
  projected every step; every T steps the columns sorted by Rayleigh quotient, V permuted alike,
  Q ← qr(K Q).
- Shampoo (Gupta et al. 2018; Anil et al. 2020): EMA factors, momentum, (λ + ε_K)^(−1/(2k)) roots
  from the eigenpairs of the last refresh (eigh, or qr(KQ) with Rayleigh quotients), Adam
  grafting.
- KL-Shampoo / KL-SOAP (Lin et al., arXiv 2509.03378, code yorkerlin/KL-Methods): factors
  S_a ← βS_a + (1−β)(d_a/N)·G ×_{b≠a} (Q_b Λ_b⁻¹ Q_bᵀ) contracted with G; λ tracked in the stale
  basis and clamped; Q ← qr(S Q) unsorted. KL-Shampoo keeps M in the parameter's space, KL-SOAP
  keeps m̃ in the eigenbasis and takes it back and forth at each refresh.

Each run feeds the same gradients g(p) = p ×_0 A_0 ×_1 … − C + σξ_t (fresh noise every step, a
fixed seed: no projected entry sits at rounding level) and the same parameter to the library and
to the reference (the reference's trajectory drives), for 30 steps after the initializing one,
and compares the update and every state at every step: factors, bases up to column signs
(QR/eigh columns are defined up to sign and every method is invariant to them), eigenvalues,
the first moment in the parameter's space (m̃ ×_a Q_a) and the second moment.

Tolerances (first-order, every one a multiple of the unit roundoff u of the compute format):
at step t, with d = Σ_a d_a over the work axes and n_e = N_ELEMENTWISE,

    state:   ‖X_lib − X_ref‖_F / ‖X_ref‖_F ≤ C·(t+1)·(d + n_e)·u·κ_B(t)
    update:  ‖U_lib − U_ref‖_F / ‖U_ref‖_F ≤ C·(t+1)·(d + n_e)·u·κ_B(t)·κ_D(t)·κ_U(t)

- (d + n_e)·u: each step is a fixed number of mode products, i.e. inner products of length
  d_a whose rounding is ≤ γ_{d_a}|Q||X| componentwise (Higham, ASNA §3.5), plus at most n_e
  elementwise roundings (EMAs, square roots, quotients, bias correction, weight decay);
  (t+1): the errors of the states at most add up over the steps (every recursion is an EMA
  with β < 1 or an orthogonal-iteration step, neither amplifies);
- κ_B(t): the largest sensitivity of a basis computed so far (measured on the reference):
  ‖K‖₂/min gap(λ(K)) for an eigh (Davis–Kahan; Golub & Van Loan §8.1), κ₂(K) for qr(K Q)
  (Higham, ASNA §19.9), and for Shampoo's roots (λ_max + ε_K)/(λ_min + ε_K) (the relative
  condition number of x^e on the spectrum, Higham, Functions of Matrices §3.1);
- κ_D(t): the amplification of those errors by the direction, from the componentwise bound
  E = |Q|ᵀ|G||Q| of the projection's rounding. For Adam in the eigenbasis N = m̃/(√v + ε): the
  current step's error enters m̃ and v together, with coefficient
  |(1−β₁)/√v − m̃(1−β₂)G̃/v^{3/2}|, the past ones through Ē and E²‾ (EMAs of E and E²;
  Cauchy–Schwarz on the EMA of 2G̃ΔG̃), and κ_D = ‖now + (β₁Ē + |m̃|√(β₂E²‾)/√v)/(√v + ε)‖/‖N‖;
  for KL-Shampoo κ_D = ‖Ē ⊙ S‖/‖m̃ ⊙ S‖; for Shampoo the product of the roots' condition
  numbers;
- κ_U(t) = (‖η_t(1−η·wd)D‖ + ‖η·wd·P‖)/‖U‖: the condition number of the sum forming U.

C = C_TOL below. The fp32 runs (compute="fp32", fp32 gradient and parameter) use the same bound
with u = 2⁻²⁴ against the fp64 reference (the reference's own error is negligible). Measured
ratios error/bound: at most 0.15 (fp64) and 0.04 (fp32) over every run of this module.

Conventions the references here follow on purpose: "1-D" is judged after merging (the
library's documented Layout; the SOAP code judges the unmerged gradient), KL's λ and factor
updates all use the λ of the previous step, as in the paper and the reference code's 2-D branch
(its 3-D branch reuses λ_3 and λ_2 as soon as they are updated), and an axis without a factor
keeps a diagonal λ (the reference KL code has no such axis).
"""

from __future__ import annotations

import importlib.util
import math

import numpy as np
import pytest

import linalg_pc as lpc
import linalg_pc._backend as B
from linalg_pc.precision import unit_roundoff
from linalg_pc.precond import merge_shape

U64 = unit_roundoff("fp64")  # 2**-53
U32 = unit_roundoff("fp32")  # 2**-24
#: the constant C of the module docstring (the measured ratios stay below 0.15: ≥ 6× room)
C_TOL = 1.0
#: roundings per entry per step outside the inner products (EMAs, square roots, quotients, the
#: bias correction and the decoupled update): at most 16 in every method
N_ELEMENTWISE = 16
STEPS = 30
HAS_TORCH = importlib.util.find_spec("torch") is not None


# ====================================================================== reference helpers
def ref_merge(shape, max_dim):
    """The reshape of the SOAP reference code (``merge_dims``): consecutive axes multiplied left
    to right while the product stays ≤ max_dim; a running product of 1 is not kept."""
    new, cur = [], 1
    for sh in shape:
        tmp = cur * sh
        if tmp > max_dim:
            if cur > 1:
                new.append(cur)
                cur = sh
            else:
                new.append(sh)
                cur = 1
        else:
            cur = tmp
    if cur > 1 or not new:
        new.append(cur)
    return tuple(new)


def mode(X, M, a):
    """X ×_a M: every mode-a fibre of X multiplied by the matrix M."""
    return np.moveaxis(np.tensordot(M, X, axes=([1], [a])), 0, a)


def gram(X, a):
    """X_(a) X_(a)ᵀ: X contracted with itself over every axis but a."""
    others = [b for b in range(X.ndim) if b != a]
    return np.tensordot(X, X, axes=(others, others))


def into_basis(X, Qs):
    """X ×_a Q_aᵀ over the axes that have a basis."""
    for a, Q in enumerate(Qs):
        if Q is not None:
            X = mode(X, Q.T, a)
    return X


def out_of_basis(X, Qs):
    """X ×_a Q_a over the axes that have a basis."""
    for a, Q in enumerate(Qs):
        if Q is not None:
            X = mode(X, Q, a)
    return X


def abs_into_basis(X, Qs):
    """|X| ×_a |Q_a|ᵀ: the componentwise scale of the rounding error of into_basis(X, Qs)."""
    return into_basis(np.abs(X), [None if Q is None else np.abs(Q) for Q in Qs])


def along(v, a, k):
    """v reshaped to broadcast along axis a of a k-axis tensor."""
    return v.reshape([-1 if b == a else 1 for b in range(k)])


def eigh_descending(K):
    w, V = np.linalg.eigh(K)
    return w[::-1].copy(), V[:, ::-1].copy()


def qr_q(A):
    return np.linalg.qr(A)[0]


def eigvec_condition(K):
    """‖K‖₂ / (smallest gap between eigenvalues): the sensitivity of the eigenvectors."""
    w = np.linalg.eigvalsh(K)
    gap = float(np.min(np.diff(w))) if len(w) > 1 else math.inf
    return float(np.max(np.abs(w)) / gap) if gap > 0 else math.inf


def matrix_condition(K):
    """κ₂(K) = κ₂(K Q) for an orthogonal Q: the sensitivity of the Q factor of qr(K Q)."""
    return float(np.linalg.cond(K))


class _Ref:
    """Layout shared by the references, and the conditioning record of the tolerances."""

    def __init__(self, shape, *, max_precond_dim=10000, merge_dims=False, precondition_1d=False,
                 **hp):
        self.shape = tuple(shape)
        work = self.shape or (1,)
        if merge_dims and len(work) > 1:
            work = ref_merge(work, max_precond_dim)
        self.work = work
        # "1-D" judged after merging: the library's documented convention (Layout)
        one_d = len(work) == 1
        self.factored = [d <= max_precond_dim and (precondition_1d or not one_d) for d in work]
        self.hp = hp
        self.t = None  # steps after the first (None: not initialized)
        self.kappa_basis = 1.0
        self.kappa_dir = 1.0
        self.kappa_upd = 1.0
        self.Ebar = np.zeros(work)   # EMA (β₁) of |Q|ᵀ|G||Q|
        self.E2bar = np.zeros(work)  # EMA (β₂) of its square

    def step(self, g, p):
        """The update U (new parameter p + U) for gradient g at parameter p."""
        G = np.asarray(g, dtype=np.float64).reshape(self.work)
        P = np.asarray(p, dtype=np.float64).reshape(self.work)
        if self.t is None:
            self.first(G)
            self.t = 0
            return np.zeros(self.shape)
        self.t += 1
        return self.advance(G, P).reshape(self.shape)

    def decoupled(self, step, D, P):
        """(P − step·D)(1 − η·wd) − P, without the cancellation of forming the new P; records
        κ_U = (‖step(1−c)D‖ + ‖cP‖)/‖U‖, the condition number of this sum."""
        c = self.hp["lr"] * self.hp["weight_decay"]
        a, b = -step * (1 - c) * D, -c * P
        U = a + b
        nu = np.linalg.norm(U)
        self.kappa_upd = float((np.linalg.norm(a) + np.linalg.norm(b)) / nu) if nu > 0 else 1.0
        return U

    # ---------------------------------------------------------------- conditioning
    def note_basis(self, kappa):
        self.kappa_basis = max(self.kappa_basis, kappa)

    def note_errors(self, E, b1, b2):
        self.Ebar = b1 * self.Ebar + (1 - b1) * E
        self.E2bar = b2 * self.E2bar + (1 - b2) * E * E

    def note_adam(self, Mt, V, Gt, E, b1, b2, eps):
        """κ_D of N = m̃/(√v + ε) (module docstring), then the EMAs of E take this step."""
        den = np.sqrt(V) + eps
        N = Mt / den
        sv = np.where(V > 0, np.sqrt(V), np.inf)
        now = np.abs((1 - b1) / den - Mt * (1 - b2) * Gt / (sv * sv * den)) * E
        past = (b1 * self.Ebar + np.abs(Mt) * np.sqrt(b2 * self.E2bar) / sv) / den
        if np.linalg.norm(N) > 0:
            amp = float(np.linalg.norm(now + past) / np.linalg.norm(N))
            self.kappa_dir = max(self.kappa_dir, amp)
        self.note_errors(E, b1, b2)


# ---------------------------------------------------------------------- SOAP
class RefSOAP(_Ref):
    """SOAP, Algorithm 3 of Vyas et al. as the reference code runs it."""

    def first(self, G):
        sb = self.hp["shampoo_beta"]
        self.K = [(1 - sb) * gram(G, a) if f else None for a, f in enumerate(self.factored)]
        self.Q = [None if K is None else eigh_descending(K)[1] for K in self.K]
        for K in self.K:
            if K is not None:
                self.note_basis(eigvec_condition(K))
        self.M = np.zeros(self.work)
        self.V = np.zeros(self.work)

    def advance(self, G, P):
        h = self.hp
        b1, b2 = h["betas"]
        Gp = into_basis(G, self.Q)                       # G' = Q_Lᵀ G Q_R
        self.M = b1 * self.M + (1 - b1) * G              # M ← β₁M + (1−β₁)G
        Mp = into_basis(self.M, self.Q)                  # M' = Q_Lᵀ M Q_R
        self.V = b2 * self.V + (1 - b2) * Gp * Gp        # V ← β₂V + (1−β₂)G'⊙G'
        N = out_of_basis(Mp / (np.sqrt(self.V) + h["eps"]), self.Q)   # Q_L (M'/(√V+ε)) Q_Rᵀ
        self.note_adam(Mp, self.V, Gp, abs_into_basis(G, self.Q), b1, b2, h["eps"])
        if h.get("normalize_grads", False):
            N = N / (1e-30 + np.sqrt(np.mean(N * N)))    # the reference code's normalization
        step = h["lr"]
        if h.get("correct_bias", True):
            step = step * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        U = self.decoupled(step, N, P)
        sb = h["shampoo_beta"]
        for a, K in enumerate(self.K):                   # L ← βL + (1−β)GGᵀ, R ← …
            if K is not None:
                self.K[a] = sb * K + (1 - sb) * gram(G, a)
        if self.t % h["precondition_frequency"] == 0:
            for a, (K, Q) in enumerate(zip(self.K, self.Q)):
                if K is None:
                    continue
                self.note_basis(matrix_condition(K))
                est = np.diag(Q.T @ K @ Q)
                order = np.argsort(-est, kind="stable")
                self.Q[a] = qr_q(K @ Q[:, order])
                self.V = np.take(self.V, order, axis=a)
        return U

    def snapshot(self):
        return {"factors": self.K, "bases": self.Q, "m": self.M, "v": self.V}


# ---------------------------------------------------------------------- Shampoo
class RefShampoo(_Ref):
    """Shampoo: EMA factors, momentum, roots Q diag((λ + ε_K)^e) Qᵀ (e = −1/(2k), k axes) from
    the eigenpairs of the last refresh, Adam grafting, decoupled weight decay."""

    def first(self, G):
        sb = self.hp["shampoo_beta"]
        self.K = [(1 - sb) * gram(G, a) if f else None for a, f in enumerate(self.factored)]
        self.Q = [None] * len(self.work)
        self.lam = [None] * len(self.work)
        for a, K in enumerate(self.K):
            if K is not None:
                w, V = eigh_descending(K)
                self.Q[a], self.lam[a] = V, np.maximum(w, 0.0)
                self.note_root(a, eigvec_condition(K))
        self.M = np.zeros(self.work)
        self.V = np.zeros(self.work)

    def note_root(self, a, kappa_vectors):
        lam, eps_k = self.lam[a], self.hp["matrix_eps"]
        self.note_basis(max(kappa_vectors, float((lam.max() + eps_k) / (lam.min() + eps_k))))

    def exponent(self):
        return self.hp.get("exponent") or -1.0 / (2 * len(self.work))

    def advance(self, G, P):
        h = self.hp
        b1, b2 = h["betas"]
        t = self.t
        self.M = b1 * self.M + (1 - b1) * G
        self.V = b2 * self.V + (1 - b2) * G * G
        Mh, Vh = self.M, self.V
        if h.get("correct_bias", True):
            Mh, Vh = self.M / (1 - b1 ** t), self.V / (1 - b2 ** t)
        e = self.exponent()
        D = Mh
        amp = 1.0
        for a, Q in enumerate(self.Q):
            if Q is not None:
                r = (self.lam[a] + h["matrix_eps"]) ** e
                D = mode(D, (Q * r) @ Q.T, a)            # D ×_a (K_a + ε_K)^e
                amp *= float(r.max() / r.min())
        self.kappa_dir = max(self.kappa_dir, amp)
        if h.get("grafting", "adam") == "adam":
            A = Mh / (np.sqrt(Vh) + h["eps"])
            D = D * (np.linalg.norm(A) / np.linalg.norm(D))
        if h.get("normalize_grads", False):
            D = D / (1e-30 + np.sqrt(np.mean(D * D)))    # as the SOAP reference code
        U = self.decoupled(h["lr"], D, P)
        sb = h["shampoo_beta"]
        for a, K in enumerate(self.K):
            if K is not None:
                self.K[a] = sb * K + (1 - sb) * gram(G, a)
        if t % h["precondition_frequency"] == 0:
            for a, K in enumerate(self.K):
                if K is None:
                    continue
                if h.get("refresh", "eigh") == "eigh":
                    w, V = eigh_descending(K)
                    self.Q[a], self.lam[a] = V, np.maximum(w, 0.0)
                    self.note_root(a, eigvec_condition(K))
                else:
                    Qn = qr_q(K @ self.Q[a])
                    self.Q[a], self.lam[a] = Qn, np.maximum(np.diag(Qn.T @ K @ Qn), 0.0)
                    self.note_root(a, matrix_condition(K))
        return U

    def snapshot(self):
        return {"factors": self.K, "bases": self.Q, "eig": self.lam, "m": self.M, "v": self.V}


# ---------------------------------------------------------------------- KL methods
class _RefKL(_Ref):
    """KL-Shampoo / KL-SOAP factor and eigenvalue updates, both sides at once from the current
    Q and λ (an axis without a factor keeps a diagonal λ with the identity basis: the library's
    extension, the reference code has no such axis)."""

    def first(self, G):
        sb = self.hp["shampoo_beta"]
        N = G.size
        self.S = [(1 - sb) * (d / N) * gram(G, a) if f else None
                  for a, (d, f) in enumerate(zip(self.work, self.factored))]
        self.Q = [None if S is None else eigh_descending(S)[1] for S in self.S]
        for S in self.S:
            if S is not None:
                self.note_basis(eigvec_condition(S))
        self.s = [np.full(d, 1.0 / math.sqrt(self.hp.get("init_factor", 0.1))) for d in self.work]
        self.M = np.zeros(self.work)
        self.V = np.zeros(self.work)
        self.clamped = 0  # how many times λ^(−1/2) hit its clamp

    def clamp(self, d):
        mc = self.hp.get("max_clamp", 4000)
        return math.inf if mc is None else max(10.0, min(float(d), mc))

    def curvature(self, G):
        sb = self.hp["shampoo_beta"]
        N = G.size
        k = len(self.work)
        s = self.s
        # the current inverse factors Q_b diag(s_b²) Q_bᵀ (a diagonal without a basis)
        inv = [None if Q is None else (Q * s[b] ** 2) @ Q.T for b, Q in enumerate(self.Q)]
        for a, S in enumerate(self.S):
            if S is None:
                continue
            X = G
            for b in range(k):
                if b != a:
                    X = mode(X, inv[b], b) if inv[b] is not None else X * along(s[b] ** 2, b, k)
            others = [b for b in range(k) if b != a]
            contr = np.tensordot(X, G, axes=(others, others)) if others else np.outer(X, G)
            self.S[a] = sb * S + (1 - sb) * (self.work[a] / N) * contr
        C2 = into_basis(G, self.Q) ** 2
        new = []
        for a in range(k):
            W = C2
            for b in range(k):
                if b != a:
                    W = W * along(s[b] ** 2, b, k)
            others = tuple(b for b in range(k) if b != a)
            diag = W.mean(axis=others) if others else W
            lam = sb / s[a] ** 2 + (1 - sb) * diag        # λ ← βλ + (1−β)·diag
            sa = 1.0 / np.sqrt(lam)
            c = self.clamp(self.work[a])
            self.clamped += int(np.sum(sa >= c))
            new.append(np.minimum(sa, c))
        self.s = new

    def refresh(self):
        for a, (S, Q) in enumerate(zip(self.S, self.Q)):
            if S is not None:
                self.note_basis(matrix_condition(S))
                self.Q[a] = qr_q(S @ Q)

    def finish(self, D, P):
        h = self.hp
        if h.get("normalize_grads", False):
            D = D / (1e-30 + np.sqrt(np.mean(D * D)))
        step = h["lr"]
        if h.get("correct_bias", False):
            b1, b2 = h["betas"]
            step = step * math.sqrt(1 - b2 ** self.t) / (1 - b1 ** self.t)
        return self.decoupled(step, D, P)

    def snapshot(self):
        return {"factors": self.S, "bases": self.Q, "eig": [1.0 / si ** 2 for si in self.s],
                "m": self.param_momentum(), "v": self.V}


class RefKLShampoo(_RefKL):
    """KL-Shampoo: M in the parameter's space, D = (QᵀMQ ⊙ S/(1 + εS)) back, S = ⊗_b s_b."""

    def advance(self, G, P):
        h = self.hp
        b1, b2 = h["betas"]
        k = len(self.work)
        self.M = b1 * self.M + (1 - b1) * G
        Sg = np.ones(self.work)
        for a in range(k):
            Sg = Sg * along(self.s[a], a, k)
        Sg = Sg / (1.0 + h["eps"] * Sg)
        Mt = into_basis(self.M, self.Q)
        D = out_of_basis(Mt * Sg, self.Q)
        self.note_errors(abs_into_basis(G, self.Q), b1, b2)
        if np.any(Mt):
            self.kappa_dir = max(self.kappa_dir, float(np.linalg.norm(self.Ebar * Sg)
                                                       / np.linalg.norm(Mt * Sg)))
        self.curvature(G)
        if self.t % h["precondition_frequency"] == 0:
            self.refresh()
        return self.finish(D, P)

    def param_momentum(self):
        return self.M


class RefKLSOAP(_RefKL):
    """KL-SOAP: Adam on C = G in the eigenbasis; m̃ back to the parameter's space with the old
    basis and into the new one at each refresh; v tied to the columns."""

    def advance(self, G, P):
        h = self.hp
        b1, b2 = h["betas"]
        C = into_basis(G, self.Q)
        self.M = b1 * self.M + (1 - b1) * C
        self.V = b2 * self.V + (1 - b2) * C * C
        D = out_of_basis(self.M / (np.sqrt(self.V) + h["eps"]), self.Q)
        self.note_adam(self.M, self.V, C, abs_into_basis(G, self.Q), b1, b2, h["eps"])
        refresh = self.t % h["precondition_frequency"] == 0
        if refresh:
            m = out_of_basis(self.M, self.Q)
        self.curvature(G)
        if refresh:
            self.refresh()
            self.M = into_basis(m, self.Q)
        return self.finish(D, P)

    def param_momentum(self):
        return out_of_basis(self.M, self.Q)


# ====================================================================== side-by-side driver
#: method id → (library builder, reference, fixed options). ε_K = 0.1 for Shampoo: the first
#: factor of the longer side of a 2-D parameter is singular and κ_B ∝ λ_max/ε_K.
METHODS = {
    "soap": ("soap", RefSOAP, {}),
    "shampoo_eigh": ("shampoo", RefShampoo, {"refresh": "eigh", "matrix_eps": 0.1}),
    "shampoo_qr": ("shampoo", RefShampoo, {"refresh": "qr", "matrix_eps": 0.1}),
    "kl_shampoo": ("kl_shampoo", RefKLShampoo, {"init_factor": 0.2}),
    "kl_soap": ("kl_soap", RefKLSOAP, {"init_factor": 0.2}),
}
#: β₂ ≠ shampoo_beta so that a decay used in the wrong place shows; T = 4: 7 refreshes
BASE = dict(lr=0.05, betas=(0.9, 0.95), shampoo_beta=0.85, eps=1e-8, weight_decay=0.1,
            precondition_frequency=4)

#: case id → (parameter shape, options, batch size or None). 2-D shapes have |m − n| ≤ 1: the
#: first factor of the longer side has rank min(m, n), and a null space of dimension ≥ 2 would
#: leave its eigenbasis undetermined (not just up to signs).
CASES = {
    "2d": ((6, 5), {}, None),
    "3d": ((3, 4, 5), {}, None),
    "merge": ((2, 3, 5), {"merge_dims": True, "max_precond_dim": 6}, None),    # work (6, 5)
    "no_merge": ((2, 3, 5), {"merge_dims": False, "max_precond_dim": 6}, None),
    "big_axis": ((3, 4, 5), {"max_precond_dim": 4}, None),                   # axis 2 bare
    "big_axis_2d": ((7, 5), {"max_precond_dim": 5}, None),                   # axis 0 bare
    "1d": ((7,), {}, None),
    "0d": ((), {}, None),
    "batched": ((6, 5), {}, 3),
    "batched_merge": ((2, 3, 5), {"merge_dims": True, "max_precond_dim": 6}, 2),
}
#: cases of the option tests only (a 1-D factor from one gradient has rank 1: d = 2 at most)
EXTRA_CASES = {"1d_pair": ((2,), {}, None)}


def sym(rng, d):
    X = rng.standard_normal((d, d))
    return (X + X.T) / (2 * math.sqrt(d))


class Problem:
    """g(p) = scale·(p ×_0 A_0 ×_1 A_1 … − C + σξ_t): a noisy quadratic, generic every step."""

    def __init__(self, shape, seed, noise=0.5, scale=1.0):
        rng = np.random.default_rng(seed)
        self.shape = tuple(shape)
        self.A = [np.eye(d) + 0.3 * sym(rng, d) for d in self.shape]
        self.C = rng.standard_normal(self.shape)
        self.noise, self.scale, self.rng = noise, scale, rng

    def start(self):
        return self.rng.standard_normal(self.shape)

    def grad(self, p):
        g = np.asarray(p, dtype=np.float64)
        for a, A in enumerate(self.A):
            g = mode(g, A, a)
        return self.scale * (g - self.C + self.noise * self.rng.standard_normal(self.shape))


def to_np(a):
    return None if a is None else np.asarray(B.to_numpy(a), dtype=np.float64)


def lib_snapshot(tx, state, i=None):
    """The library's state in the references' representation (member i of a stack)."""
    def pick(a):
        a = to_np(a)
        return a if a is None or i is None else a[i]

    bases = [pick(Q) for Q in tx.bases(state)]
    snap = {"factors": [pick(K) for K in state.factors], "bases": bases,
            "eig": [pick(x) for x in state.eigenvalues]}
    m = pick(state.moments["exp_avg"]).reshape(state.layout.work_shape)
    snap["m"] = m if state.method == "shampoo" else out_of_basis(m, bases)
    if "exp_avg_sq" in state.moments:
        snap["v"] = pick(state.moments["exp_avg_sq"]).reshape(state.layout.work_shape)
    return snap


def rel(x, ref):
    n = np.linalg.norm(ref)
    return float(np.linalg.norm(x - ref) / n) if n > 0 else float(np.linalg.norm(x))


def basis_rel(Ql, Qr):
    """‖Q_lib·diag(±1) − Q_ref‖_F / ‖Q_ref‖_F, the signs aligning each column."""
    s = np.sign(np.sum(Ql * Qr, axis=0))
    s[s == 0] = 1.0
    return rel(Ql * s, Qr)


def compare(lib, ref):
    out = {}
    for key in ("factors", "bases", "eig"):
        pairs = [(x, r) for x, r in zip(lib[key], ref.get(key, [None] * len(lib[key])))
                 if r is not None]
        for x, r in pairs:
            assert x is not None, f"library has no {key} where the reference has one"
            err = basis_rel(x, r) if key == "bases" else rel(x, r)
            out[key] = max(out.get(key, 0.0), err)
    for key in ("m", "v"):
        if key in lib:
            out[key] = rel(lib[key], ref[key])
    return out


def _convert(lib):
    if lib == "torch":
        import torch

        return lambda a: torch.from_numpy(np.ascontiguousarray(a))
    return lambda a: a


def run(method, case, *, compute="fp64", lib="numpy", steps=STEPS, seed=0, options=None,
        nan_at=(), noise=0.5, scale=1.0):
    """Run the library and the reference side by side.

    Returns (worst, refs): ``worst[q] = (error, ratio)`` over the steps for each quantity q
    ("update", "factors", "bases", "eig", "m", "v"), ratio = error / bound (module docstring);
    ``refs`` the reference objects. ``nan_at``: loop indices where the library gets a NaN
    gradient (the reference does not see it) and must return a zero update.
    """
    name, Ref, fixed = METHODS[method]
    shape, layout, batch = CASES[case] if case in CASES else EXTRA_CASES[case]
    hp = {**BASE, **fixed, **layout, **(options or {})}
    n = batch or 1
    prob = Problem(shape, seed, noise=noise, scale=scale)
    refs = [Ref(shape, **hp) for _ in range(n)]
    ps = [prob.start() for _ in range(n)]
    kw = {k: v for k, v in hp.items() if name == "shampoo" or k not in ("refresh", "matrix_eps")}
    tx = getattr(lpc.precond, name)(compute=compute, **kw)
    u = U64 if compute == "fp64" else U32
    dt = np.float64 if compute == "fp64" else np.float32
    conv = _convert(lib)

    def lib_in(arrs):
        return conv(np.asarray(np.stack(arrs) if batch else arrs[0], dtype=dt))

    state = tx.init(lib_in(ps), batched=bool(batch))
    d = sum(state.layout.work_shape)
    worst = {}
    t = -1
    i = 0
    while t < steps:
        gs = [prob.grad(p) for p in ps]
        if i in nan_at:
            bad = [np.array(g, dtype=np.float64) for g in gs]
            bad[0].reshape(-1)[0] = np.nan
            upd, state = tx.update(lib_in(bad), state, lib_in(ps))
            assert not np.any(to_np(upd)), "a non-finite gradient must give a zero update"
            i += 1
            continue
        i += 1
        t += 1
        us = [r.step(g, p) for r, g, p in zip(refs, gs, ps)]
        upd, state = tx.update(lib_in(gs), state, lib_in(ps))
        upd = to_np(upd)
        assert upd.shape == (n, *shape) if batch else upd.shape == shape
        if t == 0:
            assert not np.any(upd), "the first gradient only initializes"
        kb = max(r.kappa_basis for r in refs)
        kd = max(r.kappa_dir for r in refs)
        bound_state = C_TOL * (t + 1) * (d + N_ELEMENTWISE) * u * kb
        for j in range(n):
            errs = compare(lib_snapshot(tx, state, j if batch else None), refs[j].snapshot())
            if t > 0:
                errs["update"] = rel(upd[j] if batch else upd, us[j])
            for q, err in errs.items():
                bound = bound_state * (kd * refs[j].kappa_upd if q == "update" else 1.0)
                if q not in worst or err / bound > worst[q][1]:
                    worst[q] = (err, err / bound)
        ps = [p + du for p, du in zip(ps, us)]
    assert int(to_np(state.count)) == steps
    return worst, refs


def check(worst):
    bad = {q: w for q, w in worst.items() if w[1] > 1.0}
    assert not bad, "error/bound > 1: " + ", ".join(
        f"{q}: {e:.2e} ({r:.1f}× the bound)" for q, (e, r) in bad.items())
    assert {"update", "m"} <= set(worst)


# ====================================================================== tests
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("method", list(METHODS))
def test_fp64_matches_reference(method, case):
    """Every step of 30: update, factors, bases (up to signs), eigenvalues, moments."""
    worst, _ = run(method, case)
    check(worst)
    if CASES[case][0] and len(CASES[case][0]) > 1:
        assert "factors" in worst and "bases" in worst


@pytest.mark.parametrize("lib", ["numpy", pytest.param("torch", marks=pytest.mark.skipif(
    not HAS_TORCH, reason="torch not installed"))])
@pytest.mark.parametrize("case", ["2d", "3d", "batched"])
@pytest.mark.parametrize("method", list(METHODS))
def test_fp32_matches_fp64_reference(method, case, lib):
    """compute="fp32" with fp32 inputs against the fp64 reference, bound with u = 2⁻²⁴."""
    worst, _ = run(method, case, compute="fp32", lib=lib)
    check(worst)


OPTIONS = [
    ("soap", "2d", {"correct_bias": False}),
    ("soap", "3d", {"betas": (0.0, 0.5), "shampoo_beta": 0.3, "precondition_frequency": 1}),
    ("soap", "1d_pair", {"precondition_1d": True}),
    ("shampoo_eigh", "2d", {"grafting": None, "exponent": -0.5}),
    ("shampoo_eigh", "3d", {"correct_bias": False, "normalize_grads": True}),
    ("shampoo_qr", "3d", {"grafting": None, "precondition_frequency": 1}),
    ("kl_shampoo", "2d", {"normalize_grads": True, "eps": 0.0}),
    ("kl_shampoo", "3d", {"correct_bias": True, "max_clamp": None}),
    ("kl_soap", "2d", {"normalize_grads": True, "correct_bias": True}),
    ("kl_soap", "big_axis", {"init_factor": 1.0, "precondition_frequency": 3}),
    ("kl_soap", "1d_pair", {"precondition_1d": True}),
]


@pytest.mark.parametrize("method,case,options", OPTIONS,
                         ids=[f"{m}-{c}-{'-'.join(o)}" for m, c, o in OPTIONS])
def test_fp64_options(method, case, options):
    worst, _ = run(method, case, options=options)
    check(worst)


@pytest.mark.parametrize("method", ["kl_shampoo", "kl_soap"])
def test_kl_clamp(method):
    """Small gradients drive λ below the floor 1/max(10, min(d, 4000))²: the clamp acts."""
    worst, refs = run(method, "2d", scale=0.02)
    check(worst)
    assert refs[0].clamped > 0


@pytest.mark.parametrize("method", list(METHODS))
def test_nonfinite_gradients_skip_the_step(method):
    """NaN gradients (the first one, one landing where the count would reach a refresh, two
    in a row) are skipped: zero update, and the run equals the reference run that never saw
    them (the refreshes happen at the same finite steps)."""
    worst, _ = run(method, "batched", nan_at=(0, 4, 5, 13, 14, 22))
    check(worst)


@pytest.mark.parametrize("method", ["kl_shampoo", "kl_soap"])
def test_kl_skipped_step_keeps_lambda_below_the_floor(method):
    """A skipped step is a no-op for λ too: λ = init_factor < 1/c² (1e-3 < 1e-2 here, right after
    the initializing step) is not floored by a NaN step."""
    worst, _ = run(method, "2d", options={"init_factor": 1e-3}, nan_at=(1,), steps=6)
    check(worst)


def test_kl_lambda_below_the_floor_without_skips():
    """The same run without the NaN step agrees (λ = init_factor < 1/c² is legal until the
    first finite step floors it, as in the reference code, which clamps only on update)."""
    for method in ("kl_shampoo", "kl_soap"):
        worst, _ = run(method, "2d", options={"init_factor": 1e-3}, steps=6)
        check(worst)


def test_soap_normalize_grads_matches_reference_code():
    """normalize_grads divides by RMS + 1e-30, as the SOAP reference code."""
    worst, _ = run("soap", "2d", options={"normalize_grads": True})
    check(worst)


# ---------------------------------------------------------------------- merge rule
AGREE = [((2, 3, 5), 6), ((3, 4, 5), 4), ((1, 2, 512, 1, 2048, 1, 3, 4), 1024), ((1, 7), 6),
         ((3, 4), 12), ((64, 3, 3), 1000), ((2, 2, 2, 2), 4)]


@pytest.mark.parametrize("shape,max_dim", AGREE)
def test_merge_shape_is_the_reference_codes(shape, max_dim):
    assert merge_shape(shape, max_dim) == ref_merge(shape, max_dim)


@pytest.mark.parametrize("shape,max_dim", [((7, 1), 6), ((6, 7, 1), 6), ((512, 2048, 1, 1), 1024)])
def test_merge_shape_drops_trailing_unit_axes(shape, max_dim):
    assert merge_shape(shape, max_dim) == ref_merge(shape, max_dim)
